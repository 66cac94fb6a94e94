// CPU math of the fused MLP activations, shared by mlp_ops.cpp (flowcore::mlp_act_fwd / _bwd) and
// mlp_saved.cpp (flowcore::mlp_act_fwd_save / mlp_act_bwd_saved): σ, σ', σ'' of gelu / silu / tanh,
// inlined into each file's row loops, which the compiler vectorizes.
//
// float32 uses exp/erfc/tanh approximations written for that (errors ≈ 1e-7, like ATen's own
// vectorized float math); float64 the C library's functions. On x86-64 the row functions are
// also compiled for x86-64-v3 (AVX2 + FMA) and picked at load time (FLOWCORE_CLONES), so a build
// for baseline x86-64 still runs 8-wide where it can. Rows are split over torch's thread pool
// with at::parallel_for, whose OpenMP pragmas need the extension compiled with -fopenmp
// (flowcore.native.toolchain.openmp_flags).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "mlp_act.h"

// target_clones needs ifunc (glibc). "arch=x86-64-v3" is resolved by CPU features (AVX2, FMA, ...);
// "arch=haswell" would be resolved by CPU model and never picked on e.g. AMD EPYC.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) && __GNUC__ >= 12
#define FLOWCORE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define FLOWCORE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FLOWCORE_CLONES
#endif

#if defined(__GNUC__)
#define FLOWCORE_INLINE inline __attribute__((always_inline))
#else
#define FLOWCORE_INLINE inline
#endif

// The clamps and selects below are if-converted into vector min/max/blend only when comparisons
// may be assumed not to trap (flowcore never unmasks floating-point exceptions). Files that inline
// these into their row loops wrap those loops in the same options (FLOWCORE_FAST_BEGIN / _END).
#if defined(__GNUC__) && !defined(__clang__)
#define FLOWCORE_FAST_BEGIN _Pragma("GCC push_options") _Pragma("GCC optimize(\"no-trapping-math\")")
#define FLOWCORE_FAST_END _Pragma("GCC pop_options")
#else
#define FLOWCORE_FAST_BEGIN
#define FLOWCORE_FAST_END
#endif

// FN<S, ACT>(...) for the activation code `act` (a runtime int) in a row function
#define FLOWCORE_BY_ACTIVATION(FN, S, ...)                   \
  switch (act) {                                             \
    case ::flowcore::mlp::kGelu: FN<S, ::flowcore::mlp::kGelu>(__VA_ARGS__); break; \
    case ::flowcore::mlp::kSilu: FN<S, ::flowcore::mlp::kSilu>(__VA_ARGS__); break; \
    default: FN<S, ::flowcore::mlp::kTanh>(__VA_ARGS__); break;                     \
  }

FLOWCORE_FAST_BEGIN

namespace flowcore {
namespace mlp {
namespace cpu {

constexpr int64_t kBlock = 256;  // columns per block: the σ', σ'' buffers stay in L1

// ---- scalar math, inlined into the vectorized loops ------------------------------------------------
template <typename S>
struct Math;

template <>
struct Math<double> {
  static FLOWCORE_INLINE double exp(double x) { return std::exp(x); }
  // erfc(x), x >= 0; `exp_mx2` = exp(−x²) is what the float version needs (unused here)
  static FLOWCORE_INLINE double erfc(double x, double /*exp_mx2*/) { return std::erfc(x); }
  static FLOWCORE_INLINE double tanh(double x) { return std::tanh(x); }
};

template <>
struct Math<float> {
  // Cephes expf: x = n·ln2 + r (Cody–Waite), e^r by a degree-7 polynomial, 2^n from the bits.
  static FLOWCORE_INLINE float exp(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    float n = x * 1.44269504088896341f + 12582912.0f;  // round to nearest by the 1.5·2^23 trick
    n -= 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
  }
  // erfc(x) = t·P(t)·exp(−x²), t = 1/(1 + p·x), x >= 0 (Abramowitz & Stegun 7.1.26: |error| < 1.5e-7,
  // the approximation ATen's vectorized float erf uses); exp(−x²) is shared with the GELU's density.
  static FLOWCORE_INLINE float erfc(float x, float exp_mx2) {
    const float t = 1.0f / (1.0f + 0.3275911f * x);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    return t * p * exp_mx2;
  }
  // Eigen's rational tanh (odd degree 13 / even degree 6), a few ulp on the clamped range.
  static FLOWCORE_INLINE float tanh(float x) {
    x = x < -7.90531110763549805f ? -7.90531110763549805f : x;
    x = x > 7.90531110763549805f ? 7.90531110763549805f : x;
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return x * p / q;
  }
};

// σ(z), σ'(z), σ''(z). Unused results are dead code after inlining (float path).
template <typename S, int ACT>
FLOWCORE_INLINE void activation(S z, S& a, S& d1, S& d2) {
  using M = Math<S>;
  if constexpr (ACT == kGelu) {
    // Φ(z) = erfc(−z/√2)/2, computed from |z| (no cancellation in the left tail)
    const S g = M::exp(S(-0.5) * z * z);  // exp(−x²) for x = z/√2
    const S e = M::erfc((z < S(0) ? -z : z) * S(0.70710678118654752440), g);
    const S cdf = z < S(0) ? S(0.5) * e : S(1) - S(0.5) * e;
    const S pdf = g * S(0.39894228040143267794);
    a = z * cdf;
    d1 = cdf + z * pdf;
    d2 = pdf * (S(2) - z * z);
  } else if constexpr (ACT == kSilu) {
    // p = sigmoid(z) and 1 − p from e = exp(−|z|), both without cancellation
    const S e = M::exp(z < S(0) ? z : -z);
    const S u = S(1) / (S(1) + e), w = e * u;
    const S p = z < S(0) ? w : u, pm = z < S(0) ? u : w;
    const S q = u * w;  // p(1 − p)
    a = z * p;
    d1 = p + z * q;
    d2 = q * (S(2) + z * (pm - p));
  } else {
    // sech² from e = exp(−2|z|), not 1 − tanh² (which cancels for large |z|)
    const S th = M::tanh(z);
    const S e = M::exp(S(-2) * (z < S(0) ? -z : z));
    const S r = S(1) / (S(1) + e);
    a = th;
    d1 = S(4) * e * r * r;
    d2 = S(-2) * th * d1;
  }
}

// about 32k elements per task (ATen's GRAIN_SIZE) to amortize the thread hand-off
inline int64_t grain(int64_t T, int64_t N) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(T * N, 1)); }

inline void check_cpu(const char* op, const at::Tensor& y) {
  TORCH_CHECK(y.device().is_cpu(), op, " (CPU): y is on ", y.device());
  TORCH_CHECK(y.scalar_type() == at::kFloat || y.scalar_type() == at::kDouble, op,
              " (CPU): supports float32 and float64, got ", y.scalar_type());
}

}  // namespace cpu
}  // namespace mlp
}  // namespace flowcore

FLOWCORE_FAST_END
