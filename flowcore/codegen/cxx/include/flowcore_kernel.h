// flowcore_kernel.h: what flowcore's generated objective kernels (backends `cpu` and `cuda`) include.
//
// Torch-free on purpose: a new objective's kernels compile in seconds with plain g++ or nvcc.
// It provides
//   * FLOWCORE_HD: `__host__ __device__` under nvcc, empty otherwise, so the one per-sample body
//     of a kernel is shared text between the CPU and the CUDA build;
//   * fc_exp, fc_log, fc_sqrt, ...: math with one overload per precision, so a float kernel never
//     does silent double math (fc_exp(float) is expf, never exp(double)), and the table's
//     functions C lacks (fc_softplus);
//   * fc_load / fc_store: element access that converts fp16/bf16 storage to the float accumulator;
//   * the CUDA launch helper and FLOWCORE_EXPORT for the extern "C" entry points.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define FLOWCORE_HD __host__ __device__
#else
#define FLOWCORE_HD
#endif

#define FLOWCORE_EXPORT extern "C" __attribute__((visibility("default")))

// ---- math: one overload per precision ---------------------------------------------------------
// Under nvcc the C single-precision functions (expf, ...) are host+device; on the host the std::
// overloads for float are the single-precision ones.
#if defined(__CUDACC__)
#define FC_MATH1(name, fname, dname)                                                  \
  FLOWCORE_HD inline float fc_##name(float x) { return ::fname(x); }                  \
  FLOWCORE_HD inline double fc_##name(double x) { return ::dname(x); }
#define FC_MATH2(name, fname, dname)                                                  \
  FLOWCORE_HD inline float fc_##name(float x, float y) { return ::fname(x, y); }      \
  FLOWCORE_HD inline double fc_##name(double x, double y) { return ::dname(x, y); }
#else
#define FC_MATH1(name, fname, dname)                                                  \
  inline float fc_##name(float x) { return std::dname(x); }                           \
  inline double fc_##name(double x) { return std::dname(x); }
#define FC_MATH2(name, fname, dname)                                                  \
  inline float fc_##name(float x, float y) { return std::dname(x, y); }               \
  inline double fc_##name(double x, double y) { return std::dname(x, y); }
#endif

FC_MATH1(exp, expf, exp)
FC_MATH1(log, logf, log)
FC_MATH1(sqrt, sqrtf, sqrt)
FC_MATH1(sin, sinf, sin)
FC_MATH1(cos, cosf, cos)
FC_MATH1(tan, tanf, tan)
FC_MATH1(sinh, sinhf, sinh)
FC_MATH1(cosh, coshf, cosh)
FC_MATH1(tanh, tanhf, tanh)
FC_MATH1(asin, asinf, asin)
FC_MATH1(acos, acosf, acos)
FC_MATH1(atan, atanf, atan)
FC_MATH1(asinh, asinhf, asinh)
FC_MATH1(acosh, acoshf, acosh)
FC_MATH1(atanh, atanhf, atanh)
FC_MATH1(erf, erff, erf)
FC_MATH1(erfc, erfcf, erfc)
FC_MATH1(log1p, log1pf, log1p)
FC_MATH1(expm1, expm1f, expm1)
FC_MATH1(abs, fabsf, fabs)
FC_MATH1(floor, floorf, floor)
FC_MATH1(ceil, ceilf, ceil)
FC_MATH2(pow, powf, pow)
FC_MATH2(atan2, atan2f, atan2)
FC_MATH2(max, fmaxf, fmax)
FC_MATH2(min, fminf, fmin)

#undef FC_MATH1
#undef FC_MATH2

// Functions of flowcore's table (flowcore/lang/functions.py) that C does not have: one each,
// templated on the accumulator type (float for float/half/bfloat16 kernels, double for double).
// softplus(x) = log(1 + e^x), written so that e^x never overflows.
template <typename T>
FLOWCORE_HD inline T fc_softplus(T x) { return fc_max(x, T(0)) + fc_log1p(fc_exp(-fc_abs(x))); }

// sign(x) in {-1, 0, 1} (NaN propagates), as torch.sign.
template <typename T>
FLOWCORE_HD inline T fc_sign(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x);
}

// Heaviside step with H(0) = 1/2 (sympy's convention).
template <typename T>
FLOWCORE_HD inline T fc_heaviside(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(0) : (x == T(0) ? T(0.5) : x));
}

template <typename T>
FLOWCORE_HD inline T fc_nan() {
  return static_cast<T>(NAN);
}

template <typename T>
FLOWCORE_HD inline T fc_inf() {
  return static_cast<T>(INFINITY);
}

// ---- element access ----------------------------------------------------------------------------
// fc_load<acc_t>(row, j) reads row[j] as the accumulator type; fc_store(row, j, v) writes v back
// in the storage type. fp16 and bf16 (CUDA only) compute in float.
template <typename acc_t, typename scalar_t>
FLOWCORE_HD inline acc_t fc_load(const scalar_t* p, int64_t i) {
  return static_cast<acc_t>(p[i]);
}

template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void fc_store(scalar_t* p, int64_t i, acc_t v) {
  p[i] = static_cast<scalar_t>(v);
}

#if defined(__CUDACC__)
template <>
FLOWCORE_HD inline float fc_load<float, __half>(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
template <>
FLOWCORE_HD inline void fc_store<__half, float>(__half* p, int64_t i, float v) {
  p[i] = __float2half_rn(v);
}
template <>
FLOWCORE_HD inline float fc_load<float, __nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
template <>
FLOWCORE_HD inline void fc_store<__nv_bfloat16, float>(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}
#endif

// ---- pointer arrays ------------------------------------------------------------------------------
// A fixed-size array of typed pointers. The CPU entry points convert the caller's `void*` arrays
// into these (no type punning of the caller's array); CUDA kernels take them BY VALUE as kernel
// parameters, so no host pointer array is ever dereferenced on the device.
template <typename T, int n>
struct fc_pointers {
  T p[n > 0 ? n : 1];
};

template <typename scalar_t, int n>
FLOWCORE_HD inline fc_pointers<const scalar_t*, n> fc_inputs(const void* const* src) {
  fc_pointers<const scalar_t*, n> out{};
  for (int i = 0; i < n; ++i) out.p[i] = static_cast<const scalar_t*>(src[i]);
  return out;
}

template <typename scalar_t, int n>
FLOWCORE_HD inline fc_pointers<scalar_t*, n> fc_outputs(void* const* src) {
  fc_pointers<scalar_t*, n> out{};
  for (int i = 0; i < n; ++i) out.p[i] = static_cast<scalar_t*>(src[i]);
  return out;
}

// ---- CPU: run a per-sample body over samples [begin, end) -------------------------------------
// `Body` is the kernel's `K_sample<scalar_t, acc_t>` (a function pointer known at compile time).
template <typename scalar_t, int NEI, int NSI, int NEO, int NSO, typename Body>
inline void fc_cpu_run(Body body, int64_t begin, int64_t end, int64_t N, const void* const* ein,
                       const void* const* sin, void* const* eout, void* const* sout) {
  const auto e_in = fc_inputs<scalar_t, NEI>(ein);
  const auto s_in = fc_inputs<scalar_t, NSI>(sin);
  const auto e_out = fc_outputs<scalar_t, NEO>(eout);
  const auto s_out = fc_outputs<scalar_t, NSO>(sout);
  for (int64_t b = begin; b < end; ++b) body(b, N, e_in.p, s_in.p, e_out.p, s_out.p);
}

#if defined(__CUDACC__)
// ---- CUDA: one thread per sample, grid-stride over the batch ------------------------------------
// Kernels are `__global__ void K_kernel(int64_t B, int64_t N, fc_pointers<...> ein, ...)`; the
// launcher packs the host pointer arrays into parameter structs and launches on `stream`. It
// returns the cudaError_t of the launch (0 on success), which the extension turns into an error.
constexpr int FLOWCORE_CUDA_THREADS = 128;

template <typename scalar_t, int NEI, int NSI, int NEO, int NSO>
using fc_cuda_kernel_t = void (*)(int64_t, int64_t, fc_pointers<const scalar_t*, NEI>,
                                  fc_pointers<const scalar_t*, NSI>, fc_pointers<scalar_t*, NEO>,
                                  fc_pointers<scalar_t*, NSO>);

template <typename scalar_t, int NEI, int NSI, int NEO, int NSO>
inline int fc_cuda_launch(fc_cuda_kernel_t<scalar_t, NEI, NSI, NEO, NSO> kernel, int64_t B, int64_t N,
                          const void* const* ein, const void* const* sin, void* const* eout,
                          void* const* sout, void* stream) {
  if (B <= 0) return 0;
  int64_t blocks = (B + FLOWCORE_CUDA_THREADS - 1) / FLOWCORE_CUDA_THREADS;
  if (blocks > 65535) blocks = 65535;  // grid-stride loops cover the rest
  kernel<<<static_cast<unsigned>(blocks), FLOWCORE_CUDA_THREADS, 0, static_cast<cudaStream_t>(stream)>>>(
      B, N, fc_inputs<scalar_t, NEI>(ein), fc_inputs<scalar_t, NSI>(sin), fc_outputs<scalar_t, NEO>(eout),
      fc_outputs<scalar_t, NSO>(sout));
  return static_cast<int>(cudaGetLastError());
}

FLOWCORE_HD inline int64_t fc_first_sample() {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
#else
  return 0;
#endif
}

FLOWCORE_HD inline int64_t fc_sample_stride() {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(blockDim.x) * gridDim.x;
#else
  return 1;
#endif
}
#endif
