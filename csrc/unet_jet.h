// The image UNet's pointwise jets (docs/math.md §4, the image UNet; flowcore.nn.unet.pointwise): the
// per-element math shared by the CPU kernels (unet_jet_cpu.cpp) and the CUDA ones (unet_jet_cuda.cu).
//
// A jet is the primal block x0 (B, …) and n tangent blocks t (n·B, …), P = x0.numel() elements each.
//
//   flowcore::unet_silu_jet(x0, t, gain, with_primal) -> y
//       a(x) = gain·x·σ(x) (gain = 1/0.596: mp_silu);  y = [a(x0);] a'(x0)·t_j
//   flowcore::unet_silu_jet_bwd(x0, t, grad, gain) -> g        (grad, g: the (1+n)·B stack)
//       g_x0 = a'·g_0 + a''·Σ_j t_j·g_j,   g_tj = a'·g_j
//   flowcore::unet_film_silu_jet(y0, l0, yt, lt, gain, with_primal) -> out
//       y0 (B, C, S…), l0 (B, C), yt (n·B, C, S…), lt (n·B, C): the FiLM scale and mp_silu after it,
//       z0 = y0·(1 + l0),  z_j = yt_j·(1 + l0) + y0·lt_j,  out = silu jet of (z0, z_j)
//   flowcore::unet_film_silu_jet_bwd(y0, l0, yt, lt, grad, gain) -> (g_y, g_l)
//       with gz0 = a'·g_0 + a''·Σ_j z_j·g_j and gz_j = a'·g_j:
//       g_y0 = (1 + l0)·gz0 + Σ_j lt_j·gz_j,  g_yt_j = (1 + l0)·gz_j,
//       g_l0 = Σ_S (y0·gz0 + Σ_j yt_j·gz_j),  g_lt_j = Σ_S y0·gz_j
//   flowcore::unet_clip_jet(x0, t, bound, with_primal) -> (y, inside)
//       inside = |x0| < bound (false for NaN; at ±bound the clamp's derivative is 0, as torch's),
//       y = [clamp(x0, ±bound);] inside ? t_j : 0
//       (its backward is one masked select, left to torch)
//   flowcore::unet_pixel_norm_jet(x0, t, eps, with_primal) -> y
//       x0 (O, C, I), t (n·O, C, I): each (o, i) column normalised over C,
//       r = sqrt(Σ_c x²/C), inv = 1/(r + eps), y = x·inv,  ẏ_j = (ẋ_j − y·ṙ_j)·inv,  ṙ_j = Σ_c x·ẋ_j/(C·r)
//   flowcore::unet_pixel_norm_jet_bwd(x0, t, grad, eps) -> g        (per column, pixel_norm_column below)
//       g_x = inv·g_0 + α·x − Σ_j (β_j·g_j + γ_j·ẋ_j),   g_ẋj = inv·g_j − γ_j·x
//   flowcore::unet_unit_rows(Tensor[] w, floor) -> Tensor[]       (every MP weight of a network at once)
//       each row (all but the first axis) scaled to unit norm: u = w·s, s = 1/max(‖w_row‖, floor)
//   flowcore::unet_unit_rows_bwd(Tensor[] w, Tensor[] g, floor) -> Tensor[]
//       g_w = (g − u·⟨g, u⟩_row)·s where ‖w_row‖ > floor, else g·s (the clamp passes no gradient)
//
// with_primal = false gives the tangent blocks alone: the stop-gradient ("dead") tangents, pushed
// through at the primal of the live stack. float32 and float64 on both devices, float16 and bfloat16
// on CUDA with float math. Everything is stable for large |x|: σ and 1 − σ both come from e^(−|x|).
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace flowcore {
namespace unet {

// The most tangent blocks the CUDA FiLM backward reduces per row in registers.
constexpr int64_t kMaxTangents = 8;

// a = gain·x·σ(x), a' = gain·(σ + x·σ(1 − σ)), a'' = gain·σ(1 − σ)(2 + x(1 − 2σ)).
// `M::exp` is the device's exp: a vectorizable polynomial on the CPU (mlp_cpu.h), expf/exp on CUDA.
template <typename M, typename A>
FLOWCORE_HD void silu_jet(A x, A gain, A& a, A& d1, A& d2) {
  const A e = M::exp(x < A(0) ? x : -x);
  const A u = A(1) / (A(1) + e), w = e * u;
  const A p = x < A(0) ? w : u, pm = x < A(0) ? u : w;  // σ(x), 1 − σ(x)
  const A q = u * w;                                      // σ(1 − σ)
  a = gain * x * p;
  d1 = gain * (p + x * q);
  d2 = gain * q * (A(2) + x * (pm - p));
}

// The FiLM scale's tangent: z_j = yt_j·s + y0·lt_j (s = 1 + l0).
template <typename A>
FLOWCORE_HD A film_tangent(A yt, A s, A y0, A lt) {
  return yt * s + y0 * lt;
}

// clamp(x, ±bound) and whether x lies strictly inside, where the clamp's derivative is 1 (torch.clamp's
// convention: 0 at ±bound; NaN: not inside, and clamp keeps NaN, as torch does).
template <typename A>
FLOWCORE_HD bool clip(A x, A bound, A& y) {
  const bool inside = x > -bound && x < bound;
  y = x < -bound ? -bound : (x > bound ? bound : x);
  return inside;
}

// The pixel norm's backward coefficients of one column (derivation: docs/math.md §4, the UNet's fused
// pointwise jets), from its sums over C: ss = Σ x², G = Σ g_0·x, and per tangent j: H1_j = Σ g_j·ẋ_j,
// Hx_j = Σ g_j·x, P_j = Σ x·ẋ_j. With r = sqrt(ss/C), inv = 1/(r + eps), K = inv²/(C·r):
//   α = −(inv²·(G + Σ_j H1_j) − K·(2·inv + 1/r)·Σ_j Hx_j·P_j)/(C·r),  β_j = K·P_j,  γ_j = K·Hx_j.
// (Like the torch formula, a zero column divides by r = 0.)
template <typename A>
struct PixelColumn {
  A r, inv, alpha, K;
};

template <typename A>
FLOWCORE_HD PixelColumn<A> pixel_norm_column(A ss, A C, A eps) {
  PixelColumn<A> col;
  col.r = sqrt(ss / C);
  col.inv = A(1) / (col.r + eps);
  col.K = col.inv * col.inv / (C * col.r);
  col.alpha = A(0);
  return col;
}

// α from the column's sums; `cross` = Σ_j Hx_j·P_j, `h1` = Σ_j H1_j
template <typename A>
FLOWCORE_HD A pixel_norm_alpha(const PixelColumn<A>& col, A C, A G, A h1, A cross) {
  const A inv2 = col.inv * col.inv;
  return -(inv2 * (G + h1) - col.K * (A(2) * col.inv + A(1) / col.r) * cross) / (C * col.r);
}

// A unit-rows row's scale s = 1/max(‖w‖, floor) from its sum of squares, and whether the norm is live
// (above the floor, so gradients flow through it).
template <typename A>
FLOWCORE_HD A unit_row_scale(A sum_squares, A floor, bool& live) {
  const A norm = sqrt(sum_squares);
  live = norm > floor;
  return A(1) / (live ? norm : floor);
}

}  // namespace unet
}  // namespace flowcore
