"""flowcore.native.toolchain: torch-free, loaded by path by setup.py, and the one source of the flags
and the digest that the ahead-of-time (setup.py) and just-in-time (flowcore.native.extension) builds
of the extension use."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowcore.native import extension, toolchain

ROOT = Path(__file__).resolve().parents[1]

# setup.py run as pip runs it, in a process where `import torch` fails (sys.modules["torch"] = None):
# it must load the toolchain by path, build no extension, and never import flowcore itself.
SETUP_WITHOUT_TORCH = r"""
import json, runpy, sys
sys.modules["torch"] = None
sys.argv = ["setup.py", "--name"]
try:
    found = runpy.run_path("setup.py", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
tc = found["toolchain"]
print(json.dumps({"flowcore_imported": sorted(m for m in sys.modules if m.split(".")[0] == "flowcore"),
                  "ext_modules": len(found["ext_modules"]),
                  "digest": tc.sources_digest("csrc", TORCH_VERSION),
                  "openmp": tc.openmp_flags("ATen parallel backend: OpenMP", "linux")}))
"""


def test_setup_loads_the_toolchain_by_path_without_torch():
    code = SETUP_WITHOUT_TORCH.replace("TORCH_VERSION", repr(torch.__version__))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["flowcore_imported"] == []  # flowcore's __init__ (which imports torch) never ran
    assert report["ext_modules"] == 0  # no torch: no ahead-of-time build, JIT at first use
    assert report["digest"] == extension.sources_digest()  # what the loader expects of flowcore._C
    assert report["openmp"] == ["-fopenmp"]


def test_the_toolchain_imports_nothing_but_the_standard_library():
    import ast

    tree = ast.parse((ROOT / "flowcore" / "native" / "toolchain.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_openmp_flags_follow_torch_parallel_backend():
    assert toolchain.openmp_flags("ATen parallel backend: OpenMP", "linux") == ["-fopenmp"]
    assert toolchain.openmp_flags("ATen parallel backend: native thread pool", "linux") == []
    assert toolchain.openmp_flags("ATen parallel backend: OpenMP", "darwin") == []
    assert extension.OPENMP_FLAGS == toolchain.openmp_flags(torch.__config__.parallel_info())


def test_arch_list_from_spec_gpus_or_default(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    assert toolchain.arch_list() == [toolchain.DEFAULT_ARCH]
    assert toolchain.arch_list(capabilities=[(9, 0), (8, 0), (9, 0)]) == ["8.0", "9.0+PTX"]
    assert toolchain.arch_list("native", [(8, 6)]) == ["8.6+PTX"]
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0 9.0a")
    assert toolchain.arch_list(capabilities=[(7, 5)]) == ["8.0", "9.0a"]
    with pytest.raises(ValueError, match="cannot read the architecture 'sm_90'"):
        toolchain.arch_list("sm_90")


def test_cuda_home_prefers_torch_guess_with_headers(tmp_path, monkeypatch):
    home = tmp_path / "cuda"
    (home / "include").mkdir(parents=True)
    (home / "include" / "cuda_runtime_api.h").write_text("")
    assert toolchain.cuda_home(str(home)) == str(home)
    monkeypatch.setenv("FLOWCORE_NVCC", str(tmp_path / "no-such-nvcc"))
    assert toolchain.cuda_home(str(tmp_path / "elsewhere")) is None  # no headers there, and no nvcc to ask


def test_run_compiler_errors_name_the_command_and_what_was_built(tmp_path):
    with pytest.raises(toolchain.CompilerError, match=r"building the thing failed \(exit 1\):\n\$ false"):
        toolchain.run_compiler(["false"], "the thing", tmp_path)
    with pytest.raises(toolchain.CompilerError, match="cannot run `/no/such/cc` to build the thing"):
        toolchain.run_compiler(["/no/such/cc"], "the thing", tmp_path)
    with pytest.raises(toolchain.CompilerError, match="`no-such-cc` is not on PATH"):
        toolchain.cxx_version("no-such-cc")


def test_sources_digest_covers_sources_and_torch_version(tmp_path):
    (tmp_path / "a.cpp").write_text("int a;")
    (tmp_path / "notes.txt").write_text("not a source")
    first = toolchain.sources_digest(tmp_path, "2.0")
    assert len(first) == 16 and toolchain.sources_digest(tmp_path, "2.1") != first
    (tmp_path / "notes.txt").write_text("changed")
    assert toolchain.sources_digest(tmp_path, "2.0") == first
    (tmp_path / "a.h").write_text("#pragma once")
    assert toolchain.sources_digest(tmp_path, "2.0") != first
