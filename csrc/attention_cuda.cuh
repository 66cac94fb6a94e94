// Attention with its JVP: the CUDA kernels (docs/math.md §4; the math: attention_jvp.h; the launchers:
// attention_cuda.cu).
//
// fwd_kernel: one thread block per (b, h, row tile of kRows queries); key tiles of kKeys rows are
// staged in shared memory (q, q̇ of the row tile, k, k̇, v, v̇ of the key tile, the score tiles and
// the row accumulators) in the accumulation type A = at::opmath_type; the online softmax of
// attention_jvp.h (rescale, weigh). bwd_kernel: the same blocks recompute p and ṡ per key tile,
// accumulate g_q, g_q̇ of their rows in shared memory and atomicAdd their share of g_k, g_k̇, g_v,
// g_v̇ into A-typed global buffers. Every phase is separated by __syncthreads. The row statistics
// lse and μ are stored in A too: rounded to float16 / bfloat16, exp(s − lse) would be off by ~1%.
#pragma once

#include <ATen/OpMathType.h>

#include <cstdint>

#include "attention_jvp.h"

// The block's dynamic shared memory; attention_cuda_emulate.cc (the host emulation the tests run)
// defines it as a host buffer instead.
#ifndef FLOWCORE_DYNAMIC_SHARED
#define FLOWCORE_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace flowcore {
namespace attention {
namespace gpu {

constexpr int kRows = 16;     // query rows per block
constexpr int kKeys = 16;     // keys per shared-memory tile
constexpr int kThreads = 128;
constexpr int64_t kMaxDim = 256;  // D and D_v (shared memory grows with them)

struct Dims {
  int64_t BH, Nq, Nk, D, Dv, tiles;
};

// Bytes of dynamic shared memory of the kernels (their layouts are at their tops).
template <typename A>
constexpr size_t fwd_shared_bytes(int64_t D, int64_t Dv) {
  return sizeof(A) * (2 * kRows * D + 2 * kKeys * (D + Dv + 2) + 2 * kRows * kKeys + 2 * kRows * Dv + kRows);
}
template <typename A>
constexpr size_t bwd_shared_bytes(int64_t D, int64_t Dv) {
  return sizeof(A) * (2 * kRows * (D + Dv) + 2 * kKeys * (D + Dv + 2) + 4 * kRows * kKeys + 2 * kRows * D + 4 * kRows);
}

// rows [r0, r0 + kRows) of a (·, N, width) slice into shared memory, zeros past n
template <typename A, typename scalar_t>
__device__ void stage(A* dst, const scalar_t* src, int64_t r0, int64_t n, int64_t width) {
  for (int64_t e = threadIdx.x; e < kRows * width; e += blockDim.x) {
    const int64_t r = r0 + e / width;
    dst[e] = r < n ? static_cast<A>(src[r * width + e % width]) : A(0);
  }
}
template <typename A, typename scalar_t>
__device__ void stage_keys(A* dst, const scalar_t* src, int64_t c0, int64_t n, int64_t width) {
  for (int64_t e = threadIdx.x; e < kKeys * width; e += blockDim.x) {
    const int64_t r = c0 + e / width;
    dst[(e / width) * (width + 1) + e % width] = r < n ? static_cast<A>(src[r * width + e % width]) : A(0);
  }
}

template <typename A>
__device__ __forceinline__ A dot(const A* a, const A* b, int64_t n) {
  A acc = A(0);
  for (int64_t c = 0; c < n; ++c) acc += a[c] * b[c];
  return acc;
}

template <typename scalar_t, bool TANGENT>
__global__ void fwd_kernel(Dims d, at::opmath_type<scalar_t> scale, const scalar_t* __restrict__ q,
                           const scalar_t* __restrict__ k, const scalar_t* __restrict__ v,
                           const scalar_t* __restrict__ dq, const scalar_t* __restrict__ dk,
                           const scalar_t* __restrict__ dv, scalar_t* __restrict__ o, scalar_t* __restrict__ ot,
                           at::opmath_type<scalar_t>* __restrict__ lse, at::opmath_type<scalar_t>* __restrict__ mu) {
  using A = at::opmath_type<scalar_t>;
  FLOWCORE_DYNAMIC_SHARED(smem_raw);
  A* smem = reinterpret_cast<A*>(smem_raw);
  const int64_t D = d.D, Dv = d.Dv;
  A* sq = smem;                  // kRows × D
  A* sdq = sq + kRows * D;       // kRows × D
  const int64_t ldk = D + 1, ldv = Dv + 1;  // key-tile rows padded: threads of a warp read different rows
  A* sk = sdq + kRows * D;       // kKeys × ldk
  A* sdk = sk + kKeys * ldk;     // kKeys × ldk
  A* sv = sdk + kKeys * ldk;     // kKeys × ldv
  A* sdv = sv + kKeys * ldv;     // kKeys × ldv
  A* ss = sdv + kKeys * ldv;     // kRows × kKeys: s, then e
  A* ssd = ss + kRows * kKeys;   // kRows × kKeys: ṡ, then e·ṡ
  A* acc_o = ssd + kRows * kKeys;  // kRows × Dv
  A* acc_a = acc_o + kRows * Dv;   // kRows × Dv
  A* factor = acc_a + kRows * Dv;  // kRows
  __shared__ RowState<A> state[kRows];

  const int64_t bh = blockIdx.x / d.tiles, r0 = (blockIdx.x % d.tiles) * kRows;
  const int64_t nr = min(static_cast<int64_t>(kRows), d.Nq - r0);
  stage(sq, q + bh * d.Nq * D, r0, d.Nq, D);
  if (TANGENT) stage(sdq, dq + bh * d.Nq * D, r0, d.Nq, D);
  for (int64_t e = threadIdx.x; e < 2 * kRows * Dv; e += blockDim.x) acc_o[e] = A(0);
  if (threadIdx.x < kRows) state[threadIdx.x] = {A(-INFINITY), A(0), A(0)};
  for (int64_t c0 = 0; c0 < d.Nk; c0 += kKeys) {
    const int64_t nc = min(static_cast<int64_t>(kKeys), d.Nk - c0);
    __syncthreads();  // the previous tile's readers are done
    stage_keys(sk, k + bh * d.Nk * D, c0, d.Nk, D);
    stage_keys(sv, v + bh * d.Nk * Dv, c0, d.Nk, Dv);
    if (TANGENT) {
      stage_keys(sdk, dk + bh * d.Nk * D, c0, d.Nk, D);
      stage_keys(sdv, dv + bh * d.Nk * Dv, c0, d.Nk, Dv);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kRows * kKeys; e += blockDim.x) {
      const int i = e / kKeys, j = e % kKeys;
      ss[e] = j < nc ? scale * dot(sq + i * D, sk + j * ldk, D) : A(-INFINITY);
      if (TANGENT) ssd[e] = j < nc ? scale * (dot(sdq + i * D, sk + j * ldk, D) + dot(sq + i * D, sdk + j * ldk, D)) : A(0);
    }
    __syncthreads();
    if (threadIdx.x < kRows) {
      const int i = threadIdx.x;
      A tile_max = ss[i * kKeys];
      for (int j = 1; j < nc; ++j) tile_max = ss[i * kKeys + j] > tile_max ? ss[i * kKeys + j] : tile_max;
      factor[i] = rescale<A>(state[i], tile_max);
      for (int j = 0; j < kKeys; ++j) {
        A e_sdot = A(0);
        ss[i * kKeys + j] = j < nc ? weigh<A>(state[i], ss[i * kKeys + j], TANGENT ? ssd[i * kKeys + j] : A(0), e_sdot)
                                   : A(0);
        if (TANGENT) ssd[i * kKeys + j] = e_sdot;
      }
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < kRows * Dv; e += blockDim.x) {
      const int64_t i = e / Dv, c = e % Dv;
      A so = acc_o[e] * factor[i], sa = TANGENT ? acc_a[e] * factor[i] : A(0);
      for (int j = 0; j < kKeys; ++j) {
        so += ss[i * kKeys + j] * sv[j * ldv + c];
        if (TANGENT) sa += ssd[i * kKeys + j] * sv[j * ldv + c] + ss[i * kKeys + j] * sdv[j * ldv + c];
      }
      acc_o[e] = so;
      if (TANGENT) acc_a[e] = sa;
    }
  }
  __syncthreads();
  const int64_t row0 = bh * d.Nq + r0;
  if (threadIdx.x < nr) {
    lse[row0 + threadIdx.x] = row_lse<A>(state[threadIdx.x]);
    if (TANGENT) mu[row0 + threadIdx.x] = row_mu<A>(state[threadIdx.x]);
  }
  for (int64_t e = threadIdx.x; e < nr * Dv; e += blockDim.x) {
    const int64_t i = e / Dv;
    const A oe = acc_o[e] / state[i].l;
    o[row0 * Dv + e] = static_cast<scalar_t>(oe);
    if (TANGENT) ot[row0 * Dv + e] = static_cast<scalar_t>(acc_a[e] / state[i].l - row_mu<A>(state[i]) * oe);
  }
}

template <typename scalar_t, bool TANGENT>
__global__ void bwd_kernel(Dims d, at::opmath_type<scalar_t> scale, const scalar_t* __restrict__ q,
                           const scalar_t* __restrict__ k, const scalar_t* __restrict__ v,
                           const scalar_t* __restrict__ dq, const scalar_t* __restrict__ dk,
                           const scalar_t* __restrict__ dv, const scalar_t* __restrict__ o,
                           const scalar_t* __restrict__ ot, const at::opmath_type<scalar_t>* __restrict__ lse,
                           const at::opmath_type<scalar_t>* __restrict__ mu, const scalar_t* __restrict__ go,
                           const scalar_t* __restrict__ got, scalar_t* __restrict__ gq, scalar_t* __restrict__ gdq,
                           at::opmath_type<scalar_t>* __restrict__ gk, at::opmath_type<scalar_t>* __restrict__ gv,
                           at::opmath_type<scalar_t>* __restrict__ gdk, at::opmath_type<scalar_t>* __restrict__ gdv) {
  using A = at::opmath_type<scalar_t>;
  FLOWCORE_DYNAMIC_SHARED(smem_raw);
  A* smem = reinterpret_cast<A*>(smem_raw);
  const int64_t D = d.D, Dv = d.Dv;
  A* sq = smem;                     // kRows × D
  A* sdq = sq + kRows * D;          // kRows × D
  A* sgo = sdq + kRows * D;         // kRows × Dv
  A* sgot = sgo + kRows * Dv;       // kRows × Dv
  const int64_t ldk = D + 1, ldv = Dv + 1;  // key-tile rows padded, as in fwd_kernel
  A* sk = sgot + kRows * Dv;        // kKeys × ldk
  A* sdk = sk + kKeys * ldk;        // kKeys × ldk
  A* sv = sdk + kKeys * ldk;        // kKeys × ldv
  A* sdv = sv + kKeys * ldv;        // kKeys × ldv
  A* sgs = sdv + kKeys * ldv;       // kRows × kKeys: g_s
  A* sgsd = sgs + kRows * kKeys;    // g_ṡ
  A* sp = sgsd + kRows * kKeys;     // p
  A* spd = sp + kRows * kKeys;      // ṗ
  A* acc_q = spd + kRows * kKeys;   // kRows × D
  A* acc_dq = acc_q + kRows * D;    // kRows × D
  A* row = acc_dq + kRows * D;      // kRows × 4: lse, μ, δ, E

  const int64_t bh = blockIdx.x / d.tiles, r0 = (blockIdx.x % d.tiles) * kRows;
  const int64_t nr = min(static_cast<int64_t>(kRows), d.Nq - r0);
  const int64_t row0 = bh * d.Nq + r0;
  stage(sq, q + bh * d.Nq * D, r0, d.Nq, D);
  stage(sgo, go + bh * d.Nq * Dv, r0, d.Nq, Dv);
  if (TANGENT) {
    stage(sdq, dq + bh * d.Nq * D, r0, d.Nq, D);
    stage(sgot, got + bh * d.Nq * Dv, r0, d.Nq, Dv);
  }
  for (int64_t e = threadIdx.x; e < 2 * kRows * D; e += blockDim.x) acc_q[e] = A(0);
  if (threadIdx.x < kRows) {
    const int64_t i = threadIdx.x;
    A l = A(0), m = A(0), delta = A(0), energy = A(0);
    if (i < nr) {
      l = lse[row0 + i];
      for (int64_t c = 0; c < Dv; ++c) {
        const A oc = static_cast<A>(o[(row0 + i) * Dv + c]);
        energy += static_cast<A>(go[(row0 + i) * Dv + c]) * oc;
        if (TANGENT) {
          const A gtc = static_cast<A>(got[(row0 + i) * Dv + c]);
          energy += gtc * static_cast<A>(ot[(row0 + i) * Dv + c]);
          delta += gtc * oc;
        }
      }
      if (TANGENT) m = mu[row0 + i];
    }
    row[4 * i] = l, row[4 * i + 1] = m, row[4 * i + 2] = delta, row[4 * i + 3] = energy;
  }
  for (int64_t c0 = 0; c0 < d.Nk; c0 += kKeys) {
    const int64_t nc = min(static_cast<int64_t>(kKeys), d.Nk - c0);
    __syncthreads();
    stage_keys(sk, k + bh * d.Nk * D, c0, d.Nk, D);
    stage_keys(sv, v + bh * d.Nk * Dv, c0, d.Nk, Dv);
    if (TANGENT) {
      stage_keys(sdk, dk + bh * d.Nk * D, c0, d.Nk, D);
      stage_keys(sdv, dv + bh * d.Nk * Dv, c0, d.Nk, Dv);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kRows * kKeys; e += blockDim.x) {
      const int i = e / kKeys, j = e % kKeys;
      if (i >= nr || j >= nc) {
        sgs[e] = sgsd[e] = sp[e] = spd[e] = A(0);
        continue;
      }
      const A s = scale * dot(sq + i * D, sk + j * ldk, D);
      A sdot = A(0), u = A(0), w = dot(sgo + i * Dv, sv + j * ldv, Dv);
      if (TANGENT) {
        sdot = scale * (dot(sdq + i * D, sk + j * ldk, D) + dot(sq + i * D, sdk + j * ldk, D));
        u = dot(sgot + i * Dv, sv + j * ldv, Dv);
        w += dot(sgot + i * Dv, sdv + j * ldv, Dv);
      }
      const A p = exp_of<A>(s - row[4 * i]);
      A g_sdot, pdot;
      sgs[e] = grad_scores<A>(p, sdot, row[4 * i + 1], row[4 * i + 2], row[4 * i + 3], u, w, g_sdot, pdot);
      sgsd[e] = g_sdot, sp[e] = p, spd[e] = pdot;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < kRows * D; e += blockDim.x) {
      const int64_t i = e / D, c = e % D;
      A aq = A(0), adq = A(0);
      for (int j = 0; j < kKeys; ++j) {
        aq += sgs[i * kKeys + j] * sk[j * ldk + c];
        if (TANGENT) {
          aq += sgsd[i * kKeys + j] * sdk[j * ldk + c];
          adq += sgsd[i * kKeys + j] * sk[j * ldk + c];
        }
      }
      acc_q[e] += scale * aq;
      if (TANGENT) acc_dq[e] += scale * adq;
    }
    for (int64_t e = threadIdx.x; e < nc * D; e += blockDim.x) {
      const int64_t j = e / D, c = e % D;
      A ak = A(0), adk = A(0);
      for (int i = 0; i < kRows; ++i) {
        ak += sgs[i * kKeys + j] * sq[i * D + c];
        if (TANGENT) {
          ak += sgsd[i * kKeys + j] * sdq[i * D + c];
          adk += sgsd[i * kKeys + j] * sq[i * D + c];
        }
      }
      atomicAdd(gk + (bh * d.Nk + c0) * D + e, scale * ak);
      if (TANGENT) atomicAdd(gdk + (bh * d.Nk + c0) * D + e, scale * adk);
    }
    for (int64_t e = threadIdx.x; e < nc * Dv; e += blockDim.x) {
      const int64_t j = e / Dv, c = e % Dv;
      A av = A(0), adv = A(0);
      for (int i = 0; i < kRows; ++i) {
        av += sp[i * kKeys + j] * sgo[i * Dv + c];
        if (TANGENT) {
          av += spd[i * kKeys + j] * sgot[i * Dv + c];
          adv += sp[i * kKeys + j] * sgot[i * Dv + c];
        }
      }
      atomicAdd(gv + (bh * d.Nk + c0) * Dv + e, av);
      if (TANGENT) atomicAdd(gdv + (bh * d.Nk + c0) * Dv + e, adv);
    }
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < nr * D; e += blockDim.x) {
    gq[row0 * D + e] = static_cast<scalar_t>(acc_q[e]);
    if (TANGENT) gdq[row0 * D + e] = static_cast<scalar_t>(acc_dq[e]);
  }
}

}  // namespace gpu
}  // namespace attention
}  // namespace flowcore
