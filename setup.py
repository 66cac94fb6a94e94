"""Packaging: the `flowcore` library plus the top-level `objectives/` folder shipped as `flowcore.objectives`.

The extension's sources `csrc/` ship as package data `flowcore/csrc` (and the generated kernels'
header as `flowcore/codegen/cxx/include`), so an installed flowcore can always build its extension just
in time. Where torch is importable at build time (``pip install --no-build-isolation .``) the
extension is also built ahead of time as `flowcore._C`, with its CUDA part when torch has CUDA and
nvcc is found (architectures from TORCH_CUDA_ARCH_LIST; "9.0" when unset and no GPU is visible).
With build isolation (plain ``pip install .``) torch is not importable here: no `_C`, JIT at first use.
FLOWCORE_NO_EXTENSION=1 skips the ahead-of-time build; FLOWCORE_EXTENSION_CUDA=0 leaves CUDA out.
The toolchain (CUDA home, OpenMP flags, the sources digest) is flowcore.native.toolchain, the same
module the just-in-time build uses, loaded by path.
"""
import glob
import importlib.util
import os

from setuptools import find_packages, setup


def _load_toolchain():
    """flowcore/native/toolchain.py loaded BY PATH: torch may not be importable here (build isolation),
    and flowcore's package __init__ (which imports torch) must not run. The module is standard library
    only; what needs torch is passed to it."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flowcore", "native", "toolchain.py")
    spec = importlib.util.spec_from_file_location("_flowcore_toolchain", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toolchain = _load_toolchain()
packages = find_packages(include=["flowcore", "flowcore.*"]) + ["flowcore.objectives", "flowcore.csrc",
                                                                "flowcore.docs"]
package_dir = {"flowcore.objectives": "objectives", "flowcore.csrc": "csrc", "flowcore.docs": "docs"}
package_data = {"flowcore.csrc": ["*.cpp", "*.cu", "*.h", "*.cuh"], "flowcore.codegen.cxx": ["include/*.h"],
                "flowcore.docs": ["*.md"]}


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
        home = toolchain.cuda_home(cpp_extension.CUDA_HOME)
        with_cuda = home is not None
        if with_cuda:
            cpp_extension.CUDA_HOME = home
            os.environ.setdefault("CUDA_HOME", home)
            if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
                os.environ["TORCH_CUDA_ARCH_LIST"] = toolchain.DEFAULT_ARCH  # arch detection needs a GPU otherwise
    openmp = toolchain.openmp_flags(torch.__config__.parallel_info())
    options = dict(include_dirs=[os.path.abspath("csrc")], extra_link_args=openmp,
                   define_macros=[("FLOWCORE_SOURCES_HASH", toolchain.sources_digest("csrc", torch.__version__))])
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
