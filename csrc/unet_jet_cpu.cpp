// The image UNet's pointwise jets: op schemas, argument checks and the CPU ops (the math and the
// layout: unet_jet.h; the loops they run: unet_jet_cpu.h).
//
// One pass over the primal block and its tangents replaces the 6–15 elementwise torch ops (and as many
// full-size temporaries) of each piece and of its backward. at::parallel_for over chunks of the primal
// (FiLM: over (b, c) rows; the pixel norm: over slabs; unit rows: over every weight's rows at once).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "unet_jet_cpu.h"

namespace flowcore {
namespace unet {

// -- argument checks (shared with unet_jet_cuda.cu through the op's schema, not the code) ------------
namespace {

// n, the number of tangent blocks of `t` for the primal `x0`
int64_t check_jet(const char* op, const at::Tensor& x0, const at::Tensor& t) {
  TORCH_CHECK(x0.dim() >= 1 && x0.size(0) >= 1, op, ": the primal block must be (B, …) with B >= 1, got ",
              x0.sizes());
  TORCH_CHECK(t.dim() == x0.dim() && t.sizes().slice(1) == x0.sizes().slice(1) && t.size(0) % x0.size(0) == 0, op,
              ": the tangents must be (n·B, …) for the primal ", x0.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x0.scalar_type() && t.device() == x0.device(), op,
              ": the tangents must have the primal's dtype and device (", x0.scalar_type(), ", ", x0.device(),
              "), got ", t.scalar_type(), ", ", t.device());
  return t.size(0) / x0.size(0);
}

void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& x0, int64_t n) {
  TORCH_CHECK(grad.dim() == x0.dim() && grad.size(0) == (1 + n) * x0.size(0) &&
                  grad.sizes().slice(1) == x0.sizes().slice(1) && grad.scalar_type() == x0.scalar_type() &&
                  grad.device() == x0.device(),
              op, ": grad must be the (1 + ", n, ")·B stack of ", x0.scalar_type(), " on ", x0.device(), ", got ",
              grad.sizes(), " ", grad.scalar_type(), " on ", grad.device());
}

// n for FiLM's y0 (B, C, S…), l0 (B, C), yt (n·B, C, S…), lt (n·B, C)
int64_t check_film(const char* op, const at::Tensor& y0, const at::Tensor& l0, const at::Tensor& yt,
                   const at::Tensor& lt) {
  TORCH_CHECK(y0.dim() >= 2, op, ": y0 must be (B, C, …), got ", y0.sizes());
  const int64_t n = check_jet(op, y0, yt);
  TORCH_CHECK(l0.dim() == 2 && l0.size(0) == y0.size(0) && l0.size(1) == y0.size(1), op, ": l0 must be (B, C) = (",
              y0.size(0), ", ", y0.size(1), "), got ", l0.sizes());
  TORCH_CHECK(lt.dim() == 2 && lt.size(0) == n * y0.size(0) && lt.size(1) == y0.size(1), op,
              ": lt must be (n·B, C) = (", n * y0.size(0), ", ", y0.size(1), "), got ", lt.sizes());
  TORCH_CHECK(l0.scalar_type() == y0.scalar_type() && lt.scalar_type() == y0.scalar_type() &&
                  l0.device() == y0.device() && lt.device() == y0.device(),
              op, ": l0 and lt must have y0's dtype and device");
  return n;
}

void check_cpu(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), op, " (CPU): inputs on ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              " (CPU): float32 or float64 inputs, got ", x.scalar_type());
}

at::Tensor stacked_like(const at::Tensor& x0, int64_t blocks) {
  auto sizes = x0.sizes().vec();
  sizes[0] *= blocks;
  return at::empty(sizes, x0.options());
}

}  // namespace


namespace {

at::Tensor silu_jet_cpu(const at::Tensor& x0_in, const at::Tensor& t_in, double gain, bool with_primal) {
  static constexpr const char* op = "flowcore::unet_silu_jet";
  const int64_t n = check_jet(op, x0_in, t_in);
  check_cpu(op, x0_in);
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous();
  at::Tensor out = stacked_like(x0, n + (with_primal ? 1 : 0));
  const int64_t P = x0.numel();
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), op, [&] {
    const scalar_t* xp = x0.const_data_ptr<scalar_t>();
    const scalar_t* tp = t.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const scalar_t g = static_cast<scalar_t>(gain);
    at::parallel_for(0, P, cpu::grain(n + 1, 1), [&](int64_t b, int64_t e) {
      if (with_primal) cpu::silu_fwd<scalar_t, true>(xp, tp, o, o + P, P, n, g, b, e);
      else cpu::silu_fwd<scalar_t, false>(xp, tp, nullptr, o, P, n, g, b, e);
    });
  });
  return out;
}

at::Tensor silu_jet_bwd_cpu(const at::Tensor& x0_in, const at::Tensor& t_in, const at::Tensor& g_in, double gain) {
  static constexpr const char* op = "flowcore::unet_silu_jet_bwd";
  const int64_t n = check_jet(op, x0_in, t_in);
  check_grad(op, g_in, x0_in, n);
  check_cpu(op, x0_in);
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous(), g = g_in.contiguous();
  at::Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  const int64_t P = x0.numel();
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), op, [&] {
    const scalar_t gs = static_cast<scalar_t>(gain);
    at::parallel_for(0, P, cpu::grain(n + 1, 1), [&](int64_t b, int64_t e) {
      cpu::silu_bwd<scalar_t>(x0.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(),
                              g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), P, n, gs, b, e);
    });
  });
  return out;
}

at::Tensor film_silu_jet_cpu(const at::Tensor& y0_in, const at::Tensor& l0_in, const at::Tensor& yt_in,
                             const at::Tensor& lt_in, double gain, bool with_primal) {
  static constexpr const char* op = "flowcore::unet_film_silu_jet";
  const int64_t n = check_film(op, y0_in, l0_in, yt_in, lt_in);
  check_cpu(op, y0_in);
  const at::Tensor y0 = y0_in.contiguous(), l0 = l0_in.contiguous(), yt = yt_in.contiguous(), lt = lt_in.contiguous();
  at::Tensor out = stacked_like(y0, n + (with_primal ? 1 : 0));
  const int64_t R = l0.numel(), Sz = R ? y0.numel() / R : 0, P = y0.numel();
  AT_DISPATCH_FLOATING_TYPES(y0.scalar_type(), op, [&] {
    const scalar_t* yp = y0.const_data_ptr<scalar_t>();
    const scalar_t* lp = l0.const_data_ptr<scalar_t>();
    const scalar_t* ytp = yt.const_data_ptr<scalar_t>();
    const scalar_t* ltp = lt.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const scalar_t g = static_cast<scalar_t>(gain);
    at::parallel_for(0, R, cpu::grain(n + 1, Sz), [&](int64_t b, int64_t e) {
      if (with_primal) cpu::film_silu_fwd<scalar_t, true>(yp, lp, ytp, ltp, o, o + P, R, Sz, n, g, b, e);
      else cpu::film_silu_fwd<scalar_t, false>(yp, lp, ytp, ltp, nullptr, o, R, Sz, n, g, b, e);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> film_silu_jet_bwd_cpu(const at::Tensor& y0_in, const at::Tensor& l0_in,
                                                         const at::Tensor& yt_in, const at::Tensor& lt_in,
                                                         const at::Tensor& g_in, double gain) {
  static constexpr const char* op = "flowcore::unet_film_silu_jet_bwd";
  const int64_t n = check_film(op, y0_in, l0_in, yt_in, lt_in);
  check_grad(op, g_in, y0_in, n);
  check_cpu(op, y0_in);
  const at::Tensor y0 = y0_in.contiguous(), l0 = l0_in.contiguous(), yt = yt_in.contiguous(), lt = lt_in.contiguous();
  const at::Tensor g = g_in.contiguous();
  at::Tensor gy = at::empty_like(g, at::MemoryFormat::Contiguous);
  at::Tensor gl = stacked_like(l0, n + 1);
  const int64_t R = l0.numel(), Sz = R ? y0.numel() / R : 0;
  AT_DISPATCH_FLOATING_TYPES(y0.scalar_type(), op, [&] {
    const scalar_t gs = static_cast<scalar_t>(gain);
    at::parallel_for(0, R, cpu::grain(n + 1, Sz), [&](int64_t b, int64_t e) {
      cpu::film_silu_bwd<scalar_t>(y0.const_data_ptr<scalar_t>(), l0.const_data_ptr<scalar_t>(),
                                   yt.const_data_ptr<scalar_t>(), lt.const_data_ptr<scalar_t>(),
                                   g.const_data_ptr<scalar_t>(), gy.mutable_data_ptr<scalar_t>(),
                                   gl.mutable_data_ptr<scalar_t>(), R, Sz, n, gs, b, e);
    });
  });
  return {gy, gl};
}

std::tuple<at::Tensor, at::Tensor> clip_jet_cpu(const at::Tensor& x0_in, const at::Tensor& t_in, double bound,
                                                bool with_primal) {
  static constexpr const char* op = "flowcore::unet_clip_jet";
  const int64_t n = check_jet(op, x0_in, t_in);
  check_cpu(op, x0_in);
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous();
  at::Tensor out = stacked_like(x0, n + (with_primal ? 1 : 0));
  at::Tensor inside = at::empty(x0.sizes(), x0.options().dtype(at::kBool));
  const int64_t P = x0.numel();
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), op, [&] {
    const scalar_t* xp = x0.const_data_ptr<scalar_t>();
    const scalar_t* tp = t.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    bool* in = inside.mutable_data_ptr<bool>();
    const scalar_t bd = static_cast<scalar_t>(bound);
    at::parallel_for(0, P, cpu::grain(n + 1, 1), [&](int64_t b, int64_t e) {
      if (with_primal) cpu::clip_fwd<scalar_t, true>(xp, tp, o, o + P, in, P, n, bd, b, e);
      else cpu::clip_fwd<scalar_t, false>(xp, tp, nullptr, o, in, P, n, bd, b, e);
    });
  });
  return {out, inside};
}

int64_t check_pixel(const char* op, const at::Tensor& x0, const at::Tensor& t) {
  TORCH_CHECK(x0.dim() == 3, op, ": the primal must be (O, C, I) (the axis normalised in the middle), got ",
              x0.sizes());
  return check_jet(op, x0, t);
}

at::Tensor pixel_norm_jet_cpu(const at::Tensor& x0_in, const at::Tensor& t_in, double eps, bool with_primal) {
  static constexpr const char* op = "flowcore::unet_pixel_norm_jet";
  const int64_t n = check_pixel(op, x0_in, t_in);
  check_cpu(op, x0_in);
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous();
  at::Tensor out = stacked_like(x0, n + (with_primal ? 1 : 0));
  const int64_t O = x0.size(0), C = x0.size(1), I = x0.size(2), P = x0.numel();
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), op, [&] {
    const scalar_t* xp = x0.const_data_ptr<scalar_t>();
    const scalar_t* tp = t.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const scalar_t e = static_cast<scalar_t>(eps);
    at::parallel_for(0, O, cpu::grain(n + 1, C * I), [&](int64_t b, int64_t end) {
      if (with_primal) cpu::pixel_norm_fwd<scalar_t, true>(xp, tp, o, o + P, O, C, I, n, e, b, end);
      else cpu::pixel_norm_fwd<scalar_t, false>(xp, tp, nullptr, o, O, C, I, n, e, b, end);
    });
  });
  return out;
}

at::Tensor pixel_norm_jet_bwd_cpu(const at::Tensor& x0_in, const at::Tensor& t_in, const at::Tensor& g_in,
                                  double eps) {
  static constexpr const char* op = "flowcore::unet_pixel_norm_jet_bwd";
  const int64_t n = check_pixel(op, x0_in, t_in);
  check_grad(op, g_in, x0_in, n);
  check_cpu(op, x0_in);
  const at::Tensor x0 = x0_in.contiguous(), t = t_in.contiguous(), g = g_in.contiguous();
  at::Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  const int64_t O = x0.size(0), C = x0.size(1), I = x0.size(2);
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), op, [&] {
    const scalar_t e = static_cast<scalar_t>(eps);
    at::parallel_for(0, O, cpu::grain(n + 1, C * I), [&](int64_t b, int64_t end) {
      cpu::pixel_norm_bwd<scalar_t>(x0.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(),
                                    g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), O, C, I, n, e,
                                    b, end);
    });
  });
  return out;
}

// every weight's rows, or their gradients (grads non-empty), over one parallel_for across all rows
std::vector<at::Tensor> unit_rows_cpu_impl(const char* op, at::TensorList weights, at::TensorList grads,
                                           double floor) {
  const bool backward = !grads.empty();
  TORCH_CHECK(!backward || grads.size() == weights.size(), op, ": ", grads.size(), " gradients for ", weights.size(),
              " weights");
  std::vector<at::Tensor> ws, gs, outs;
  std::vector<int64_t> first_row{0};
  for (size_t k = 0; k < weights.size(); ++k) {
    const at::Tensor& w = weights[k];
    TORCH_CHECK(w.dim() >= 1 && w.size(0) >= 1, op, ": weight ", k, " must have at least one row, got ", w.sizes());
    check_cpu(op, w);
    TORCH_CHECK(w.scalar_type() == weights[0].scalar_type(), op, ": the weights must share a dtype (weight ", k,
                " is ", w.scalar_type(), ", weight 0 ", weights[0].scalar_type(), ")");
    ws.push_back(w.contiguous());
    if (backward) {
      TORCH_CHECK(grads[k].sizes() == w.sizes() && grads[k].scalar_type() == w.scalar_type(), op, ": gradient ", k,
                  " must be ", w.sizes(), " ", w.scalar_type(), ", got ", grads[k].sizes(), " ",
                  grads[k].scalar_type());
      gs.push_back(grads[k].contiguous());
    }
    outs.push_back(at::empty_like(ws.back(), at::MemoryFormat::Contiguous));
    first_row.push_back(first_row.back() + w.size(0));
  }
  if (ws.empty()) return outs;
  AT_DISPATCH_FLOATING_TYPES(ws[0].scalar_type(), "flowcore::unet_unit_rows", [&] {
    const scalar_t f = static_cast<scalar_t>(floor);
    const int64_t cols0 = ws[0].numel() / ws[0].size(0);
    at::parallel_for(0, first_row.back(), std::max<int64_t>(1, 32768 / std::max<int64_t>(cols0, 1)),
                     [&](int64_t begin, int64_t end) {
      // the weights whose rows overlap [begin, end)
      size_t k = std::upper_bound(first_row.begin(), first_row.end(), begin) - first_row.begin() - 1;
      for (; k < ws.size() && first_row[k] < end; ++k) {
        const int64_t lo = std::max(begin, first_row[k]) - first_row[k];
        const int64_t hi = std::min(end, first_row[k + 1]) - first_row[k];
        const int64_t cols = ws[k].numel() / ws[k].size(0);
        cpu::unit_rows<scalar_t>(ws[k].const_data_ptr<scalar_t>(),
                                 backward ? gs[k].const_data_ptr<scalar_t>() : nullptr,
                                 outs[k].mutable_data_ptr<scalar_t>(), cols, f, lo, hi);
      }
    });
  });
  return outs;
}

std::vector<at::Tensor> unit_rows_cpu(at::TensorList weights, double floor) {
  return unit_rows_cpu_impl("flowcore::unet_unit_rows", weights, {}, floor);
}

std::vector<at::Tensor> unit_rows_bwd_cpu(at::TensorList weights, at::TensorList grads, double floor) {
  TORCH_CHECK(grads.size() == weights.size(), "flowcore::unet_unit_rows_bwd: ", grads.size(), " gradients for ",
              weights.size(), " weights");
  return unit_rows_cpu_impl("flowcore::unet_unit_rows_bwd", weights, grads, floor);
}

}  // namespace
}  // namespace unet
}  // namespace flowcore

TORCH_LIBRARY_FRAGMENT(flowcore, m) {
  m.def("unet_silu_jet(Tensor x0, Tensor t, float gain, bool with_primal) -> Tensor");
  m.def("unet_silu_jet_bwd(Tensor x0, Tensor t, Tensor grad, float gain) -> Tensor");
  m.def("unet_film_silu_jet(Tensor y0, Tensor l0, Tensor yt, Tensor lt, float gain, bool with_primal) -> Tensor");
  m.def("unet_film_silu_jet_bwd(Tensor y0, Tensor l0, Tensor yt, Tensor lt, Tensor grad, float gain)"
        " -> (Tensor, Tensor)");
  m.def("unet_clip_jet(Tensor x0, Tensor t, float bound, bool with_primal) -> (Tensor, Tensor)");
  m.def("unet_pixel_norm_jet(Tensor x0, Tensor t, float eps, bool with_primal) -> Tensor");
  m.def("unet_pixel_norm_jet_bwd(Tensor x0, Tensor t, Tensor grad, float eps) -> Tensor");
  m.def("unet_unit_rows(Tensor[] weights, float floor) -> Tensor[]");
  m.def("unet_unit_rows_bwd(Tensor[] weights, Tensor[] grads, float floor) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(flowcore, CPU, m) {
  m.impl("unet_silu_jet", &flowcore::unet::silu_jet_cpu);
  m.impl("unet_silu_jet_bwd", &flowcore::unet::silu_jet_bwd_cpu);
  m.impl("unet_film_silu_jet", &flowcore::unet::film_silu_jet_cpu);
  m.impl("unet_film_silu_jet_bwd", &flowcore::unet::film_silu_jet_bwd_cpu);
  m.impl("unet_clip_jet", &flowcore::unet::clip_jet_cpu);
  m.impl("unet_pixel_norm_jet", &flowcore::unet::pixel_norm_jet_cpu);
  m.impl("unet_pixel_norm_jet_bwd", &flowcore::unet::pixel_norm_jet_bwd_cpu);
  m.impl("unet_unit_rows", &flowcore::unet::unit_rows_cpu);
  m.impl("unet_unit_rows_bwd", &flowcore::unet::unit_rows_bwd_cpu);
}
