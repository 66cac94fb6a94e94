#!/usr/bin/env python
"""CI: compile every CUDA source with nvcc for sm_90 (no GPU needed) — the extension's csrc/*.cu
(against torch's headers) and the generated kernels of every built-in objective (forward, backward
and double backward, one .cu per objective). One line per file with its time; exit status 1 if any
fails, 2 if nvcc is missing. Extra arguments go to ``flowcore.codegen.cuda.build`` (e.g.
``--arch "8.0;9.0+PTX"``, ``-j 8``, ``--keep DIR``).

    python .ci/compile_cuda.py
"""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    from flowcore.codegen.cuda.build import main

    sys.exit(main(["--all", *sys.argv[1:]]))
