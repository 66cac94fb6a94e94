// The CUDA built-ins a kernel header (*.cuh) uses, for the host: the emulators the tests compile
// (attention_cuda_emulate.cc, unet_jet_cuda_emulate.cc) include this, then the kernels unchanged — not part
// of the extension (which compiles *.cpp and *.cu only).
//
// Each thread block runs as blockDim.x std::threads meeting at a std::barrier for __syncthreads;
// block-shared variables are statics shared by those threads; the dynamic shared memory is a host
// buffer filled with NaN (a read before a write shows); atomicAdd takes a mutex; blocks run one after
// another, with gridDim set, so grid-stride loops stride as on a GPU.
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned x = 0, y = 0, z = 0;
};
thread_local dim3 threadIdx;
dim3 blockIdx, blockDim, gridDim;
std::barrier<>* block_barrier = nullptr;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
std::mutex atomic_mutex;
template <typename T>
T atomicAdd(T* address, T value) {
  const std::lock_guard<std::mutex> lock(atomic_mutex);
  const T old = *address;
  *address = old + value;
  return old;
}
using std::min;
std::vector<unsigned char> dynamic_shared;
#define FLOWCORE_DYNAMIC_SHARED(name) unsigned char* name = dynamic_shared.data()

// kernel<<<grid, threads, shared_bytes>>>(args...)
template <typename Kernel, typename... Args>
void launch(Kernel kernel, int64_t grid, int threads, size_t shared_bytes, Args... args) {
  blockDim.x = static_cast<unsigned>(threads);
  gridDim.x = static_cast<unsigned>(grid);
  for (int64_t b = 0; b < grid; ++b) {
    dynamic_shared.assign(shared_bytes, 0xFF);  // NaN in every float type
    blockIdx.x = static_cast<unsigned>(b);
    std::barrier<> barrier(threads);
    block_barrier = &barrier;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        threadIdx.x = static_cast<unsigned>(t);
        kernel(args...);
      });
    }
    for (auto& thread : pool) thread.join();
  }
}

// The emulators' protocol: float64 arrays on stdin and stdout.
namespace emulate {

inline std::vector<double> read(size_t n) {
  std::vector<double> x(n);
  if (std::fread(x.data(), sizeof(double), n, stdin) != n) throw std::runtime_error("short input");
  return x;
}

template <typename T>
void write(const std::vector<T>& x) {
  for (T value : x) {
    const double d = static_cast<double>(value);
    std::fwrite(&d, sizeof(double), 1, stdout);
  }
}

template <typename S>
std::vector<S> cast(const std::vector<double>& x) {
  return std::vector<S>(x.begin(), x.end());
}

// An emulator's main: `dims` int64 sizes from stdin, then run_f32(dims) for argv[1] == "f32", else
// run_f64(dims); exit status 2 for a short input.
template <size_t NDIMS, typename F32, typename F64>
int main_by_dtype(int argc, char** argv, F32 run_f32, F64 run_f64) {
  int64_t dims[NDIMS];
  if (std::fread(dims, sizeof(int64_t), NDIMS, stdin) != NDIMS) return 2;
  if (argc > 1 && std::string(argv[1]) == "f32") {
    run_f32(dims);
  } else {
    run_f64(dims);
  }
  return 0;
}

}  // namespace emulate
