// flowcore generated code: objective `objective esd`, digest efd3257c7d2dbebf; backend cpu.
// Do not edit: it is regenerated from the objective's declaration (the digest names it).
// 11 kernel(s), each segment's and the backward kernels it needs, each a per-sample body
// `K_sample<scalar_t, acc_t>` computing in acc_t, plus thin entry points:
//   esd_t0_level0(x0, x1; t) -> net0_x
//   esd_t0_loss(net0, x0, x1) -> loss
//   esd_t1_level0(x0, x1; s) -> net2_x
//   esd_t1_level1(x0, x1; s) -> net1_x
//   esd_t1_loss(net1, net1_d1, net2, net1_d0; s, t) -> loss
//   esd_t0_level0_backward(x0, x1, g_net0_x; t) -> grad_x0, grad_x1
//   esd_t0_loss_backward(net0, x0, x1; g_loss) -> grad_net0, grad_x0, grad_x1
//   esd_t0_loss_backward_wrt_net0(net0, x0, x1; g_loss) -> grad_net0
//   esd_t1_level0_backward(x0, x1, g_net2_x; s) -> grad_x0, grad_x1
//   esd_t1_level1_backward(x0, x1, g_net1_x; s) -> grad_x0, grad_x1
//   esd_t1_loss_backward(net1, net1_d1, net2, net1_d0; s, t, g_loss) -> grad_net1, grad_net1_d1
#include <cmath>
#include <cstdint>

#include "flowcore_kernel.h"

// ---- esd_t0_level0(x0, x1; t) -> net0_x
// element inputs : ein[0] = x0, ein[1] = x1
// sample inputs  : sin[0] = t
// element outputs: eout[0] = net0_x
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t0_level0_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
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

FLOWCORE_EXPORT void esd_t0_level0_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                       void* const* eout, void* const* sout) {
  fc_cpu_run<float, 2, 1, 1, 0>(esd_t0_level0_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t0_level0_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                       void* const* eout, void* const* sout) {
  fc_cpu_run<double, 2, 1, 1, 0>(esd_t0_level0_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t0_loss(net0, x0, x1) -> loss
// element inputs : ein[0] = net0, ein[1] = x0, ein[2] = x1
// sample outputs : sout[0] = loss
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t0_loss_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
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

FLOWCORE_EXPORT void esd_t0_loss_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                     void* const* eout, void* const* sout) {
  fc_cpu_run<float, 3, 0, 0, 1>(esd_t0_loss_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t0_loss_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                     void* const* eout, void* const* sout) {
  fc_cpu_run<double, 3, 0, 0, 1>(esd_t0_loss_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t1_level0(x0, x1; s) -> net2_x
// element inputs : ein[0] = x0, ein[1] = x1
// sample inputs  : sin[0] = s
// element outputs: eout[0] = net2_x
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t1_level0_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                             scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const x0_row = ein[0] + b * N;
  const scalar_t* const x1_row = ein[1] + b * N;
  scalar_t* const net2_x_row = eout[0] + b * N;
  // loop 1 over the sample's elements: element outputs net2_x
  for (int64_t j = 0; j < N; ++j) {
    const acc_t x0 = fc_load<acc_t>(x0_row, j);
    const acc_t x1 = fc_load<acc_t>(x1_row, j);
    fc_store<scalar_t, acc_t>(net2_x_row, j, x0*(acc_t(1) - s) + x1*s);
  }
}

FLOWCORE_EXPORT void esd_t1_level0_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                       void* const* eout, void* const* sout) {
  fc_cpu_run<float, 2, 1, 1, 0>(esd_t1_level0_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t1_level0_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                       void* const* eout, void* const* sout) {
  fc_cpu_run<double, 2, 1, 1, 0>(esd_t1_level0_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t1_level1(x0, x1; s) -> net1_x
// element inputs : ein[0] = x0, ein[1] = x1
// sample inputs  : sin[0] = s
// element outputs: eout[0] = net1_x
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t1_level1_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                             scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const x0_row = ein[0] + b * N;
  const scalar_t* const x1_row = ein[1] + b * N;
  scalar_t* const net1_x_row = eout[0] + b * N;
  // loop 1 over the sample's elements: element outputs net1_x
  for (int64_t j = 0; j < N; ++j) {
    const acc_t x0 = fc_load<acc_t>(x0_row, j);
    const acc_t x1 = fc_load<acc_t>(x1_row, j);
    fc_store<scalar_t, acc_t>(net1_x_row, j, x0*(acc_t(1) - s) + x1*s);
  }
}

FLOWCORE_EXPORT void esd_t1_level1_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                       void* const* eout, void* const* sout) {
  fc_cpu_run<float, 2, 1, 1, 0>(esd_t1_level1_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t1_level1_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                       void* const* eout, void* const* sout) {
  fc_cpu_run<double, 2, 1, 1, 0>(esd_t1_level1_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t1_loss(net1, net1_d1, net2, net1_d0; s, t) -> loss
// element inputs : ein[0] = net1, ein[1] = net1_d1, ein[2] = net2, ein[3] = net1_d0
// sample inputs  : sin[0] = s, sin[1] = t
// sample outputs : sout[0] = loss
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t1_loss_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                           scalar_t* const* eout, scalar_t* const* sout) {
  (void)eout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  const acc_t t = fc_load<acc_t>(sin[1], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const net1_row = ein[0] + b * N;
  const scalar_t* const net1_d1_row = ein[1] + b * N;
  const scalar_t* const net2_row = ein[2] + b * N;
  const scalar_t* const net1_d0_row = ein[3] + b * N;
  // per-sample values
  const acc_t tmp0 = -s + t;
  // loop 1 over the sample's elements: reductions sqnorm1 = sum_j tmp1^2
  acc_t sqnorm1 = acc_t(0);
  for (int64_t j = 0; j < N; ++j) {
    const acc_t net1 = fc_load<acc_t>(net1_row, j);
    const acc_t net1_d1 = fc_load<acc_t>(net1_d1_row, j);
    const acc_t net2 = fc_load<acc_t>(net2_row, j);
    const acc_t net1_d0 = fc_load<acc_t>(net1_d0_row, j);
    const acc_t tmp1 = -net1 + net1_d0*tmp0 + net1_d1*tmp0 + net2;
    sqnorm1 += (tmp1*tmp1);
  }
  // sample outputs
  fc_store<scalar_t, acc_t>(sout[0], b, sqnorm1);
}

FLOWCORE_EXPORT void esd_t1_loss_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                     void* const* eout, void* const* sout) {
  fc_cpu_run<float, 4, 2, 0, 1>(esd_t1_loss_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t1_loss_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                     void* const* eout, void* const* sout) {
  fc_cpu_run<double, 4, 2, 0, 1>(esd_t1_loss_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t0_level0_backward(x0, x1, g_net0_x; t) -> grad_x0, grad_x1
// element inputs : ein[0] = x0, ein[1] = x1, ein[2] = g_net0_x
// sample inputs  : sin[0] = t
// element outputs: eout[0] = grad_x0, eout[1] = grad_x1
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t0_level0_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
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

FLOWCORE_EXPORT void esd_t0_level0_backward_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                                void* const* eout, void* const* sout) {
  fc_cpu_run<float, 3, 1, 2, 0>(esd_t0_level0_backward_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t0_level0_backward_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                                void* const* eout, void* const* sout) {
  fc_cpu_run<double, 3, 1, 2, 0>(esd_t0_level0_backward_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t0_loss_backward(net0, x0, x1; g_loss) -> grad_net0, grad_x0, grad_x1
// element inputs : ein[0] = net0, ein[1] = x0, ein[2] = x1
// sample inputs  : sin[0] = g_loss
// element outputs: eout[0] = grad_net0, eout[1] = grad_x0, eout[2] = grad_x1
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t0_loss_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
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

FLOWCORE_EXPORT void esd_t0_loss_backward_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                              void* const* eout, void* const* sout) {
  fc_cpu_run<float, 3, 1, 3, 0>(esd_t0_loss_backward_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t0_loss_backward_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                              void* const* eout, void* const* sout) {
  fc_cpu_run<double, 3, 1, 3, 0>(esd_t0_loss_backward_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t0_loss_backward_wrt_net0(net0, x0, x1; g_loss) -> grad_net0
// element inputs : ein[0] = net0, ein[1] = x0, ein[2] = x1
// sample inputs  : sin[0] = g_loss
// element outputs: eout[0] = grad_net0
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t0_loss_backward_wrt_net0_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
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

FLOWCORE_EXPORT void esd_t0_loss_backward_wrt_net0_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                                       void* const* eout, void* const* sout) {
  fc_cpu_run<float, 3, 1, 1, 0>(esd_t0_loss_backward_wrt_net0_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t0_loss_backward_wrt_net0_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                                       void* const* eout, void* const* sout) {
  fc_cpu_run<double, 3, 1, 1, 0>(esd_t0_loss_backward_wrt_net0_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t1_level0_backward(x0, x1, g_net2_x; s) -> grad_x0, grad_x1
// element inputs : ein[0] = x0, ein[1] = x1, ein[2] = g_net2_x
// sample inputs  : sin[0] = s
// element outputs: eout[0] = grad_x0, eout[1] = grad_x1
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t1_level0_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                      scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const g_net2_x_row = ein[2] + b * N;
  scalar_t* const grad_x0_row = eout[0] + b * N;
  scalar_t* const grad_x1_row = eout[1] + b * N;
  // loop 1 over the sample's elements: element outputs grad_x0, grad_x1
  for (int64_t j = 0; j < N; ++j) {
    const acc_t g_net2_x = fc_load<acc_t>(g_net2_x_row, j);
    fc_store<scalar_t, acc_t>(grad_x0_row, j, g_net2_x*(acc_t(1) - s));
    fc_store<scalar_t, acc_t>(grad_x1_row, j, g_net2_x*s);
  }
}

FLOWCORE_EXPORT void esd_t1_level0_backward_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                                void* const* eout, void* const* sout) {
  fc_cpu_run<float, 3, 1, 2, 0>(esd_t1_level0_backward_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t1_level0_backward_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                                void* const* eout, void* const* sout) {
  fc_cpu_run<double, 3, 1, 2, 0>(esd_t1_level0_backward_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t1_level1_backward(x0, x1, g_net1_x; s) -> grad_x0, grad_x1
// element inputs : ein[0] = x0, ein[1] = x1, ein[2] = g_net1_x
// sample inputs  : sin[0] = s
// element outputs: eout[0] = grad_x0, eout[1] = grad_x1
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t1_level1_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                      scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const g_net1_x_row = ein[2] + b * N;
  scalar_t* const grad_x0_row = eout[0] + b * N;
  scalar_t* const grad_x1_row = eout[1] + b * N;
  // loop 1 over the sample's elements: element outputs grad_x0, grad_x1
  for (int64_t j = 0; j < N; ++j) {
    const acc_t g_net1_x = fc_load<acc_t>(g_net1_x_row, j);
    fc_store<scalar_t, acc_t>(grad_x0_row, j, g_net1_x*(acc_t(1) - s));
    fc_store<scalar_t, acc_t>(grad_x1_row, j, g_net1_x*s);
  }
}

FLOWCORE_EXPORT void esd_t1_level1_backward_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                                void* const* eout, void* const* sout) {
  fc_cpu_run<float, 3, 1, 2, 0>(esd_t1_level1_backward_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t1_level1_backward_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                                void* const* eout, void* const* sout) {
  fc_cpu_run<double, 3, 1, 2, 0>(esd_t1_level1_backward_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}

// ---- esd_t1_loss_backward(net1, net1_d1, net2, net1_d0; s, t, g_loss) -> grad_net1, grad_net1_d1
// element inputs : ein[0] = net1, ein[1] = net1_d1, ein[2] = net2, ein[3] = net1_d0
// sample inputs  : sin[0] = s, sin[1] = t, sin[2] = g_loss
// element outputs: eout[0] = grad_net1, eout[1] = grad_net1_d1
template <typename scalar_t, typename acc_t>
FLOWCORE_HD inline void esd_t1_loss_backward_sample(int64_t b, int64_t N, const scalar_t* const* ein, const scalar_t* const* sin,
                                                    scalar_t* const* eout, scalar_t* const* sout) {
  (void)sout;  // not used by this kernel
  // sample inputs
  const acc_t s = fc_load<acc_t>(sin[0], b);
  const acc_t t = fc_load<acc_t>(sin[1], b);
  const acc_t g_loss = fc_load<acc_t>(sin[2], b);
  // this sample's rows of the element inputs and outputs
  const scalar_t* const net1_row = ein[0] + b * N;
  const scalar_t* const net1_d1_row = ein[1] + b * N;
  const scalar_t* const net2_row = ein[2] + b * N;
  const scalar_t* const net1_d0_row = ein[3] + b * N;
  scalar_t* const grad_net1_row = eout[0] + b * N;
  scalar_t* const grad_net1_d1_row = eout[1] + b * N;
  // per-sample values
  const acc_t adj_sqnorm1 = g_loss;
  const acc_t tmp0 = -s + t;
  // loop 1 over the sample's elements: element outputs grad_net1, grad_net1_d1
  for (int64_t j = 0; j < N; ++j) {
    const acc_t net1 = fc_load<acc_t>(net1_row, j);
    const acc_t net1_d1 = fc_load<acc_t>(net1_d1_row, j);
    const acc_t net2 = fc_load<acc_t>(net2_row, j);
    const acc_t net1_d0 = fc_load<acc_t>(net1_d0_row, j);
    const acc_t tmp1 = net1_d0*tmp0;
    const acc_t tmp2 = net1_d1*tmp0;
    fc_store<scalar_t, acc_t>(grad_net1_row, j, adj_sqnorm1*(acc_t(2)*net1 - acc_t(2)*net2 - acc_t(2)*tmp1 - acc_t(2)*tmp2));
    fc_store<scalar_t, acc_t>(grad_net1_d1_row, j, adj_sqnorm1*(-acc_t(2)*s + acc_t(2)*t)*(-net1 + net2 + tmp1 + tmp2));
  }
}

FLOWCORE_EXPORT void esd_t1_loss_backward_f32(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                              void* const* eout, void* const* sout) {
  fc_cpu_run<float, 4, 3, 2, 0>(esd_t1_loss_backward_sample<float, float>, begin, end, N, ein, sin, eout, sout);
}
FLOWCORE_EXPORT void esd_t1_loss_backward_f64(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                                              void* const* eout, void* const* sout) {
  fc_cpu_run<double, 4, 3, 2, 0>(esd_t1_loss_backward_sample<double, double>, begin, end, N, ein, sin, eout, sout);
}
