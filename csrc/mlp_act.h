// The fused activation of flowcore's flow-map MLP (MATH.md §4, §6): shared by the CPU and CUDA
// launchers of
//
//   flowcore::mlp_act_fwd(Tensor y, Tensor bias, str activation) -> Tensor
//   flowcore::mlp_act_bwd(Tensor y, Tensor bias, Tensor grad, str activation) -> Tensor
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

}  // namespace mlp
}  // namespace flowcore
