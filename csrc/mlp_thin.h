// The flow-map MLP's thin GEMMs on the CPU: the first layer has few input features (the time
// embedding and x; 4 for the paper's 2-D net) and the last layer few outputs (the data dimension).
// Those products are memory passes — every output row is K scaled rows of a K × N matrix, every
// weight-gradient row a few scaled sums of rows — which BLAS runs as GEMMs, MKL more slowly than
// the pass itself inside a training step (csrc/mlp_net.cpp's header has the figures).
//
//   thin_inner(a, b)  = a·b    a (M, K), b (K, N), K ≤ kThin
//   thin_outer(s, x)  = sᵀ·x   s (M, k), x (M, N), k ≤ kThin
//
// float32 and float64. thin_inner's rows and thin_outer's columns are split over torch's thread
// pool. thin_outer sums each column over 64-row slabs in the storage type (as BLAS accumulates) and
// the slabs in double, always in row order, so its result does not depend on the thread count.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

#include "mlp_cpu.h"

FLOWCORE_FAST_BEGIN

namespace flowcore {
namespace mlp {
namespace cpu {

constexpr int64_t kThin = 8;  // the largest inner (thin_inner) or output (thin_outer) size taken here

// whether thin_inner / thin_outer serve a product on these rows with `thin` as its small size
inline bool thin_applies(const at::Tensor& rows, int64_t thin) {
  return rows.device().is_cpu() && thin >= 1 && thin <= kThin &&
         (rows.scalar_type() == at::kFloat || rows.scalar_type() == at::kDouble);
}

template <typename S>
FLOWCORE_INLINE void thin_inner_rows(int64_t K, int64_t N, const S* __restrict a, const S* __restrict b,
                                     S* __restrict out, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    S* __restrict o = out + r * N;
    const S* __restrict ar = a + r * K;
    const S a0 = ar[0];
    for (int64_t c = 0; c < N; ++c) o[c] = a0 * b[c];
    for (int64_t k = 1; k < K; ++k) {
      const S ak = ar[k];
      const S* __restrict bk = b + k * N;
      for (int64_t c = 0; c < N; ++c) o[c] += ak * bk[c];
    }
  }
}

constexpr int64_t kSlab = 64;  // thin_outer's rows per partial sum in the storage type

template <typename S>
FLOWCORE_INLINE void thin_outer_cols(int64_t M, int64_t k, int64_t N, const S* __restrict s, const S* __restrict x,
                                     S* __restrict part, double* __restrict acc, S* __restrict out, int64_t c0,
                                     int64_t c1) {
  const int64_t n = c1 - c0;
  std::fill(acc, acc + k * n, 0.0);
  for (int64_t r0 = 0; r0 < M; r0 += kSlab) {
    std::fill(part, part + k * n, S(0));
    for (int64_t r = r0; r < std::min(M, r0 + kSlab); ++r) {
      const S* __restrict xr = x + r * N + c0;
      for (int64_t j = 0; j < k; ++j) {
        const S sj = s[r * k + j];
        S* __restrict pj = part + j * n;
        for (int64_t c = 0; c < n; ++c) pj[c] += sj * xr[c];
      }
    }
    for (int64_t i = 0; i < k * n; ++i) acc[i] += part[i];
  }
  for (int64_t j = 0; j < k; ++j)
    for (int64_t c = 0; c < n; ++c) out[j * N + c0 + c] = static_cast<S>(acc[j * n + c]);
}

FLOWCORE_CLONES static void thin_inner_f32(int64_t K, int64_t N, const float* a, const float* b, float* out,
                                           int64_t begin, int64_t end) {
  thin_inner_rows<float>(K, N, a, b, out, begin, end);
}

static void thin_inner_f64(int64_t K, int64_t N, const double* a, const double* b, double* out, int64_t begin,
                           int64_t end) {
  thin_inner_rows<double>(K, N, a, b, out, begin, end);
}

FLOWCORE_CLONES static void thin_outer_f32(int64_t M, int64_t k, int64_t N, const float* s, const float* x,
                                           float* part, double* acc, float* out, int64_t c0, int64_t c1) {
  thin_outer_cols<float>(M, k, N, s, x, part, acc, out, c0, c1);
}

static void thin_outer_f64(int64_t M, int64_t k, int64_t N, const double* s, const double* x, double* part,
                           double* acc, double* out, int64_t c0, int64_t c1) {
  thin_outer_cols<double>(M, k, N, s, x, part, acc, out, c0, c1);
}

inline at::Tensor thin_inner(const at::Tensor& a_in, const at::Tensor& b_in) {
  TORCH_CHECK(a_in.dim() == 2 && b_in.dim() == 2 && a_in.size(1) == b_in.size(0) && a_in.size(1) >= 1 &&
                  a_in.size(1) <= kThin && a_in.scalar_type() == b_in.scalar_type(),
              "flowcore thin_inner: needs a (M, K) and b (K, N) of one dtype with 1 <= K <= ", kThin, ", got ",
              a_in.sizes(), " and ", b_in.sizes());
  const at::Tensor a = a_in.contiguous(), b = b_in.contiguous();
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  at::Tensor out = at::empty({M, N}, a.options());
  if (out.numel() == 0) return out;
  at::parallel_for(0, M, std::max<int64_t>(1, 32768 / std::max<int64_t>(N * K, 1)), [&](int64_t begin, int64_t end) {
    if (a.scalar_type() == at::kFloat) {
      thin_inner_f32(K, N, a.const_data_ptr<float>(), b.const_data_ptr<float>(), out.data_ptr<float>(), begin, end);
    } else {
      thin_inner_f64(K, N, a.const_data_ptr<double>(), b.const_data_ptr<double>(), out.data_ptr<double>(), begin,
                     end);
    }
  });
  return out;
}

inline at::Tensor thin_outer(const at::Tensor& s_in, const at::Tensor& x_in) {
  TORCH_CHECK(s_in.dim() == 2 && x_in.dim() == 2 && s_in.size(0) == x_in.size(0) && s_in.size(1) <= kThin &&
                  s_in.scalar_type() == x_in.scalar_type(),
              "flowcore thin_outer: needs s (M, k) and x (M, N) of one dtype with k <= ", kThin, ", got ",
              s_in.sizes(), " and ", x_in.sizes());
  const at::Tensor s = s_in.contiguous(), x = x_in.contiguous();
  const int64_t M = s.size(0), k = s.size(1), N = x.size(1);
  at::Tensor out = at::empty({k, N}, s.options());
  if (out.numel() == 0) return out;
  // columns in chunks of at least 64 (a cache line of doubles, eight times over)
  at::parallel_for(0, N, 64, [&](int64_t c0, int64_t c1) {
    const size_t size = static_cast<size_t>(k * (c1 - c0));
    std::vector<double> acc(size);
    if (s.scalar_type() == at::kFloat) {
      std::vector<float> part(size);
      thin_outer_f32(M, k, N, s.const_data_ptr<float>(), x.const_data_ptr<float>(), part.data(), acc.data(),
                     out.data_ptr<float>(), c0, c1);
    } else {
      std::vector<double> part(size);
      thin_outer_f64(M, k, N, s.const_data_ptr<double>(), x.const_data_ptr<double>(), part.data(), acc.data(),
                     out.data_ptr<double>(), c0, c1);
    }
  });
  return out;
}

}  // namespace cpu
}  // namespace mlp
}  // namespace flowcore

FLOWCORE_FAST_END
