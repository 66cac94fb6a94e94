// Attention with its JVP, CPU kernels and op schemas (docs/math.md §4; the math: attention_jvp.h).
//
//   flowcore::attention_jvp_fwd(q, k, v, q̇, k̇, v̇, scale) -> (o, ȯ, lse, μ)
//   flowcore::attention_jvp_bwd(q, k, v, q̇, k̇, v̇, o, ȯ, lse, μ, g_o, g_ȯ, scale) -> (g_q, g_k, g_v, g_q̇, g_k̇, g_v̇)
//   flowcore::attention_fwd(q, k, v, scale) -> (o, lse)                      (primal only)
//   flowcore::attention_bwd(q, k, v, o, lse, g_o, scale) -> (g_q, g_k, g_v)
//
// q, q̇: (B, H, N_q, D); k, k̇: (B, H, N_k, D); v, v̇: (B, H, N_k, D_v); lse, μ: (B, H, N_q), float32
// or float64 here (the CUDA kernels also take float16 / bfloat16). No N×N matrix: the forward runs
// at::parallel_for over (b, h, row tile) with an online softmax over key tiles; the backward runs
// over (b, h) (each task owns its g_k, g_v rows, so no reduction between threads) and recomputes
// each (row tile, key tile) from lse and μ. The tile kernels: attention_cpu.h.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "attention_cpu.h"

namespace flowcore {
namespace attention {
namespace {

using cpu::Dims;
using cpu::kRows;
using cpu::run_bwd_head;
using cpu::run_fwd_tile;

// -- argument checks --------------------------------------------------------------------------------
Dims check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": q, k, v must be (B, H, N, D), got ", q.sizes(),
              ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3) &&
                  k.sizes().slice(0, 3) == v.sizes().slice(0, 3),
              op, ": shapes do not fit: q ", q.sizes(), " (B, H, N_q, D), k ", k.sizes(), " (B, H, N_k, D), v ",
              v.sizes(), " (B, H, N_k, D_v)");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
              ": q, k, v must share a dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(), op, ": q, k, v must share a device");
  return {q.size(0) * q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
}

void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type() && t.device() == like.device(),
              op, ": ", name, " must be ", like.sizes(), " ", like.scalar_type(), " on ", like.device(), ", got ",
              t.sizes(), " ", t.scalar_type(), " on ", t.device());
}

void check_cpu(const char* op, const at::Tensor& q) {
  TORCH_CHECK(q.device().is_cpu(), op, " (CPU): inputs on ", q.device());
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble, op,
              " (CPU): float32 or float64 inputs, got ", q.scalar_type());
}

template <typename S>
const S* ptr(const at::Tensor& t) {
  return t.const_data_ptr<S>();
}

template <bool TANGENT>
std::vector<at::Tensor> fwd_cpu(const char* op, const at::Tensor& q_in, const at::Tensor& k_in,
                                const at::Tensor& v_in, const at::Tensor* dq_in, const at::Tensor* dk_in,
                                const at::Tensor* dv_in, double scale) {
  const Dims d = check_inputs(op, q_in, k_in, v_in);
  check_cpu(op, q_in);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  at::Tensor dq, dk, dv;
  if constexpr (TANGENT) {
    check_like(op, "q̇", *dq_in, q_in);
    check_like(op, "k̇", *dk_in, k_in);
    check_like(op, "v̇", *dv_in, v_in);
    dq = dq_in->contiguous(), dk = dk_in->contiguous(), dv = dv_in->contiguous();
  }
  const auto opts = q.options();
  at::Tensor o = at::empty({q.size(0), q.size(1), d.Nq, d.Dv}, opts);
  at::Tensor lse = at::empty({q.size(0), q.size(1), d.Nq}, opts);
  at::Tensor ot = TANGENT ? at::empty_like(o) : at::Tensor();
  at::Tensor mu = TANGENT ? at::empty_like(lse) : at::Tensor();
  if (d.Nk == 0 && o.numel() > 0) {
    TORCH_CHECK(false, op, ": attention over zero keys is undefined (N_k = 0)");
  }
  const int64_t tiles = (d.Nq + kRows - 1) / kRows;
  if (d.BH * tiles > 0) {
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "flowcore::attention (CPU)", [&] {
      using S = scalar_t;
      at::parallel_for(0, d.BH * tiles, 1, [&](int64_t begin, int64_t end) {
        std::vector<S> buf;
        for (int64_t t = begin; t < end; ++t) {
          const int64_t bh = t / tiles, r0 = (t % tiles) * kRows;
          run_fwd_tile<S, TANGENT>(d, bh, r0, std::min(kRows, d.Nq - r0), static_cast<S>(scale), ptr<S>(q), ptr<S>(k),
                               ptr<S>(v), TANGENT ? ptr<S>(dq) : nullptr, TANGENT ? ptr<S>(dk) : nullptr,
                               TANGENT ? ptr<S>(dv) : nullptr, o.data_ptr<S>(), TANGENT ? ot.data_ptr<S>() : nullptr,
                               lse.data_ptr<S>(), TANGENT ? mu.data_ptr<S>() : nullptr, buf);
        }
      });
    });
  }
  if constexpr (TANGENT) return {o, ot, lse, mu};
  return {o, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_jvp_fwd_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dq, const at::Tensor& dk,
    const at::Tensor& dv, double scale) {
  auto r = fwd_cpu<true>("flowcore::attention_jvp_fwd", q, k, v, &dq, &dk, &dv, scale);
  return {r[0], r[1], r[2], r[3]};
}

std::tuple<at::Tensor, at::Tensor> attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     double scale) {
  auto r = fwd_cpu<false>("flowcore::attention_fwd", q, k, v, nullptr, nullptr, nullptr, scale);
  return {r[0], r[1]};
}

template <bool TANGENT>
std::vector<at::Tensor> bwd_cpu(const char* op, const at::Tensor& q_in, const at::Tensor& k_in,
                                const at::Tensor& v_in, const at::Tensor* tangents, const at::Tensor& o_in,
                                const at::Tensor* ot_in, const at::Tensor& lse_in, const at::Tensor* mu_in,
                                const at::Tensor& go_in, const at::Tensor* got_in, double scale) {
  const Dims d = check_inputs(op, q_in, k_in, v_in);
  check_cpu(op, q_in);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor o = o_in.contiguous(), lse = lse_in.contiguous(), go = go_in.contiguous();
  TORCH_CHECK(o.sizes() == go.sizes() && o.size(2) == d.Nq && o.size(3) == d.Dv, op, ": o and g_o must be (B, H, N_q, D_v)");
  TORCH_CHECK(lse.numel() == d.BH * d.Nq, op, ": lse must be (B, H, N_q)");
  at::Tensor dq, dk, dv, ot, mu, got;
  if constexpr (TANGENT) {
    check_like(op, "q̇", tangents[0], q_in);
    check_like(op, "k̇", tangents[1], k_in);
    check_like(op, "v̇", tangents[2], v_in);
    dq = tangents[0].contiguous(), dk = tangents[1].contiguous(), dv = tangents[2].contiguous();
    ot = ot_in->contiguous(), mu = mu_in->contiguous(), got = got_in->contiguous();
    check_like(op, "ȯ", ot, o);
    check_like(op, "g_ȯ", got, o);
    check_like(op, "μ", mu, lse);
  }
  at::Tensor gq = at::zeros_like(q), gk = at::zeros_like(k), gv = at::zeros_like(v);
  at::Tensor gdq = TANGENT ? at::zeros_like(q) : at::Tensor(), gdk = TANGENT ? at::zeros_like(k) : at::Tensor(),
             gdv = TANGENT ? at::zeros_like(v) : at::Tensor();
  if (d.BH * d.Nq * d.Nk > 0) {
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "flowcore::attention (CPU)", [&] {
      using S = scalar_t;
      auto opt = [](const at::Tensor& t) -> const S* { return t.defined() ? t.const_data_ptr<S>() : nullptr; };
      auto mut = [](at::Tensor& t) -> S* { return t.defined() ? t.data_ptr<S>() : nullptr; };
      at::parallel_for(0, d.BH, 1, [&](int64_t begin, int64_t end) {
        std::vector<S> buf;
        for (int64_t bh = begin; bh < end; ++bh) {
          run_bwd_head<S, TANGENT>(d, bh, static_cast<S>(scale), ptr<S>(q), ptr<S>(k), ptr<S>(v), opt(dq), opt(dk),
                               opt(dv), ptr<S>(o), opt(ot), ptr<S>(lse), opt(mu), ptr<S>(go), opt(got),
                               gq.data_ptr<S>(), gk.data_ptr<S>(), gv.data_ptr<S>(), mut(gdq), mut(gdk), mut(gdv),
                               buf);
        }
      });
    });
  }
  if constexpr (TANGENT) return {gq, gk, gv, gdq, gdk, gdv};
  return {gq, gk, gv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_jvp_bwd_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dq, const at::Tensor& dk,
    const at::Tensor& dv, const at::Tensor& o, const at::Tensor& ot, const at::Tensor& lse, const at::Tensor& mu,
    const at::Tensor& go, const at::Tensor& got, double scale) {
  const at::Tensor tangents[3] = {dq, dk, dv};
  auto r = bwd_cpu<true>("flowcore::attention_jvp_bwd", q, k, v, tangents, o, &ot, lse, &mu, go, &got, scale);
  return {r[0], r[1], r[2], r[3], r[4], r[5]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_bwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                 const at::Tensor& v, const at::Tensor& o,
                                                                 const at::Tensor& lse, const at::Tensor& go,
                                                                 double scale) {
  auto r = bwd_cpu<false>("flowcore::attention_bwd", q, k, v, nullptr, o, nullptr, lse, nullptr, go, nullptr, scale);
  return {r[0], r[1], r[2]};
}

}  // namespace
}  // namespace attention
}  // namespace flowcore

TORCH_LIBRARY_FRAGMENT(flowcore, m) {
  m.def("attention_jvp_fwd(Tensor q, Tensor k, Tensor v, Tensor dq, Tensor dk, Tensor dv, float scale)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("attention_jvp_bwd(Tensor q, Tensor k, Tensor v, Tensor dq, Tensor dk, Tensor dv, Tensor o, Tensor ot,"
        " Tensor lse, Tensor mu, Tensor go, Tensor got, float scale) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, float scale) -> (Tensor, Tensor)");
  m.def("attention_bwd(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor go, float scale)"
        " -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(flowcore, CPU, m) {
  m.impl("attention_jvp_fwd", &flowcore::attention::attention_jvp_fwd_cpu);
  m.impl("attention_jvp_bwd", &flowcore::attention::attention_jvp_bwd_cpu);
  m.impl("attention_fwd", &flowcore::attention::attention_fwd_cpu);
  m.impl("attention_bwd", &flowcore::attention::attention_bwd_cpu);
}
