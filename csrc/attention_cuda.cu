// Attention with its JVP, CUDA kernels (docs/math.md §4; the math: attention_jvp.h, the schemas:
// attention_cpu.cpp).
//
// The host side: checks, output and accumulation buffers (g_k, g_k̇, g_v, g_v̇ in the accumulation
// type, float for float32 / float16 / bfloat16 and double for float64, converted to the input dtype
// at the end), shared-memory sizing, and launches of the kernels of attention_cuda.cuh on the
// current stream of q's device. Compiled only when torch has CUDA and nvcc exists.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "attention_cuda.cuh"

namespace flowcore {
namespace attention {
namespace {

using gpu::bwd_kernel;
using gpu::Dims;
using gpu::fwd_kernel;
using gpu::kKeys;
using gpu::kMaxDim;
using gpu::kRows;
using gpu::kThreads;

// -- host side ----------------------------------------------------------------------------------------
Dims dims(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.is_cuda() && k.device() == q.device() && v.device() == q.device(), op,
              " (CUDA): q, k, v must be on one CUDA device");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.size(0) == k.size(0) && q.size(1) == k.size(1) &&
                  q.size(3) == k.size(3) && k.sizes().slice(0, 3) == v.sizes().slice(0, 3),
              op, ": shapes do not fit: q ", q.sizes(), " (B, H, N_q, D), k ", k.sizes(), " (B, H, N_k, D), v ",
              v.sizes(), " (B, H, N_k, D_v)");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
              ": q, k, v must share a dtype");
  TORCH_CHECK(q.size(3) <= kMaxDim && v.size(3) <= kMaxDim, op, " (CUDA): head dimensions up to ", kMaxDim,
              ", got D = ", q.size(3), ", D_v = ", v.size(3));
  const int64_t Nq = q.size(2);
  return {q.size(0) * q.size(1), Nq, k.size(2), q.size(3), v.size(3), (Nq + kRows - 1) / kRows};
}

template <typename Kernel>
void launch_config(const char* op, Kernel kernel, size_t smem, int device) {
  int most = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TORCH_CHECK(smem <= static_cast<size_t>(most), op, " (CUDA): these head dimensions need ", smem,
              " bytes of shared memory per block, the device has ", most, "; use smaller heads or float32");
  if (smem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
}

template <bool TANGENT>
std::vector<at::Tensor> fwd_cuda(const char* op, const at::Tensor& q_in, const at::Tensor& k_in,
                                 const at::Tensor& v_in, const at::Tensor* tangents, double scale) {
  const Dims d = dims(op, q_in, k_in, v_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  at::Tensor dq, dk, dv;
  if (TANGENT) dq = tangents[0].contiguous(), dk = tangents[1].contiguous(), dv = tangents[2].contiguous();
  at::Tensor o = at::empty({q.size(0), q.size(1), d.Nq, d.Dv}, q.options());
  // lse and μ in the accumulation type (float for float16 / bfloat16: attention_cuda.cuh)
  at::Tensor lse = at::empty({q.size(0), q.size(1), d.Nq}, q.options().dtype(at::toOpMathType(q.scalar_type())));
  at::Tensor ot = TANGENT ? at::empty_like(o) : at::Tensor(), mu = TANGENT ? at::empty_like(lse) : at::Tensor();
  TORCH_CHECK(d.Nk > 0 || o.numel() == 0, op, ": attention over zero keys is undefined (N_k = 0)");
  if (d.BH * d.tiles == 0) return TANGENT ? std::vector<at::Tensor>{o, ot, lse, mu} : std::vector<at::Tensor>{o, lse};
  const auto stream = c10::cuda::getCurrentCUDAStream(q.device().index());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "flowcore::attention_fwd (CUDA)", [&] {
    using A = at::opmath_type<scalar_t>;
    const size_t smem = gpu::fwd_shared_bytes<A>(d.D, d.Dv);
    auto kernel = fwd_kernel<scalar_t, TANGENT>;
    launch_config(op, kernel, smem, q.device().index());
    auto p = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
    auto m = [](at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    auto a = [](at::Tensor& t) { return t.defined() ? t.data_ptr<A>() : nullptr; };
    kernel<<<d.BH * d.tiles, kThreads, smem, stream>>>(d, static_cast<A>(scale), p(q), p(k), p(v), p(dq), p(dk),
                                                        p(dv), m(o), m(ot), a(lse), a(mu));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return TANGENT ? std::vector<at::Tensor>{o, ot, lse, mu} : std::vector<at::Tensor>{o, lse};
}

template <bool TANGENT>
std::vector<at::Tensor> bwd_cuda(const char* op, const at::Tensor& q_in, const at::Tensor& k_in,
                                 const at::Tensor& v_in, const at::Tensor* tangents, const at::Tensor& o_in,
                                 const at::Tensor* ot_in, const at::Tensor& lse_in, const at::Tensor* mu_in,
                                 const at::Tensor& go_in, const at::Tensor* got_in, double scale) {
  const Dims d = dims(op, q_in, k_in, v_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor o = o_in.contiguous(), lse = lse_in.contiguous(), go = go_in.contiguous();
  TORCH_CHECK(o.sizes() == go.sizes() && o.numel() == d.BH * d.Nq * d.Dv && lse.numel() == d.BH * d.Nq, op,
              ": o, g_o must be (B, H, N_q, D_v) and lse (B, H, N_q)");
  TORCH_CHECK(lse.scalar_type() == at::toOpMathType(q.scalar_type()), op, ": lse must be ",
              at::toOpMathType(q.scalar_type()), " (the forward's), got ", lse.scalar_type());
  at::Tensor dq, dk, dv, ot, mu, got;
  if (TANGENT) {
    dq = tangents[0].contiguous(), dk = tangents[1].contiguous(), dv = tangents[2].contiguous();
    ot = ot_in->contiguous(), mu = mu_in->contiguous(), got = got_in->contiguous();
    TORCH_CHECK(dq.sizes() == q.sizes() && dk.sizes() == k.sizes() && dv.sizes() == v.sizes() &&
                    ot.sizes() == o.sizes() && got.sizes() == o.sizes() && mu.sizes() == lse.sizes(),
                op, ": tangents, ȯ, g_ȯ, μ must be shaped like q, k, v, o, o, lse");
  }
  const auto acc_type = at::toOpMathType(q.scalar_type());
  at::Tensor gq = at::zeros_like(q), gdq = TANGENT ? at::zeros_like(q) : at::Tensor();
  at::Tensor gk = at::zeros(k.sizes(), k.options().dtype(acc_type)), gv = at::zeros(v.sizes(), v.options().dtype(acc_type));
  at::Tensor gdk = TANGENT ? at::zeros_like(gk) : at::Tensor(), gdv = TANGENT ? at::zeros_like(gv) : at::Tensor();
  if (d.BH * d.tiles > 0 && d.Nk > 0) {
    const auto stream = c10::cuda::getCurrentCUDAStream(q.device().index());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "flowcore::attention_bwd (CUDA)", [&] {
      using A = at::opmath_type<scalar_t>;
      const size_t smem = gpu::bwd_shared_bytes<A>(d.D, d.Dv);
      auto kernel = bwd_kernel<scalar_t, TANGENT>;
      launch_config(op, kernel, smem, q.device().index());
      auto p = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
      auto m = [](at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
      auto a = [](at::Tensor& t) { return t.defined() ? t.data_ptr<A>() : nullptr; };
      auto c = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<A>() : nullptr; };
      kernel<<<d.BH * d.tiles, kThreads, smem, stream>>>(d, static_cast<A>(scale), p(q), p(k), p(v), p(dq), p(dk),
                                                          p(dv), p(o), p(ot), c(lse), c(mu), p(go), p(got), m(gq),
                                                          m(gdq), a(gk), a(gv), a(gdk), a(gdv));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const auto dtype = q.scalar_type();
  if (TANGENT) return {gq, gk.to(dtype), gv.to(dtype), gdq, gdk.to(dtype), gdv.to(dtype)};
  return {gq, gk.to(dtype), gv.to(dtype)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_jvp_fwd_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dq, const at::Tensor& dk,
    const at::Tensor& dv, double scale) {
  const at::Tensor tangents[3] = {dq, dk, dv};
  auto r = fwd_cuda<true>("flowcore::attention_jvp_fwd", q, k, v, tangents, scale);
  return {r[0], r[1], r[2], r[3]};
}

std::tuple<at::Tensor, at::Tensor> attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v, double scale) {
  auto r = fwd_cuda<false>("flowcore::attention_fwd", q, k, v, nullptr, scale);
  return {r[0], r[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_jvp_bwd_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dq, const at::Tensor& dk,
    const at::Tensor& dv, const at::Tensor& o, const at::Tensor& ot, const at::Tensor& lse, const at::Tensor& mu,
    const at::Tensor& go, const at::Tensor& got, double scale) {
  const at::Tensor tangents[3] = {dq, dk, dv};
  auto r = bwd_cuda<true>("flowcore::attention_jvp_bwd", q, k, v, tangents, o, &ot, lse, &mu, go, &got, scale);
  return {r[0], r[1], r[2], r[3], r[4], r[5]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_bwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                                  const at::Tensor& v, const at::Tensor& o,
                                                                  const at::Tensor& lse, const at::Tensor& go,
                                                                  double scale) {
  auto r = bwd_cuda<false>("flowcore::attention_bwd", q, k, v, nullptr, o, nullptr, lse, nullptr, go, nullptr, scale);
  return {r[0], r[1], r[2]};
}

}  // namespace
}  // namespace attention
}  // namespace flowcore

TORCH_LIBRARY_IMPL(flowcore, CUDA, m) {
  m.impl("attention_jvp_fwd", &flowcore::attention::attention_jvp_fwd_cuda);
  m.impl("attention_jvp_bwd", &flowcore::attention::attention_jvp_bwd_cuda);
  m.impl("attention_fwd", &flowcore::attention::attention_fwd_cuda);
  m.impl("attention_bwd", &flowcore::attention::attention_bwd_cuda);
}
