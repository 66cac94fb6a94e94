// flowcore generated code: objective `objective psd_m`, digest 543828318d9d5b79; backend cuda.
// Do not edit: it is regenerated from the objective's declaration (the digest names it).
// 12 kernel(s), each segment's and the backward kernels it needs, each a per-sample body
// `K_sample<scalar_t, acc_t>` computing in acc_t, plus thin entry points:
//   psd_m_t0_level0(x0, x1; t) -> net0_x
//   psd_m_t0_loss(net0, x0, x1) -> loss
//   psd_m_t1_level0(x0, x1; s) -> net1_x, net2_x
//   psd_m_t1_level1(x0, x1, net2; s, u) -> net3_x
//   psd_m_t1_loss(net1, net2, net3; gamma) -> loss
//   psd_m_t0_level0_backward(x0, x1, g_net0_x; t) -> grad_x0, grad_x1
//   psd_m_t0_loss_backward(net0, x0, x1; g_loss) -> grad_net0, grad_x0, grad_x1
//   psd_m_t0_loss_backward_wrt_net0(net0, x0, x1; g_loss) -> grad_net0
//   psd_m_t1_level0_backward(x0, x1, g_net1_x, g_net2_x; s) -> grad_x0, grad_x1
//   psd_m_t1_level1_backward(x0, x1, net2, g_net3_x; s, u) -> grad_x0, grad_x1, grad_net2
//   psd_m_t1_level1_backward_wrt_net2(x0, x1, net2, g_net3_x; s, u) -> grad_net2
//   psd_m_t1_loss_backward(net1, net2, net3; gamma, g_loss) -> grad_net1
#include <cmath>
#include <cstdint>

#include "flowcore_kernel.h"

// ---- psd_m_t0_level0(x0, x1; t) -> net0_x
// element inputs : ein[0] = x0, ein[1] = x1
// sample inputs  : sin[0] = t
// element outputs: eout[0] = net0_x
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t0_level0_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                               scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t t = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const x0_row = ein[0] + b * N;
  const scalar_t* const x1_row = ein[1] + b * N;
  scalar_t* const net0_x_row = eout[0] + b * N;
  // loop 1 over the sample's elements: element outputs net0_x
  for (int64_t j = 0; j < N; ++j) {
    const acc_t x0 = fc_load<acc_t>(x0_row, j);
    const acc_t x1 = fc_load<acc_t>(x1_row, j);
    fc_store<scalar_t, acc_t>(net0_x_row, j, x0*(acc_t(1) - t) + x1*t);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t0_level0_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 2> ein, fc_pointers<const scalar_t*, 1> sin,
                                       fc_pointers<scalar_t*, 1> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t0_level0_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t0_level0_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 2, 1, 1, 0>(psd_m_t0_level0_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_level0_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 2, 1, 1, 0>(psd_m_t0_level0_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_level0_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 2, 1, 1, 0>(psd_m_t0_level0_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_level0_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                              void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 2, 1, 1, 0>(psd_m_t0_level0_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t0_loss(net0, x0, x1) -> loss
// element inputs : ein[0] = net0, ein[1] = x0, ein[2] = x1
// sample outputs : sout[0] = loss
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t0_loss_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                             scalar_t* const* eout, scalar_t* const* sout) {
  (void)sin; (void)eout;  // not used by this kernel
  // this sample's rows of the element inputs and outputs
  const scalar_t* const net0_row = ein[0] + b * N;
  const scalar_t* const x0_row = ein[1] + b * N;
  const scalar_t* const x1_row = ein[2] + b * N;
  // loop 1 over the sample's elements: reductions sqnorm0 = sum_j tmp0^2
  acc_t sqnorm0 = acc_t(0);
  for (int64_t j = 0; j < N; ++j) {
    const acc_t net0 = fc_load<acc_t>(net0_row, j);
    const acc_t x0 = fc_load<acc_t>(x0_row, j);
    const acc_t x1 = fc_load<acc_t>(x1_row, j);
    const acc_t tmp0 = net0 + x0 - x1;
    sqnorm0 += (tmp0*tmp0);
  }
  // sample outputs
  fc_store<scalar_t, acc_t>(sout[0], b, sqnorm0);
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t0_loss_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 3> ein, fc_pointers<const scalar_t*, 0> sin,
                                     fc_pointers<scalar_t*, 0> eout, fc_pointers<scalar_t*, 1> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t0_loss_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t0_loss_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                           void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 3, 0, 0, 1>(psd_m_t0_loss_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_loss_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                           void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 3, 0, 0, 1>(psd_m_t0_loss_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_loss_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                           void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 3, 0, 0, 1>(psd_m_t0_loss_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_loss_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                            void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 3, 0, 0, 1>(psd_m_t0_loss_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t1_level0(x0, x1; s) -> net1_x, net2_x
// element inputs : ein[0] = x0, ein[1] = x1
// sample inputs  : sin[0] = s
// element outputs: eout[0] = net1_x, eout[1] = net2_x
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t1_level0_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                               scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const x0_row = ein[0] + b * N;
  const scalar_t* const x1_row = ein[1] + b * N;
  scalar_t* const net1_x_row = eout[0] + b * N;
  scalar_t* const net2_x_row = eout[1] + b * N;
  // loop 1 over the sample's elements: element outputs net1_x, net2_x
  for (int64_t j = 0; j < N; ++j) {
    const acc_t x0 = fc_load<acc_t>(x0_row, j);
    const acc_t x1 = fc_load<acc_t>(x1_row, j);
    const acc_t tmp0 = x0*(acc_t(1) - s) + x1*s;
    fc_store<scalar_t, acc_t>(net1_x_row, j, tmp0);
    fc_store<scalar_t, acc_t>(net2_x_row, j, tmp0);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t1_level0_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 2> ein, fc_pointers<const scalar_t*, 1> sin,
                                       fc_pointers<scalar_t*, 2> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t1_level0_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t1_level0_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 2, 1, 2, 0>(psd_m_t1_level0_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level0_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 2, 1, 2, 0>(psd_m_t1_level0_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level0_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 2, 1, 2, 0>(psd_m_t1_level0_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level0_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                              void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 2, 1, 2, 0>(psd_m_t1_level0_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t1_level1(x0, x1, net2; s, u) -> net3_x
// element inputs : ein[0] = x0, ein[1] = x1, ein[2] = net2
// sample inputs  : sin[0] = s, sin[1] = u
// element outputs: eout[0] = net3_x
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t1_level1_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                               scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  const acc_t u = fc_load<acc_t>(sin[1], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const x0_row = ein[0] + b * N;
  const scalar_t* const x1_row = ein[1] + b * N;
  const scalar_t* const net2_row = ein[2] + b * N;
  scalar_t* const net3_x_row = eout[0] + b * N;
  // loop 1 over the sample's elements: element outputs net3_x
  for (int64_t j = 0; j < N; ++j) {
    const acc_t x0 = fc_load<acc_t>(x0_row, j);
    const acc_t x1 = fc_load<acc_t>(x1_row, j);
    const acc_t net2 = fc_load<acc_t>(net2_row, j);
    fc_store<scalar_t, acc_t>(net3_x_row, j, net2*(-s + u) + x0*(acc_t(1) - s) + x1*s);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t1_level1_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 3> ein, fc_pointers<const scalar_t*, 2> sin,
                                       fc_pointers<scalar_t*, 1> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t1_level1_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t1_level1_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 3, 2, 1, 0>(psd_m_t1_level1_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level1_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 3, 2, 1, 0>(psd_m_t1_level1_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level1_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 3, 2, 1, 0>(psd_m_t1_level1_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level1_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                              void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 3, 2, 1, 0>(psd_m_t1_level1_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t1_loss(net1, net2, net3; gamma) -> loss
// element inputs : ein[0] = net1, ein[1] = net2, ein[2] = net3
// sample inputs  : sin[0] = gamma
// sample outputs : sout[0] = loss
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t1_loss_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                             scalar_t* const* eout, scalar_t* const* sout) {
  (void)eout;  // not used by this kernel
  // sample inputs
  const acc_t gamma_ = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const net1_row = ein[0] + b * N;
  const scalar_t* const net2_row = ein[1] + b * N;
  const scalar_t* const net3_row = ein[2] + b * N;
  // loop 1 over the sample's elements: reductions sqnorm1 = sum_j tmp0^2
  acc_t sqnorm1 = acc_t(0);
  for (int64_t j = 0; j < N; ++j) {
    const acc_t net1 = fc_load<acc_t>(net1_row, j);
    const acc_t net2 = fc_load<acc_t>(net2_row, j);
    const acc_t net3 = fc_load<acc_t>(net3_row, j);
    const acc_t tmp0 = -gamma_*net2 + net1 - net3*(acc_t(1) - gamma_);
    sqnorm1 += (tmp0*tmp0);
  }
  // sample outputs
  fc_store<scalar_t, acc_t>(sout[0], b, sqnorm1);
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t1_loss_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 3> ein, fc_pointers<const scalar_t*, 1> sin,
                                     fc_pointers<scalar_t*, 0> eout, fc_pointers<scalar_t*, 1> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t1_loss_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t1_loss_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                           void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 3, 1, 0, 1>(psd_m_t1_loss_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_loss_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                           void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 3, 1, 0, 1>(psd_m_t1_loss_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_loss_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                           void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 3, 1, 0, 1>(psd_m_t1_loss_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_loss_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                            void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 3, 1, 0, 1>(psd_m_t1_loss_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t0_level0_backward(x0, x1, g_net0_x; t) -> grad_x0, grad_x1
// element inputs : ein[0] = x0, ein[1] = x1, ein[2] = g_net0_x
// sample inputs  : sin[0] = t
// element outputs: eout[0] = grad_x0, eout[1] = grad_x1
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t0_level0_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                        scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t t = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const g_net0_x_row = ein[2] + b * N;
  scalar_t* const grad_x0_row = eout[0] + b * N;
  scalar_t* const grad_x1_row = eout[1] + b * N;
  // loop 1 over the sample's elements: element outputs grad_x0, grad_x1
  for (int64_t j = 0; j < N; ++j) {
    const acc_t g_net0_x = fc_load<acc_t>(g_net0_x_row, j);
    fc_store<scalar_t, acc_t>(grad_x0_row, j, g_net0_x*(acc_t(1) - t));
    fc_store<scalar_t, acc_t>(grad_x1_row, j, g_net0_x*t);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t0_level0_backward_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 3> ein, fc_pointers<const scalar_t*, 1> sin,
                                                fc_pointers<scalar_t*, 2> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t0_level0_backward_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t0_level0_backward_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                      void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 3, 1, 2, 0>(psd_m_t0_level0_backward_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_level0_backward_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                      void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 3, 1, 2, 0>(psd_m_t0_level0_backward_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_level0_backward_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                      void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 3, 1, 2, 0>(psd_m_t0_level0_backward_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_level0_backward_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                       void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 3, 1, 2, 0>(psd_m_t0_level0_backward_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t0_loss_backward(net0, x0, x1; g_loss) -> grad_net0, grad_x0, grad_x1
// element inputs : ein[0] = net0, ein[1] = x0, ein[2] = x1
// sample inputs  : sin[0] = g_loss
// element outputs: eout[0] = grad_net0, eout[1] = grad_x0, eout[2] = grad_x1
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t0_loss_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                      scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t g_loss = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const net0_row = ein[0] + b * N;
  const scalar_t* const x0_row = ein[1] + b * N;
  const scalar_t* const x1_row = ein[2] + b * N;
  scalar_t* const grad_net0_row = eout[0] + b * N;
  scalar_t* const grad_x0_row = eout[1] + b * N;
  scalar_t* const grad_x1_row = eout[2] + b * N;
  // per-sample values
  const acc_t adj_sqnorm0 = g_loss;
  // loop 1 over the sample's elements: element outputs grad_net0, grad_x0, grad_x1
  for (int64_t j = 0; j < N; ++j) {
    const acc_t net0 = fc_load<acc_t>(net0_row, j);
    const acc_t x0 = fc_load<acc_t>(x0_row, j);
    const acc_t x1 = fc_load<acc_t>(x1_row, j);
    const acc_t tmp0 = acc_t(2)*net0 + acc_t(2)*x0 - acc_t(2)*x1;
    const acc_t tmp1 = adj_sqnorm0*tmp0;
    fc_store<scalar_t, acc_t>(grad_net0_row, j, tmp1);
    fc_store<scalar_t, acc_t>(grad_x0_row, j, tmp1);
    fc_store<scalar_t, acc_t>(grad_x1_row, j, -adj_sqnorm0*tmp0);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t0_loss_backward_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 3> ein, fc_pointers<const scalar_t*, 1> sin,
                                              fc_pointers<scalar_t*, 3> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t0_loss_backward_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t0_loss_backward_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                    void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 3, 1, 3, 0>(psd_m_t0_loss_backward_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_loss_backward_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                    void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 3, 1, 3, 0>(psd_m_t0_loss_backward_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_loss_backward_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                    void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 3, 1, 3, 0>(psd_m_t0_loss_backward_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_loss_backward_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                     void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 3, 1, 3, 0>(psd_m_t0_loss_backward_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t0_loss_backward_wrt_net0(net0, x0, x1; g_loss) -> grad_net0
// element inputs : ein[0] = net0, ein[1] = x0, ein[2] = x1
// sample inputs  : sin[0] = g_loss
// element outputs: eout[0] = grad_net0
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t0_loss_backward_wrt_net0_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                               scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t g_loss = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const net0_row = ein[0] + b * N;
  const scalar_t* const x0_row = ein[1] + b * N;
  const scalar_t* const x1_row = ein[2] + b * N;
  scalar_t* const grad_net0_row = eout[0] + b * N;
  // per-sample values
  const acc_t adj_sqnorm0 = g_loss;
  // loop 1 over the sample's elements: element outputs grad_net0
  for (int64_t j = 0; j < N; ++j) {
    const acc_t net0 = fc_load<acc_t>(net0_row, j);
    const acc_t x0 = fc_load<acc_t>(x0_row, j);
    const acc_t x1 = fc_load<acc_t>(x1_row, j);
    fc_store<scalar_t, acc_t>(grad_net0_row, j, adj_sqnorm0*(acc_t(2)*net0 + acc_t(2)*x0 - acc_t(2)*x1));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t0_loss_backward_wrt_net0_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 3> ein, fc_pointers<const scalar_t*, 1> sin,
                                                       fc_pointers<scalar_t*, 1> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t0_loss_backward_wrt_net0_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t0_loss_backward_wrt_net0_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 3, 1, 1, 0>(psd_m_t0_loss_backward_wrt_net0_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_loss_backward_wrt_net0_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 3, 1, 1, 0>(psd_m_t0_loss_backward_wrt_net0_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_loss_backward_wrt_net0_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                             void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 3, 1, 1, 0>(psd_m_t0_loss_backward_wrt_net0_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t0_loss_backward_wrt_net0_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                              void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 3, 1, 1, 0>(psd_m_t0_loss_backward_wrt_net0_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t1_level0_backward(x0, x1, g_net1_x, g_net2_x; s) -> grad_x0, grad_x1
// element inputs : ein[0] = x0, ein[1] = x1, ein[2] = g_net1_x, ein[3] = g_net2_x
// sample inputs  : sin[0] = s
// element outputs: eout[0] = grad_x0, eout[1] = grad_x1
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t1_level0_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                        scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const g_net1_x_row = ein[2] + b * N;
  const scalar_t* const g_net2_x_row = ein[3] + b * N;
  scalar_t* const grad_x0_row = eout[0] + b * N;
  scalar_t* const grad_x1_row = eout[1] + b * N;
  // per-sample values
  const acc_t tmp0 = acc_t(1) - s;
  // loop 1 over the sample's elements: element outputs grad_x0, grad_x1
  for (int64_t j = 0; j < N; ++j) {
    const acc_t g_net1_x = fc_load<acc_t>(g_net1_x_row, j);
    const acc_t g_net2_x = fc_load<acc_t>(g_net2_x_row, j);
    fc_store<scalar_t, acc_t>(grad_x0_row, j, g_net1_x*tmp0 + g_net2_x*tmp0);
    fc_store<scalar_t, acc_t>(grad_x1_row, j, g_net1_x*s + g_net2_x*s);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t1_level0_backward_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 4> ein, fc_pointers<const scalar_t*, 1> sin,
                                                fc_pointers<scalar_t*, 2> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t1_level0_backward_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t1_level0_backward_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                      void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 4, 1, 2, 0>(psd_m_t1_level0_backward_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level0_backward_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                      void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 4, 1, 2, 0>(psd_m_t1_level0_backward_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level0_backward_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                      void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 4, 1, 2, 0>(psd_m_t1_level0_backward_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level0_backward_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                       void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 4, 1, 2, 0>(psd_m_t1_level0_backward_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t1_level1_backward(x0, x1, net2, g_net3_x; s, u) -> grad_x0, grad_x1, grad_net2
// element inputs : ein[0] = x0, ein[1] = x1, ein[2] = net2, ein[3] = g_net3_x
// sample inputs  : sin[0] = s, sin[1] = u
// element outputs: eout[0] = grad_x0, eout[1] = grad_x1, eout[2] = grad_net2
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t1_level1_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                        scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  const acc_t u = fc_load<acc_t>(sin[1], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const g_net3_x_row = ein[3] + b * N;
  scalar_t* const grad_x0_row = eout[0] + b * N;
  scalar_t* const grad_x1_row = eout[1] + b * N;
  scalar_t* const grad_net2_row = eout[2] + b * N;
  // loop 1 over the sample's elements: element outputs grad_x0, grad_x1, grad_net2
  for (int64_t j = 0; j < N; ++j) {
    const acc_t g_net3_x = fc_load<acc_t>(g_net3_x_row, j);
    fc_store<scalar_t, acc_t>(grad_x0_row, j, g_net3_x*(acc_t(1) - s));
    fc_store<scalar_t, acc_t>(grad_x1_row, j, g_net3_x*s);
    fc_store<scalar_t, acc_t>(grad_net2_row, j, g_net3_x*(-s + u));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t1_level1_backward_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 4> ein, fc_pointers<const scalar_t*, 2> sin,
                                                fc_pointers<scalar_t*, 3> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t1_level1_backward_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t1_level1_backward_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                      void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 4, 2, 3, 0>(psd_m_t1_level1_backward_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level1_backward_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                      void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 4, 2, 3, 0>(psd_m_t1_level1_backward_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level1_backward_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                      void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 4, 2, 3, 0>(psd_m_t1_level1_backward_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level1_backward_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                       void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 4, 2, 3, 0>(psd_m_t1_level1_backward_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t1_level1_backward_wrt_net2(x0, x1, net2, g_net3_x; s, u) -> grad_net2
// element inputs : ein[0] = x0, ein[1] = x1, ein[2] = net2, ein[3] = g_net3_x
// sample inputs  : sin[0] = s, sin[1] = u
// element outputs: eout[0] = grad_net2
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t1_level1_backward_wrt_net2_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                                 scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  const acc_t u = fc_load<acc_t>(sin[1], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const g_net3_x_row = ein[3] + b * N;
  scalar_t* const grad_net2_row = eout[0] + b * N;
  // loop 1 over the sample's elements: element outputs grad_net2
  for (int64_t j = 0; j < N; ++j) {
    const acc_t g_net3_x = fc_load<acc_t>(g_net3_x_row, j);
    fc_store<scalar_t, acc_t>(grad_net2_row, j, g_net3_x*(-s + u));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t1_level1_backward_wrt_net2_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 4> ein, fc_pointers<const scalar_t*, 2> sin,
                                                         fc_pointers<scalar_t*, 1> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t1_level1_backward_wrt_net2_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t1_level1_backward_wrt_net2_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                               void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 4, 2, 1, 0>(psd_m_t1_level1_backward_wrt_net2_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level1_backward_wrt_net2_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                               void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 4, 2, 1, 0>(psd_m_t1_level1_backward_wrt_net2_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level1_backward_wrt_net2_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                               void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 4, 2, 1, 0>(psd_m_t1_level1_backward_wrt_net2_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_level1_backward_wrt_net2_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                                void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 4, 2, 1, 0>(psd_m_t1_level1_backward_wrt_net2_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}

// ---- psd_m_t1_loss_backward(net1, net2, net3; gamma, g_loss) -> grad_net1
// element inputs : ein[0] = net1, ein[1] = net2, ein[2] = net3
// sample inputs  : sin[0] = gamma, sin[1] = g_loss
// element outputs: eout[0] = grad_net1
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void psd_m_t1_loss_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                      scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t gamma_ = fc_load<acc_t>(sin[0], b);
  const acc_t g_loss = fc_load<acc_t>(sin[1], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const net1_row = ein[0] + b * N;
  const scalar_t* const net2_row = ein[1] + b * N;
  const scalar_t* const net3_row = ein[2] + b * N;
  scalar_t* const grad_net1_row = eout[0] + b * N;
  // per-sample values
  const acc_t adj_sqnorm1 = g_loss;
  // loop 1 over the sample's elements: element outputs grad_net1
  for (int64_t j = 0; j < N; ++j) {
    const acc_t net1 = fc_load<acc_t>(net1_row, j);
    const acc_t net2 = fc_load<acc_t>(net2_row, j);
    const acc_t net3 = fc_load<acc_t>(net3_row, j);
    fc_store<scalar_t, acc_t>(grad_net1_row, j, adj_sqnorm1*(-acc_t(2)*gamma_*net2 + acc_t(2)*net1 - acc_t(2)*net3*(acc_t(1) - gamma_)));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psd_m_t1_loss_backward_kernel(int64_t B, int64_t N, fc_pointers<const scalar_t*, 3> ein, fc_pointers<const scalar_t*, 2> sin,
                                              fc_pointers<scalar_t*, 1> eout, fc_pointers<scalar_t*, 0> sout) {
  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())
    psd_m_t1_loss_backward_sample<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);
}
FLOWCORE_EXPORT int psd_m_t1_loss_backward_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                    void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<float, 3, 2, 1, 0>(psd_m_t1_loss_backward_kernel<float, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_loss_backward_cuda_f64(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                    void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<double, 3, 2, 1, 0>(psd_m_t1_loss_backward_kernel<double, double>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_loss_backward_cuda_f16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                    void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__half, 3, 2, 1, 0>(psd_m_t1_loss_backward_kernel<__half, float>, B, N, ein, sin, eout, sout, stream);
}
FLOWCORE_EXPORT int psd_m_t1_loss_backward_cuda_bf16(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                                                     void* const* eout, void* const* sout, void* stream) {
  return fc_cuda_launch<__nv_bfloat16, 3, 2, 1, 0>(psd_m_t1_loss_backward_kernel<__nv_bfloat16, float>, B, N, ein, sin, eout, sout, stream);
}
