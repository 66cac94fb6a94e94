// The fused activation with its derivatives saved by the forward, for a backward that evaluates no
// activation (docs/math.md §4, §6): the layers of flowcore::mlp_net_fwd / _bwd (mlp_net.cpp).
//
//   flowcore::mlp_act_fwd_save(Tensor y, Tensor bias, str activation, int live) -> (Tensor out, Tensor saved)
//   flowcore::mlp_act_fwd_save_(Tensor(a!) y, Tensor bias, str activation, int live) -> Tensor saved
//   flowcore::mlp_act_bwd_saved(Tensor saved, Tensor grad) -> Tensor
//   flowcore::mlp_act_bwd_saved_(Tensor saved, Tensor(a!) grad) -> Tensor grad_bias
//
// y is (T, B, N) stacked rows as for mlp_act_fwd (block 0 the primal pre-activation without its
// bias, blocks 1..T−1 tangents) and `out` is mlp_act_fwd's. Only the first `live` blocks are ever
// differentiated, so `saved` holds what their backward needs, with z = y_0 + bias:
//   live = 1:  [σ'(z)]                               (1, B, N)
//   live ≥ 2:  [σ'(z); σ''(z); ẏ_1; …; ẏ_{live−1}]    (live + 1, B, N)
// and mlp_act_bwd_saved(saved, g) with g = (g_0, …, g_{live−1}) is mlp_act_bwd's result over those
// blocks: g_y0 = σ'·g_0 + σ''·Σ_j ẏ_j·g_j, g_ẏj = σ'·g_j — a pure multiply-add stream. σ, σ', σ''
// share their exp / erfc / tanh, so the forward computes them at little more than σ's cost, and
// the backward (which mlp_act_bwd spends on re-evaluating them) costs a memory pass.
// mlp_act_bwd_saved_ is the backward of a network call (flowcore.nn.mlp_call): it writes g_y over
// `grad` (the GEMM output the backward owns; no new block, and the writes hit cache lines the
// reads just brought in) and returns the layer's bias gradient Σ_rows g_y0, summed in the same
// pass instead of a second pass over g_y. Its partial sums are per fixed 64-row slab, in double,
// added in slab order: the result does not depend on the thread count. The CUDA kernels are in
// mlp_cuda.cu.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <tuple>

#include "mlp_cpu.h"

FLOWCORE_FAST_BEGIN

namespace flowcore {
namespace mlp {
namespace {

using cpu::activation;
using cpu::check_cpu;
using cpu::grain;
using cpu::kBlock;

// rows [begin, end), in place over the rows io = y: out as mlp_act_fwd; saved as above (a live
// tangent is copied to `saved` before its rows are overwritten)
template <typename S, int ACT>
FLOWCORE_INLINE void fwd_save_rows(int64_t T, int64_t live, int64_t B, int64_t N, S* __restrict io,
                                   const S* __restrict b, S* __restrict saved, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t c0 = 0; c0 < N; c0 += kBlock) {
      const int64_t n = std::min(kBlock, N - c0);
      S* __restrict o0 = io + i * N + c0;
      const S* __restrict bb = b + c0;
      S* __restrict d1s = saved + i * N + c0;
      if (live == 1) {
        for (int64_t c = 0; c < n; ++c) {
          S a, d1, d2;
          activation<S, ACT>(o0[c] + bb[c], a, d1, d2);
          o0[c] = a;
          d1s[c] = d1;
        }
      } else {
        S* __restrict d2s = saved + (B + i) * N + c0;
        for (int64_t c = 0; c < n; ++c) {
          S a, d1, d2;
          activation<S, ACT>(o0[c] + bb[c], a, d1, d2);
          o0[c] = a;
          d1s[c] = d1;
          d2s[c] = d2;
        }
      }
      for (int64_t j = 1; j < T; ++j) {
        S* __restrict oj = io + (j * B + i) * N + c0;
        if (j < live) std::memcpy(saved + ((1 + j) * B + i) * N + c0, oj, n * sizeof(S));
        for (int64_t c = 0; c < n; ++c) oj[c] = d1s[c] * oj[c];
      }
    }
  }
}

// rows [begin, end) of g_y from the saved derivatives
template <typename S>
FLOWCORE_INLINE void bwd_saved_rows(int64_t live, int64_t B, int64_t N, const S* __restrict saved,
                                    const S* __restrict g, S* __restrict gy, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const S* __restrict d1 = saved + i * N;
    const S* __restrict g0 = g + i * N;
    S* __restrict gy0 = gy + i * N;
    for (int64_t c = 0; c < N; ++c) gy0[c] = d1[c] * g0[c];
    if (live == 1) continue;
    const S* __restrict d2 = saved + (B + i) * N;
    for (int64_t j = 1; j < live; ++j) {
      const S* __restrict yj = saved + ((1 + j) * B + i) * N;
      const S* __restrict gj = g + (j * B + i) * N;
      S* __restrict gyj = gy + (j * B + i) * N;
      for (int64_t c = 0; c < N; ++c) {
        gy0[c] += d2[c] * yj[c] * gj[c];
        gyj[c] = d1[c] * gj[c];
      }
    }
  }
}

constexpr int64_t kBiasRows = 64;  // rows per partial bias sum (fixed: see the file's header)

// g_y over g for rows [begin, end), and their primal block's column sums into `partial` (N doubles)
template <typename S>
FLOWCORE_INLINE void bwd_saved_inplace_rows(int64_t live, int64_t B, int64_t N, const S* __restrict saved, S* g,
                                            double* __restrict partial, int64_t begin, int64_t end) {
  for (int64_t c = 0; c < N; ++c) partial[c] = 0;
  for (int64_t i = begin; i < end; ++i) {
    const S* __restrict d1 = saved + i * N;
    S* __restrict g0 = g + i * N;  // rows of g never overlap: each gets its own restrict pointer
    if (live == 1) {
      for (int64_t c = 0; c < N; ++c) {
        const S v = d1[c] * g0[c];
        g0[c] = v;
        partial[c] += v;
      }
      continue;
    }
    const S* __restrict d2 = saved + (B + i) * N;
    for (int64_t c = 0; c < N; ++c) g0[c] = d1[c] * g0[c];
    for (int64_t j = 1; j < live; ++j) {
      const S* __restrict yj = saved + ((1 + j) * B + i) * N;
      S* __restrict gj = g + (j * B + i) * N;
      for (int64_t c = 0; c < N; ++c) {
        const S v = gj[c];
        g0[c] += d2[c] * yj[c] * v;
        gj[c] = d1[c] * v;
      }
    }
    for (int64_t c = 0; c < N; ++c) partial[c] += g0[c];
  }
}

FLOWCORE_CLONES void bwd_saved_inplace_f32(int64_t live, int64_t B, int64_t N, const float* saved, float* g,
                                           double* partial, int64_t begin, int64_t end) {
  bwd_saved_inplace_rows<float>(live, B, N, saved, g, partial, begin, end);
}

void bwd_saved_inplace_f64(int64_t live, int64_t B, int64_t N, const double* saved, double* g, double* partial,
                           int64_t begin, int64_t end) {
  bwd_saved_inplace_rows<double>(live, B, N, saved, g, partial, begin, end);
}

FLOWCORE_CLONES void fwd_save_f32(int act, int64_t T, int64_t live, int64_t B, int64_t N, float* io, const float* b,
                                  float* saved, int64_t begin, int64_t end) {
  FLOWCORE_BY_ACTIVATION(fwd_save_rows, float, T, live, B, N, io, b, saved, begin, end)
}

void fwd_save_f64(int act, int64_t T, int64_t live, int64_t B, int64_t N, double* io, const double* b,
                  double* saved, int64_t begin, int64_t end) {
  FLOWCORE_BY_ACTIVATION(fwd_save_rows, double, T, live, B, N, io, b, saved, begin, end)
}

FLOWCORE_CLONES void bwd_saved_f32(int64_t live, int64_t B, int64_t N, const float* saved, const float* g, float* gy,
                                   int64_t begin, int64_t end) {
  bwd_saved_rows<float>(live, B, N, saved, g, gy, begin, end);
}

void bwd_saved_f64(int64_t live, int64_t B, int64_t N, const double* saved, const double* g, double* gy,
                   int64_t begin, int64_t end) {
  bwd_saved_rows<double>(live, B, N, saved, g, gy, begin, end);
}

// mlp_act_fwd_save_: the forward over y's own storage (as mlp_act_fwd_, mlp_ops.cpp); returns `saved`
at::Tensor act_fwd_save_inplace_cpu(at::Tensor& y, const at::Tensor& bias_in, c10::string_view activation,
                                    int64_t live) {
  const char* op = "flowcore::mlp_act_fwd_save_";
  const int act = parse_activation(std::string_view(activation.data(), activation.size()));
  const int64_t T = check_args(op, y, bias_in, nullptr);
  check_cpu(op, y);
  TORCH_CHECK(live >= 1 && live <= T, op, ": live must count 1..T = ", T, " row blocks, got ", live);
  TORCH_CHECK(y.is_contiguous(), op, ": y is overwritten in place, so it must be contiguous");
  const at::Tensor bias = bias_in.contiguous();
  const int64_t B = y.size(1), N = y.size(2);
  at::Tensor saved = at::empty({saved_blocks(live), B, N}, y.options());
  if (y.numel() == 0) return saved;
  at::parallel_for(0, B, grain(T + saved_blocks(live), N), [&](int64_t begin, int64_t end) {
    if (y.scalar_type() == at::kFloat) {
      fwd_save_f32(act, T, live, B, N, y.data_ptr<float>(), bias.const_data_ptr<float>(), saved.data_ptr<float>(),
                   begin, end);
    } else {
      fwd_save_f64(act, T, live, B, N, y.data_ptr<double>(), bias.const_data_ptr<double>(),
                   saved.data_ptr<double>(), begin, end);
    }
  });
  return saved;
}

std::tuple<at::Tensor, at::Tensor> act_fwd_save_cpu(const at::Tensor& y, const at::Tensor& bias,
                                                    c10::string_view activation, int64_t live) {
  check_args("flowcore::mlp_act_fwd_save", y, bias, nullptr);
  check_cpu("flowcore::mlp_act_fwd_save", y);
  TORCH_CHECK(live >= 1 && live <= y.size(0), "flowcore::mlp_act_fwd_save: live must count 1..T = ", y.size(0),
              " row blocks, got ", live);
  at::Tensor out = at::empty_like(y, at::MemoryFormat::Contiguous);
  out.copy_(y);
  at::Tensor saved = act_fwd_save_inplace_cpu(out, bias, activation, live);
  return {out, saved};
}

at::Tensor act_bwd_saved_cpu(const at::Tensor& saved_in, const at::Tensor& grad_in) {
  const char* op = "flowcore::mlp_act_bwd_saved";
  check_saved(op, saved_in, grad_in);
  check_cpu(op, grad_in);
  const at::Tensor saved = saved_in.contiguous(), grad = grad_in.contiguous();
  const int64_t live = grad.size(0), B = grad.size(1), N = grad.size(2);
  at::Tensor gy = at::empty_like(grad, at::MemoryFormat::Contiguous);
  if (gy.numel() == 0) return gy;
  at::parallel_for(0, B, grain(2 * live + 1, N), [&](int64_t begin, int64_t end) {
    if (grad.scalar_type() == at::kFloat) {
      bwd_saved_f32(live, B, N, saved.const_data_ptr<float>(), grad.const_data_ptr<float>(), gy.data_ptr<float>(),
                    begin, end);
    } else {
      bwd_saved_f64(live, B, N, saved.const_data_ptr<double>(), grad.const_data_ptr<double>(),
                    gy.data_ptr<double>(), begin, end);
    }
  });
  return gy;
}

at::Tensor act_bwd_saved_inplace_cpu(const at::Tensor& saved_in, at::Tensor& grad) {
  const char* op = "flowcore::mlp_act_bwd_saved_";
  check_saved(op, saved_in, grad);
  check_cpu(op, grad);
  TORCH_CHECK(grad.is_contiguous(), op, ": grad is overwritten in place, so it must be contiguous");
  const at::Tensor saved = saved_in.contiguous();
  const int64_t live = grad.size(0), B = grad.size(1), N = grad.size(2);
  const int64_t slabs = (B + kBiasRows - 1) / kBiasRows;
  at::Tensor partials = at::empty({slabs, N}, grad.options().dtype(at::kDouble));
  if (grad.numel() > 0) {
    double* pp = partials.data_ptr<double>();
    at::parallel_for(0, slabs, std::max<int64_t>(1, grain(2 * live + 1, N) / kBiasRows), [&](int64_t s0, int64_t s1) {
      for (int64_t slab = s0; slab < s1; ++slab) {
        const int64_t begin = slab * kBiasRows, end = std::min(B, begin + kBiasRows);
        if (grad.scalar_type() == at::kFloat) {
          bwd_saved_inplace_f32(live, B, N, saved.const_data_ptr<float>(), grad.data_ptr<float>(), pp + slab * N,
                                begin, end);
        } else {
          bwd_saved_inplace_f64(live, B, N, saved.const_data_ptr<double>(), grad.data_ptr<double>(), pp + slab * N,
                                begin, end);
        }
      }
    });
  }
  // the slabs in order, in double, then rounded once
  at::Tensor total = at::zeros({N}, partials.options());
  double* tp = total.data_ptr<double>();
  const double* pp = partials.const_data_ptr<double>();
  for (int64_t slab = 0; slab < slabs; ++slab)
    for (int64_t c = 0; c < N; ++c) tp[c] += pp[slab * N + c];
  return total.to(grad.scalar_type());
}

}  // namespace
}  // namespace mlp
}  // namespace flowcore

FLOWCORE_FAST_END

TORCH_LIBRARY_FRAGMENT(flowcore, m) {
  m.def("mlp_act_fwd_save(Tensor y, Tensor bias, str activation, int live) -> (Tensor, Tensor)");
  m.def("mlp_act_fwd_save_(Tensor(a!) y, Tensor bias, str activation, int live) -> Tensor");
  m.def("mlp_act_bwd_saved(Tensor saved, Tensor grad) -> Tensor");
  m.def("mlp_act_bwd_saved_(Tensor saved, Tensor(a!) grad) -> Tensor");
}

TORCH_LIBRARY_IMPL(flowcore, CPU, m) {
  m.impl("mlp_act_fwd_save", &flowcore::mlp::act_fwd_save_cpu);
  m.impl("mlp_act_fwd_save_", &flowcore::mlp::act_fwd_save_inplace_cpu);
  m.impl("mlp_act_bwd_saved", &flowcore::mlp::act_bwd_saved_cpu);
  m.impl("mlp_act_bwd_saved_", &flowcore::mlp::act_bwd_saved_inplace_cpu);
}
