// The image UNet's pointwise jets: the CPU row / column / weight-row loops (the math and the layout:
// unet_jet.h; the ops that run them, with their schemas and checks: unet_jet_cpu.cpp).
//
// Each loop function covers a range of rows (or slabs) so at::parallel_for can split the work; inside
// a range the derivatives are computed once into small buffers and reused by every tangent block, in
// plain loops the compiler vectorizes (float32: the polynomial exp of mlp_cpu.h; x86-64-v3 clones
// picked at load time). float32 accumulates in float, float64 in double.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "mlp_cpu.h"  // Math<S>::exp, FLOWCORE_CLONES, FLOWCORE_INLINE, FLOWCORE_FAST_BEGIN

// the shared math is inlined into loops compiled with these options, so it is compiled with them too
FLOWCORE_FAST_BEGIN
#include "unet_jet.h"

namespace flowcore {
namespace unet {
namespace cpu {

using mlp::cpu::kBlock;
template <typename S>
using M = mlp::cpu::Math<S>;

// elements [begin, end) of the primal: [out0 =] a(x0), out_j = a'(x0)·t_j
template <typename S, bool PRIMAL>
FLOWCORE_CLONES void silu_fwd(const S* __restrict x0, const S* __restrict t, S* __restrict out0,
                              S* __restrict outt, int64_t P, int64_t n, S gain, int64_t begin, int64_t end) {
  alignas(64) S d1buf[kBlock];
  for (int64_t c0 = begin; c0 < end; c0 += kBlock) {
    const int64_t m = std::min(kBlock, end - c0);
    for (int64_t c = 0; c < m; ++c) {
      S a, d1, d2;
      silu_jet<M<S>>(x0[c0 + c], gain, a, d1, d2);
      if constexpr (PRIMAL) out0[c0 + c] = a;
      d1buf[c] = d1;
    }
    for (int64_t j = 0; j < n; ++j) {
      const S* __restrict tj = t + j * P + c0;
      S* __restrict oj = outt + j * P + c0;
      for (int64_t c = 0; c < m; ++c) oj[c] = d1buf[c] * tj[c];
    }
  }
}

// g_x0 = a'·g_0 + a''·Σ_j t_j·g_j, g_tj = a'·g_j (g, out: the (1+n)·P stacks)
template <typename S>
FLOWCORE_CLONES void silu_bwd(const S* __restrict x0, const S* __restrict t, const S* __restrict g,
                              S* __restrict out, int64_t P, int64_t n, S gain, int64_t begin, int64_t end) {
  alignas(64) S d1buf[kBlock];
  alignas(64) S acc[kBlock];
  for (int64_t c0 = begin; c0 < end; c0 += kBlock) {
    const int64_t m = std::min(kBlock, end - c0);
    for (int64_t c = 0; c < m; ++c) acc[c] = S(0);
    for (int64_t j = 0; j < n; ++j) {
      const S* __restrict tj = t + j * P + c0;
      const S* __restrict gj = g + (j + 1) * P + c0;
      for (int64_t c = 0; c < m; ++c) acc[c] += tj[c] * gj[c];
    }
    for (int64_t c = 0; c < m; ++c) {
      S a, d1, d2;
      silu_jet<M<S>>(x0[c0 + c], gain, a, d1, d2);
      out[c0 + c] = d1 * g[c0 + c] + d2 * acc[c];
      d1buf[c] = d1;
    }
    for (int64_t j = 0; j < n; ++j) {
      const S* __restrict gj = g + (j + 1) * P + c0;
      S* __restrict oj = out + (j + 1) * P + c0;
      for (int64_t c = 0; c < m; ++c) oj[c] = d1buf[c] * gj[c];
    }
  }
}

// FiLM + mp_silu forward over rows [begin, end) of (B·C) rows of S elements; R = B·C, P = R·S
template <typename S, bool PRIMAL>
FLOWCORE_CLONES void film_silu_fwd(const S* __restrict y0, const S* __restrict l0, const S* __restrict yt,
                                   const S* __restrict lt, S* __restrict out0, S* __restrict outt, int64_t R,
                                   int64_t Sz, int64_t n, S gain, int64_t begin, int64_t end) {
  alignas(64) S d1buf[kBlock];
  const int64_t P = R * Sz;
  for (int64_t r = begin; r < end; ++r) {
    const S s = S(1) + l0[r];
    for (int64_t c0 = 0; c0 < Sz; c0 += kBlock) {
      const int64_t m = std::min(kBlock, Sz - c0);
      const S* __restrict y = y0 + r * Sz + c0;
      for (int64_t c = 0; c < m; ++c) {
        S a, d1, d2;
        silu_jet<M<S>>(y[c] * s, gain, a, d1, d2);
        if constexpr (PRIMAL) out0[r * Sz + c0 + c] = a;
        d1buf[c] = d1;
      }
      for (int64_t j = 0; j < n; ++j) {
        const S ltj = lt[j * R + r];
        const S* __restrict ytj = yt + j * P + r * Sz + c0;
        S* __restrict oj = outt + j * P + r * Sz + c0;
        for (int64_t c = 0; c < m; ++c) oj[c] = d1buf[c] * film_tangent(ytj[c], s, y[c], ltj);
      }
    }
  }
}

// FiLM + mp_silu backward over rows [begin, end): g_y (1+n)·P, g_l (1+n)·R (unet_jet.h)
template <typename S>
FLOWCORE_CLONES void film_silu_bwd(const S* __restrict y0, const S* __restrict l0, const S* __restrict yt,
                                   const S* __restrict lt, const S* __restrict g, S* __restrict gy,
                                   S* __restrict gl, int64_t R, int64_t Sz, int64_t n, S gain, int64_t begin,
                                   int64_t end) {
  alignas(64) S d1buf[kBlock];
  alignas(64) S acc[kBlock];   // Σ_j z_j·g_j, then gz0
  alignas(64) S accl[kBlock];  // Σ_j lt_j·g_j
  const int64_t P = R * Sz;
  for (int64_t r = begin; r < end; ++r) {
    const S s = S(1) + l0[r];
    S gl0 = S(0);
    for (int64_t j = 0; j < n; ++j) gl[(j + 1) * R + r] = S(0);
    for (int64_t c0 = 0; c0 < Sz; c0 += kBlock) {
      const int64_t m = std::min(kBlock, Sz - c0);
      const int64_t at = r * Sz + c0;
      const S* __restrict y = y0 + at;
      for (int64_t c = 0; c < m; ++c) acc[c] = accl[c] = S(0);
      for (int64_t j = 0; j < n; ++j) {
        const S ltj = lt[j * R + r];
        const S* __restrict ytj = yt + j * P + at;
        const S* __restrict gj = g + (j + 1) * P + at;
        for (int64_t c = 0; c < m; ++c) {
          acc[c] += film_tangent(ytj[c], s, y[c], ltj) * gj[c];
          accl[c] += ltj * gj[c];
        }
      }
      for (int64_t c = 0; c < m; ++c) {
        S a, d1, d2;
        silu_jet<M<S>>(y[c] * s, gain, a, d1, d2);
        const S gz0 = d1 * g[at + c] + d2 * acc[c];
        gy[at + c] = s * gz0 + d1 * accl[c];
        gl0 += y[c] * gz0;
        d1buf[c] = d1;
      }
      for (int64_t j = 0; j < n; ++j) {
        const S* __restrict ytj = yt + j * P + at;
        const S* __restrict gj = g + (j + 1) * P + at;
        S* __restrict gyj = gy + (j + 1) * P + at;
        S glj = S(0), gl0j = S(0);
        for (int64_t c = 0; c < m; ++c) {
          const S gz = d1buf[c] * gj[c];
          gyj[c] = s * gz;
          glj += y[c] * gz;
          gl0j += ytj[c] * gz;
        }
        gl[(j + 1) * R + r] += glj;
        gl0 += gl0j;
      }
    }
    gl[r] = gl0;
  }
}

// [out0 = clamp(x0);] inside = |x0| ≤ bound; out_j = inside ? t_j : 0
template <typename S, bool PRIMAL>
FLOWCORE_CLONES void clip_fwd(const S* __restrict x0, const S* __restrict t, S* __restrict out0,
                              S* __restrict outt, bool* __restrict inside, int64_t P, int64_t n, S bound,
                              int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    S y;
    inside[i] = clip(x0[i], bound, y);
    if constexpr (PRIMAL) out0[i] = y;
  }
  for (int64_t j = 0; j < n; ++j) {
    const S* __restrict tj = t + j * P;
    S* __restrict oj = outt + j * P;
    for (int64_t i = begin; i < end; ++i) oj[i] = inside[i] ? tj[i] : S(0);
  }
}

// Pixel norm forward over slabs [begin, end) of O slabs (C, I): columns i are contiguous, so every loop
// below runs over i (vectorized), accumulating over c.
template <typename S, bool PRIMAL>
FLOWCORE_CLONES void pixel_norm_fwd(const S* __restrict x0, const S* __restrict t, S* __restrict out0,
                                    S* __restrict outt, int64_t O, int64_t C, int64_t I, int64_t n, S eps,
                                    int64_t begin, int64_t end) {
  std::vector<S> buffers(3 * I);
  S* __restrict r = buffers.data();
  S* __restrict inv = r + I;
  S* __restrict acc = inv + I;
  const int64_t P = O * C * I;
  for (int64_t o = begin; o < end; ++o) {
    const S* __restrict x = x0 + o * C * I;
    for (int64_t i = 0; i < I; ++i) acc[i] = S(0);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < I; ++i) acc[i] += x[c * I + i] * x[c * I + i];
    for (int64_t i = 0; i < I; ++i) {
      const PixelColumn<S> col = pixel_norm_column(acc[i], S(C), eps);
      r[i] = col.r;
      inv[i] = col.inv;
    }
    if constexpr (PRIMAL) {
      S* __restrict y = out0 + o * C * I;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < I; ++i) y[c * I + i] = x[c * I + i] * inv[i];
    }
    for (int64_t j = 0; j < n; ++j) {
      const S* __restrict tj = t + j * P + o * C * I;
      S* __restrict oj = outt + j * P + o * C * I;
      for (int64_t i = 0; i < I; ++i) acc[i] = S(0);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < I; ++i) acc[i] += x[c * I + i] * tj[c * I + i];
      for (int64_t i = 0; i < I; ++i) acc[i] = acc[i] / (S(C) * r[i]) * inv[i];  // ṙ·inv
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < I; ++i) oj[c * I + i] = (tj[c * I + i] - x[c * I + i] * acc[i]) * inv[i];
    }
  }
}

// Pixel norm backward over slabs [begin, end): the column sums, the coefficients (pixel_norm_column),
// then g_x = inv·g_0 + α·x − Σ_j (β_j·g_j + γ_j·ẋ_j) and g_ẋj = inv·g_j − γ_j·x.
template <typename S>
FLOWCORE_CLONES void pixel_norm_bwd(const S* __restrict x0, const S* __restrict t, const S* __restrict g,
                                    S* __restrict out, int64_t O, int64_t C, int64_t I, int64_t n, S eps,
                                    int64_t begin, int64_t end) {
  // per column: inv, α (first G), r, Σ_j H1_j, Σ_j Hx_j·P_j, then K and β_j, γ_j for each tangent (first
  // P_j and Hx_j)
  std::vector<S> buffers((6 + 2 * n) * I);
  S* __restrict inv = buffers.data();
  S* __restrict alpha = inv + I;
  S* __restrict r = alpha + I;
  S* __restrict h1 = r + I;
  S* __restrict cross = h1 + I;
  S* __restrict scratch = cross + I;
  const int64_t P = O * C * I;
  for (int64_t o = begin; o < end; ++o) {
    const int64_t at = o * C * I;
    const S* __restrict x = x0 + at;
    const S* __restrict g0 = g + at;
    S* __restrict ss = scratch;  // Σ x², then K
    for (int64_t i = 0; i < I; ++i) ss[i] = alpha[i] = h1[i] = cross[i] = S(0);  // alpha: G = Σ g0·x for now
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < I; ++i) {
        ss[i] += x[c * I + i] * x[c * I + i];
        alpha[i] += g0[c * I + i] * x[c * I + i];
      }
    for (int64_t i = 0; i < I; ++i) {
      const PixelColumn<S> col = pixel_norm_column(ss[i], S(C), eps);
      inv[i] = col.inv;
      ss[i] = col.K;
      r[i] = col.r;
    }
    for (int64_t j = 0; j < n; ++j) {
      const S* __restrict tj = t + j * P + at;
      const S* __restrict gj = g + (j + 1) * P + at;
      S* __restrict beta = scratch + (1 + 2 * j) * I;   // P_j, then β_j = K·P_j
      S* __restrict gamma = beta + I;                    // Hx_j, then γ_j = K·Hx_j
      for (int64_t i = 0; i < I; ++i) beta[i] = gamma[i] = S(0);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < I; ++i) {
          beta[i] += x[c * I + i] * tj[c * I + i];
          gamma[i] += gj[c * I + i] * x[c * I + i];
          h1[i] += gj[c * I + i] * tj[c * I + i];
        }
      for (int64_t i = 0; i < I; ++i) {
        cross[i] += gamma[i] * beta[i];
        beta[i] *= ss[i];
        gamma[i] *= ss[i];
      }
    }
    for (int64_t i = 0; i < I; ++i) {
      const PixelColumn<S> col{r[i], inv[i], S(0), ss[i]};
      alpha[i] = pixel_norm_alpha(col, S(C), alpha[i], h1[i], cross[i]);
    }
    S* __restrict gx = out + at;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < I; ++i) gx[c * I + i] = inv[i] * g0[c * I + i] + alpha[i] * x[c * I + i];
    for (int64_t j = 0; j < n; ++j) {
      const S* __restrict tj = t + j * P + at;
      const S* __restrict gj = g + (j + 1) * P + at;
      const S* __restrict beta = scratch + (1 + 2 * j) * I;
      const S* __restrict gamma = beta + I;
      S* __restrict gtj = out + (j + 1) * P + at;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < I; ++i) {
          const int64_t k = c * I + i;
          gx[k] -= beta[i] * gj[k] + gamma[i] * tj[k];
          gtj[k] = inv[i] * gj[k] - gamma[i] * x[k];
        }
    }
  }
}

// rows [begin, end) of one weight (rows of `cols` elements): u = w·s (forward), or with `g`:
// g_w = (g − u·⟨g, u⟩)·s (backward; u recomputed)
template <typename S>
FLOWCORE_CLONES void unit_rows(const S* __restrict w, const S* __restrict g, S* __restrict out, int64_t cols,
                               S floor, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const S* __restrict wr = w + r * cols;
    S* __restrict o = out + r * cols;
    S ss = S(0);
    for (int64_t c = 0; c < cols; ++c) ss += wr[c] * wr[c];
    bool live;
    const S s = unit_row_scale(ss, floor, live);
    if (g == nullptr) {
      for (int64_t c = 0; c < cols; ++c) o[c] = wr[c] * s;
      continue;
    }
    const S* __restrict gr = g + r * cols;
    S dot = S(0);
    if (live)
      for (int64_t c = 0; c < cols; ++c) dot += gr[c] * wr[c];
    const S k = dot * s * s;  // ⟨g, u⟩·s, applied to w: u·⟨g, u⟩·s = w·(⟨g, w⟩·s²)·s
    for (int64_t c = 0; c < cols; ++c) o[c] = (gr[c] - wr[c] * k) * s;
  }
}

// about 32k elements of the stack per task (ATen's GRAIN_SIZE)
inline int64_t grain(int64_t blocks, int64_t per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(blocks * per_item, 1));
}

}  // namespace cpu
}  // namespace unet
}  // namespace flowcore

FLOWCORE_FAST_END
