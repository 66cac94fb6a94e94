// FLOWCORE_HD: an inline function compiled for the host and, under nvcc, for the device too — the
// per-element math the CPU and CUDA kernels share (attention_jvp.h, unet_jet.h).
#pragma once

#if defined(__CUDACC__)
#define FLOWCORE_HD __host__ __device__ __forceinline__
#else
#define FLOWCORE_HD inline
#endif
