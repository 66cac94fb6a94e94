// Attention with its JVP: the CPU tile kernels (docs/math.md §4; the math: attention_jvp.h; the ops
// that run them: attention_cpu.cpp).
//
// fwd_tile: one (b, h, row tile) of the forward — S = scale·Q Kᵀ and Ṡ per key tile by GEMM, the
// online softmax step as vectorizable loops, O += E V and A += (E ⊙ Ṡ) V + E V̇ by GEMM.
// bwd_head: one (b, h) of the backward — every (row tile, key tile) recomputed from lse and μ (six
// GEMMs: s, ṡ, u, w; two without tangents), the per-element gradient of attention_jvp.h
// (grad_scores), then nine GEMMs into g_q … g_v̇ (three without tangents): 15 N²D products against
// the 12 of autograd through torch.func.jvp, which also makes many elementwise passes over N×N. GEMMs use the BLAS torch links (sgemm_/dgemm_, weak symbols resolved at load
// time) or, where there is none, a plain loop. float32 tile functions are also compiled for
// x86-64-v3 and picked at load time (FLOWCORE_CLONES, mlp_cpu.h).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "attention_jvp.h"
#include "mlp_cpu.h"  // Math<S>::exp (vectorizable float exp), FLOWCORE_CLONES, FLOWCORE_INLINE

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*) __attribute__((weak));
}

FLOWCORE_FAST_BEGIN

namespace flowcore {
namespace attention {
namespace cpu {

template <typename S>
using Exp = mlp::cpu::Math<S>;

constexpr int64_t kRows = 64;   // query rows per tile
constexpr int64_t kKeys = 256;  // keys per tile

// Row-major C (m×n, ldc) = alpha·op(A)·op(B) + beta·C, op = transpose if the flag is set.
template <typename S>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, S alpha, const S* a, int64_t lda, const S* b,
          int64_t ldb, S beta, S* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  // column-major BLAS on row-major data: Cᵀ = op(B)ᵀ·op(A)ᵀ
  const char tra = ta ? 'T' : 'N', trb = tb ? 'T' : 'N';
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int ila = static_cast<int>(lda), ilb = static_cast<int>(ldb), ilc = static_cast<int>(ldc);
  if constexpr (std::is_same_v<S, float>) {
    if (sgemm_ != nullptr && k > 0) return sgemm_(&trb, &tra, &in, &im, &ik, &alpha, b, &ilb, a, &ila, &beta, c, &ilc);
  } else {
    if (dgemm_ != nullptr && k > 0) return dgemm_(&trb, &tra, &in, &im, &ik, &alpha, b, &ilb, a, &ila, &beta, c, &ilc);
  }
  for (int64_t i = 0; i < m; ++i) {
    S* ci = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) ci[j] = beta == S(0) ? S(0) : beta * ci[j];
    for (int64_t p = 0; p < k; ++p) {
      const S aip = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);
      if (tb) {
        for (int64_t j = 0; j < n; ++j) ci[j] += aip * b[j * ldb + p];
      } else {
        const S* bp = b + p * ldb;
        for (int64_t j = 0; j < n; ++j) ci[j] += aip * bp[j];
      }
    }
  }
}

struct Dims {
  int64_t BH, Nq, Nk, D, Dv;
};

// Row reductions with 8 independent partial results, so the compiler keeps them in one vector
// register (a single running sum would be a serial chain of dependent adds).
template <typename S>
FLOWCORE_INLINE S row_max(const S* __restrict x, int64_t n) {
  S part[8];
  for (int l = 0; l < 8; ++l) part[l] = x[0];
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) part[l] = part[l] > x[j + l] ? part[l] : x[j + l];
  S m = part[0];
  for (int l = 1; l < 8; ++l) m = m > part[l] ? m : part[l];
  for (; j < n; ++j) m = m > x[j] ? m : x[j];
  return m;
}

template <typename S>
FLOWCORE_INLINE S row_sum(const S* __restrict x, int64_t n) {
  S part[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) part[l] += x[j + l];
  S total = S(0);
  for (int l = 0; l < 8; ++l) total += part[l];
  for (; j < n; ++j) total += x[j];
  return total;
}

// Forward of one (b, h, row tile): rows [r0, r0 + nr) of o, ȯ, lse, μ. TANGENT = false is the
// primal-only op (no ṡ, no A, no μ).
template <typename S, bool TANGENT>
FLOWCORE_INLINE void fwd_tile(const Dims& d, int64_t bh, int64_t r0, int64_t nr, S scale, const S* q, const S* k, const S* v,
              const S* dq, const S* dk, const S* dv, S* o, S* ot, S* lse, S* mu, std::vector<S>& buf) {
  const int64_t nk_tile = std::min(kKeys, d.Nk);
  buf.resize(2 * kRows * nk_tile + 2 * kRows * d.Dv);
  S* sc = buf.data();                  // scores, then e = exp(s − m)
  S* sd = sc + kRows * nk_tile;        // ṡ, then e·ṡ
  S* acc_o = sd + kRows * nk_tile;     // Σ e v
  S* acc_a = acc_o + kRows * d.Dv;     // Σ e (ṡ v + v̇)
  std::fill(acc_o, acc_o + 2 * kRows * d.Dv, S(0));
  RowState<S> state[kRows];
  for (int64_t i = 0; i < nr; ++i) state[i] = {S(-INFINITY), S(0), S(0)};
  const S* qi = q + (bh * d.Nq + r0) * d.D;
  const S* dqi = TANGENT ? dq + (bh * d.Nq + r0) * d.D : nullptr;
  for (int64_t c0 = 0; c0 < d.Nk; c0 += nk_tile) {
    const int64_t nc = std::min(nk_tile, d.Nk - c0);
    const S* kj = k + (bh * d.Nk + c0) * d.D;
    const S* vj = v + (bh * d.Nk + c0) * d.Dv;
    gemm<S>(false, true, nr, nc, d.D, scale, qi, d.D, kj, d.D, S(0), sc, nc);
    if constexpr (TANGENT) {
      gemm<S>(false, true, nr, nc, d.D, scale, dqi, d.D, kj, d.D, S(0), sd, nc);
      gemm<S>(false, true, nr, nc, d.D, scale, qi, d.D, dk + (bh * d.Nk + c0) * d.D, d.D, S(1), sd, nc);
    }
    for (int64_t i = 0; i < nr; ++i) {
      // the online-softmax step of attention_jvp.h's `weigh`, as vectorizable loops: e = exp(s − m),
      // e·ṡ in place, then the row sums into l and μ
      S* __restrict si = sc + i * nc;
      const S factor = rescale<S>(state[i], row_max(si, nc));
      const S m = state[i].m;
      for (int64_t j = 0; j < nc; ++j) si[j] = Exp<S>::exp(si[j] - m);
      state[i].l += row_sum(si, nc);
      for (int64_t c = 0; c < d.Dv; ++c) acc_o[i * d.Dv + c] *= factor;
      if constexpr (TANGENT) {
        for (int64_t c = 0; c < d.Dv; ++c) acc_a[i * d.Dv + c] *= factor;
        S* __restrict sdi = sd + i * nc;
        for (int64_t j = 0; j < nc; ++j) sdi[j] *= si[j];
        state[i].mu += row_sum(sdi, nc);
      }
    }
    gemm<S>(false, false, nr, d.Dv, nc, S(1), sc, nc, vj, d.Dv, S(1), acc_o, d.Dv);
    if constexpr (TANGENT) {
      gemm<S>(false, false, nr, d.Dv, nc, S(1), sd, nc, vj, d.Dv, S(1), acc_a, d.Dv);
      gemm<S>(false, false, nr, d.Dv, nc, S(1), sc, nc, dv + (bh * d.Nk + c0) * d.Dv, d.Dv, S(1), acc_a, d.Dv);
    }
  }
  for (int64_t i = 0; i < nr; ++i) {
    const int64_t row = bh * d.Nq + r0 + i;
    const S inv_l = S(1) / state[i].l;
    lse[row] = row_lse<S>(state[i]);
    S* oi = o + row * d.Dv;
    for (int64_t c = 0; c < d.Dv; ++c) oi[c] = acc_o[i * d.Dv + c] * inv_l;
    if constexpr (TANGENT) {
      const S m = row_mu<S>(state[i]);
      mu[row] = m;
      S* oti = ot + row * d.Dv;
      for (int64_t c = 0; c < d.Dv; ++c) oti[c] = acc_a[i * d.Dv + c] * inv_l - m * oi[c];
    }
  }
}

// Backward of one (b, h): every row tile against every key tile (attention_jvp.h for the formulas).
template <typename S, bool TANGENT>
FLOWCORE_INLINE void bwd_head(const Dims& d, int64_t bh, S scale, const S* q, const S* k, const S* v, const S* dq, const S* dk,
              const S* dv, const S* o, const S* ot, const S* lse, const S* mu, const S* go, const S* got, S* gq,
              S* gk, S* gv, S* gdq, S* gdk, S* gdv, std::vector<S>& buf) {
  const int64_t nk_tile = std::min(kKeys, d.Nk), tile = kRows * nk_tile;
  buf.resize(4 * tile + 2 * kRows);
  S* sc = buf.data();    // s, then g_s
  S* sd = sc + tile;     // ṡ, then ṗ
  S* uu = sd + tile;     // u = g_ȯ·v, then g_ṡ
  S* ww = uu + tile;     // w = g_o·v + g_ȯ·v̇, then p
  S* delta = ww + tile;  // per row: g_ȯ·o
  S* energy = delta + kRows;  // per row: g_o·o + g_ȯ·ȯ
  const int64_t qoff = bh * d.Nq, koff = bh * d.Nk;
  for (int64_t r0 = 0; r0 < d.Nq; r0 += kRows) {
    const int64_t nr = std::min(kRows, d.Nq - r0);
    const int64_t row0 = qoff + r0;
    for (int64_t i = 0; i < nr; ++i) {
      const S* oi = o + (row0 + i) * d.Dv;
      const S* goi = go + (row0 + i) * d.Dv;
      S e = S(0), dl = S(0);
      for (int64_t c = 0; c < d.Dv; ++c) e += goi[c] * oi[c];
      if constexpr (TANGENT) {
        const S* oti = ot + (row0 + i) * d.Dv;
        const S* goti = got + (row0 + i) * d.Dv;
        for (int64_t c = 0; c < d.Dv; ++c) {
          e += goti[c] * oti[c];
          dl += goti[c] * oi[c];
        }
      }
      energy[i] = e;
      delta[i] = dl;
    }
    for (int64_t c0 = 0; c0 < d.Nk; c0 += nk_tile) {
      const int64_t nc = std::min(nk_tile, d.Nk - c0);
      const S* kj = k + (koff + c0) * d.D;
      const S* vj = v + (koff + c0) * d.Dv;
      const S* qi = q + row0 * d.D;
      const S* goi = go + row0 * d.Dv;
      gemm<S>(false, true, nr, nc, d.D, scale, qi, d.D, kj, d.D, S(0), sc, nc);
      gemm<S>(false, true, nr, nc, d.Dv, S(1), goi, d.Dv, vj, d.Dv, S(0), ww, nc);
      if constexpr (TANGENT) {
        const S* dqi = dq + row0 * d.D;
        const S* goti = got + row0 * d.Dv;
        gemm<S>(false, true, nr, nc, d.D, scale, dqi, d.D, kj, d.D, S(0), sd, nc);
        gemm<S>(false, true, nr, nc, d.D, scale, qi, d.D, dk + (koff + c0) * d.D, d.D, S(1), sd, nc);
        gemm<S>(false, true, nr, nc, d.Dv, S(1), goti, d.Dv, vj, d.Dv, S(0), uu, nc);
        gemm<S>(false, true, nr, nc, d.Dv, S(1), goti, d.Dv, dv + (koff + c0) * d.Dv, d.Dv, S(1), ww, nc);
      }
      for (int64_t i = 0; i < nr; ++i) {
        const S l = lse[row0 + i], m = TANGENT ? mu[row0 + i] : S(0), dl = delta[i], en = energy[i];
        S* __restrict si = sc + i * nc;
        S* __restrict sdi = sd + i * nc;
        S* __restrict ui = uu + i * nc;
        S* __restrict wi = ww + i * nc;
        for (int64_t j = 0; j < nc; ++j) {
          const S p = Exp<S>::exp(si[j] - l);
          S g_sdot, pdot;
          si[j] = grad_scores<S>(p, TANGENT ? sdi[j] : S(0), m, dl, en, TANGENT ? ui[j] : S(0), wi[j], g_sdot, pdot);
          wi[j] = p;
          if constexpr (TANGENT) {
            ui[j] = g_sdot;
            sdi[j] = pdot;
          }
        }
      }
      const S* qi_ = q + row0 * d.D;
      gemm<S>(false, false, nr, d.D, nc, scale, sc, nc, kj, d.D, S(1), gq + row0 * d.D, d.D);
      gemm<S>(true, false, nc, d.D, nr, scale, sc, nc, qi_, d.D, S(1), gk + (koff + c0) * d.D, d.D);
      gemm<S>(true, false, nc, d.Dv, nr, S(1), ww, nc, goi, d.Dv, S(1), gv + (koff + c0) * d.Dv, d.Dv);
      if constexpr (TANGENT) {
        const S* dqi = dq + row0 * d.D;
        const S* goti = got + row0 * d.Dv;
        const S* dkj = dk + (koff + c0) * d.D;
        gemm<S>(false, false, nr, d.D, nc, scale, uu, nc, dkj, d.D, S(1), gq + row0 * d.D, d.D);
        gemm<S>(true, false, nc, d.D, nr, scale, uu, nc, dqi, d.D, S(1), gk + (koff + c0) * d.D, d.D);
        gemm<S>(true, false, nc, d.Dv, nr, S(1), sd, nc, goti, d.Dv, S(1), gv + (koff + c0) * d.Dv, d.Dv);
        gemm<S>(true, false, nc, d.Dv, nr, S(1), ww, nc, goti, d.Dv, S(1), gdv + (koff + c0) * d.Dv, d.Dv);
        gemm<S>(false, false, nr, d.D, nc, scale, uu, nc, kj, d.D, S(1), gdq + row0 * d.D, d.D);
        gemm<S>(true, false, nc, d.D, nr, scale, uu, nc, qi_, d.D, S(1), gdk + (koff + c0) * d.D, d.D);
      }
    }
  }
}

// The float32 tile functions, also compiled for x86-64-v3 (AVX2 + FMA) and picked at load time
// (FLOWCORE_CLONES, mlp_cpu.h); float64 is the baseline build.
template <bool TANGENT>
FLOWCORE_CLONES void fwd_tile_f32(const Dims& d, int64_t bh, int64_t r0, int64_t nr, float scale, const float* q,
                                  const float* k, const float* v, const float* dq, const float* dk, const float* dv,
                                  float* o, float* ot, float* lse, float* mu, std::vector<float>& buf) {
  fwd_tile<float, TANGENT>(d, bh, r0, nr, scale, q, k, v, dq, dk, dv, o, ot, lse, mu, buf);
}

template <bool TANGENT>
FLOWCORE_CLONES void bwd_head_f32(const Dims& d, int64_t bh, float scale, const float* q, const float* k,
                                  const float* v, const float* dq, const float* dk, const float* dv, const float* o,
                                  const float* ot, const float* lse, const float* mu, const float* go,
                                  const float* got, float* gq, float* gk, float* gv, float* gdq, float* gdk,
                                  float* gdv, std::vector<float>& buf) {
  bwd_head<float, TANGENT>(d, bh, scale, q, k, v, dq, dk, dv, o, ot, lse, mu, go, got, gq, gk, gv, gdq, gdk, gdv,
                           buf);
}

template <typename S, bool TANGENT>
void run_fwd_tile(const Dims& d, int64_t bh, int64_t r0, int64_t nr, S scale, const S* q, const S* k, const S* v,
                  const S* dq, const S* dk, const S* dv, S* o, S* ot, S* lse, S* mu, std::vector<S>& buf) {
  if constexpr (std::is_same_v<S, float>) {
    fwd_tile_f32<TANGENT>(d, bh, r0, nr, scale, q, k, v, dq, dk, dv, o, ot, lse, mu, buf);
  } else {
    fwd_tile<S, TANGENT>(d, bh, r0, nr, scale, q, k, v, dq, dk, dv, o, ot, lse, mu, buf);
  }
}

template <typename S, bool TANGENT>
void run_bwd_head(const Dims& d, int64_t bh, S scale, const S* q, const S* k, const S* v, const S* dq, const S* dk,
                  const S* dv, const S* o, const S* ot, const S* lse, const S* mu, const S* go, const S* got, S* gq,
                  S* gk, S* gv, S* gdq, S* gdk, S* gdv, std::vector<S>& buf) {
  if constexpr (std::is_same_v<S, float>) {
    bwd_head_f32<TANGENT>(d, bh, scale, q, k, v, dq, dk, dv, o, ot, lse, mu, go, got, gq, gk, gv, gdq, gdk, gdv, buf);
  } else {
    bwd_head<S, TANGENT>(d, bh, scale, q, k, v, dq, dk, dv, o, ot, lse, mu, go, got, gq, gk, gv, gdq, gdk, gdv, buf);
  }
}

}  // namespace cpu
}  // namespace attention
}  // namespace flowcore

FLOWCORE_FAST_END
