// Shared by the CPU and CUDA launchers of `flowcore::run_kernel`: argument checks, output
// allocation and the pointer arrays handed to a generated kernel entry point.
//
// A generated kernel (flowcore.codegen.cpu / .cuda) is torch-free: it takes raw pointer arrays
//   ein[i]  -> element input i  (B, N) contiguous      sin[i]  -> sample input i  (B,)
//   eout[i] -> element output i (B, N) contiguous      sout[i] -> sample output i (B,)
// The extension checks the tensors, allocates the outputs like `like`, and calls the entry point
// whose address (an int, from ctypes) matches the dtype.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <vector>

namespace flowcore {

// fns = [float32, float64, float16, bfloat16] entry-point addresses; 0 = not built.
inline int64_t entry_for(c10::IntArrayRef fns, c10::ScalarType dtype, const char* backend) {
  int index = -1;
  switch (dtype) {
    case c10::ScalarType::Float: index = 0; break;
    case c10::ScalarType::Double: index = 1; break;
    case c10::ScalarType::Half: index = 2; break;
    case c10::ScalarType::BFloat16: index = 3; break;
    default: break;
  }
  const int64_t fn = (index >= 0 && index < static_cast<int64_t>(fns.size())) ? fns[index] : 0;
  TORCH_CHECK(fn != 0, "flowcore::run_kernel: the ", backend, " kernel has no ", c10::toString(dtype),
              " variant (", backend, " kernels support ",
              std::string(backend) == "cpu" ? "float32 and float64" : "float32, float64, float16 and bfloat16", ")");
  return fn;
}

struct KernelCall {
  std::vector<at::Tensor> inputs;   // contiguous views of the inputs (kept alive)
  std::vector<at::Tensor> outputs;  // element outputs (B, N), then sample outputs (B,)
  std::vector<const void*> ein, sin;
  std::vector<void*> eout, sout;
};

inline KernelCall prepare_call(int64_t B, int64_t N, const at::Tensor& like, at::TensorList element_inputs,
                               at::TensorList sample_inputs, int64_t n_element_outputs, int64_t n_sample_outputs) {
  TORCH_CHECK(B >= 0 && N >= 0, "flowcore::run_kernel: B and N must be >= 0, got B=", B, ", N=", N);
  TORCH_CHECK(n_element_outputs >= 0 && n_sample_outputs >= 0, "flowcore::run_kernel: negative output count");
  KernelCall call;
  auto check = [&](const at::Tensor& t, const char* role, size_t i) {
    TORCH_CHECK(t.defined(), "flowcore::run_kernel: ", role, " input ", i, " is undefined");
    TORCH_CHECK(t.scalar_type() == like.scalar_type(), "flowcore::run_kernel: ", role, " input ", i, " has dtype ",
                t.scalar_type(), " but the kernel runs in ", like.scalar_type(), " (the dtype of `like`)");
    TORCH_CHECK(t.device() == like.device(), "flowcore::run_kernel: ", role, " input ", i, " is on ", t.device(),
                " but `like` is on ", like.device());
    // the exact shape, not only the count: a transposed (N, B) input has B·N elements too
    const bool element = role == std::string("element");
    const bool shaped = element ? (t.dim() == 2 && t.size(0) == B && t.size(1) == N) : (t.dim() == 1 && t.size(0) == B);
    TORCH_CHECK(shaped, "flowcore::run_kernel: ", role, " input ", i, " has shape ", t.sizes(), "; expected ",
                element ? "(B, N) = (" : "(B,) = (", B, element ? ", " + std::to_string(N) : std::string(), ")");
    call.inputs.push_back(t.contiguous());
    return call.inputs.back().const_data_ptr();
  };
  for (size_t i = 0; i < element_inputs.size(); ++i) call.ein.push_back(check(element_inputs[i], "element", i));
  for (size_t i = 0; i < sample_inputs.size(); ++i) call.sin.push_back(check(sample_inputs[i], "sample", i));
  const auto options = like.options();
  for (int64_t i = 0; i < n_element_outputs; ++i) {
    call.outputs.push_back(at::empty({B, N}, options));
    call.eout.push_back(call.outputs.back().data_ptr());
  }
  for (int64_t i = 0; i < n_sample_outputs; ++i) {
    call.outputs.push_back(at::empty({B}, options));
    call.sout.push_back(call.outputs.back().data_ptr());
  }
  // never hand a kernel an empty array: .data() of an empty vector may be null
  call.ein.push_back(nullptr);
  call.sin.push_back(nullptr);
  call.eout.push_back(nullptr);
  call.sout.push_back(nullptr);
  return call;
}

}  // namespace flowcore
