"""The `flowcore` command: listing, showing, the main job, and errors that say what was wrong."""
import subprocess
import sys

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


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "flowcore.cli", "objectives"], capture_output=True, text=True)
    assert result.returncode == 0 and "meanflow" in result.stdout
