"""FlowMapUNet (docs/math.md §4, the image UNet): forward-mode AD, magnitude preservation, the sphere
projection, v̂ = 0 at initialisation, the presets, the "unet" network kind, the image log-variance
head, and compiled objectives against the reference interpreter on (B, 1, 8, 8) images.

Sizes are tiny (8×8, one channel, 8 model channels) so the whole file runs in seconds.
"""
import math

import numpy
import pytest
import torch

import flowcore as fc
from backends import available
from flowcore import objectives
from flowcore.nn import FlowMapUNet, ImageLogVarHead, build_network
from flowcore.nn.registry import gemm_layers
from flowcore.nn.unet import layers
from flowcore.nn.unet.layers import MPConv
from flowcore.testing import FLOAT64_RTOL, compare_with_reference
from flowcore.train import Trainer, load_config
from flowcore.train.build import network_from_checkpoint
from flowcore.train.checkpoint import read
from flowcore.train.config import ConfigError, NetworkConfig, TrainConfig, validate
import unets

F64 = torch.float64


def tiny_unet(seed: int = 0, gains: bool = True, **sizes) -> FlowMapUNet:
    """The shared tiny UNet (tests/unets.py) with one attention head of 16 channels."""
    return unets.tiny_unet(seed, gains, **{"channels_per_head": 16, **sizes})


def batch(n: int = 3, seed: int = 1, channels: int = 1, resolution: int = 8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, resolution, resolution, generator=gen, dtype=F64)
    s, t = torch.rand(n, generator=gen, dtype=F64), torch.rand(n, generator=gen, dtype=F64)
    return torch.minimum(s, t), torch.maximum(s, t), x


# -- forward-mode AD ---------------------------------------------------------------------------------
# Central differences with step h have truncation error h²/6·|f'''| and rounding error ~eps·|f|/h.
# The fastest positional-embedding frequency of `tiny_unet` is ω = 1000 (time_scale), so in time
# |f'''|/|f'| ~ ω² = 1e6: h = 1e-7 gives a relative truncation error ~ 1e-14·1e6/6 ≈ 2e-9 and a
# rounding error ~ 1e-16/1e-7 = 1e-9 relative to |f|/|f'| ≤ 1: 1e-6 leaves a wide margin for both.
FD_STEP, FD_RTOL = 1e-7, 1e-6


@pytest.mark.parametrize("direction", ["x", "s", "t", "all"])
def test_jvp_equals_central_differences(direction):
    net = tiny_unet()
    s, t, x = batch()
    gen = torch.Generator().manual_seed(7)
    ds = torch.randn(3, generator=gen, dtype=F64) if direction in ("s", "all") else torch.zeros(3, dtype=F64)
    dt = torch.randn(3, generator=gen, dtype=F64) if direction in ("t", "all") else torch.zeros(3, dtype=F64)
    dx = torch.randn(x.shape, generator=gen, dtype=F64) if direction in ("x", "all") else torch.zeros_like(x)
    with torch.no_grad():
        _, tangent = torch.func.jvp(net, (s, t, x), (ds, dt, dx))
        h = FD_STEP
        fd = (net(s + h * ds, t + h * dt, x + h * dx) - net(s - h * ds, t - h * dt, x - h * dx)) / (2 * h)
    assert tangent.abs().max() > 1e-3  # the direction really moves the output
    assert (tangent - fd).norm() <= FD_RTOL * fd.norm(), ((tangent - fd).norm() / fd.norm()).item()


def test_second_order_jvp_runs_and_matches_differences_of_first():
    """A mixed second derivative ∂s∂t v̂ (a nested jvp, as second-order objectives need) equals a
    central difference in s of the t-derivative (same step argument, one order lower)."""
    net = tiny_unet()
    s, t, x = batch()
    one = torch.ones(3, dtype=F64)

    def d_t(s_):
        return torch.func.jvp(lambda t_: net(s_, t_, x), (t,), (one,))[1]

    with torch.no_grad():
        mixed = torch.func.jvp(d_t, (s,), (one,))[1]
        # as above, one order up: truncation h²ω²/6 ≈ 2e-7 relative for h = 1e-6, rounding
        # eps·|∂t v̂|/(h·|∂s∂t v̂|) ~ 1e-16·1e3/(1e-6·1e6) = 1e-13
        h = 1e-6
        fd = (d_t(s + h) - d_t(s - h)) / (2 * h)
    assert (mixed - fd).norm() <= 1e-5 * fd.norm()


# -- magnitude preservation ------------------------------------------------------------------------
def test_mp_layers_preserve_unit_second_moment():
    """Each MP op maps standard-normal inputs to unit mean square. Every output element y has
    E[y²] = 1 (exactly: a unit-norm row of weights applied to iid N(0, 1) inputs is N(0, 1)), and
    the mean of y² over N independent samples has standard deviation sqrt(Var(y²)/N) ≤
    sqrt(E[y⁴]/N) (= sqrt(3/N) for a Gaussian). Averaging further over channels or pixels that are
    identically distributed but dependent cannot increase that variance, so N counts only the
    independent samples: the batch rows for a linear or convolution, every element for an
    elementwise op on iid inputs. Five standard deviations is the tolerance."""
    torch.manual_seed(0)

    def check(y, independent, fourth_moment=3.0):
        tol = 5 * math.sqrt(fourth_moment / independent)
        assert abs(y.square().mean().item() - 1) <= tol, (y.square().mean().item(), tol)

    rows = torch.randn(8192, 32, dtype=F64)
    check(MPConv(32, 16).to(F64)(rows), 8192)
    patches = torch.randn(8192, 8, 3, 3, dtype=F64)
    check(MPConv(8, 16, (3, 3)).to(F64)(patches)[:, :, 1, 1], 8192)   # the centre: all 9 taps see input
    check(MPConv(8, 16, (1, 1)).to(F64)(patches), 8192)
    x = torch.randn(64, 32, 8, 8, dtype=F64)
    n = x.numel()
    check(layers.mp_silu(x), n, fourth_moment=6.0)   # E[silu(x)⁴]/0.596⁴ ≈ 5.6 for x ~ N(0, 1)
    check(layers.mp_sum(x, torch.randn_like(x), 0.3), n)
    check(layers.mp_cat(x[:, :8], x[:, 8:]), n)
    assert abs(layers.pixel_norm(3 * x).square().mean(dim=1) - 1).max() < 1e-3   # exact, but for the 1e-4 guard


def test_blocks_keep_activations_at_unit_scale():
    """At initialisation every block's output has unit root mean square for a unit-variance input.
    Beyond the sampling error of the last test (2e-3 here) the weights are one random draw: with
    unit-norm rows the per-channel output scale is ``wᵀΣw`` for the input's channel covariance Σ,
    whose spread over C channels averages out only as 1/sqrt(C); attention (a softmax average of
    values) and box-filter down-sampling shrink the residual branch; so the bound is a band
    [0.6, 1.4] on the RMS, far from a collapse (→ 0) or a blow-up (growing with depth) that a
    non-preserving layer would produce over the 18 blocks of this net."""
    net = tiny_unet(gains=False, model_channels=32, channel_mult=(1, 2), num_blocks=3, channels_per_head=32,
                    resolution=16, attn_resolutions=(8,))
    torch.manual_seed(3)
    s, t, x = batch(n=32, resolution=16)
    x = x * net.sigma_data   # x/σ_d is unit-variance
    rms = []
    hooks = [block.register_forward_hook(lambda m, i, o: rms.append(o.square().mean().sqrt().item()))
             for block in [*net.encoder, *net.decoder]]
    with torch.no_grad():
        net(s, t, x)
    for hook in hooks:
        hook.remove()
    assert len(rms) == len(net.encoder) + len(net.decoder) == 18
    assert all(0.6 <= r <= 1.4 for r in rms), rms


# -- sphere projection, zero output, dropout ----------------------------------------------------------
def test_project_to_sphere_makes_rows_unit_and_keeps_the_forward():
    net = tiny_unet()
    s, t, x = batch()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, MPConv):  # rows of arbitrary norms, as after optimiser steps
                scale = torch.rand(module.weight.shape[0], generator=gen, dtype=F64) * 3 + 0.1
                module.weight.mul_(scale.reshape(-1, *[1] * (module.weight.ndim - 1)))
        before = net(s, t, x)
        net.project_to_sphere()
        after = net(s, t, x)
    convs = [m for m in net.modules() if isinstance(m, MPConv)]
    assert len(convs) > 10
    for conv in convs:
        norms = conv.weight.flatten(1).norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-14)
    # one extra rounding per weight, through ~20 layers in float64
    assert (after - before).norm() <= 1e-12 * before.norm()


def test_output_is_zero_at_initialisation_and_not_after_the_gain_moves():
    net = tiny_unet(gains=False)
    s, t, x = batch()
    assert torch.equal(net(s, t, x), torch.zeros_like(x))
    with torch.no_grad():
        net.out_gain.fill_(1.0)
    v = net(s, t, x)
    assert v.shape == x.shape and v.abs().min() > 0


def test_dropout_only_with_a_seed_and_shared_by_a_jvp():
    net = tiny_unet(dropout=0.5)
    s, t, x = batch()
    dx = torch.randn_like(x)
    with torch.no_grad():
        net.out_gain.fill_(1.0)
        plain = net(s, t, x)
        dropped = net(s, t, x, dropout_seed=7)
        assert torch.equal(plain, net(s, t, x))                      # no seed: no dropout, deterministic
        assert torch.equal(dropped, net(s, t, x, dropout_seed=7))    # one seed, one set of masks
        assert not torch.allclose(dropped, net(s, t, x, dropout_seed=8))
        seeded = lambda x_: net(s, t, x_, dropout_seed=7)  # noqa: E731
        primal, tangent = torch.func.jvp(seeded, (x,), (dx,))
        eps = 1e-6
        central = (seeded(x + eps * dx) - seeded(x - eps * dx)) / (2 * eps)
    assert not torch.allclose(plain, dropped)
    # the JVP's primal is the seeded call's value (the call runs the fused kernels, torch.func.jvp the
    # plain modules: equal to float64 rounding, where another mask would differ by O(1)) …
    torch.testing.assert_close(primal, dropped, rtol=1e-12, atol=1e-12)
    # … and its tangent is the derivative of that same masked function (a different mask would differ by O(1))
    torch.testing.assert_close(tangent, central, rtol=1e-6, atol=1e-7)
    assert FlowMapUNet.digits().dropout_rate == 0.0 and net.dropout_rate == 0.5


# -- presets, the network kind and the config ---------------------------------------------------------
def test_digits_preset_runs():
    net = FlowMapUNet.digits()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        net.out_gain.fill_(1.0)
        assert net(torch.zeros(2), torch.ones(2), x).shape == x.shape
    assert FlowMapUNet.digits(resolution=16).resolution == 16


@pytest.mark.parametrize("name,resolution,params", [("cifar10", 32, 54_673_186), ("imagenet64_s", 64, 124_264_357)])
def test_paper_presets_have_their_shapes(name, resolution, params):
    """Built on the meta device (shapes, no memory, no arithmetic): the output's shape, the block
    widths of docs/math.md §4 and the parameter count (pinned: a change is a reviewed diff)."""
    with torch.device("meta"):
        net = FlowMapUNet.preset(name)
        out = net(torch.zeros(1), torch.ones(1), torch.zeros(1, 3, resolution, resolution))
    assert out.shape == (1, 3, resolution, resolution)
    assert sum(p.numel() for p in net.parameters()) == params
    mult = net.config["channel_mult"]
    assert {b.out_channels for b in net.encoder} == {128 * m for m in mult}
    attention = {b.resolution for b in [*net.encoder, *net.decoder] if b.attention is not None}
    assert attention == set(net.config["attn_resolutions"]) | {resolution >> (len(mult) - 1)}
    assert all(b.attention.head_channels == 64 for b in net.encoder if b.attention is not None)
    assert net.config["dropout"] == (0.13 if name == "cifar10" else 0.0)


def test_network_kind_builds_from_the_config():
    preset = build_network("unet", NetworkConfig(kind="unet", preset="digits"), (1, 16, 16), 0.5)
    assert isinstance(preset, FlowMapUNet) and preset.resolution == 16 and preset.sigma_data == 0.5
    explicit = build_network("unet", NetworkConfig(kind="unet", model_channels=8, channel_mult=[1, 2], num_blocks=1,
                                                   attn_resolutions=[4], channels_per_head=8), (3, 8, 8), 0.5)
    assert explicit.in_channels == 3 and len(explicit.encoder) == 3
    layers_ = gemm_layers("unet", explicit)
    assert layers_ and all(len(layer) == 3 and min(layer) > 0 for layer in layers_)
    # the first convolution, 3 + 1 input channels (the constant one) at 3×3, is an im2col GEMM of 64 rows
    assert layers_[2] == (4 * 9, 8, 64)
    with pytest.raises(ValueError, match="square images"):
        build_network("unet", NetworkConfig(kind="unet", preset="digits"), (2,), 0.5)
    with pytest.raises(ValueError, match="divisible"):
        build_network("unet", NetworkConfig(kind="unet", channel_mult=[1, 1, 1, 1]), (1, 4, 4), 0.5)


@pytest.mark.parametrize("key,value", [("preset", "mnist"), ("model_channels", 0), ("channel_mult", []),
                                       ("num_blocks", 0), ("attn_resolutions", [0]), ("channels_per_head", 0),
                                       ("dropout", 1.0)])
def test_config_errors_name_the_field(key, value):
    config = TrainConfig()
    setattr(config.network, key, value)
    with pytest.raises(ConfigError, match=f"network.{key}"):
        validate(config)


def test_bad_inputs_name_what_was_wrong():
    net = tiny_unet()
    s, t, x = batch()
    with pytest.raises(ValueError, match=r"x shaped \(B, 1, 8, 8\)"):
        net(s, t, x[:, :, :4])
    with pytest.raises(ValueError, match="s shaped"):
        net(s[:2], t, x)
    with pytest.raises(ValueError, match="channels_per_head"):
        FlowMapUNet(resolution=8, in_channels=1, model_channels=8, channel_mult=(1, 2), attn_resolutions=(4,),
                    channels_per_head=12)


def test_image_logvar_head_starts_at_zero_and_learns():
    head = ImageLogVarHead().to(F64)
    s, t, _ = batch(n=5)
    w = head(s, t)
    assert w.shape == (5,) and torch.equal(w, torch.zeros_like(w))
    (grad,) = torch.autograd.grad(w.square().sum() + w.sum(), [head.linear.weight])
    assert grad.abs().max() > 0


# -- compiled objectives against the reference --------------------------------------------------------
def assert_compiled_matches_reference(objective, backend: str) -> None:
    """Loss and every parameter gradient (and x0's, x1's) in float64, as tests/test_compiled.py."""
    program = fc.compile(objective, backend=backend)
    net = tiny_unet(seed=2)
    gen = torch.Generator().manual_seed(3)
    x1 = torch.randn(4, 1, 8, 8, generator=gen, dtype=F64)
    x0 = torch.randn(4, 1, 8, 8, generator=gen, dtype=F64)
    times = {}
    for term, count in zip(program.objective.terms, program.objective.split(4)):
        u = torch.rand(2, count, generator=gen, dtype=F64)
        values = {"s": u.min(0).values, "t": u.max(0).values}
        times[term.name] = {str(sym): values.get(str(sym), u[0]) for sym in term.sampler.produces}
    result = compare_with_reference(program, program.objective, net, x1, x0, times)
    assert len(result.gradients) == len(list(net.parameters())) + 2
    assert result.worst <= FLOAT64_RTOL, result


COMPILED = [b for b in available() if b.values[0] != "cuda"]


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("name", ["lsd", "meanflow"])
def test_compiled_matches_reference_on_images(name, backend):
    assert_compiled_matches_reference(objectives.get(name), backend)


@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_second_order_matches_reference_on_images(backend):
    """A mixed second partial of the map (nested torch.func.jvp through the UNet: F.silu's backward
    has no forward-mode rule, which is why mp_silu is written as x·sigmoid(x))."""
    x = fc.Var("x")
    loss = fc.dot(fc.Ds(fc.Dt(fc.X(fc.s, fc.t, x))), fc.V(fc.t, fc.t, x)).bind(x=fc.I(fc.s))
    objective = fc.Objective("second_order", [fc.Term("second_order", loss, fc.UpperTriangle(fc.s, fc.t), 1.0)])
    assert_compiled_matches_reference(objective, backend)


# -- training ---------------------------------------------------------------------------------------
def test_trainer_projects_the_weights_after_each_step(tmp_path):
    """Two LSD steps of a tiny UNet on (N, 1, 8, 8) images from a .npy file, through the config →
    Trainer path: the weights move, and after the last optimiser step every MP row is back on the
    unit sphere (an optimiser step alone moves the norms by ~lr)."""
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = tmp_path / "images.npy"
    numpy.save(path, images.numpy())
    config = load_config(None, [
        "steps=2", f"data.name={path}", "data.batch=16", "network.kind=unet", "network.model_channels=8",
        "network.channel_mult=1,2", "network.num_blocks=1", "network.attn_resolutions=4",
        "network.channels_per_head=8", "eval.samples=32", "eval.steps=1", "eval.ema=0.999", "log.every=1",
        "log.tensorboard=false", "log.figures=false", "log.progress=off", "checkpoint.every=0",
        f"out={tmp_path / 'run'}"])
    trainer = Trainer(config)
    assert isinstance(trainer.net, FlowMapUNet)
    before = [p.detach().clone() for p in trainer.net.parameters()]
    summary = trainer.train()
    assert summary.step == 2 and summary.skipped == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.net.parameters()))
    for conv in (m for m in trainer.net.modules() if isinstance(m, MPConv)):
        norms = conv.weight.detach().flatten(1).norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)   # float32 rounding of a unit row
    # the checkpoint's config (list-valued network fields included) rebuilds the same network
    net, restored, _ = network_from_checkpoint(read(summary.checkpoint), weights=0)
    assert isinstance(net, FlowMapUNet) and restored.network.channel_mult == [1, 2]
    assert all(torch.equal(a, b.cpu()) for a, b in zip(net.parameters(), trainer.net.parameters()))
