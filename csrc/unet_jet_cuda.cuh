// The image UNet's pointwise jets: the CUDA kernels (the math and the layout: unet_jet.h; the launchers:
// unet_jet_cuda.cu). S is the storage type, A the arithmetic one (at::opmath_type<S>: float for
// float16 / bfloat16 / float32, double for float64).
//
// Elementwise kernels: one thread per primal element (grid-stride); it evaluates a, a', a'' once and
// serves every tangent block. The FiLM backward: one thread block of kThreads per (b, c) row, whose
// threads stride over the row and reduce g_l0 and g_lt_j through shared memory (the only barrier).
// unet_jet_cuda_emulate.cc compiles this file for the host, for the tests.
#pragma once

#include <cmath>
#include <cstdint>

#include "unet_jet.h"

namespace flowcore {
namespace unet {
namespace gpu {

constexpr int kThreads = 256;

struct DeviceMath {
  static __device__ __forceinline__ float exp(float x) { return ::expf(x); }
  static __device__ __forceinline__ double exp(double x) { return ::exp(x); }
};

template <typename S, typename A>
__global__ void silu_fwd_kernel(const S* __restrict__ x0, const S* __restrict__ t, S* __restrict__ out0,
                                S* __restrict__ outt, int64_t P, int64_t n, A gain) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < P; i += int64_t(gridDim.x) * blockDim.x) {
    A a, d1, d2;
    silu_jet<DeviceMath>(A(x0[i]), gain, a, d1, d2);
    if (out0 != nullptr) out0[i] = S(a);
    for (int64_t j = 0; j < n; ++j) outt[j * P + i] = S(d1 * A(t[j * P + i]));
  }
}

template <typename S, typename A>
__global__ void silu_bwd_kernel(const S* __restrict__ x0, const S* __restrict__ t, const S* __restrict__ g,
                                S* __restrict__ out, int64_t P, int64_t n, A gain) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < P; i += int64_t(gridDim.x) * blockDim.x) {
    A a, d1, d2, acc = A(0);
    silu_jet<DeviceMath>(A(x0[i]), gain, a, d1, d2);
    for (int64_t j = 0; j < n; ++j) {
      const A gj = A(g[(j + 1) * P + i]);
      acc += A(t[j * P + i]) * gj;
      out[(j + 1) * P + i] = S(d1 * gj);
    }
    out[i] = S(d1 * A(g[i]) + d2 * acc);
  }
}

template <typename S, typename A>
__global__ void film_silu_fwd_kernel(const S* __restrict__ y0, const S* __restrict__ l0, const S* __restrict__ yt,
                                     const S* __restrict__ lt, S* __restrict__ out0, S* __restrict__ outt, int64_t R,
                                     int64_t Sz, int64_t n, A gain) {
  const int64_t P = R * Sz;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < P; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / Sz;
    const A s = A(1) + A(l0[r]), y = A(y0[i]);
    A a, d1, d2;
    silu_jet<DeviceMath>(y * s, gain, a, d1, d2);
    if (out0 != nullptr) out0[i] = S(a);
    for (int64_t j = 0; j < n; ++j)
      outt[j * P + i] = S(d1 * film_tangent(A(yt[j * P + i]), s, y, A(lt[j * R + r])));
  }
}

// one block per row r; sums[k][thread] in shared memory: k = 0 for g_l0, 1 + j for g_lt_j
template <typename S, typename A>
__global__ void film_silu_bwd_kernel(const S* __restrict__ y0, const S* __restrict__ l0, const S* __restrict__ yt,
                                     const S* __restrict__ lt, const S* __restrict__ g, S* __restrict__ gy,
                                     S* __restrict__ gl, int64_t R, int64_t Sz, int64_t n, A gain) {
  __shared__ A sums[kMaxTangents + 1][kThreads];
  const int64_t r = blockIdx.x, P = R * Sz;
  const A s = A(1) + A(l0[r]);
  A part[kMaxTangents + 1];
  for (int64_t k = 0; k <= n; ++k) part[k] = A(0);
  for (int64_t c = threadIdx.x; c < Sz; c += blockDim.x) {
    const int64_t i = r * Sz + c;
    const A y = A(y0[i]);
    A a, d1, d2, acc = A(0), accl = A(0);
    silu_jet<DeviceMath>(y * s, gain, a, d1, d2);
    for (int64_t j = 0; j < n; ++j) {
      const A ltj = A(lt[j * R + r]), ytj = A(yt[j * P + i]), gj = A(g[(j + 1) * P + i]);
      const A gz = d1 * gj;
      acc += film_tangent(ytj, s, y, ltj) * gj;
      accl += ltj * gz;
      gy[(j + 1) * P + i] = S(s * gz);
      part[1 + j] += y * gz;
      part[0] += ytj * gz;
    }
    const A gz0 = d1 * A(g[i]) + d2 * acc;
    gy[i] = S(s * gz0 + accl);
    part[0] += y * gz0;
  }
  for (int64_t k = 0; k <= n; ++k) sums[k][threadIdx.x] = part[k];
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride)
      for (int64_t k = 0; k <= n; ++k) sums[k][threadIdx.x] += sums[k][threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0)
    for (int64_t k = 0; k <= n; ++k) gl[k * R + r] = S(sums[k][0]);
}

template <typename S, typename A>
__global__ void clip_fwd_kernel(const S* __restrict__ x0, const S* __restrict__ t, S* __restrict__ out0,
                                S* __restrict__ outt, bool* __restrict__ inside, int64_t P, int64_t n, A bound) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < P; i += int64_t(gridDim.x) * blockDim.x) {
    A y;
    const bool in = clip(A(x0[i]), bound, y);
    inside[i] = in;
    if (out0 != nullptr) out0[i] = S(y);
    for (int64_t j = 0; j < n; ++j) outt[j * P + i] = in ? t[j * P + i] : S(0);
  }
}

// One thread per (o, i) column of the pixel norm (grid-stride); it loops over C twice per tangent.
template <typename S, typename A>
__global__ void pixel_norm_fwd_kernel(const S* __restrict__ x0, const S* __restrict__ t, S* __restrict__ out0,
                                      S* __restrict__ outt, int64_t O, int64_t C, int64_t I, int64_t n, A eps) {
  const int64_t P = O * C * I;
  for (int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; col < O * I;
       col += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (col / I) * C * I + col % I;
    A ss = A(0);
    for (int64_t c = 0; c < C; ++c) ss += A(x0[base + c * I]) * A(x0[base + c * I]);
    const PixelColumn<A> pc = pixel_norm_column(ss, A(C), eps);
    if (out0 != nullptr)
      for (int64_t c = 0; c < C; ++c) out0[base + c * I] = S(A(x0[base + c * I]) * pc.inv);
    for (int64_t j = 0; j < n; ++j) {
      const S* tj = t + j * P + base;
      A p = A(0);
      for (int64_t c = 0; c < C; ++c) p += A(x0[base + c * I]) * A(tj[c * I]);
      const A rdot_inv = p / (A(C) * pc.r) * pc.inv;
      for (int64_t c = 0; c < C; ++c)
        outt[j * P + base + c * I] = S((A(tj[c * I]) - A(x0[base + c * I]) * rdot_inv) * pc.inv);
    }
  }
}

// The pixel norm's backward, one thread per column; n <= kMaxTangents (the per-tangent sums in registers).
template <typename S, typename A>
__global__ void pixel_norm_bwd_kernel(const S* __restrict__ x0, const S* __restrict__ t, const S* __restrict__ g,
                                      S* __restrict__ out, int64_t O, int64_t C, int64_t I, int64_t n, A eps) {
  const int64_t P = O * C * I;
  for (int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; col < O * I;
       col += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (col / I) * C * I + col % I;
    A ss = A(0), G = A(0), h1 = A(0), cross = A(0);
    A beta[kMaxTangents], gamma[kMaxTangents];
    for (int64_t c = 0; c < C; ++c) {
      const A x = A(x0[base + c * I]);
      ss += x * x;
      G += A(g[base + c * I]) * x;
    }
    PixelColumn<A> pc = pixel_norm_column(ss, A(C), eps);
    for (int64_t j = 0; j < n; ++j) {
      A p = A(0), hx = A(0);
      for (int64_t c = 0; c < C; ++c) {
        const A x = A(x0[base + c * I]), tj = A(t[j * P + base + c * I]), gj = A(g[(j + 1) * P + base + c * I]);
        p += x * tj;
        hx += gj * x;
        h1 += gj * tj;
      }
      cross += hx * p;
      beta[j] = pc.K * p;
      gamma[j] = pc.K * hx;
    }
    const A alpha = pixel_norm_alpha(pc, A(C), G, h1, cross);
    for (int64_t c = 0; c < C; ++c) {
      const int64_t k = base + c * I;
      const A x = A(x0[k]);
      A gx = pc.inv * A(g[k]) + alpha * x;
      for (int64_t j = 0; j < n; ++j) {
        const A gj = A(g[(j + 1) * P + k]);
        gx -= beta[j] * gj + gamma[j] * A(t[j * P + k]);
        out[(j + 1) * P + k] = S(pc.inv * gj - gamma[j] * x);
      }
      out[k] = S(gx);
    }
  }
}

// unit rows of one weight: one block per row reduces ‖w‖² (and ⟨g, w⟩ for the backward, g != nullptr)
// through shared memory, then scales the row (forward) or writes g_w = (g − w·⟨g, w⟩·s²)·s.
template <typename S, typename A>
__global__ void unit_rows_kernel(const S* __restrict__ w, const S* __restrict__ g, S* __restrict__ out,
                                 int64_t cols, A floor) {
  __shared__ A sums[2][kThreads];
  const int64_t at = int64_t(blockIdx.x) * cols;
  A ss = A(0), dot = A(0);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const A x = A(w[at + c]);
    ss += x * x;
    if (g != nullptr) dot += A(g[at + c]) * x;
  }
  sums[0][threadIdx.x] = ss;
  sums[1][threadIdx.x] = dot;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      sums[0][threadIdx.x] += sums[0][threadIdx.x + stride];
      sums[1][threadIdx.x] += sums[1][threadIdx.x + stride];
    }
    __syncthreads();
  }
  bool live;
  const A s = unit_row_scale(sums[0][0], floor, live);
  const A k = live ? sums[1][0] * s * s : A(0);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    out[at + c] = g != nullptr ? S((A(g[at + c]) - A(w[at + c]) * k) * s) : S(A(w[at + c]) * s);
}

}  // namespace gpu
}  // namespace unet
}  // namespace flowcore
