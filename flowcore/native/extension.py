"""Loading flowcore's torch extension (csrc/): ahead-of-time build if installed, else just in time.

`load_extension()` returns ``torch.ops.flowcore`` with the extension's ops registered:

1. an ahead-of-time build — ``flowcore._C``, built by ``pip install --no-build-isolation .`` —
   is imported if present and loadable (``FLOWCORE_JIT_EXTENSION=1`` skips it);
2. otherwise the sources are compiled with ``torch.utils.cpp_extension.load`` into an entry of
   flowcore's own build cache (flowcore.native.cache), keyed by the sources, the flags and the
   torch / CUDA / Python versions and taken under the cache's inter-process lock. torch's own JIT
   cache is not relied on: it ignores the torch version (pytorch#68905) and its lock file can
   deadlock after a killed build (pytorch#189245). Each build gets a fresh directory.

The CUDA part (csrc/*.cu) is compiled just in time only where it can run (torch has CUDA, a GPU is
visible, nvcc exists); ``FLOWCORE_EXTENSION_CUDA=0/1`` forces it off/on. The sources are found in
the source tree (``<repo>/csrc``) or, in an installed wheel, in the package data ``flowcore/csrc``.

The fake (meta) kernels of every op are registered once loaded (flowcore.native.ops), so
``torch.compile`` and ``torch.library.opcheck`` work whichever way the library was loaded. Code with
a pure-torch fallback (flowcore.nn's fused MLP) asks `optional_extension` instead, which warns once
and returns None where the extension cannot be had.

This module also binds the torch-free toolchain (flowcore.native.toolchain) to the running torch:
its OpenMP flags, the sources digest with its version, the CUDA architectures of its visible GPUs.
It sits in the native layer, below codegen and runtime, so that the cpu and cuda backends (whose
kernels run through ``flowcore::run_kernel``) and the network code can all load it without any
module reaching back up (docs/design.md).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

from . import ops, toolchain
from .cache import BuildCache, cache_key

log = logging.getLogger(__name__)

__all__ = ["ExtensionBuildError", "OPENMP_FLAGS", "csrc_dir", "cuda_arch_list", "cuda_wanted", "extension_info",
           "extension_sources", "has_device_kernels", "load_extension", "optional_extension", "sources_digest"]

NAME = "flowcore_ext"
NVCC_FLAGS = ["-O3"]
OPENMP_FLAGS = toolchain.openmp_flags(torch.__config__.parallel_info())
CXX_FLAGS = ["-O3", *OPENMP_FLAGS]
LD_FLAGS = list(OPENMP_FLAGS)
_lock = threading.Lock()
_state: dict = {}
_optional: dict = {}  # op name -> torch.ops.flowcore or None (optional_extension's one answer per process)
_device_kernels: dict = {}  # (op name, device type) -> has_device_kernels' answer, looked up once
# The dtypes flowcore's fused kernels take, by device type (CUDA adds the half types, float accumulation).
KERNEL_DTYPES = {"cpu": (torch.float32, torch.float64),
                 "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16)}


class ExtensionBuildError(RuntimeError):
    """The just-in-time build of flowcore's extension failed."""


def csrc_dir() -> Path:
    """Where the extension's C++/CUDA sources are: package data in a wheel, else the source tree."""
    package = Path(__file__).resolve().parent.parent  # .../flowcore
    candidates = [package / "csrc", package.parent / "csrc"]
    spec = importlib.util.find_spec("flowcore.csrc") if _importable("flowcore.csrc") else None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) for p in spec.submodule_search_locations]
    for path in candidates:
        if (path / "flowcore_ops.cpp").is_file():
            return path
    raise FileNotFoundError(f"flowcore's extension sources (flowcore_ops.cpp) are in none of "
                            f"{[str(p) for p in candidates]}; reinstall flowcore")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def cuda_wanted() -> bool:
    """Whether the just-in-time build includes the CUDA launcher."""
    forced = os.environ.get("FLOWCORE_EXTENSION_CUDA")
    if forced is not None:
        return forced not in ("0", "", "false", "no")
    if torch.version.cuda is None or not torch.cuda.is_available():
        return False
    return toolchain.find_nvcc() is not None


def extension_sources(with_cuda: bool) -> list[Path]:
    root = csrc_dir()
    sources = sorted(root.glob("*.cpp"))
    if with_cuda:
        sources += sorted(root.glob("*.cu"))
    return sources


def _source_texts(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(root.iterdir())
            if p.is_file() and p.suffix in toolchain.SOURCE_SUFFIXES}


def _registered() -> bool:
    try:
        torch.ops.flowcore.run_kernel  # noqa: B018 (raises if no library defined the op)
        return True
    except (AttributeError, RuntimeError):
        return False


def sources_digest(root: Path | None = None) -> str:
    """16 hex digits over the extension's sources and this torch's version (toolchain.sources_digest;
    setup.py compiles the same into flowcore._C)."""
    return toolchain.sources_digest(root or csrc_dir(), torch.__version__)


def cuda_arch_list(spec: str | None = None) -> list[str]:
    """toolchain.arch_list, given the compute capabilities of the GPUs torch sees (the choice where
    `spec` and TORCH_CUDA_ARCH_LIST leave it open)."""
    capabilities = []
    if torch.cuda.is_available():
        capabilities = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    return toolchain.arch_list(spec, capabilities)


def _aot_staleness(path: Path) -> str | None:
    """None if the ahead-of-time library at `path` was built from these sources and this torch,
    else why not. Read from the file, without loading it (loading registers its ops for good)."""
    match = re.search(rb"FLOWCORE_SOURCES_HASH=([0-9a-f]{16})", path.read_bytes())
    if match is None:
        return None  # built without the marker: trust it
    try:
        expected = sources_digest()
    except FileNotFoundError:
        return None
    built = match.group(1).decode()
    return None if built == expected else (f"it was built from other extension sources or another torch "
                                           f"(digest {built}, expected {expected})")


def _load_aot() -> bool:
    if os.environ.get("FLOWCORE_JIT_EXTENSION") not in (None, "", "0"):
        return False
    if not _importable("flowcore._C"):
        return False
    origin = importlib.util.find_spec("flowcore._C").origin
    stale = _aot_staleness(Path(origin)) if origin else None
    if stale:
        warnings.warn(f"flowcore: not loading the ahead-of-time extension {origin}: {stale}; building it just in "
                      "time instead (reinstall flowcore to refresh it)", RuntimeWarning, stacklevel=3)
        return False
    try:
        importlib.import_module("flowcore._C")
    except (ImportError, OSError) as e:  # e.g. built against another torch: fall back to JIT
        warnings.warn(f"flowcore: the ahead-of-time extension flowcore._C does not load ({e}); "
                      "building it just in time instead (reinstall flowcore to fix)", RuntimeWarning, stacklevel=3)
        return False
    _state.update(how="aot", path=origin)
    return True


def _fix_cuda_home(cpp_extension) -> None:
    """torch guesses CUDA_HOME from nvcc's directory; where nvcc is a wrapper outside the toolkit
    (e.g. /usr/local/bin/nvcc) that guess has no headers: ask nvcc itself where its toolkit is."""
    home = cpp_extension.CUDA_HOME
    real = toolchain.cuda_home(home)
    if real and real != home:
        log.info("flowcore: using CUDA_HOME=%s (from nvcc) instead of %s", real, home)
        cpp_extension.CUDA_HOME = real


def _build_cpu_without_ninja(cpp_extension, sources: list[str], include: Path, output: Path, verbose: bool) -> None:
    """The CPU-only extension with one compiler call, for machines without ninja (which
    torch.utils.cpp_extension.load requires); the flags are the ones torch's build would use."""
    import sysconfig

    command = [toolchain.cxx_compiler(), *CXX_FLAGS, "-std=c++20", "-fPIC", "-shared",
               f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
               *[f"-I{p}" for p in cpp_extension.include_paths()], f"-I{sysconfig.get_paths()['include']}",
               f"-I{include}", *sources, *[f"-L{p}" for p in cpp_extension.library_paths()],
               "-lc10", "-ltorch_cpu", "-ltorch", *LD_FLAGS, "-o", str(output)]
    if verbose:
        log.info("flowcore: %s", " ".join(command))
    try:
        toolchain.run_compiler(command, "flowcore's extension (CPU, without ninja)", output.parent,
                               notice_after=float("inf"))  # _load_jit says when it starts and ends
    except toolchain.CompilerError as e:
        raise ExtensionBuildError(str(e)) from e


#: torch.utils.cpp_extension.load in a helper process (argv: its keyword arguments as JSON, the error
#: mark), so that the build — ninja and its g++/nvcc jobs — runs under toolchain.run_build's guard and
#: ends with this process instead of compiling on after it was killed.
_TORCH_BUILD = """
import json, sys
from torch.utils import cpp_extension
try:
    cpp_extension.load(**json.loads(sys.argv[1]))
except Exception as error:
    print(sys.argv[2] + str(error), file=sys.stderr)
    sys.exit(1)
"""
_BUILD_ERROR_MARK = "flowcore extension build error: "


def _build_with_torch(cpp_extension, name: str, paths: list[str], src_dir: Path, directory: Path, with_cuda: bool,
                      arch: str, verbose: bool) -> None:
    """`cpp_extension.load` (ninja) into `directory`, in a guarded helper process (`_TORCH_BUILD`)."""
    env = dict(os.environ)
    if with_cuda:
        _fix_cuda_home(cpp_extension)
        if cpp_extension.CUDA_HOME:
            env["CUDA_HOME"] = cpp_extension.CUDA_HOME
        env.setdefault("TORCH_CUDA_ARCH_LIST", arch.replace(";", " "))
    arguments = {"name": name, "sources": paths, "extra_cflags": CXX_FLAGS, "extra_cuda_cflags": NVCC_FLAGS,
                 "extra_ldflags": LD_FLAGS, "extra_include_paths": [str(src_dir)], "build_directory": str(directory),
                 "with_cuda": with_cuda, "is_python_module": False, "verbose": verbose}
    command = [sys.executable, "-c", _TORCH_BUILD, json.dumps(arguments), _BUILD_ERROR_MARK]
    try:
        done = toolchain.run_build(command, directory, env=env, capture=not verbose)
    except OSError as e:
        raise ExtensionBuildError(f"cannot start the build of flowcore's extension ({sys.executable}): {e}") from e
    if done.returncode != 0:
        log = (done.stderr or "").strip()
        log = log.split(_BUILD_ERROR_MARK, 1)[1] if _BUILD_ERROR_MARK in log else log[-8000:]
        hint = ("" if cpp_extension.is_ninja_available()
                else " (torch needs ninja to build CUDA extensions: pip install ninja)")
        raise ExtensionBuildError(f"compiling flowcore's extension from {csrc_dir()} failed{hint} "
                                  f"(exit {done.returncode}): {log}")


def _load_jit(with_cuda: bool, verbose: bool = False) -> None:
    root = csrc_dir()
    sources = _source_texts(root)
    flags = CXX_FLAGS + ["ld:"] + LD_FLAGS + (["nvcc:"] + NVCC_FLAGS if with_cuda else [])
    extra = {"kind": "torch-extension", "name": NAME, "with_cuda": str(with_cuda),
             "abi": str(torch._C._GLIBCXX_USE_CXX11_ABI)}
    if with_cuda:
        extra["arch"] = ";".join(cuda_arch_list())
    key = cache_key(sources, flags, extra)
    name = f"{NAME}_{key[:12]}"

    def build(directory: Path) -> list[str]:
        # Imported only to build. On import it warns "No CUDA runtime is found" wherever nvcc exists
        # without a GPU; whether to build the CUDA part is cuda_wanted()'s decision, not that notice's.
        quiet = logging.getLogger("torch.utils.cpp_extension")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            from torch.utils import cpp_extension
        finally:
            quiet.setLevel(level)

        # Said before and after: the first compiled call otherwise waits about a minute in silence.
        toolchain.announce(f"flowcore: building flowcore's C++ extension once for this torch/Python "
                           f"({'a few minutes, with its CUDA kernels' if with_cuda else 'about a minute'})…")
        started = time.monotonic()
        # Copy the sources in, so the entry is self-describing and torch's build never touches
        # the (maybe read-only) install directory.
        src_dir = directory / "src"
        src_dir.mkdir()
        for file_name, text in sources.items():
            (src_dir / file_name).write_text(text)
        paths = [str(src_dir / p.name) for p in extension_sources(with_cuda)]
        if not with_cuda and not cpp_extension.is_ninja_available():  # its errors are already ExtensionBuildError
            _build_cpu_without_ninja(cpp_extension, paths, src_dir, directory / f"{name}.so", verbose)
        else:
            _build_with_torch(cpp_extension, name, paths, src_dir, directory, with_cuda, extra.get("arch", ""),
                              verbose)
        toolchain.announce(f"flowcore: built flowcore's C++ extension in {time.monotonic() - started:.0f} s "
                           f"(cached in {directory.parent})")
        return [f"{name}.so"]

    entry = BuildCache().get_or_build(key, build, describe={"what": "flowcore torch extension", "cuda": with_cuda,
                                                            "torch": torch.__version__})
    torch.ops.load_library(str(entry.files[f"{name}.so"]))
    _state.update(how="jit", path=str(entry.files[f"{name}.so"]), build_seconds=entry.build_seconds,
                  cache_hit=entry.hit)


def load_extension(verbose: bool = False):
    """``torch.ops.flowcore`` with flowcore's ops registered (loading or building them once)."""
    with _lock:
        if not _state.get("loaded"):
            if not _registered():
                if not _load_aot():
                    _load_jit(cuda_wanted(), verbose=verbose)
            else:
                _state.setdefault("how", "preloaded")
            ops.register_all()
            _state["loaded"] = True
    return torch.ops.flowcore


def extension_info() -> dict:
    """How the extension was loaded: ``how`` (aot/jit/preloaded), and the library's path (aot, jit)."""
    return dict(_state)


def optional_extension(needs: str, unavailable: str) -> object | None:
    """``torch.ops.flowcore`` if the extension loads and defines the op `needs`, else None — for code
    with a pure-torch fallback. The first failure warns once per process (a RuntimeWarning:
    `unavailable`, whose ``{reason}`` is filled with the error). Under torch.compile's tracing, where
    loading cannot be traced, None until an eager call has loaded it."""
    if needs not in _optional:
        if torch.compiler.is_compiling():
            return None
        try:
            loaded = load_extension()
            getattr(loaded, needs)  # raises if this build of the extension lacks the op
            _optional[needs] = loaded
        except Exception as e:  # noqa: BLE001 - any failure means: the caller's fallback
            _optional[needs] = None
            warnings.warn(unavailable.format(reason=f"{type(e).__name__}: {e}"), RuntimeWarning, stacklevel=4)
    return _optional[needs]


def has_device_kernels(op: str, device_type: str) -> bool:
    """Whether the loaded extension has kernels of ``flowcore::<op>`` for `device_type` ("cpu", "cuda"):
    a build without nvcc has no CUDA part."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"flowcore::{op}", device_type.upper())


def kernels_available(op: str, device: torch.device | str, dtype: torch.dtype, *, switch: str,
                      unavailable: str, family: str) -> bool:
    """Whether the fused kernels whose first op is `op` run for `device` and `dtype`: not turned off
    by the environment variable `switch` ("0"), a dtype they take, an extension that loads
    (`optional_extension`, warning `unavailable` once) and has the device's part (a build without
    nvcc has no CUDA kernels: warned once, naming `family`, e.g. "the fused MLP")."""
    if os.environ.get(switch, "1") in ("0", "false", "no"):
        return False
    device = torch.device(device)
    if dtype not in KERNEL_DTYPES.get(device.type, ()):
        return False
    if optional_extension(op, unavailable) is None:
        return False
    key = (op, device.type)
    if key not in _device_kernels:
        _device_kernels[key] = has_device_kernels(op, device.type)
        if not _device_kernels[key]:
            warnings.warn(f"flowcore.nn: the extension was built without {device.type.upper()} kernels; using "
                          f"{family}'s equivalent pure-torch path there (slower)", RuntimeWarning, stacklevel=3)
    return _device_kernels[key]
