"""Packaging: the `flowcore` library plus the top-level `objectives/` folder shipped as `flowcore.objectives`.

The extension's sources `csrc/` ship as package data `flowcore/csrc` (and the generated kernels'
header as `flowcore/codegen/cxx/include`), so an installed flowcore can always build its extension just
in time. Where torch is importable at build time (``pip install --no-build-isolation .``) the
extension is also built ahead of time as `flowcore._C`, with its CUDA part when torch has CUDA and
nvcc is found (architectures from TORCH_CUDA_ARCH_LIST; "9.0" when unset and no GPU is visible).
With build isolation (plain ``pip install .``) torch is not importable here: no `_C`, JIT at first use.
FLOWCORE_NO_EXTENSION=1 skips the ahead-of-time build; FLOWCORE_EXTENSION_CUDA=0 leaves CUDA out.
"""
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

packages = find_packages(include=["flowcore", "flowcore.*"]) + ["flowcore.objectives", "flowcore.csrc",
                                                                "flowcore.docs"]
package_dir = {"flowcore.objectives": "objectives", "flowcore.csrc": "csrc", "flowcore.docs": "docs"}
package_data = {"flowcore.csrc": ["*.cpp", "*.cu", "*.h", "*.cuh"], "flowcore.codegen.cxx": ["include/*.h"],
                "flowcore.docs": ["*.md"]}


def _cuda_home(cpp_extension):
    """torch's CUDA_HOME if it has the headers, else the toolkit nvcc itself reports (nvcc may be a
    wrapper script outside the toolkit, e.g. /usr/local/bin/nvcc)."""
    home = cpp_extension.CUDA_HOME
    if home and os.path.isfile(os.path.join(home, "include", "cuda_runtime_api.h")):
        return home
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True, check=False)
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, flags=re.M)
    top = os.path.realpath(match.group(1).strip()) if match else None
    return top if top and os.path.isfile(os.path.join(top, "include", "cuda_runtime_api.h")) else None


def _sources_digest(torch_version):
    """As flowcore.runtime.extension.sources_digest: csrc/ sources + torch version, 16 hex digits.
    Compiled into flowcore._C, it lets flowcore refuse a stale _C without loading it."""
    h = hashlib.sha256()
    for path in sorted(glob.glob("csrc/*")):
        if os.path.isfile(path) and os.path.splitext(path)[1] in (".cpp", ".cu", ".h", ".cuh"):
            with open(path, "rb") as f:
                h.update(os.path.basename(path).encode() + b"\0" + f.read() + b"\0")
    h.update(b"torch=" + torch_version.encode())
    return h.hexdigest()[:16]


def extensions():
    if os.environ.get("FLOWCORE_NO_EXTENSION", "0") not in ("", "0"):
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # build isolation: no torch here; flowcore builds the extension just in time
        return [], {}
    sources = sorted(glob.glob("csrc/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/*.cu"))
    with_cuda = bool(cuda_sources) and torch.version.cuda is not None \
        and os.environ.get("FLOWCORE_EXTENSION_CUDA", "1") not in ("", "0")
    if with_cuda:
        home = _cuda_home(cpp_extension)
        with_cuda = home is not None
        if with_cuda:
            cpp_extension.CUDA_HOME = home
            os.environ.setdefault("CUDA_HOME", home)
            if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
                os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"  # arch detection needs a GPU otherwise
    # at::parallel_for's OpenMP pragmas are compiled into the extension (flowcore.runtime.extension)
    openmp = (["-fopenmp"] if sys.platform.startswith("linux")
              and "parallel backend: OpenMP" in torch.__config__.parallel_info() else [])
    options = dict(include_dirs=[os.path.abspath("csrc")], extra_link_args=openmp,
                   define_macros=[("FLOWCORE_SOURCES_HASH", _sources_digest(torch.__version__))])
    if with_cuda:
        module = cpp_extension.CUDAExtension("flowcore._C", sources + cuda_sources,
                                             extra_compile_args={"cxx": ["-O3", *openmp], "nvcc": ["-O3"]}, **options)
    else:
        module = cpp_extension.CppExtension("flowcore._C", sources, extra_compile_args={"cxx": ["-O3", *openmp]},
                                            **options)
    return [module], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = extensions()

setup(
    packages=packages,
    package_dir=package_dir,
    package_data=package_data,
    include_package_data=False,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
