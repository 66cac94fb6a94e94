// flowcore's torch extension: the op schema and the CPU launcher of generated objective kernels.
//
//   flowcore::run_kernel(int[] fns, SymInt B, SymInt N, Tensor like, Tensor[] element_inputs,
//                        Tensor[] sample_inputs, int n_element_outputs, int n_sample_outputs) -> Tensor[]
//
// `fns` are the addresses of a generated kernel's entry points for [float32, float64, float16,
// bfloat16] (0 = not built); the CPU implementation calls `K_f32/K_f64(begin, end, N, ein, sin,
// eout, sout)` on chunks of samples with at::parallel_for (torch's own thread pool: no second
// OpenMP runtime). The CUDA implementation lives in flowcore_cuda.cu; the fake (meta) kernel is
// registered from Python (flowcore.native.ops).
//
// This file holds the one TORCH_LIBRARY(flowcore, ...) block; other files of the extension add
// ops with TORCH_LIBRARY_FRAGMENT(flowcore, m).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <Python.h>

#include "run_kernel.h"

namespace flowcore {
namespace {

using CpuEntry = void (*)(int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,
                          void* const* eout, void* const* sout);

std::vector<at::Tensor> run_kernel_cpu(c10::IntArrayRef fns, int64_t B, int64_t N, const at::Tensor& like,
                                       at::TensorList element_inputs, at::TensorList sample_inputs,
                                       int64_t n_element_outputs, int64_t n_sample_outputs) {
  TORCH_CHECK(like.device().is_cpu(), "flowcore::run_kernel (CPU): `like` is on ", like.device());
  const auto fn = reinterpret_cast<CpuEntry>(entry_for(fns, like.scalar_type(), "cpu"));
  KernelCall call = prepare_call(B, N, like, element_inputs, sample_inputs, n_element_outputs, n_sample_outputs);
  if (B == 0) return call.outputs;
  // about 32k elements per task (ATen's GRAIN_SIZE) to amortize the thread hand-off
  constexpr int64_t kGrainElements = 32768;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(N, 1));
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    fn(begin, end, N, call.ein.data(), call.sin.data(), call.eout.data(), call.sout.data());
  });
  return call.outputs;
}

}  // namespace
}  // namespace flowcore

TORCH_LIBRARY(flowcore, m) {
  m.def(
      "run_kernel(int[] fns, SymInt B, SymInt N, Tensor like, Tensor[] element_inputs, Tensor[] sample_inputs, "
      "int n_element_outputs, int n_sample_outputs) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(flowcore, CPU, m) {
  m.impl("run_kernel", &flowcore::run_kernel_cpu);
}

// setup.py passes -DFLOWCORE_SOURCES_HASH=<16 hex digits> (csrc/ + torch version); flowcore reads
// this marker from the file BEFORE importing an ahead-of-time build, so a stale flowcore._C (csrc/
// edited since, or another torch) is never loaded: the extension is then built just in time.
#ifndef FLOWCORE_SOURCES_HASH
#define FLOWCORE_SOURCES_HASH unknown
#endif
#define FLOWCORE_STRINGIFY_(x) #x
#define FLOWCORE_STRINGIFY(x) FLOWCORE_STRINGIFY_(x)
extern "C" __attribute__((used, visibility("default"))) const char flowcore_sources_hash[] =
    "FLOWCORE_SOURCES_HASH=" FLOWCORE_STRINGIFY(FLOWCORE_SOURCES_HASH);

// Importable as `flowcore._C` when built ahead of time by setup.py; importing it registers the ops.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "flowcore's compiled extension (ops in torch.ops.flowcore)",
                                      -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module);
}
