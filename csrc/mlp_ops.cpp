// The fused activation of flowcore's flow-map MLP: op schemas and the CPU kernels (docs/math.md §4, §6).
//
// Semantics and shapes: mlp_act.h. One pass over the stacked rows replaces the ~10 elementwise
// torch ops (bias add, σ, σ', products, sums) of an unfused JVP layer and of its backward.
//
// CPU: rows of B split over torch's thread pool with at::parallel_for (no second OpenMP runtime);
// each row is processed in column blocks whose loops are plain, branch-free arithmetic the compiler
// vectorizes (the math and its build notes: mlp_cpu.h). The CUDA kernels are in mlp_cuda.cu; fake
// (meta) kernels are registered from Python (flowcore.nn.fused).
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "mlp_cpu.h"

FLOWCORE_FAST_BEGIN

namespace flowcore {
namespace mlp {
namespace {

using cpu::activation;
using cpu::check_cpu;
using cpu::grain;
using cpu::kBlock;

// rows [begin, end) of the forward, in place over the rows io = y: y_0 <- σ(y_0 + b),
// y_j <- σ'(y_0 + b)·y_j (every element is read before it is written)
template <typename S, int ACT>
FLOWCORE_INLINE void fwd_rows(int64_t T, int64_t B, int64_t N, S* __restrict io, const S* __restrict b,
                              int64_t begin, int64_t end) {
  alignas(64) S d1buf[kBlock];
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t c0 = 0; c0 < N; c0 += kBlock) {
      const int64_t n = std::min(kBlock, N - c0);
      S* __restrict o0 = io + i * N + c0;
      const S* __restrict bb = b + c0;
      if (T == 1) {
        for (int64_t c = 0; c < n; ++c) {
          S a, d1, d2;
          activation<S, ACT>(o0[c] + bb[c], a, d1, d2);
          o0[c] = a;
        }
        continue;
      }
      for (int64_t c = 0; c < n; ++c) {
        S a, d1, d2;
        activation<S, ACT>(o0[c] + bb[c], a, d1, d2);
        o0[c] = a;
        d1buf[c] = d1;
      }
      for (int64_t j = 1; j < T; ++j) {
        S* __restrict oj = io + (j * B + i) * N + c0;
        for (int64_t c = 0; c < n; ++c) oj[c] = d1buf[c] * oj[c];
      }
    }
  }
}

// rows [begin, end) of the backward: gy_0 = σ'·g_0 + σ''·Σ_j y_j·g_j, gy_j = σ'·g_j
template <typename S, int ACT>
FLOWCORE_INLINE void bwd_rows(int64_t T, int64_t B, int64_t N, const S* __restrict y, const S* __restrict b,
                     const S* __restrict g, S* __restrict gy, int64_t begin, int64_t end) {
  alignas(64) S d1buf[kBlock];
  alignas(64) S d2buf[kBlock];
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t c0 = 0; c0 < N; c0 += kBlock) {
      const int64_t n = std::min(kBlock, N - c0);
      const S* __restrict y0 = y + i * N + c0;
      const S* __restrict bb = b + c0;
      const S* __restrict g0 = g + i * N + c0;
      S* __restrict gy0 = gy + i * N + c0;
      if (T == 1) {
        for (int64_t c = 0; c < n; ++c) {
          S a, d1, d2;
          activation<S, ACT>(y0[c] + bb[c], a, d1, d2);
          gy0[c] = d1 * g0[c];
        }
        continue;
      }
      for (int64_t c = 0; c < n; ++c) {
        S a, d1, d2;
        activation<S, ACT>(y0[c] + bb[c], a, d1, d2);
        d1buf[c] = d1;
        d2buf[c] = d2;
        gy0[c] = d1 * g0[c];
      }
      for (int64_t j = 1; j < T; ++j) {
        const S* __restrict yj = y + (j * B + i) * N + c0;
        const S* __restrict gj = g + (j * B + i) * N + c0;
        S* __restrict gyj = gy + (j * B + i) * N + c0;
        for (int64_t c = 0; c < n; ++c) {
          gy0[c] += d2buf[c] * yj[c] * gj[c];
          gyj[c] = d1buf[c] * gj[c];
        }
      }
    }
  }
}

FLOWCORE_CLONES void fwd_f32(int act, int64_t T, int64_t B, int64_t N, float* io, const float* b, int64_t begin,
                             int64_t end) {
  FLOWCORE_BY_ACTIVATION(fwd_rows, float, T, B, N, io, b, begin, end)
}

FLOWCORE_CLONES void bwd_f32(int act, int64_t T, int64_t B, int64_t N, const float* y, const float* b,
                             const float* g, float* gy, int64_t begin, int64_t end) {
  FLOWCORE_BY_ACTIVATION(bwd_rows, float, T, B, N, y, b, g, gy, begin, end)
}

void fwd_f64(int act, int64_t T, int64_t B, int64_t N, double* io, const double* b, int64_t begin, int64_t end) {
  FLOWCORE_BY_ACTIVATION(fwd_rows, double, T, B, N, io, b, begin, end)
}

void bwd_f64(int act, int64_t T, int64_t B, int64_t N, const double* y, const double* b, const double* g,
             double* gy, int64_t begin, int64_t end) {
  FLOWCORE_BY_ACTIVATION(bwd_rows, double, T, B, N, y, b, g, gy, begin, end)
}


// mlp_act_fwd_: the forward over y's own storage (a network call's GEMM output, which nothing
// else reads), so that a layer holds its rows once, not twice, and the writes land in cache lines
// the reads just brought in
void act_fwd_inplace_cpu(at::Tensor& y, const at::Tensor& bias_in, c10::string_view activation) {
  const char* op = "flowcore::mlp_act_fwd_";
  const int act = parse_activation(std::string_view(activation.data(), activation.size()));
  const int64_t T = check_args(op, y, bias_in, nullptr);
  check_cpu(op, y);
  TORCH_CHECK(y.is_contiguous(), op, ": y is overwritten in place, so it must be contiguous");
  const at::Tensor bias = bias_in.contiguous();
  const int64_t B = y.size(1), N = y.size(2);
  if (y.numel() == 0) return;
  at::parallel_for(0, B, grain(T, N), [&](int64_t begin, int64_t end) {
    if (y.scalar_type() == at::kFloat) {
      fwd_f32(act, T, B, N, y.data_ptr<float>(), bias.const_data_ptr<float>(), begin, end);
    } else {
      fwd_f64(act, T, B, N, y.data_ptr<double>(), bias.const_data_ptr<double>(), begin, end);
    }
  });
}

at::Tensor act_fwd_cpu(const at::Tensor& y, const at::Tensor& bias, c10::string_view activation) {
  check_args("flowcore::mlp_act_fwd", y, bias, nullptr);
  check_cpu("flowcore::mlp_act_fwd", y);
  at::Tensor out = at::empty_like(y, at::MemoryFormat::Contiguous);
  out.copy_(y);
  act_fwd_inplace_cpu(out, bias, activation);
  return out;
}

at::Tensor act_bwd_cpu(const at::Tensor& y_in, const at::Tensor& bias_in, const at::Tensor& grad_in,
                       c10::string_view activation) {
  const int act = parse_activation(std::string_view(activation.data(), activation.size()));
  const int64_t T = check_args("flowcore::mlp_act_bwd", y_in, bias_in, &grad_in);
  check_cpu("flowcore::mlp_act_bwd", y_in);
  const at::Tensor y = y_in.contiguous(), bias = bias_in.contiguous(), grad = grad_in.contiguous();
  at::Tensor gy = at::empty_like(y, at::MemoryFormat::Contiguous);
  const int64_t B = y.size(1), N = y.size(2);
  if (gy.numel() == 0) return gy;
  at::parallel_for(0, B, grain(T, N), [&](int64_t begin, int64_t end) {
    if (y.scalar_type() == at::kFloat) {
      bwd_f32(act, T, B, N, y.const_data_ptr<float>(), bias.const_data_ptr<float>(), grad.const_data_ptr<float>(),
              gy.data_ptr<float>(), begin, end);
    } else {
      bwd_f64(act, T, B, N, y.const_data_ptr<double>(), bias.const_data_ptr<double>(),
              grad.const_data_ptr<double>(), gy.data_ptr<double>(), begin, end);
    }
  });
  return gy;
}

}  // namespace
}  // namespace mlp
}  // namespace flowcore

FLOWCORE_FAST_END

TORCH_LIBRARY_FRAGMENT(flowcore, m) {
  m.def("mlp_act_fwd(Tensor y, Tensor bias, str activation) -> Tensor");
  m.def("mlp_act_fwd_(Tensor(a!) y, Tensor bias, str activation) -> ()");
  m.def("mlp_act_bwd(Tensor y, Tensor bias, Tensor grad, str activation) -> Tensor");
}

TORCH_LIBRARY_IMPL(flowcore, CPU, m) {
  m.impl("mlp_act_fwd", &flowcore::mlp::act_fwd_cpu);
  m.impl("mlp_act_fwd_", &flowcore::mlp::act_fwd_inplace_cpu);
  m.impl("mlp_act_bwd", &flowcore::mlp::act_bwd_cpu);
}
