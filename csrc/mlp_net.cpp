// A whole flow-map MLP call in one op: every layer's stacked GEMM and fused activation, forward and
// backward, without returning to Python between layers (MATH.md §4, §6).
//
//   flowcore::mlp_net_fwd(Tensor h, Tensor[] weights, Tensor[] biases, str activation, float scale,
//                         int live, bool save) -> (Tensor out, Tensor out_dead, Tensor[] hidden,
//                                                  Tensor[] derivatives)
//   flowcore::mlp_net_bwd(Tensor grad, Tensor h, Tensor[] hidden, Tensor[] derivatives, Tensor[] weights,
//                         Tensor[] biases, float scale, bool input_grad)
//                         -> (Tensor grad_h, Tensor[] grad_weights, Tensor[] grad_biases)
//
// h is (T, B, F) stacked input rows: block 0 the primal, blocks 1..T−1 tangents. Layer l maps
// h_l -> y_l = h_l·W_lᵀ (one GEMM over all T·B rows, no bias) -> h_{l+1} = mlp_act_fwd(y_l, b_l)
// (bias and σ on the primal block, σ'·ẏ on the tangents); the last layer is linear, its bias on
// the primal block only, and everything is multiplied by `scale` (σ of v̂ = σ·MLP). The first
// `live` blocks are those a backward covers; the rest (tangents used only under stop-gradient)
// share every GEMM of the forward but none of the backward, and come back as `out_dead`.
// `save` keeps, for mlp_net_bwd, the hidden rows h_1..h_{L−1} and each activation's derivatives
// (mlp_act_fwd_save over the live blocks: σ', and σ'' with the tangents ẏ_j where a tangent is
// live); grad_h is empty unless `input_grad`.
//
// The backward walks the layers back: g_y = mlp_act_bwd_saved(derivatives_l, g_h) (which also
// carries σ''·ẏ·g_ȧ into the primal block: the gradient THROUGH the JVP), g_W = g_yᵀ·h_l and
// g_h = g_y·W_l over the live rows, g_b = Σ rows of g_y's primal block; no activation is
// evaluated again. Device-generic (at::mm and the activation ops through the dispatcher), so the
// CPU and CUDA kernels of mlp_act_* serve both; autograd is flowcore.nn.netcall's (one node per
// network call).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

namespace flowcore {
namespace mlp {
namespace {

using ActFwd = at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view);
using ActFwdSave = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, c10::string_view, int64_t);
using ActBwdSaved = at::Tensor(const at::Tensor&, const at::Tensor&);

at::Tensor act_fwd(const at::Tensor& y, const at::Tensor& bias, c10::string_view activation) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("flowcore::mlp_act_fwd", "").typed<ActFwd>();
  return op.call(y, bias, activation);
}

std::tuple<at::Tensor, at::Tensor> act_fwd_save(const at::Tensor& y, const at::Tensor& bias,
                                                c10::string_view activation, int64_t live) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("flowcore::mlp_act_fwd_save", "").typed<ActFwdSave>();
  return op.call(y, bias, activation, live);
}

at::Tensor act_bwd_saved(const at::Tensor& saved, const at::Tensor& grad) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("flowcore::mlp_act_bwd_saved", "").typed<ActBwdSaved>();
  return op.call(saved, grad);
}

// (T, B, F) rows times Wᵀ: one GEMM over T·B rows
at::Tensor stacked_linear(const at::Tensor& h, const at::Tensor& weight) {
  const int64_t T = h.size(0), B = h.size(1);
  return at::mm(h.reshape({T * B, h.size(2)}), weight.t()).view({T, B, weight.size(0)});
}

void check_net(const char* op, const at::Tensor& h, at::TensorList weights, at::TensorList biases) {
  TORCH_CHECK(!weights.empty() && weights.size() == biases.size(), op,
              ": needs one bias per weight and at least one layer, got ", weights.size(), " weights and ",
              biases.size(), " biases");
  int64_t features = h.size(2);
  for (size_t l = 0; l < weights.size(); ++l) {
    const at::Tensor& w = weights[l];
    const at::Tensor& b = biases[l];
    TORCH_CHECK(w.dim() == 2 && w.size(1) == features, op, ": weight ", l, " must be (out, ", features,
                "), got shape ", w.sizes());
    TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0), op, ": bias ", l, " must be (", w.size(0), ",), got shape ",
                b.sizes());
    TORCH_CHECK(w.scalar_type() == h.scalar_type() && b.scalar_type() == h.scalar_type() &&
                    w.device() == h.device() && b.device() == h.device(),
                op, ": layer ", l, "'s weight and bias must have the rows' dtype and device (", h.scalar_type(), ", ",
                h.device(), "), got ", w.scalar_type(), " on ", w.device(), " and ", b.scalar_type(), " on ",
                b.device());
    features = w.size(0);
  }
}

std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> net_fwd(
    const at::Tensor& h_in, at::TensorList weights, at::TensorList biases, c10::string_view activation, double scale,
    int64_t live, bool save) {
  const char* op = "flowcore::mlp_net_fwd";
  TORCH_CHECK(h_in.dim() == 3 && h_in.size(0) >= 1, op, ": h must be stacked rows (T >= 1, B, F), got shape ",
              h_in.sizes());
  const int64_t T = h_in.size(0);
  TORCH_CHECK(live >= 1 && live <= T, op, ": live must count 1..T = ", T, " row blocks, got ", live);
  check_net(op, h_in, weights, biases);
  const size_t L = weights.size();
  std::vector<at::Tensor> hidden, derivatives;
  if (save) {
    hidden.reserve(L - 1);
    derivatives.reserve(L - 1);
  }
  at::Tensor h = h_in;
  for (size_t l = 0; l + 1 < L; ++l) {
    const at::Tensor y = stacked_linear(h, weights[l]);
    if (save) {
      at::Tensor saved;
      std::tie(h, saved) = act_fwd_save(y, biases[l], activation, live);
      derivatives.push_back(std::move(saved));
      hidden.push_back(h);
    } else {
      h = act_fwd(y, biases[l], activation);
    }
  }
  at::Tensor out = stacked_linear(h, weights[L - 1]);
  out.select(0, 0).add_(biases[L - 1]);
  out.mul_(scale);
  at::Tensor out_dead = live < T ? out.narrow(0, live, T - live).clone() : out.new_empty({0, out.size(1), out.size(2)});
  return {out.narrow(0, 0, live), out_dead, hidden, derivatives};
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> net_bwd(
    const at::Tensor& grad, const at::Tensor& h, at::TensorList hidden, at::TensorList derivatives,
    at::TensorList weights, at::TensorList biases, double scale, bool input_grad) {
  const char* op = "flowcore::mlp_net_bwd";
  const size_t L = weights.size();
  TORCH_CHECK(h.dim() == 3, op, ": h must be stacked rows (T, B, F), got shape ", h.sizes());
  check_net(op, h, weights, biases);
  TORCH_CHECK(hidden.size() + 1 == L && derivatives.size() + 1 == L, op, ": needs the ", L - 1, " hidden rows and ",
              L - 1, " derivatives mlp_net_fwd saved, got ", hidden.size(), " and ", derivatives.size());
  const int64_t live = grad.size(0), B = grad.size(1);
  TORCH_CHECK(grad.dim() == 3 && live <= h.size(0) && B == h.size(1) && grad.size(2) == weights[L - 1].size(0), op,
              ": grad must be (live <= ", h.size(0), ", ", h.size(1), ", ", weights[L - 1].size(0), "), got shape ",
              grad.sizes());
  // layer k's input rows: h, then the saved hidden rows
  auto input = [&](size_t k) -> const at::Tensor& { return k == 0 ? h : hidden[k - 1]; };
  std::vector<at::Tensor> grad_weights(L), grad_biases(L);
  // rows of the live blocks only: views of the saved (contiguous) tensors
  auto rows = [&](const at::Tensor& t) { return t.narrow(0, 0, live).reshape({live * B, t.size(2)}); };
  at::Tensor g = (grad * scale).reshape({live * B, grad.size(2)});
  grad_biases[L - 1] = g.narrow(0, 0, B).sum(0);
  grad_weights[L - 1] = at::mm(g.t(), rows(input(L - 1)));
  at::Tensor grad_h;
  if (L > 1 || input_grad) grad_h = at::mm(g, weights[L - 1]);
  for (size_t k = L - 1; k-- > 0;) {
    const int64_t N = weights[k].size(0);
    at::Tensor gy = act_bwd_saved(derivatives[k], grad_h.view({live, B, N})).view({live * B, N});
    grad_biases[k] = gy.narrow(0, 0, B).sum(0);
    grad_weights[k] = at::mm(gy.t(), rows(input(k)));
    if (k > 0 || input_grad) grad_h = at::mm(gy, weights[k]);
  }
  at::Tensor grad_input = input_grad ? grad_h.view({live, B, h.size(2)}) : grad.new_empty({0});
  return {grad_input, grad_weights, grad_biases};
}

}  // namespace
}  // namespace mlp
}  // namespace flowcore

TORCH_LIBRARY_FRAGMENT(flowcore, m) {
  m.def("mlp_net_fwd(Tensor h, Tensor[] weights, Tensor[] biases, str activation, float scale, int live, bool save)"
        " -> (Tensor, Tensor, Tensor[], Tensor[])");
  m.def("mlp_net_bwd(Tensor grad, Tensor h, Tensor[] hidden, Tensor[] derivatives, Tensor[] weights, Tensor[] biases,"
        " float scale, bool input_grad) -> (Tensor, Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(flowcore, CompositeExplicitAutograd, m) {
  m.impl("mlp_net_fwd", &flowcore::mlp::net_fwd);
  m.impl("mlp_net_bwd", &flowcore::mlp::net_bwd);
}
