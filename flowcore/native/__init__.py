"""The native layer: building and loading compiled code, below codegen, runtime and nn.

* `flowcore.native.toolchain` — the C++ compiler and nvcc, CUDA architectures, OpenMP flags, the
  extension's sources digest; standard library only, so ``setup.py`` loads it by path.
* `flowcore.native.cache` — the on-disk build cache every compiled artifact lives in.
* `flowcore.native.extension` — loading (or building) the torch extension of csrc/.
* `flowcore.native.ops` — the fake kernels and vmap rules of every op of that extension.

It is a layer of its own, at the bottom, because the code generators (whose cpu and cuda kernels
are built into the cache and run through the extension's ``flowcore::run_kernel``), the runtime and
the fused networks all need it, and none of them may reach up into another (docs/design.md). It
imports nothing of flowcore outside itself.
"""
