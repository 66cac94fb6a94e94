// A host emulation of the attention CUDA kernels (attention_cuda.cuh) for the tests — not part of the
// extension (which compiles *.cpp and *.cu only).
//
// Where there is no GPU, tests/test_attention_jvp.py compiles this file with the host compiler and
// checks the kernels' index arithmetic, tiling, barriers and accumulations against the reference,
// with the CUDA built-ins of cuda_emulate.h. The kernels themselves are compiled unchanged, for
// float64 (and float32).
//
// Protocol: argv[1] = "f64" or "f32"; stdin: int64 BH, Nq, Nk, D, Dv, then float64 q, k, v, q̇, k̇,
// v̇, g_o, g_ȯ (each (BH, N, ·) row-major); stdout: float64 o, ȯ, lse, μ, g_q, g_k, g_v, g_q̇, g_k̇,
// g_v̇ of the JVP kernels, then o, lse, g_q, g_k, g_v of the primal-only ones.
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emulate.h"
#include "attention_cuda.cuh"

namespace {

using namespace flowcore::attention::gpu;

using emulate::cast;
using emulate::read;
using emulate::write;

template <typename S>
void run(const int64_t* dims) {
  const int64_t BH = dims[0], Nq = dims[1], Nk = dims[2], D = dims[3], Dv = dims[4];
  const Dims d{BH, Nq, Nk, D, Dv, (Nq + kRows - 1) / kRows};
  const size_t nq = BH * Nq * D, nk = BH * Nk * D, nv = BH * Nk * Dv, no = BH * Nq * Dv, nr = BH * Nq;
  auto q = cast<S>(read(nq)), k = cast<S>(read(nk)), v = cast<S>(read(nv));
  auto dq = cast<S>(read(nq)), dk = cast<S>(read(nk)), dv = cast<S>(read(nv));
  auto go = cast<S>(read(no)), got = cast<S>(read(no));
  const S scale = S(1) / std::sqrt(S(D));
  const int64_t grid = BH * d.tiles;

  std::vector<S> o(no), ot(no), lse(nr), mu(nr);
  launch(fwd_kernel<S, true>, grid, kThreads, fwd_shared_bytes<S>(D, Dv), d, scale, q.data(), k.data(), v.data(), dq.data(),
         dk.data(), dv.data(), o.data(), ot.data(), lse.data(), mu.data());
  std::vector<S> gq(nq), gdq(nq), gk(nk, S(0)), gdk(nk, S(0)), gv(nv, S(0)), gdv(nv, S(0));
  launch(bwd_kernel<S, true>, grid, kThreads, bwd_shared_bytes<S>(D, Dv), d, scale, q.data(), k.data(), v.data(), dq.data(),
         dk.data(), dv.data(), o.data(), ot.data(), lse.data(), mu.data(), go.data(), got.data(), gq.data(),
         gdq.data(), gk.data(), gv.data(), gdk.data(), gdv.data());
  for (const auto* x : {&o, &ot, &lse, &mu, &gq, &gk, &gv, &gdq, &gdk, &gdv}) write(*x);

  std::vector<S> o2(no), lse2(nr);
  launch(fwd_kernel<S, false>, grid, kThreads, fwd_shared_bytes<S>(D, Dv), d, scale, q.data(), k.data(), v.data(),
         static_cast<const S*>(nullptr), static_cast<const S*>(nullptr), static_cast<const S*>(nullptr), o2.data(),
         static_cast<S*>(nullptr), lse2.data(), static_cast<S*>(nullptr));
  std::vector<S> gq2(nq), gk2(nk, S(0)), gv2(nv, S(0));
  const S* none = nullptr;
  launch(bwd_kernel<S, false>, grid, kThreads, bwd_shared_bytes<S>(D, Dv), d, scale, q.data(), k.data(), v.data(), none, none,
         none, o2.data(), none, lse2.data(), none, go.data(), none, gq2.data(), static_cast<S*>(nullptr), gk2.data(),
         gv2.data(), static_cast<S*>(nullptr), static_cast<S*>(nullptr));
  for (const auto* x : {&o2, &lse2, &gq2, &gk2, &gv2}) write(*x);
}

}  // namespace

int main(int argc, char** argv) { return emulate::main_by_dtype<5>(argc, argv, run<float>, run<double>); }
