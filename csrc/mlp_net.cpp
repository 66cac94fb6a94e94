// A whole flow-map MLP call in one op: every layer's stacked GEMM and fused activation without
// returning to Python between layers, and its backward one layer per call (docs/math.md §4, §6).
//
//   flowcore::mlp_net_fwd(Tensor h, Tensor[] weights, Tensor[] biases, str activation, float scale,
//                         int live, bool save) -> (Tensor out, Tensor out_dead, Tensor[] hidden,
//                                                  Tensor[] derivatives)
//   flowcore::mlp_layer_bwd(Tensor grad, Tensor? derivatives, Tensor input, Tensor weight, bool input_grad,
//                           bool bias_grad=True) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)
//
// h is (T, B, F) stacked input rows: block 0 the primal, blocks 1..T−1 tangents. Layer l maps
// h_l -> y_l = h_l·W_lᵀ (one GEMM over all T·B rows, no bias) -> h_{l+1} = mlp_act_fwd(y_l, b_l)
// (bias and σ on the primal block, σ'·ẏ on the tangents; in place over y_l: mlp_act_fwd_); the last layer is linear, its bias on
// the primal block only, and everything is multiplied by `scale` (σ of v̂ = σ·MLP). The first
// `live` blocks are those a backward covers; the rest (tangents used only under stop-gradient)
// share every GEMM of the forward but none of the backward, and come back as `out_dead`.
// `save` keeps, for the backward, the live blocks of the hidden rows h_1..h_{L−1} and each
// activation's derivatives (mlp_act_fwd_save over the live blocks: σ', and σ'' with the tangents
// ẏ_j where a tangent is live).
//
// mlp_layer_bwd is one layer of the backward, from the gradient of its output over the live
// blocks: g_y = mlp_act_bwd_saved(derivatives, g) (which also carries σ''·ẏ·g_ȧ into the primal
// block: the gradient THROUGH the JVP; g_y = g for the linear last layer, no derivatives), then
// g_W = g_yᵀ·input, g_b = Σ rows of g_y's primal block if `bias_grad` (else empty) and, if
// `input_grad`, g_input = g_y·W (else empty); no activation is evaluated again.
// flowcore.nn.mlp_call walks the layers back and drops each layer's saved rows once it is done, so
// a backward holds no more memory than autograd's layer-by-layer one; it computes g_y and g_b
// itself (mlp_act_bwd_saved_, in place over the gradient, the bias sum in the same pass) and
// passes no derivatives here, so that σ' is freed before this op's GEMMs allocate theirs.
//
// Device-generic (at::mm and the activation ops through the dispatcher), so the CPU and CUDA
// kernels of mlp_act_* serve both; autograd is mlp_call's (one node per network call). On the CPU
// the thin products — the first layer's few input features, the last layer's few outputs — are
// mlp_thin.h's memory passes, not BLAS calls: in a small-net LSD step (4×256, batch 1024) the
// last layer's backward took 314 µs with MKL and 176 µs so, the first layer's 175 and 130 µs.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "mlp_thin.h"

namespace flowcore {
namespace mlp {
namespace {

using ActFwd = void(at::Tensor&, const at::Tensor&, c10::string_view);
using ActFwdSave = at::Tensor(at::Tensor&, const at::Tensor&, c10::string_view, int64_t);
using ActBwdSaved = at::Tensor(const at::Tensor&, const at::Tensor&);

// the activations run in place over the layer's GEMM output (mlp_act_fwd_ / mlp_act_fwd_save_)
void act_fwd(at::Tensor& y, const at::Tensor& bias, c10::string_view activation) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("flowcore::mlp_act_fwd_", "").typed<ActFwd>();
  op.call(y, bias, activation);
}

at::Tensor act_fwd_save(at::Tensor& y, const at::Tensor& bias, c10::string_view activation, int64_t live) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("flowcore::mlp_act_fwd_save_", "").typed<ActFwdSave>();
  return op.call(y, bias, activation, live);
}

at::Tensor act_bwd_saved(const at::Tensor& saved, const at::Tensor& grad) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("flowcore::mlp_act_bwd_saved", "").typed<ActBwdSaved>();
  return op.call(saved, grad);
}

// rows (M, in) times Wᵀ for W (out, in): one GEMM, or with few input features (the first layer)
// thin_inner on the CPU
at::Tensor times_weight_t(const at::Tensor& rows, const at::Tensor& weight) {
  if (cpu::thin_applies(rows, weight.size(1))) return cpu::thin_inner(rows, weight.t());
  return at::mm(rows, weight.t());
}

// (T, B, F) rows times Wᵀ: one GEMM over T·B rows
at::Tensor stacked_linear(const at::Tensor& h, const at::Tensor& weight) {
  const int64_t T = h.size(0), B = h.size(1);
  return times_weight_t(h.reshape({T * B, h.size(2)}), weight).view({T, B, weight.size(0)});
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
  // Once the next GEMM has read a layer's rows, its dead blocks are done: the backward reads the
  // live ones only, so only those are kept (a copy of live/T of the rows, against holding all T).
  const auto keep_live_rows = [&]() {
    if (save && !hidden.empty() && live < T) hidden.back() = hidden.back().narrow(0, 0, live).clone();
  };
  at::Tensor h = h_in;
  for (size_t l = 0; l + 1 < L; ++l) {
    at::Tensor y = stacked_linear(h, weights[l]);
    keep_live_rows();
    h = at::Tensor();  // the rows are read: let them go (or their live copy stay) before σ allocates
    if (save) {
      derivatives.push_back(act_fwd_save(y, biases[l], activation, live));
      hidden.push_back(y);
    } else {
      act_fwd(y, biases[l], activation);
    }
    h = std::move(y);  // y now holds the layer's output rows
  }
  at::Tensor out = stacked_linear(h, weights[L - 1]);
  keep_live_rows();
  out.select(0, 0).add_(biases[L - 1]);
  out.mul_(scale);
  at::Tensor out_dead =
      live < T ? out.narrow(0, live, T - live).clone() : out.new_empty({0, out.size(1), out.size(2)});
  return {out.narrow(0, 0, live), out_dead, hidden, derivatives};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_bwd(const at::Tensor& grad,
                                                         const c10::optional<at::Tensor>& derivatives,
                                                         const at::Tensor& input, const at::Tensor& weight,
                                                         bool input_grad, bool bias_grad) {
  const char* op = "flowcore::mlp_layer_bwd";
  TORCH_CHECK(grad.dim() == 3 && input.dim() == 3 && grad.size(0) <= input.size(0) && grad.size(1) == input.size(1),
              op, ": grad must be (live, B, out) and input (T >= live, B, in), got shapes ", grad.sizes(), " and ",
              input.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == grad.size(2) && weight.size(1) == input.size(2), op,
              ": weight must be (", grad.size(2), ", ", input.size(2), "), got shape ", weight.sizes());
  TORCH_CHECK(grad.scalar_type() == input.scalar_type() && weight.scalar_type() == input.scalar_type(), op,
              ": grad, input and weight must share a dtype, got ", grad.scalar_type(), ", ", input.scalar_type(),
              " and ", weight.scalar_type());
  const int64_t live = grad.size(0), B = grad.size(1), N = grad.size(2);
  const at::Tensor gy = (derivatives.has_value() ? act_bwd_saved(*derivatives, grad) : grad).reshape({live * B, N});
  at::Tensor grad_bias = bias_grad ? gy.narrow(0, 0, B).sum(0) : grad.new_empty({0});
  const at::Tensor rows = input.narrow(0, 0, live).reshape({live * B, input.size(2)});
  // g_W = g_yᵀ·input. With few input features (the first layer's time embedding and x) BLAS is
  // several times slower at that orientation than at (inputᵀ·g_y)ᵀ (measured with MKL: 3.2 ms
  // against 0.25 ms for 4096 rows of 4 features and 256 outputs); the transpose copied back is tiny.
  // On the CPU thin_outer takes either thin side (the first layer's input, the last one's g_y).
  at::Tensor grad_weight;
  if (cpu::thin_applies(gy, N)) {
    grad_weight = cpu::thin_outer(gy, rows);
  } else if (cpu::thin_applies(rows, input.size(2))) {
    grad_weight = cpu::thin_outer(rows, gy).t().contiguous();
  } else {
    grad_weight = input.size(2) < N ? at::mm(rows.t(), gy).t().contiguous() : at::mm(gy.t(), rows);
  }
  at::Tensor grad_input;
  if (!input_grad) {
    grad_input = grad.new_empty({0});
  } else {  // g_y·W: with few outputs (the last layer) thin_inner on the CPU
    grad_input = (cpu::thin_applies(gy, N) ? cpu::thin_inner(gy, weight) : at::mm(gy, weight))
                     .view({live, B, input.size(2)});
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace mlp
}  // namespace flowcore

TORCH_LIBRARY_FRAGMENT(flowcore, m) {
  m.def("mlp_net_fwd(Tensor h, Tensor[] weights, Tensor[] biases, str activation, float scale, int live, bool save)"
        " -> (Tensor, Tensor, Tensor[], Tensor[])");
  m.def("mlp_layer_bwd(Tensor grad, Tensor? derivatives, Tensor input, Tensor weight, bool input_grad,"
        " bool bias_grad=True) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(flowcore, CompositeExplicitAutograd, m) {
  m.impl("mlp_net_fwd", &flowcore::mlp::net_fwd);
  m.impl("mlp_layer_bwd", &flowcore::mlp::layer_bwd);
}
