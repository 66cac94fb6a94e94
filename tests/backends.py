"""Which backends this machine can run: torch always, cpu with a C++ compiler, cuda with a GPU."""
import shutil

import pytest
import torch


def available() -> list:
    found = [pytest.param("torch")]
    if shutil.which("g++") or shutil.which("c++"):
        found.append(pytest.param("cpu"))
    else:
        found.append(pytest.param("cpu", marks=pytest.mark.skip(reason="no C++ compiler on this machine")))
    if torch.cuda.is_available():
        found.append(pytest.param("cuda"))
    else:
        found.append(pytest.param("cuda", marks=pytest.mark.skip(reason="no GPU on this machine")))
    return found
