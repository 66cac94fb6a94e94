"""Golden files: the generated source of fm, lsd, esd and psd_m, per backend, stays as reviewed.

A change to the compiler that alters generated code shows up here as a diff to read. After
reviewing it, refresh the files with ``FLOWCORE_UPDATE_GOLDEN=1 pytest tests/test_golden.py``.
"""
import difflib
import os
from pathlib import Path

import pytest

from flowcore import objectives
from flowcore.codegen import backends, emit_sources
from flowcore.compiler.driver import compile_program
from flowcore.compiler.segments import program_kernels

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FLOWCORE_UPDATE_GOLDEN") == "1"


def generated(name: str, backend: str) -> dict[str, str]:
    compilation = compile_program(objectives.get(name))
    kernels = program_kernels(compilation.program)  # what the runtime builds
    sources = emit_sources(backend, f"objective {name}", compilation.digest, kernels)
    # the shared header ships with flowcore (flowcore/codegen/cxx/include), it is not generated
    return {f"{name}.{backend}.{Path(file).name.split('.', 1)[-1]}": text for file, text in sources.items()
            if Path(file).name != "flowcore_kernel.h"}


@pytest.mark.parametrize("backend", backends.names())
@pytest.mark.parametrize("name", ["fm", "lsd", "esd", "psd_m"])
def test_generated_source_matches_golden(name, backend):
    files = generated(name, backend)  # emitting is text: every backend emits on any machine
    for file, text in files.items():
        path = GOLDEN / file
        if UPDATE:
            path.write_text(text)
            continue
        assert path.exists(), f"no golden file {path}; run with FLOWCORE_UPDATE_GOLDEN=1 after reviewing the source"
        want = path.read_text()
        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), str(path), "generated"))
        assert text == want, f"generated source changed:\n{diff[:4000]}"


def test_generated_torch_source_is_readable():
    (text,) = generated("lsd", "torch").values()
    assert "objective lsd" in text and "digest" in text
    assert text.count("\ndef lsd_t1_loss(") == 1 and "def lsd_t1_loss_backward(" in text
    assert "sqnorm" in text and "tmp" in text
