"""flowcore generated code — objective esd, digest efd3257c7d2dbebf; backend torch. Do not edit."""
import torch

def _full(value, like, B, N):
    """`value` broadcast to (B, N) (constants and per-sample columns included), contiguous."""
    if not isinstance(value, torch.Tensor):
        return torch.full((B, N), float(value), dtype=like.dtype, device=like.device)
    return value.expand(B, N).contiguous() if value.shape != (B, N) else value


def esd_t0_level0(like, B, N, x0, x1, t):
    t = t.reshape(B, 1)
    net0_x = _full(x0*(1 - t) + x1*t, like, B, N)
    return (net0_x,)

def esd_t0_loss(like, B, N, net0, x0, x1):
    tmp0 = net0 + x0 - x1
    sqnorm0 = _full((tmp0*tmp0), like, B, N).sum(1, keepdim=True)
    loss = _full(sqnorm0, like, B, 1).reshape(B)
    return (loss,)

def esd_t1_level0(like, B, N, x0, x1, s):
    s = s.reshape(B, 1)
    net2_x = _full(x0*(1 - s) + x1*s, like, B, N)
    return (net2_x,)

def esd_t1_level1(like, B, N, x0, x1, s):
    s = s.reshape(B, 1)
    net1_x = _full(x0*(1 - s) + x1*s, like, B, N)
    return (net1_x,)

def esd_t1_loss(like, B, N, net1, net1_d1, net2, net1_d0, s, t):
    s = s.reshape(B, 1)
    t = t.reshape(B, 1)
    tmp0 = -s + t
    tmp1 = -net1 + net1_d0*tmp0 + net1_d1*tmp0 + net2
    sqnorm1 = _full((tmp1*tmp1), like, B, N).sum(1, keepdim=True)
    loss = _full(sqnorm1, like, B, 1).reshape(B)
    return (loss,)

def esd_t0_level0_backward(like, B, N, x0, x1, g_net0_x, t):
    t = t.reshape(B, 1)
    grad_x0 = _full(g_net0_x*(1 - t), like, B, N)
    grad_x1 = _full(g_net0_x*t, like, B, N)
    return (grad_x0, grad_x1,)

def esd_t0_loss_backward(like, B, N, net0, x0, x1, g_loss):
    g_loss = g_loss.reshape(B, 1)
    adj_sqnorm0 = g_loss
    tmp0 = 2*net0 + 2*x0 - 2*x1
    tmp1 = adj_sqnorm0*tmp0
    grad_net0 = _full(tmp1, like, B, N)
    grad_x0 = _full(tmp1, like, B, N)
    grad_x1 = _full(-adj_sqnorm0*tmp0, like, B, N)
    return (grad_net0, grad_x0, grad_x1,)

def esd_t0_loss_backward_wrt_net0(like, B, N, net0, x0, x1, g_loss):
    g_loss = g_loss.reshape(B, 1)
    adj_sqnorm0 = g_loss
    grad_net0 = _full(adj_sqnorm0*(2*net0 + 2*x0 - 2*x1), like, B, N)
    return (grad_net0,)

def esd_t1_level0_backward(like, B, N, x0, x1, g_net2_x, s):
    s = s.reshape(B, 1)
    grad_x0 = _full(g_net2_x*(1 - s), like, B, N)
    grad_x1 = _full(g_net2_x*s, like, B, N)
    return (grad_x0, grad_x1,)

def esd_t1_level1_backward(like, B, N, x0, x1, g_net1_x, s):
    s = s.reshape(B, 1)
    grad_x0 = _full(g_net1_x*(1 - s), like, B, N)
    grad_x1 = _full(g_net1_x*s, like, B, N)
    return (grad_x0, grad_x1,)

def esd_t1_loss_backward(like, B, N, net1, net1_d1, net2, net1_d0, s, t, g_loss):
    s = s.reshape(B, 1)
    t = t.reshape(B, 1)
    g_loss = g_loss.reshape(B, 1)
    adj_sqnorm1 = g_loss
    tmp0 = -s + t
    tmp1 = net1_d0*tmp0
    tmp2 = net1_d1*tmp0
    grad_net1 = _full(adj_sqnorm1*(2*net1 - 2*net2 - 2*tmp1 - 2*tmp2), like, B, N)
    grad_net1_d1 = _full(adj_sqnorm1*(-2*s + 2*t)*(-net1 + net2 + tmp1 + tmp2), like, B, N)
    return (grad_net1, grad_net1_d1,)
