"""The `flowcore` command: listing, showing, the main job, and errors that say what was wrong."""
import subprocess
import sys
from pathlib import Path

import pytest

from flowcore import objectives
from flowcore.cli import main


def test_objectives_lists_every_builtin_with_terms_and_derivatives(capsys):
    assert main(["objectives"]) == 0
    out = capsys.readouterr().out
    for name in objectives.names():
        assert any(line.split()[0] == name for line in out.splitlines()[2:]), name
    lsd_line = next(line for line in out.splitlines() if line.startswith("lsd "))
    assert "fm (0.75), lsd (0.25)" in lsd_line and "∂_t" in lsd_line
    esd_line = next(line for line in out.splitlines() if line.startswith("esd "))
    assert "∂_s" in esd_line and "∇_x·" in esd_line


@pytest.mark.parametrize("name", objectives.names())
def test_show_prints_the_declaration(name, capsys):
    assert main(["show", name]) == 0
    out = capsys.readouterr().out
    assert out.startswith(name) and "|" in out and "share" in out


def test_show_reads_a_user_file(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text(
        "from flowcore import Objective, Term, Uniform, V, I, Dt, sqnorm, t\n"
        "mine = Objective('mine', [Term('fm', 2 * sqnorm(V(t, t, I(t)) - Dt(I(t))), Uniform(t), 1.0)])\n")
    assert main(["show", str(path)]) == 0
    assert "2·|V(t, t, I(t)) - ∂_t[I(t)]|²" in capsys.readouterr().out


def test_unknown_objective_is_a_clear_error(capsys):
    assert main(["show", "lsdd"]) == 2
    err = capsys.readouterr().err
    assert "unknown objective 'lsdd'" in err and "lsd" in err


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["show", str(tmp_path / "absent.py")]) == 2
    assert "no objective file" in capsys.readouterr().err


def test_run_prints_a_row_per_objective(capsys):
    assert main(["run", "--batch", "64", "--width", "16", "--depth", "2", "--objectives", "fm,lsd,esd,lmd"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
    assert set(rows) == {"fm", "lsd", "esd", "lmd"}
    for row in rows.values():
        assert float(row[1]) > 0 and float(row[2]) > 0


def test_module_entry_point(tmp_path):
    # run outside the checkout: `python -m` puts the working directory first on sys.path
    result = subprocess.run([sys.executable, "-m", "flowcore.cli", "objectives"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0 and "meanflow" in result.stdout, result.stderr


def test_module_entry_point_inside_the_checkout():
    """In the repository root `python -m` imports the checkout, whose built-ins live in ../objectives
    (torchrun -m flowcore.cli train configs/... is run from there)."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "flowcore.cli", "show", "esd"], capture_output=True, text=True,
                            cwd=root, timeout=300)
    assert result.returncode == 0 and "Eulerian self-distillation" in result.stdout, result.stderr


def test_compile_reports_build_and_cache_and_emits(tmp_path, capsys):
    assert main(["compile", "lsd", "--backend", "torch", "--emit", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "compiled lsd for torch: 10 kernels" in out and "cache" in out
    (emitted,) = tmp_path.iterdir()
    assert "def lsd_t1_loss(" in emitted.read_text()


def test_compile_a_user_file(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text(
        "from flowcore import Objective, Term, UpperTriangle, V, I, Dt, X, Var, sg, sqnorm, s, t\n"
        "x = Var('x')\n"
        "mine = Objective('mine', [Term('lag', sqnorm(Dt(X(s, t, x)) - sg(V(t, t, X(s, t, x)))).bind(x=I(s)),\n"
        "                               UpperTriangle(s, t), 1.0)])\n")
    assert main(["compile", str(path), "--backend", "torch"]) == 0
    assert "compiled mine for torch" in capsys.readouterr().out


def test_check_passes_on_a_builtin_and_fails_loudly_on_a_bad_name(capsys):
    assert main(["check", "meanflow", "--examples", "3"]) == 0
    assert "PASSED: meanflow on torch: 3 examples" in capsys.readouterr().out
    assert main(["check", "nope"]) == 2


def test_check_reports_a_mismatch(monkeypatch, capsys):
    """A compiled objective that disagrees with the reference makes `check` fail with exit 1."""
    import flowcore.testing.check as check
    from flowcore.testing.compare import Comparison

    monkeypatch.setattr(check, "compare_with_reference", lambda *a, **k: Comparison(3e-6, {"net.out.bias": 0.0}))
    assert main(["check", "fm", "--examples", "2"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: fm on torch") and "3.00e-06 in loss" in out


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="no nvcc on this machine")
def test_compile_only_builds_cuda_without_a_gpu(tmp_path, monkeypatch, capsys):
    import torch

    if torch.version.cuda is None:
        pytest.skip("torch has no CUDA build here")
    monkeypatch.setenv("FLOWCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert main(["compile", "fm", "--backend", "cuda", "--compile-only", "--emit", str(tmp_path / "src")]) == 0
    out = capsys.readouterr().out
    assert "CUDA kernels of fm" in out and "nothing loaded" in out
    assert any(path.suffix == ".cu" for path in (tmp_path / "src").iterdir())
