// A host emulation of the UNet pointwise-jet CUDA kernels (unet_jet_cuda.cuh) for the tests — not part of
// the extension (which compiles *.cpp and *.cu only).
//
// Where there is no GPU, tests/test_unet_jet_cuda.py compiles this file with the host compiler (the CUDA
// built-ins of cuda_emulate.h) and checks the kernels' index arithmetic, grid-stride loops and the FiLM
// backward's shared-memory reduction against the CPU ops. The grid is `blocks` blocks of kThreads
// (fewer than the elements need, so every thread strides), the FiLM backward one block per row.
//
// Protocol: argv[1] = "f64" or "f32"; stdin: int64 B, C, S, n, blocks, then float64 x0 (B·C·S),
// t (n·B·C·S), l0 (B·C), lt (n·B·C), g ((1+n)·B·C·S); stdout: float64 silu(x0, t), silu_bwd(x0, t, g),
// film_silu(x0, l0, t, lt), its backward's g_y and g_l, clip(x0, t) and its mask (with the primal), then the
// dead modes (no primal) of silu, film_silu and clip; then the pixel norm of x0 as (B, C, S) with t: its
// jet, its backward and its dead mode; the unit rows of x0 as (B·C, S) and their backward for g's first
// block. gain = 1/0.596, bound = 256 (clip), eps = 1e-4 (pixel norm).
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_emulate.h"
#include "unet_jet_cuda.cuh"

namespace {

using namespace flowcore::unet::gpu;
using emulate::cast;
using emulate::read;
using emulate::write;

template <typename S>
void run(const int64_t* dims) {
  const int64_t B = dims[0], C = dims[1], Sz = dims[2], n = dims[3], blocks = dims[4];
  const int64_t R = B * C, P = R * Sz;
  auto x0 = cast<S>(read(P)), t = cast<S>(read(n * P)), l0 = cast<S>(read(R)), lt = cast<S>(read(n * R));
  auto g = cast<S>(read((1 + n) * P));
  const S gain = S(1) / S(0.596), bound = S(256);

  std::vector<S> silu((1 + n) * P), silu_g((1 + n) * P);
  launch(silu_fwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), t.data(), silu.data(), silu.data() + P, P, n, gain);
  launch(silu_bwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), t.data(), g.data(), silu_g.data(), P, n, gain);
  std::vector<S> film((1 + n) * P), film_gy((1 + n) * P), film_gl((1 + n) * R);
  launch(film_silu_fwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), l0.data(), t.data(), lt.data(), film.data(),
         film.data() + P, R, Sz, n, gain);
  launch(film_silu_bwd_kernel<S, S>, R, kThreads, 0, x0.data(), l0.data(), t.data(), lt.data(), g.data(),
         film_gy.data(), film_gl.data(), R, Sz, n, gain);
  std::vector<S> clip((1 + n) * P);
  std::vector<unsigned char> mask_bytes(P);  // a bool array (std::vector<bool> packs bits)
  bool* mask = reinterpret_cast<bool*>(mask_bytes.data());
  launch(clip_fwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), t.data(), clip.data(), clip.data() + P, mask, P, n,
         bound);
  std::vector<double> inside(mask, mask + P);
  for (const auto* x : {&silu, &silu_g, &film, &film_gy, &film_gl, &clip}) write(*x);
  write(inside);

  std::vector<S> silu_dead(n * P), film_dead(n * P), clip_dead(n * P);
  launch(silu_fwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), t.data(), static_cast<S*>(nullptr), silu_dead.data(),
         P, n, gain);
  launch(film_silu_fwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), l0.data(), t.data(), lt.data(),
         static_cast<S*>(nullptr), film_dead.data(), R, Sz, n, gain);
  launch(clip_fwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), t.data(), static_cast<S*>(nullptr), clip_dead.data(),
         mask, P, n, bound);
  for (const auto* x : {&silu_dead, &film_dead, &clip_dead}) write(*x);

  // the pixel norm of x0 as (O, C, I) = (B, C, S), eps = 1e-4
  const S eps = S(1e-4);
  std::vector<S> pn((1 + n) * P), pn_g((1 + n) * P), pn_dead(n * P);
  launch(pixel_norm_fwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), t.data(), pn.data(), pn.data() + P, B, C, Sz,
         n, eps);
  launch(pixel_norm_bwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), t.data(), g.data(), pn_g.data(), B, C, Sz, n,
         eps);
  launch(pixel_norm_fwd_kernel<S, S>, blocks, kThreads, 0, x0.data(), t.data(), static_cast<S*>(nullptr),
         pn_dead.data(), B, C, Sz, n, eps);
  for (const auto* x : {&pn, &pn_g, &pn_dead}) write(*x);

  // unit rows of x0 as R = B·C rows of S, and their gradient for g's first block; floor 1e-12
  std::vector<S> unit(P), unit_g(P);
  launch(unit_rows_kernel<S, S>, R, kThreads, 0, x0.data(), static_cast<const S*>(nullptr), unit.data(), Sz,
         S(1e-12));
  launch(unit_rows_kernel<S, S>, R, kThreads, 0, x0.data(), g.data(), unit_g.data(), Sz, S(1e-12));
  write(unit);
  write(unit_g);
}

}  // namespace

int main(int argc, char** argv) { return emulate::main_by_dtype<5>(argc, argv, run<float>, run<double>); }
