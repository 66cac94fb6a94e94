// The fused activation of flowcore's flow-map MLP (docs/math.md §4, §6): shared by the CPU and CUDA
// launchers of
//
//   flowcore::mlp_act_fwd(Tensor y, Tensor bias, str activation) -> Tensor
//   flowcore::mlp_act_bwd(Tensor y, Tensor bias, Tensor grad, str activation) -> Tensor
//   flowcore::mlp_act_fwd_save(Tensor y, Tensor bias, str activation, int live) -> (Tensor, Tensor)
//   flowcore::mlp_act_bwd_saved(Tensor saved, Tensor grad) -> Tensor      (the last two: mlp_saved.cpp)
// and the in-place forms a network call runs over the buffers it owns: mlp_act_fwd_ (y becomes the
// output), mlp_act_fwd_save_ (the same, returns `saved`), mlp_act_bwd_saved_ (g_y over grad,
// returns the bias gradient).
//
// y is the stacked GEMM output (T, B, N) of one layer: row block 0 the primal pre-activation
// (without its bias), blocks 1..T-1 the tangents ẏ_j (no bias). With z = y_0 + bias:
//   forward   a = σ(z),  ȧ_j = σ'(z)·ẏ_j
//   backward  g_y0 = σ'(z)·g_a + σ''(z)·Σ_j ẏ_j·g_ȧj,  g_ẏj = σ'(z)·g_ȧj   (g_bias is Σ_rows g_y0)
// σ ∈ {gelu (exact erf GELU, as torch.nn.GELU()), silu, tanh}; σ', σ'' are analytic (below).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>
#include <string_view>

namespace flowcore {
namespace mlp {

enum Activation : int { kGelu = 0, kSilu = 1, kTanh = 2 };

inline Activation parse_activation(std::string_view name) {
  if (name == "gelu") return kGelu;
  if (name == "silu") return kSilu;
  if (name == "tanh") return kTanh;
  TORCH_CHECK(false, "flowcore::mlp_act: unknown activation '", std::string(name), "' (gelu, silu or tanh)");
  return kGelu;  // not reached
}

// Shapes and dtypes; returns T (the number of stacked row blocks).
inline int64_t check_args(const char* op, const at::Tensor& y, const at::Tensor& bias, const at::Tensor* grad) {
  TORCH_CHECK(y.dim() == 3 && y.size(0) >= 1, op, ": y must be stacked rows (T >= 1, B, N), got shape ", y.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == y.size(2), op, ": bias must have shape (N,) = (", y.size(2),
              ",), got ", bias.sizes());
  TORCH_CHECK(bias.scalar_type() == y.scalar_type() && bias.device() == y.device(), op,
              ": bias must have y's dtype and device (", y.scalar_type(), ", ", y.device(), "), got ",
              bias.scalar_type(), ", ", bias.device());
  if (grad != nullptr) {
    TORCH_CHECK(grad->sizes() == y.sizes(), op, ": grad must have y's shape ", y.sizes(), ", got ", grad->sizes());
    TORCH_CHECK(grad->scalar_type() == y.scalar_type() && grad->device() == y.device(), op,
                ": grad must have y's dtype and device");
  }
  return y.size(0);
}

// Row blocks of mlp_act_fwd_save's `saved` for `live` differentiated blocks: [σ'] or [σ'; σ''; ẏ_1..].
inline int64_t saved_blocks(int64_t live) { return live == 1 ? 1 : live + 1; }

inline void check_saved(const char* op, const at::Tensor& saved, const at::Tensor& grad) {
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) >= 1, op, ": grad must be stacked rows (live >= 1, B, N), got shape ",
              grad.sizes());
  const int64_t live = grad.size(0);
  TORCH_CHECK(saved.dim() == 3 && saved.size(0) == saved_blocks(live) && saved.size(1) == grad.size(1) &&
                  saved.size(2) == grad.size(2),
              op, ": saved must be (", saved_blocks(live), ", ", grad.size(1), ", ", grad.size(2), ") for ", live,
              " live row blocks, got shape ", saved.sizes());
  TORCH_CHECK(saved.scalar_type() == grad.scalar_type() && saved.device() == grad.device(), op,
              ": saved must have grad's dtype and device (", grad.scalar_type(), ", ", grad.device(), "), got ",
              saved.scalar_type(), ", ", saved.device());
}

}  // namespace mlp
}  // namespace flowcore
