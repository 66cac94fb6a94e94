// Attention with its JVP, CPU kernels and op schemas (docs/math.md §4; the math: attention_jvp.h).
//
//   flowcore::attention_jvp_fwd(q, k, v, q̇, k̇, v̇, scale) -> (o, ȯ, lse, μ)
//   flowcore::attention_jvp_bwd(q, k, v, q̇, k̇, v̇, o, ȯ, lse, μ, g_o, g_ȯ, scale) -> (g_q, g_k, g_v, g_q̇, g_k̇, g_v̇)
//   flowcore::attention_fwd(q, k, v, scale) -> (o, lse)                      (primal only)
//   flowcore::attention_bwd(q, k, v, o, lse, g_o, scale) -> (g_q, g_k, g_v)
//
// q, q̇: (B, H, N_q, D); k, k̇: (B, H, N_k, D); v, v̇: (B, H, N_k, D_v); lse, μ: (B, H, N_q), float32
// or float64 here (the CUDA kernels also take float16 / bfloat16). No N×N matrix: the forward runs
// at::parallel_for over (b, h, row tile) with an online softmax over key tiles; the backward runs
// over (b, h) (each task owns its g_k, g_v rows, so no reduction between threads) and recomputes
// each (row tile, key tile) from lse and μ. The tile products are GEMMs: the BLAS torch links
// (sgemm_/dgemm_, found at load time as weak symbols) or, where there is none, a plain loop.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
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
namespace {

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

// -- argument checks --------------------------------------------------------------------------------
Dims check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": q, k, v must be (B, H, N, D), got ", q.sizes(),
              ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3) &&
                  k.sizes().slice(0, 3) == v.sizes().slice(0, 3),
              op, ": shapes do not fit: q ", q.sizes(), " (B, H, N_q, D), k ", k.sizes(), " (B, H, N_k, D), v ",
              v.sizes(), " (B, H, N_k, D_v)");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
              ": q, k, v must share a dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(), op, ": q, k, v must share a device");
  return {q.size(0) * q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
}

void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type() && t.device() == like.device(),
              op, ": ", name, " must be ", like.sizes(), " ", like.scalar_type(), " on ", like.device(), ", got ",
              t.sizes(), " ", t.scalar_type(), " on ", t.device());
}

void check_cpu(const char* op, const at::Tensor& q) {
  TORCH_CHECK(q.device().is_cpu(), op, " (CPU): inputs on ", q.device());
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble, op,
              " (CPU): float32 or float64 inputs, got ", q.scalar_type());
}

template <typename S>
const S* ptr(const at::Tensor& t) {
  return t.const_data_ptr<S>();
}

template <bool TANGENT>
std::vector<at::Tensor> fwd_cpu(const char* op, const at::Tensor& q_in, const at::Tensor& k_in,
                                const at::Tensor& v_in, const at::Tensor* dq_in, const at::Tensor* dk_in,
                                const at::Tensor* dv_in, double scale) {
  const Dims d = check_inputs(op, q_in, k_in, v_in);
  check_cpu(op, q_in);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  at::Tensor dq, dk, dv;
  if constexpr (TANGENT) {
    check_like(op, "q̇", *dq_in, q_in);
    check_like(op, "k̇", *dk_in, k_in);
    check_like(op, "v̇", *dv_in, v_in);
    dq = dq_in->contiguous(), dk = dk_in->contiguous(), dv = dv_in->contiguous();
  }
  const auto opts = q.options();
  at::Tensor o = at::empty({q.size(0), q.size(1), d.Nq, d.Dv}, opts);
  at::Tensor lse = at::empty({q.size(0), q.size(1), d.Nq}, opts);
  at::Tensor ot = TANGENT ? at::empty_like(o) : at::Tensor();
  at::Tensor mu = TANGENT ? at::empty_like(lse) : at::Tensor();
  if (d.Nk == 0 && o.numel() > 0) {
    TORCH_CHECK(false, op, ": attention over zero keys is undefined (N_k = 0)");
  }
  const int64_t tiles = (d.Nq + kRows - 1) / kRows;
  if (d.BH * tiles > 0) {
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "flowcore::attention (CPU)", [&] {
      using S = scalar_t;
      at::parallel_for(0, d.BH * tiles, 1, [&](int64_t begin, int64_t end) {
        std::vector<S> buf;
        for (int64_t t = begin; t < end; ++t) {
          const int64_t bh = t / tiles, r0 = (t % tiles) * kRows;
          run_fwd_tile<S, TANGENT>(d, bh, r0, std::min(kRows, d.Nq - r0), static_cast<S>(scale), ptr<S>(q), ptr<S>(k),
                               ptr<S>(v), TANGENT ? ptr<S>(dq) : nullptr, TANGENT ? ptr<S>(dk) : nullptr,
                               TANGENT ? ptr<S>(dv) : nullptr, o.data_ptr<S>(), TANGENT ? ot.data_ptr<S>() : nullptr,
                               lse.data_ptr<S>(), TANGENT ? mu.data_ptr<S>() : nullptr, buf);
        }
      });
    });
  }
  if constexpr (TANGENT) return {o, ot, lse, mu};
  return {o, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_jvp_fwd_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dq, const at::Tensor& dk,
    const at::Tensor& dv, double scale) {
  auto r = fwd_cpu<true>("flowcore::attention_jvp_fwd", q, k, v, &dq, &dk, &dv, scale);
  return {r[0], r[1], r[2], r[3]};
}

std::tuple<at::Tensor, at::Tensor> attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     double scale) {
  auto r = fwd_cpu<false>("flowcore::attention_fwd", q, k, v, nullptr, nullptr, nullptr, scale);
  return {r[0], r[1]};
}

template <bool TANGENT>
std::vector<at::Tensor> bwd_cpu(const char* op, const at::Tensor& q_in, const at::Tensor& k_in,
                                const at::Tensor& v_in, const at::Tensor* tangents, const at::Tensor& o_in,
                                const at::Tensor* ot_in, const at::Tensor& lse_in, const at::Tensor* mu_in,
                                const at::Tensor& go_in, const at::Tensor* got_in, double scale) {
  const Dims d = check_inputs(op, q_in, k_in, v_in);
  check_cpu(op, q_in);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor o = o_in.contiguous(), lse = lse_in.contiguous(), go = go_in.contiguous();
  TORCH_CHECK(o.sizes() == go.sizes() && o.size(2) == d.Nq && o.size(3) == d.Dv, op, ": o and g_o must be (B, H, N_q, D_v)");
  TORCH_CHECK(lse.numel() == d.BH * d.Nq, op, ": lse must be (B, H, N_q)");
  at::Tensor dq, dk, dv, ot, mu, got;
  if constexpr (TANGENT) {
    check_like(op, "q̇", tangents[0], q_in);
    check_like(op, "k̇", tangents[1], k_in);
    check_like(op, "v̇", tangents[2], v_in);
    dq = tangents[0].contiguous(), dk = tangents[1].contiguous(), dv = tangents[2].contiguous();
    ot = ot_in->contiguous(), mu = mu_in->contiguous(), got = got_in->contiguous();
    check_like(op, "ȯ", ot, o);
    check_like(op, "g_ȯ", got, o);
    check_like(op, "μ", mu, lse);
  }
  at::Tensor gq = at::zeros_like(q), gk = at::zeros_like(k), gv = at::zeros_like(v);
  at::Tensor gdq = TANGENT ? at::zeros_like(q) : at::Tensor(), gdk = TANGENT ? at::zeros_like(k) : at::Tensor(),
             gdv = TANGENT ? at::zeros_like(v) : at::Tensor();
  if (d.BH * d.Nq * d.Nk > 0) {
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "flowcore::attention (CPU)", [&] {
      using S = scalar_t;
      auto opt = [](const at::Tensor& t) -> const S* { return t.defined() ? t.const_data_ptr<S>() : nullptr; };
      auto mut = [](at::Tensor& t) -> S* { return t.defined() ? t.data_ptr<S>() : nullptr; };
      at::parallel_for(0, d.BH, 1, [&](int64_t begin, int64_t end) {
        std::vector<S> buf;
        for (int64_t bh = begin; bh < end; ++bh) {
          run_bwd_head<S, TANGENT>(d, bh, static_cast<S>(scale), ptr<S>(q), ptr<S>(k), ptr<S>(v), opt(dq), opt(dk),
                               opt(dv), ptr<S>(o), opt(ot), ptr<S>(lse), opt(mu), ptr<S>(go), opt(got),
                               gq.data_ptr<S>(), gk.data_ptr<S>(), gv.data_ptr<S>(), mut(gdq), mut(gdk), mut(gdv),
                               buf);
        }
      });
    });
  }
  if constexpr (TANGENT) return {gq, gk, gv, gdq, gdk, gdv};
  return {gq, gk, gv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_jvp_bwd_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dq, const at::Tensor& dk,
    const at::Tensor& dv, const at::Tensor& o, const at::Tensor& ot, const at::Tensor& lse, const at::Tensor& mu,
    const at::Tensor& go, const at::Tensor& got, double scale) {
  const at::Tensor tangents[3] = {dq, dk, dv};
  auto r = bwd_cpu<true>("flowcore::attention_jvp_bwd", q, k, v, tangents, o, &ot, lse, &mu, go, &got, scale);
  return {r[0], r[1], r[2], r[3], r[4], r[5]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_bwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                 const at::Tensor& v, const at::Tensor& o,
                                                                 const at::Tensor& lse, const at::Tensor& go,
                                                                 double scale) {
  auto r = bwd_cpu<false>("flowcore::attention_bwd", q, k, v, nullptr, o, nullptr, lse, nullptr, go, nullptr, scale);
  return {r[0], r[1], r[2]};
}

}  // namespace
}  // namespace attention
}  // namespace flowcore

FLOWCORE_FAST_END

TORCH_LIBRARY_FRAGMENT(flowcore, m) {
  m.def("attention_jvp_fwd(Tensor q, Tensor k, Tensor v, Tensor dq, Tensor dk, Tensor dv, float scale)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("attention_jvp_bwd(Tensor q, Tensor k, Tensor v, Tensor dq, Tensor dk, Tensor dv, Tensor o, Tensor ot,"
        " Tensor lse, Tensor mu, Tensor go, Tensor got, float scale) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, float scale) -> (Tensor, Tensor)");
  m.def("attention_bwd(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor go, float scale)"
        " -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(flowcore, CPU, m) {
  m.impl("attention_jvp_fwd", &flowcore::attention::attention_jvp_fwd_cpu);
  m.impl("attention_jvp_bwd", &flowcore::attention::attention_jvp_bwd_cpu);
  m.impl("attention_fwd", &flowcore::attention::attention_fwd_cpu);
  m.impl("attention_bwd", &flowcore::attention::attention_bwd_cpu);
}
