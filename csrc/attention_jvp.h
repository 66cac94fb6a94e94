// Attention with its JVP: the per-row / per-element math shared by the CPU (attention_cpu.cpp) and
// CUDA (attention_cuda.cu) kernels (docs/math.md §4, attention JVP).
//
// Per (b, h): s = scale·q kᵀ, p = softmax_rows(s), o = p v, and along tangents (q̇, k̇, v̇)
//
//   ṡ_ij = scale·(q̇_i·k_j + q_i·k̇_j),  μ_i = Σ_j p_ij ṡ_ij,  ṗ_ij = p_ij (ṡ_ij − μ_i),
//   ȯ_i  = Σ_j ṗ_ij v_j + p_ij v̇_j = Σ_j p_ij (ṡ_ij v_j + v̇_j) − μ_i o_i.
//
// Forward (one pass over key tiles, online softmax): with running max m_i and e_ij = exp(s_ij − m_i),
// accumulate l_i = Σ e, M_i = Σ e ṡ, O_i = Σ e v, A_i = Σ e (ṡ v + v̇); a new max m' rescales all
// four by exp(m − m'). Then o = O/l, μ = M/l, ȯ = A/l − μ o, lse = m + log l. Saved for backward:
// lse and μ per row (and o, ȯ, the outputs): O(N) beyond the inputs.
//
// Backward, from g_o and g_ȯ (write u_ij = g_ȯi·v_j, w_ij = g_oi·v_j + g_ȯi·v̇_j, δ_i = g_ȯi·o_i,
// E_i = g_oi·o_i + g_ȯi·ȯ_i). ṗ = J(p)·ṡ with the symmetric softmax Jacobian J = diag p − p pᵀ, so
//   g_ṡ_ij = p_ij (u_ij − δ_i)                                   (J applied to g_ṗ = u)
// and p enters o, ȯ directly and through ṗ; summing the paths and applying J once more,
//   g_s_ij = p_ij (w_ij − E_i) + g_ṡ_ij (ṡ_ij − μ_i)
// (the row sums Σ_k p_ik g_p_ik collapse to E_i − μ_i δ_i because Σ_k ṗ_ik v_k = ȯ_i − Σ_k p_ik v̇_k).
// Then, through s and ṡ being bilinear:
//   g_q_i = scale Σ_j (g_s_ij k_j + g_ṡ_ij k̇_j),   g_k_j = scale Σ_i (g_s_ij q_i + g_ṡ_ij q̇_i),
//   g_q̇_i = scale Σ_j g_ṡ_ij k_j,                   g_k̇_j = scale Σ_i g_ṡ_ij q_i,
//   g_v_j = Σ_i p_ij g_oi + ṗ_ij g_ȯi,               g_v̇_j = Σ_i p_ij g_ȯi.
// Every term needs p_ij = exp(s_ij − lse_i) and ṡ_ij of one tile only: the backward recomputes them.
// The primal-only op is the case q̇ = k̇ = v̇ = 0, g_ȯ = 0 (g_s = p (g_o·v − g_o·o)).
//
// Functions here are plain inline arithmetic on the accumulation type A (float for float32 /
// float16 / bfloat16, double for float64), host and device.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace flowcore {
namespace attention {

template <typename A>
FLOWCORE_HD A exp_of(A x) {
  return std::exp(x);
}
template <typename A>
FLOWCORE_HD A log_of(A x) {
  return std::log(x);
}
#if defined(__CUDACC__)
template <>
__host__ __device__ __forceinline__ float exp_of<float>(float x) { return expf(x); }
template <>
__host__ __device__ __forceinline__ float log_of<float>(float x) { return logf(x); }
#endif

// The running statistics of one query row over the key tiles seen so far.
template <typename A>
struct RowState {
  A m;   // running max of the scores (−inf before the first tile)
  A l;   // Σ exp(s − m)
  A mu;  // Σ exp(s − m)·ṡ
};

// A new tile whose largest score is `tile_max`: returns the factor exp(m_old − m_new) by which the
// accumulators (l, mu, O, A) must be scaled, and sets state.m. −inf − −inf is guarded: a first
// tile scales empty accumulators by 0.
template <typename A>
FLOWCORE_HD A rescale(RowState<A>& state, A tile_max) {
  const A m_new = state.m > tile_max ? state.m : tile_max;
  const A factor = state.m == -INFINITY ? A(0) : exp_of<A>(state.m - m_new);
  state.m = m_new;
  state.l *= factor;
  state.mu *= factor;
  return factor;
}

// One score of the row after `rescale`: e = exp(s − m), added to l and mu; returns e and sets
// e_sdot = e·ṡ (the weight of v in A's Σ e (ṡ v + v̇)).
template <typename A>
FLOWCORE_HD A weigh(RowState<A>& state, A s, A sdot, A& e_sdot) {
  const A e = exp_of<A>(s - state.m);
  state.l += e;
  e_sdot = e * sdot;
  state.mu += e_sdot;
  return e;
}

// Row outputs from the accumulators: o_d = O_d / l, ȯ_d = A_d / l − μ o_d.
template <typename A>
FLOWCORE_HD A row_lse(const RowState<A>& state) {
  return state.m + log_of<A>(state.l);
}
template <typename A>
FLOWCORE_HD A row_mu(const RowState<A>& state) {
  return state.mu / state.l;
}

// Per-row constants of the backward: δ = g_ȯ·o, E = g_o·o + g_ȯ·ȯ (dot products, passed in).

// One element of the backward tile, given p = exp(s − lse): returns g_s and sets g_ṡ and ṗ.
template <typename A>
FLOWCORE_HD A grad_scores(A p, A sdot, A mu, A delta, A energy, A u, A w, A& g_sdot, A& pdot) {
  const A centred = sdot - mu;
  g_sdot = p * (u - delta);
  pdot = p * centred;
  return p * (w - energy) + g_sdot * centred;
}

}  // namespace attention
}  // namespace flowcore
