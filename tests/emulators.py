"""Building the host emulations of the extension's CUDA kernels (csrc/*_cuda_emulate.cc, with the CUDA
built-ins of csrc/cuda_emulate.h) for the tests that check the kernels' index arithmetic, barriers and
reductions where there is no GPU."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

CSRC = Path(__file__).resolve().parent.parent / "csrc"


def build_emulator(tmp_path_factory, source: str) -> Path:
    """``csrc/<source>`` compiled for the host into a fresh temporary folder (skips without a C++ compiler)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler to build the CUDA kernels' emulation")
    binary = tmp_path_factory.mktemp(Path(source).stem) / Path(source).stem
    include = Path(torch.__file__).parent / "include"
    subprocess.run([cxx, "-std=c++20", "-O1", "-pthread", f"-I{include}", f"-I{CSRC}", str(CSRC / source), "-o",
                    str(binary)], check=True, capture_output=True)
    return binary
