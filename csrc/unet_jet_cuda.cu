// The image UNet's pointwise jets: CUDA kernels (the math and the layout: unet_jet.h; schemas and
// checks: unet_jet_cpu.cpp).
//
// The host side: checks, outputs, and launches of the kernels of unet_jet_cuda.cuh on the current stream
// of the inputs' device. float32/float64, and float16/bfloat16 with float math (at::opmath_type).
// Compiled only when torch has CUDA and nvcc exists.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "unet_jet_cuda.cuh"

namespace flowcore {
namespace unet {
namespace {

using gpu::kThreads;

// -- host side ----------------------------------------------------------------------------------------
int64_t check_cuda(const char* op, const at::Tensor& x0, const at::Tensor& t) {
  TORCH_CHECK(x0.is_cuda() && t.device() == x0.device(), op, " (CUDA): inputs must be on one CUDA device, got ",
              x0.device(), " and ", t.device());
  TORCH_CHECK(t.dim() == x0.dim() && x0.size(0) >= 1 && t.size(0) % x0.size(0) == 0 &&
                  t.sizes().slice(1) == x0.sizes().slice(1) && t.scalar_type() == x0.scalar_type(),
              op, ": the tangents must be (n·B, …) of the primal's dtype for the primal ", x0.sizes(), ", got ",
              t.sizes());
  return t.size(0) / x0.size(0);
}

at::Tensor stacked_like(const at::Tensor& x0, int64_t blocks) {
  auto sizes = x0.sizes().vec();
  sizes[0] *= blocks;
  return at::empty(sizes, x0.options());
}

int grid_for(int64_t P) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((P + kThreads - 1) / kThreads, 65535)));
}

at::Tensor silu_jet_cuda(const at::Tensor& x0_in, const at::Tensor& t_in, double gain, bool with_primal) {
  const int64_t n = check_cuda("flowcore::unet_silu_jet", x0_in, t_in);
  const c10::cuda::CUDAGuard guard(x0_in.device());
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous();
  at::Tensor out = stacked_like(x0, n + (with_primal ? 1 : 0));
  const int64_t P = x0.numel();
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "flowcore::unet_silu_jet", [&] {
    using A = at::opmath_type<scalar_t>;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    gpu::silu_fwd_kernel<scalar_t, A><<<grid_for(P), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x0.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), with_primal ? o : nullptr,
        with_primal ? o + P : o, P, n, A(gain));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor silu_jet_bwd_cuda(const at::Tensor& x0_in, const at::Tensor& t_in, const at::Tensor& g_in, double gain) {
  const int64_t n = check_cuda("flowcore::unet_silu_jet_bwd", x0_in, t_in);
  TORCH_CHECK(g_in.device() == x0_in.device() && g_in.scalar_type() == x0_in.scalar_type() &&
                  g_in.size(0) == (n + 1) * x0_in.size(0) && g_in.numel() == (n + 1) * x0_in.numel(),
              "flowcore::unet_silu_jet_bwd: grad must be the (1 + n)·B stack, got ", g_in.sizes());
  const c10::cuda::CUDAGuard guard(x0_in.device());
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous(), g = g_in.contiguous();
  at::Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  const int64_t P = x0.numel();
  if (P == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "flowcore::unet_silu_jet_bwd", [&] {
    using A = at::opmath_type<scalar_t>;
    gpu::silu_bwd_kernel<scalar_t, A><<<grid_for(P), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x0.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), P, n, A(gain));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor film_silu_jet_cuda(const at::Tensor& y0_in, const at::Tensor& l0_in, const at::Tensor& yt_in,
                              const at::Tensor& lt_in, double gain, bool with_primal) {
  const int64_t n = check_cuda("flowcore::unet_film_silu_jet", y0_in, yt_in);
  TORCH_CHECK(l0_in.device() == y0_in.device() && lt_in.device() == y0_in.device() && l0_in.dim() == 2 &&
                  l0_in.size(0) == y0_in.size(0) && l0_in.size(1) == y0_in.size(1) &&
                  lt_in.numel() == n * l0_in.numel(),
              "flowcore::unet_film_silu_jet: l0 must be (B, C) and lt (n·B, C) on y0's device, got ", l0_in.sizes(),
              ", ", lt_in.sizes());
  const c10::cuda::CUDAGuard guard(y0_in.device());
  const at::Tensor y0 = y0_in.contiguous(), l0 = l0_in.contiguous(), yt = yt_in.contiguous(), lt = lt_in.contiguous();
  at::Tensor out = stacked_like(y0, n + (with_primal ? 1 : 0));
  const int64_t R = l0.numel(), P = y0.numel(), Sz = R ? P / R : 0;
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y0.scalar_type(), "flowcore::unet_film_silu_jet", [&] {
    using A = at::opmath_type<scalar_t>;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    gpu::film_silu_fwd_kernel<scalar_t, A><<<grid_for(P), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        y0.const_data_ptr<scalar_t>(), l0.const_data_ptr<scalar_t>(), yt.const_data_ptr<scalar_t>(),
        lt.const_data_ptr<scalar_t>(), with_primal ? o : nullptr, with_primal ? o + P : o, R, Sz, n, A(gain));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> film_silu_jet_bwd_cuda(const at::Tensor& y0_in, const at::Tensor& l0_in,
                                                          const at::Tensor& yt_in, const at::Tensor& lt_in,
                                                          const at::Tensor& g_in, double gain) {
  const int64_t n = check_cuda("flowcore::unet_film_silu_jet_bwd", y0_in, yt_in);
  TORCH_CHECK(n <= kMaxTangents, "flowcore::unet_film_silu_jet_bwd (CUDA): at most ", kMaxTangents,
              " tangent blocks, got ", n);
  TORCH_CHECK(g_in.device() == y0_in.device() && g_in.scalar_type() == y0_in.scalar_type() &&
                  g_in.numel() == (n + 1) * y0_in.numel() && l0_in.numel() * n == lt_in.numel(),
              "flowcore::unet_film_silu_jet_bwd: grad must be the (1 + n)·B stack, got ", g_in.sizes());
  const c10::cuda::CUDAGuard guard(y0_in.device());
  const at::Tensor y0 = y0_in.contiguous(), l0 = l0_in.contiguous(), yt = yt_in.contiguous(), lt = lt_in.contiguous();
  const at::Tensor g = g_in.contiguous();
  at::Tensor gy = at::empty_like(g, at::MemoryFormat::Contiguous);
  at::Tensor gl = stacked_like(l0, n + 1);
  const int64_t R = l0.numel(), Sz = R ? y0.numel() / R : 0;
  if (R == 0) return {gy, gl};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y0.scalar_type(), "flowcore::unet_film_silu_jet_bwd",
                                  [&] {
    using A = at::opmath_type<scalar_t>;
    const auto stream = c10::cuda::getCurrentCUDAStream();
    gpu::film_silu_bwd_kernel<scalar_t, A><<<static_cast<unsigned>(R), kThreads, 0, stream>>>(
        y0.const_data_ptr<scalar_t>(), l0.const_data_ptr<scalar_t>(), yt.const_data_ptr<scalar_t>(),
        lt.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), gy.mutable_data_ptr<scalar_t>(),
        gl.mutable_data_ptr<scalar_t>(), R, Sz, n, A(gain));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gy, gl};
}

std::tuple<at::Tensor, at::Tensor> clip_jet_cuda(const at::Tensor& x0_in, const at::Tensor& t_in, double bound,
                                                 bool with_primal) {
  const int64_t n = check_cuda("flowcore::unet_clip_jet", x0_in, t_in);
  const c10::cuda::CUDAGuard guard(x0_in.device());
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous();
  at::Tensor out = stacked_like(x0, n + (with_primal ? 1 : 0));
  at::Tensor inside = at::empty(x0.sizes(), x0.options().dtype(at::kBool));
  const int64_t P = x0.numel();
  if (P == 0) return {out, inside};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "flowcore::unet_clip_jet", [&] {
    using A = at::opmath_type<scalar_t>;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    gpu::clip_fwd_kernel<scalar_t, A><<<grid_for(P), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x0.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), with_primal ? o : nullptr,
        with_primal ? o + P : o, inside.mutable_data_ptr<bool>(), P, n, A(bound));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, inside};
}

at::Tensor pixel_norm_jet_cuda(const at::Tensor& x0_in, const at::Tensor& t_in, double eps, bool with_primal) {
  const int64_t n = check_cuda("flowcore::unet_pixel_norm_jet", x0_in, t_in);
  TORCH_CHECK(x0_in.dim() == 3, "flowcore::unet_pixel_norm_jet: the primal must be (O, C, I), got ", x0_in.sizes());
  const c10::cuda::CUDAGuard guard(x0_in.device());
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous();
  at::Tensor out = stacked_like(x0, n + (with_primal ? 1 : 0));
  const int64_t O = x0.size(0), C = x0.size(1), I = x0.size(2);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "flowcore::unet_pixel_norm_jet", [&] {
    using A = at::opmath_type<scalar_t>;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    gpu::pixel_norm_fwd_kernel<scalar_t, A><<<grid_for(O * I), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x0.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), with_primal ? o : nullptr,
        with_primal ? o + x0.numel() : o, O, C, I, n, A(eps));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor pixel_norm_jet_bwd_cuda(const at::Tensor& x0_in, const at::Tensor& t_in, const at::Tensor& g_in,
                                   double eps) {
  const int64_t n = check_cuda("flowcore::unet_pixel_norm_jet_bwd", x0_in, t_in);
  TORCH_CHECK(x0_in.dim() == 3, "flowcore::unet_pixel_norm_jet_bwd: the primal must be (O, C, I), got ",
              x0_in.sizes());
  TORCH_CHECK(n <= kMaxTangents, "flowcore::unet_pixel_norm_jet_bwd (CUDA): at most ", kMaxTangents,
              " tangent blocks, got ", n);
  TORCH_CHECK(g_in.device() == x0_in.device() && g_in.scalar_type() == x0_in.scalar_type() &&
                  g_in.numel() == (n + 1) * x0_in.numel(),
              "flowcore::unet_pixel_norm_jet_bwd: grad must be the (1 + n)·O stack, got ", g_in.sizes());
  const c10::cuda::CUDAGuard guard(x0_in.device());
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous(), g = g_in.contiguous();
  at::Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  const int64_t O = x0.size(0), C = x0.size(1), I = x0.size(2);
  if (x0.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "flowcore::unet_pixel_norm_jet_bwd",
                                  [&] {
    using A = at::opmath_type<scalar_t>;
    gpu::pixel_norm_bwd_kernel<scalar_t, A><<<grid_for(O * I), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x0.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), O, C, I, n, A(eps));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// every weight's rows (grads empty) or their gradients: one launch per weight, a block per row
std::vector<at::Tensor> unit_rows_cuda_impl(const char* op, at::TensorList weights, at::TensorList grads,
                                            double floor) {
  const bool backward = !grads.empty();
  TORCH_CHECK(!backward || grads.size() == weights.size(), op, ": ", grads.size(), " gradients for ", weights.size(),
              " weights");
  std::vector<at::Tensor> outs;
  for (size_t k = 0; k < weights.size(); ++k) {
    const at::Tensor w = weights[k].contiguous();
    TORCH_CHECK(w.is_cuda() && w.dim() >= 1 && w.size(0) >= 1, op, " (CUDA): weight ", k,
                " must be a CUDA tensor with at least one row, got ", w.sizes(), " on ", w.device());
    const at::Tensor g = backward ? grads[k].contiguous() : at::Tensor();
    TORCH_CHECK(!backward || (g.sizes() == w.sizes() && g.scalar_type() == w.scalar_type() &&
                              g.device() == w.device()),
                op, ": gradient ", k, " must be ", w.sizes(), " ", w.scalar_type(), " on ", w.device());
    const c10::cuda::CUDAGuard guard(w.device());
    at::Tensor out = at::empty_like(w, at::MemoryFormat::Contiguous);
    const int64_t rows = w.size(0), cols = w.numel() / rows;
    if (cols > 0) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "flowcore::unet_unit_rows", [&] {
        using A = at::opmath_type<scalar_t>;
        gpu::unit_rows_kernel<scalar_t, A><<<static_cast<unsigned>(rows), kThreads, 0,
                                             c10::cuda::getCurrentCUDAStream()>>>(
            w.const_data_ptr<scalar_t>(), backward ? g.const_data_ptr<scalar_t>() : nullptr,
            out.mutable_data_ptr<scalar_t>(), cols, A(floor));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    outs.push_back(out);
  }
  return outs;
}

std::vector<at::Tensor> unit_rows_cuda(at::TensorList weights, double floor) {
  return unit_rows_cuda_impl("flowcore::unet_unit_rows", weights, {}, floor);
}

std::vector<at::Tensor> unit_rows_bwd_cuda(at::TensorList weights, at::TensorList grads, double floor) {
  TORCH_CHECK(grads.size() == weights.size(), "flowcore::unet_unit_rows_bwd: ", grads.size(), " gradients for ",
              weights.size(), " weights");
  return unit_rows_cuda_impl("flowcore::unet_unit_rows_bwd", weights, grads, floor);
}

}  // namespace
}  // namespace unet
}  // namespace flowcore

TORCH_LIBRARY_IMPL(flowcore, CUDA, m) {
  m.impl("unet_silu_jet", &flowcore::unet::silu_jet_cuda);
  m.impl("unet_silu_jet_bwd", &flowcore::unet::silu_jet_bwd_cuda);
  m.impl("unet_film_silu_jet", &flowcore::unet::film_silu_jet_cuda);
  m.impl("unet_film_silu_jet_bwd", &flowcore::unet::film_silu_jet_bwd_cuda);
  m.impl("unet_clip_jet", &flowcore::unet::clip_jet_cuda);
  m.impl("unet_pixel_norm_jet", &flowcore::unet::pixel_norm_jet_cuda);
  m.impl("unet_pixel_norm_jet_bwd", &flowcore::unet::pixel_norm_jet_bwd_cuda);
  m.impl("unet_unit_rows", &flowcore::unet::unit_rows_cuda);
  m.impl("unet_unit_rows_bwd", &flowcore::unet::unit_rows_bwd_cuda);
}
