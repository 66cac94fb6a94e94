// The fused activation of flowcore's flow-map MLP: CUDA kernels (docs/math.md §4, §6).
//
// Same ops as the CPU ones (schemas in mlp_ops.cpp and mlp_saved.cpp, semantics in mlp_act.h). One thread per
// (row, column) of the primal block: it reads y_0 and the bias once, evaluates σ, σ', σ'' once and
// serves every stacked tangent row block, so an unfused layer's ~10 memory-bound elementwise
// passes become one. float32/float64, and float16/bfloat16 with float math (at::opmath_type).
// Launched on the current stream of y's device. Compiled only when torch has CUDA and nvcc exists.
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

#include "mlp_act.h"

namespace flowcore {
namespace mlp {
namespace {

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_erfc(float x) { return erfcf(x); }
__device__ __forceinline__ double dev_erfc(double x) { return erfc(x); }
__device__ __forceinline__ float dev_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dev_tanh(double x) { return tanh(x); }

// σ(z), σ'(z), σ''(z); the same formulas as the CPU kernels (mlp_cpu.h), with CUDA's libm.
template <typename A, int ACT>
__device__ __forceinline__ void activation(A z, A& a, A& d1, A& d2) {
  if constexpr (ACT == kGelu) {
    const A e = dev_erfc((z < A(0) ? -z : z) * A(0.70710678118654752440));
    const A cdf = z < A(0) ? A(0.5) * e : A(1) - A(0.5) * e;
    const A pdf = dev_exp(A(-0.5) * z * z) * A(0.39894228040143267794);
    a = z * cdf;
    d1 = cdf + z * pdf;
    d2 = pdf * (A(2) - z * z);
  } else if constexpr (ACT == kSilu) {
    const A e = dev_exp(z < A(0) ? z : -z);
    const A u = A(1) / (A(1) + e), w = e * u;
    const A p = z < A(0) ? w : u, pm = z < A(0) ? u : w;
    const A q = u * w;
    a = z * p;
    d1 = p + z * q;
    d2 = q * (A(2) + z * (pm - p));
  } else {
    const A th = dev_tanh(z);
    const A e = dev_exp(A(-2) * (z < A(0) ? -z : z));
    const A r = A(1) / (A(1) + e);
    a = th;
    d1 = A(4) * e * r * r;
    d2 = A(-2) * th * d1;
  }
}

// mlp_act_fwd(_), in place over io = y: each thread reads its elements before it writes them
template <typename scalar_t, int ACT>
__global__ void fwd_kernel(int64_t T, int64_t BN, int64_t N, scalar_t* __restrict__ io,
                           const scalar_t* __restrict__ bias) {
  using A = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < BN; i += stride) {
    A a, d1, d2;
    activation<A, ACT>(static_cast<A>(io[i]) + static_cast<A>(bias[i % N]), a, d1, d2);
    io[i] = static_cast<scalar_t>(a);
    for (int64_t j = 1; j < T; ++j) io[j * BN + i] = static_cast<scalar_t>(d1 * static_cast<A>(io[j * BN + i]));
  }
}

template <typename scalar_t, int ACT>
__global__ void bwd_kernel(int64_t T, int64_t BN, int64_t N, const scalar_t* __restrict__ y,
                           const scalar_t* __restrict__ bias, const scalar_t* __restrict__ g,
                           scalar_t* __restrict__ gy) {
  using A = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < BN; i += stride) {
    A a, d1, d2;
    activation<A, ACT>(static_cast<A>(y[i]) + static_cast<A>(bias[i % N]), a, d1, d2);
    A acc = d1 * static_cast<A>(g[i]);
    for (int64_t j = 1; j < T; ++j) {
      const A gj = static_cast<A>(g[j * BN + i]);
      acc += d2 * static_cast<A>(y[j * BN + i]) * gj;
      gy[j * BN + i] = static_cast<scalar_t>(d1 * gj);
    }
    gy[i] = static_cast<scalar_t>(acc);
  }
}

// mlp_act_fwd_save(_) (mlp_saved.cpp), in place over io = y as fwd_kernel, and
// saved = [σ'] or [σ'; σ''; ẏ_1..ẏ_{live−1}]
template <typename scalar_t, int ACT>
__global__ void fwd_save_kernel(int64_t T, int64_t live, int64_t BN, int64_t N, scalar_t* __restrict__ io,
                                const scalar_t* __restrict__ bias, scalar_t* __restrict__ saved) {
  using A = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < BN; i += stride) {
    A a, d1, d2;
    activation<A, ACT>(static_cast<A>(io[i]) + static_cast<A>(bias[i % N]), a, d1, d2);
    io[i] = static_cast<scalar_t>(a);
    saved[i] = static_cast<scalar_t>(d1);
    if (live > 1) saved[BN + i] = static_cast<scalar_t>(d2);
    for (int64_t j = 1; j < T; ++j) {
      const scalar_t yj = io[j * BN + i];
      io[j * BN + i] = static_cast<scalar_t>(d1 * static_cast<A>(yj));
      if (j < live) saved[(1 + j) * BN + i] = yj;
    }
  }
}

// mlp_act_bwd_saved: g_y0 = σ'·g_0 + σ''·Σ_j ẏ_j·g_j, g_ẏj = σ'·g_j (no activation evaluated).
// gy may be g (mlp_act_bwd_saved_): each thread reads its elements before it writes them, and the
// two pointers are not __restrict__.
template <typename scalar_t>
__global__ void bwd_saved_kernel(int64_t live, int64_t BN, const scalar_t* __restrict__ saved, const scalar_t* g,
                                 scalar_t* gy) {
  using A = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < BN; i += stride) {
    const A d1 = static_cast<A>(saved[i]);
    A acc = d1 * static_cast<A>(g[i]);
    if (live > 1) {
      const A d2 = static_cast<A>(saved[BN + i]);
      for (int64_t j = 1; j < live; ++j) {
        const A gj = static_cast<A>(g[j * BN + i]);
        acc += d2 * static_cast<A>(saved[(1 + j) * BN + i]) * gj;
        gy[j * BN + i] = static_cast<scalar_t>(d1 * gj);
      }
    }
    gy[i] = static_cast<scalar_t>(acc);
  }
}

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t{1} << 16));
}

void act_fwd_inplace_cuda(at::Tensor& y, const at::Tensor& bias_in, c10::string_view activation) {
  const char* op = "flowcore::mlp_act_fwd_";
  const int act = parse_activation(std::string_view(activation.data(), activation.size()));
  const int64_t T = check_args(op, y, bias_in, nullptr);
  TORCH_CHECK(y.is_cuda(), op, " (CUDA): y is on ", y.device());
  TORCH_CHECK(y.is_contiguous(), op, ": y is overwritten in place, so it must be contiguous");
  const c10::cuda::CUDAGuard guard(y.device());
  const at::Tensor bias = bias_in.contiguous();
  const int64_t N = y.size(2), BN = y.size(1) * N;
  if (y.numel() == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(y.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "flowcore::mlp_act_fwd_", [&] {
    auto* io = y.data_ptr<scalar_t>();
    const auto* bp = bias.const_data_ptr<scalar_t>();
    switch (act) {
      case kGelu: fwd_kernel<scalar_t, kGelu><<<blocks_for(BN), kThreads, 0, stream>>>(T, BN, N, io, bp); break;
      case kSilu: fwd_kernel<scalar_t, kSilu><<<blocks_for(BN), kThreads, 0, stream>>>(T, BN, N, io, bp); break;
      default: fwd_kernel<scalar_t, kTanh><<<blocks_for(BN), kThreads, 0, stream>>>(T, BN, N, io, bp); break;
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor act_fwd_cuda(const at::Tensor& y, const at::Tensor& bias, c10::string_view activation) {
  check_args("flowcore::mlp_act_fwd", y, bias, nullptr);
  TORCH_CHECK(y.is_cuda(), "flowcore::mlp_act_fwd (CUDA): y is on ", y.device());
  at::Tensor out = at::empty_like(y, at::MemoryFormat::Contiguous);
  out.copy_(y);
  act_fwd_inplace_cuda(out, bias, activation);
  return out;
}

at::Tensor act_bwd_cuda(const at::Tensor& y_in, const at::Tensor& bias_in, const at::Tensor& grad_in,
                        c10::string_view activation) {
  const int act = parse_activation(std::string_view(activation.data(), activation.size()));
  const int64_t T = check_args("flowcore::mlp_act_bwd", y_in, bias_in, &grad_in);
  TORCH_CHECK(y_in.is_cuda(), "flowcore::mlp_act_bwd (CUDA): y is on ", y_in.device());
  const c10::cuda::CUDAGuard guard(y_in.device());
  const at::Tensor y = y_in.contiguous(), bias = bias_in.contiguous(), grad = grad_in.contiguous();
  at::Tensor gy = at::empty_like(y, at::MemoryFormat::Contiguous);
  const int64_t N = y.size(2), BN = y.size(1) * N;
  if (gy.numel() == 0) return gy;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(y.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "flowcore::mlp_act_bwd", [&] {
    const auto* yp = y.const_data_ptr<scalar_t>();
    const auto* bp = bias.const_data_ptr<scalar_t>();
    const auto* gp = grad.const_data_ptr<scalar_t>();
    auto* op = gy.data_ptr<scalar_t>();
    switch (act) {
      case kGelu: bwd_kernel<scalar_t, kGelu><<<blocks_for(BN), kThreads, 0, stream>>>(T, BN, N, yp, bp, gp, op); break;
      case kSilu: bwd_kernel<scalar_t, kSilu><<<blocks_for(BN), kThreads, 0, stream>>>(T, BN, N, yp, bp, gp, op); break;
      default: bwd_kernel<scalar_t, kTanh><<<blocks_for(BN), kThreads, 0, stream>>>(T, BN, N, yp, bp, gp, op); break;
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return gy;
}

at::Tensor act_fwd_save_inplace_cuda(at::Tensor& y, const at::Tensor& bias_in, c10::string_view activation,
                                     int64_t live) {
  const char* op = "flowcore::mlp_act_fwd_save_";
  const int act = parse_activation(std::string_view(activation.data(), activation.size()));
  const int64_t T = check_args(op, y, bias_in, nullptr);
  TORCH_CHECK(y.is_cuda(), op, " (CUDA): y is on ", y.device());
  TORCH_CHECK(live >= 1 && live <= T, op, ": live must count 1..T = ", T, " row blocks, got ", live);
  TORCH_CHECK(y.is_contiguous(), op, ": y is overwritten in place, so it must be contiguous");
  const c10::cuda::CUDAGuard guard(y.device());
  const at::Tensor bias = bias_in.contiguous();
  at::Tensor saved = at::empty({saved_blocks(live), y.size(1), y.size(2)}, y.options());
  const int64_t N = y.size(2), BN = y.size(1) * N;
  if (y.numel() == 0) return saved;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(y.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "flowcore::mlp_act_fwd_save_", [&] {
    auto* io = y.data_ptr<scalar_t>();
    const auto* bp = bias.const_data_ptr<scalar_t>();
    auto* sp = saved.data_ptr<scalar_t>();
    const unsigned blocks = blocks_for(BN);
    switch (act) {
      case kGelu: fwd_save_kernel<scalar_t, kGelu><<<blocks, kThreads, 0, stream>>>(T, live, BN, N, io, bp, sp); break;
      case kSilu: fwd_save_kernel<scalar_t, kSilu><<<blocks, kThreads, 0, stream>>>(T, live, BN, N, io, bp, sp); break;
      default: fwd_save_kernel<scalar_t, kTanh><<<blocks, kThreads, 0, stream>>>(T, live, BN, N, io, bp, sp); break;
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return saved;
}

std::tuple<at::Tensor, at::Tensor> act_fwd_save_cuda(const at::Tensor& y, const at::Tensor& bias,
                                                     c10::string_view activation, int64_t live) {
  check_args("flowcore::mlp_act_fwd_save", y, bias, nullptr);
  TORCH_CHECK(y.is_cuda(), "flowcore::mlp_act_fwd_save (CUDA): y is on ", y.device());
  at::Tensor out = at::empty_like(y, at::MemoryFormat::Contiguous);
  out.copy_(y);
  at::Tensor saved = act_fwd_save_inplace_cuda(out, bias, activation, live);
  return {out, saved};
}

at::Tensor act_bwd_saved_cuda(const at::Tensor& saved_in, const at::Tensor& grad_in) {
  const char* op = "flowcore::mlp_act_bwd_saved";
  check_saved(op, saved_in, grad_in);
  TORCH_CHECK(grad_in.is_cuda(), op, " (CUDA): grad is on ", grad_in.device());
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor saved = saved_in.contiguous(), grad = grad_in.contiguous();
  at::Tensor gy = at::empty_like(grad, at::MemoryFormat::Contiguous);
  const int64_t live = grad.size(0), BN = grad.size(1) * grad.size(2);
  if (gy.numel() == 0) return gy;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(grad.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "flowcore::mlp_act_bwd_saved", [&] {
    bwd_saved_kernel<scalar_t><<<blocks_for(BN), kThreads, 0, stream>>>(
        live, BN, saved.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), gy.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return gy;
}

// g_y over grad, and the bias gradient (the primal block's column sums) by at::sum
at::Tensor act_bwd_saved_inplace_cuda(const at::Tensor& saved_in, at::Tensor& grad) {
  const char* op = "flowcore::mlp_act_bwd_saved_";
  check_saved(op, saved_in, grad);
  TORCH_CHECK(grad.is_cuda(), op, " (CUDA): grad is on ", grad.device());
  TORCH_CHECK(grad.is_contiguous(), op, ": grad is overwritten in place, so it must be contiguous");
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor saved = saved_in.contiguous();
  const int64_t live = grad.size(0), BN = grad.size(1) * grad.size(2);
  if (grad.numel() > 0) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream(grad.device().index()).stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "flowcore::mlp_act_bwd_saved_", [&] {
      auto* gp = grad.data_ptr<scalar_t>();
      bwd_saved_kernel<scalar_t><<<blocks_for(BN), kThreads, 0, stream>>>(live, BN, saved.const_data_ptr<scalar_t>(),
                                                                          gp, gp);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return grad.select(0, 0).sum(0);
}

}  // namespace
}  // namespace mlp
}  // namespace flowcore

TORCH_LIBRARY_IMPL(flowcore, CUDA, m) {
  m.impl("mlp_act_fwd", &flowcore::mlp::act_fwd_cuda);
  m.impl("mlp_act_fwd_", &flowcore::mlp::act_fwd_inplace_cuda);
  m.impl("mlp_act_bwd", &flowcore::mlp::act_bwd_cuda);
  m.impl("mlp_act_fwd_save", &flowcore::mlp::act_fwd_save_cuda);
  m.impl("mlp_act_fwd_save_", &flowcore::mlp::act_fwd_save_inplace_cuda);
  m.impl("mlp_act_bwd_saved", &flowcore::mlp::act_bwd_saved_cuda);
  m.impl("mlp_act_bwd_saved_", &flowcore::mlp::act_bwd_saved_inplace_cuda);
}
