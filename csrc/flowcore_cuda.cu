// flowcore's torch extension, CUDA part: the CUDA launcher of generated objective kernels.
//
// Same op as the CPU one (schema in flowcore_ops.cpp). `fns` holds the addresses of the generated
// host launchers `K_cuda_f32/f64/f16/bf16(B, N, ein, sin, eout, sout, stream)`; they pack the
// pointer arrays into by-value kernel parameters and launch on the stream given here: the current
// torch stream of the inputs' device. Compiled only when torch has CUDA and nvcc exists.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include "run_kernel.h"

namespace flowcore {
namespace {

using CudaEntry = int (*)(int64_t B, int64_t N, const void* const* ein, const void* const* sin, void* const* eout,
                          void* const* sout, void* stream);

std::vector<at::Tensor> run_kernel_cuda(c10::IntArrayRef fns, int64_t B, int64_t N, const at::Tensor& like,
                                        at::TensorList element_inputs, at::TensorList sample_inputs,
                                        int64_t n_element_outputs, int64_t n_sample_outputs) {
  TORCH_CHECK(like.is_cuda(), "flowcore::run_kernel (CUDA): `like` is on ", like.device());
  const auto fn = reinterpret_cast<CudaEntry>(entry_for(fns, like.scalar_type(), "cuda"));
  const c10::cuda::CUDAGuard guard(like.device());
  KernelCall call = prepare_call(B, N, like, element_inputs, sample_inputs, n_element_outputs, n_sample_outputs);
  if (B == 0) return call.outputs;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(like.device().index()).stream();
  const int status = fn(B, N, call.ein.data(), call.sin.data(), call.eout.data(), call.sout.data(), stream);
  TORCH_CHECK(status == 0, "flowcore::run_kernel (CUDA): the kernel launch failed: ",
              cudaGetErrorString(static_cast<cudaError_t>(status)));
  return call.outputs;
}

}  // namespace
}  // namespace flowcore

TORCH_LIBRARY_IMPL(flowcore, CUDA, m) {
  m.impl("run_kernel", &flowcore::run_kernel_cuda);
}
