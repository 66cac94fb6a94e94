"""The `flowcore` command on bad input and at its edges: every mistake is one named line on stderr
(no traceback), an interrupted start-up and a closed pipe end quietly, and what it prints reads right
(`sample --grid` names its pictures by the grid, `check --help` says its defaults, long evaluations
say what they compute, counts are singular when they are 1)."""
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flowcore.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["steps=2", "network.width=16", "network.depth=2", "data.batch=64", "eval.samples=256", "eval.steps=1",
        "eval.ema=0.999", "log.tensorboard=false", "log.figures=false", "log.progress=off", "checkpoint.every=0",
        "backend=torch"]


def _one_line_error(capsys, command: list[str]) -> str:
    """Run `command`, which must fail as a usage or input error (exit 2), and return its one stderr line."""
    try:
        code = main(command)
    except SystemExit as exit_info:  # argparse's errors leave through SystemExit
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "usage:" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A two-step checkerboard run to sample and evaluate."""
    from flowcore.train import Trainer, load_config

    out = tmp_path_factory.mktemp("run")
    Trainer(load_config(None, TINY + [f"out={out}"])).train()
    return out


# ----------------------------------------------------------------------------------- item 1: --n, --steps


@pytest.mark.parametrize("command", ["sample", "eval"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_n_must_be_a_positive_integer(command, value, tmp_path, capsys):
    extra = ["--out", str(tmp_path)] if command == "sample" else []
    err = _one_line_error(capsys, [command, str(tmp_path), "--n", value, *extra])
    assert f"--n must be a positive integer, got {value}" in err and err.startswith(f"flowcore {command}:")


def test_steps_must_be_positive_integers(tmp_path, capsys):
    err = _one_line_error(capsys, ["eval", str(tmp_path), "--steps", "1", "0"])
    assert "--steps must be a positive integer, got 0" in err


@pytest.mark.parametrize("option", ["--batch", "--width", "--depth"])
def test_run_sizes_must_be_positive_integers(option, capsys):
    """`flowcore run --batch 0` printed a loss of nan and exited 0."""
    err = _one_line_error(capsys, ["run", option, "0", "--objectives", "fm"])
    assert f"{option} must be a positive integer, got 0" in err


def test_check_examples_must_be_a_positive_integer(capsys):
    assert "--examples must be a positive integer, got 0" in _one_line_error(capsys, ["check", "fm", "--examples", "0"])


# ----------------------------------------------------------------------------------- item 2: negative numbers


def test_a_grid_with_a_negative_time_gets_the_grid_error_not_expected_one_argument(tmp_path, capsys):
    err = _one_line_error(capsys, ["sample", str(tmp_path), "--grid", "-0.5,0.5,1", "--out", str(tmp_path)])
    assert "expected one argument" not in err
    assert "--grid" in err and "'-0.5,0.5,1'" in err and "must start at 0" in err


def test_a_negative_seed_is_a_number_too(tmp_path, capsys):
    """A lone negative number was always accepted; the comma-list rule must not break it."""
    err = _one_line_error(capsys, ["eval", str(tmp_path / "absent"), "--seed", "-3"])
    assert "no such checkpoint" in err


# ----------------------------------------------------------------------------------- item 3: SIGINT at start-up


def _interrupt(process: subprocess.Popen, when_ready) -> str:
    """Send SIGINT to `process` once `when_ready(process)` returns; its stderr (killed if it hangs)."""
    try:
        when_ready(process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return stderr


def test_sigint_during_start_up_is_one_line_and_exit_130(tmp_path):
    """Ctrl-C before training starts (imports, building, data): "interrupted", no traceback, 130.
    The command is held in its start-up by a stand-in that sleeps, so the signal lands there."""
    script = ("import sys, time\n"
              "import flowcore.cli.train as train\n"
              "def starting(args):\n"
              "    print('starting', flush=True)\n"
              "    time.sleep(120)\n"
              "train.cmd_train = starting\n"
              "from flowcore.cli import main\n"
              "sys.exit(main(['train']))\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    def started(process):
        assert process.stdout.readline().strip() == "starting"
        time.sleep(0.2)

    stderr = _interrupt(process, started)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip() == "flowcore train: interrupted"


def _console_script() -> tuple[str, str]:
    """pyproject's `flowcore` entry point, ``module:function``: what pip's `flowcore` script imports and calls."""
    text = (ROOT / "pyproject.toml").read_text()
    entry = re.search(r'^flowcore\s*=\s*"([\w.]+):(\w+)"', text, re.MULTILINE)
    assert entry, "pyproject.toml has no flowcore console script"
    return entry.group(1), entry.group(2)


def _wait_until_torch_loads(process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until torch's libraries are mapped into `process`: it is importing torch, the slow part (1.8-5 s)
    of every command's start-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):
            if "libtorch" in Path(f"/proc/{process.pid}/maps").read_text():
                return
        time.sleep(0.005)
    raise AssertionError(f"the command never loaded torch (exit {process.poll()})")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
@pytest.mark.parametrize("how", ["console script", "python -m flowcore.cli"])
def test_sigint_while_flowcore_imports_torch_is_one_line_and_exit_130(how, tmp_path):
    """Ctrl-C while `flowcore ...` imports the package (torch: seconds). The console script imported
    flowcore's package, and torch with it, before `main` installed its handler: a KeyboardInterrupt
    traceback. Now the package's names load on first use, so the handler is in place first."""
    module, function = _console_script()
    launch = ["-c", f"import sys\nfrom {module} import {function}\nsys.exit({function}())"] \
        if how == "console script" else ["-m", "flowcore.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, *launch, "objectives"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    stderr = _interrupt(process, _wait_until_torch_loads)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert process.returncode == 130, stderr
    assert stderr.strip() == "flowcore: interrupted"


def test_sigint_during_a_real_evaluation_is_one_line_and_exit_130(run, tmp_path):
    """The real command, interrupted once it has said what it computes (a Heun evaluation of 65,536
    samples at k up to 64 runs for many seconds)."""
    process = subprocess.Popen([sys.executable, "-m", "flowcore.cli", "eval", str(run), "--method", "heun",
                                "--steps", "64", "64", "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    def evaluating(process):
        line = process.stderr.readline()
        while line and not line.startswith("evaluating"):  # past warnings of the environment, if any
            line = process.stderr.readline()
        assert line.startswith("evaluating"), line

    stderr = _interrupt(process, evaluating)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "flowcore eval: interrupted", stderr


def test_an_interrupt_raised_by_a_command_is_one_line_and_the_handler_is_given_back(monkeypatch, capsys):
    """In-process: a KeyboardInterrupt a command raises is "interrupted" and 130, and main leaves
    SIGINT's handler as it found it (the caller's, pytest's here)."""
    import flowcore.cli.objectives as commands

    def stopped(args):
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(commands, "cmd_objectives", stopped)
    assert main(["objectives"]) == 130
    assert capsys.readouterr().err == "flowcore objectives: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is before


# ----------------------------------------------------------------------------------- item 4: the cache directory


def test_a_cache_directory_that_is_a_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("FLOWCORE_CACHE_DIR", str(not_a_folder))
    err = _one_line_error(capsys, ["compile", "fm", "--backend", "cpu"])
    assert str(not_a_folder) in err and "FLOWCORE_CACHE_DIR" in err and "not a directory" in err


@pytest.mark.parametrize("below_a_file", [False, True])
def test_the_build_cache_names_a_root_that_cannot_be_a_directory(below_a_file, tmp_path, monkeypatch):
    from flowcore.native.cache import BuildCache, CacheDirectoryError, cache_root

    file = tmp_path / "file"
    file.write_text("")
    root = file / "cache" if below_a_file else file
    with pytest.raises(CacheDirectoryError, match="not a directory") as error:
        BuildCache(root).get_or_build("k1", lambda tmp: None)
    assert str(root) in str(error.value) and isinstance(error.value, ValueError)
    monkeypatch.setenv("FLOWCORE_CACHE_DIR", str(root))
    with pytest.raises(CacheDirectoryError, match="FLOWCORE_CACHE_DIR"):
        cache_root()


# ----------------------------------------------------------------------------------- item 5: a closed pipe


@pytest.mark.parametrize("command", [["objectives"], ["show", "lsd"]])
def test_a_closed_stdout_pipe_ends_quietly(command, tmp_path):
    """`flowcore objectives | head -1`: the reader is gone before the table is written."""
    process = subprocess.Popen([sys.executable, "-m", "flowcore.cli", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    process.stdout.close()  # the reader exits before the child has written anything
    try:
        stderr = process.stderr.read().decode()
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert stderr == "", stderr
    assert process.returncode == 141  # 128 + SIGPIPE, as a tool the signal ended


# ----------------------------------------------------------------------------------- item 6: sample --grid


def test_sample_grid_draws_only_the_grid_named_by_its_times(run, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["sample", str(run), "--grid", "0,0.5,1", "--n", "40", "--out", str(out)]) == 0
    with np.load(out / "samples.npz") as arrays:
        assert arrays.files == ["grid-0-0.5-1"] and arrays["grid-0-0.5-1"].shape == (40, 2)
    assert sorted(p.name for p in out.glob("*.png")) == ["samples_grid-0-0.5-1.png"]
    assert "grid0" not in capsys.readouterr().out


def test_sample_grid_with_explicit_steps_draws_both(run, tmp_path):
    out = tmp_path / "both"
    assert main(["sample", str(run), "--steps", "2", "--grid", "0,0.5,1", "--n", "40", "--method", "heun",
                 "--out", str(out)]) == 0
    with np.load(out / "samples.npz") as arrays:
        assert sorted(arrays.files) == ["heun_grid-0-0.5-1", "heun_k2"]
        assert np.array_equal(arrays["heun_grid-0-0.5-1"], arrays["heun_k2"])  # the same grid, the same samples


def test_an_output_path_below_a_file_is_named(run, tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("")
    err = _one_line_error(capsys, ["sample", str(run), "--n", "5", "--out", str(file)])
    assert f"--out {file}" in err and "not a directory" in err and "Errno" not in err
    err = _one_line_error(capsys, ["eval", str(run), "--steps", "1", "--n", "8", "--json", str(file / "x.json")])
    assert f"--json {file / 'x.json'}" in err and "not a directory" in err and "Errno" not in err


# ----------------------------------------------------------------------------------- item 7: check --help


def test_check_help_says_every_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "default: torch" in help_text and "default: 20" in help_text and "default: 0" in help_text


def test_compile_help_says_its_default_backend(capsys):
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    assert "default: cpu" in " ".join(capsys.readouterr().out.split())


# ----------------------------------------------------------------------------------- item 8: eval progress


def test_eval_says_what_it_computes_per_k(run, capsys):
    assert main(["eval", str(run), "--steps", "1", "2", "--n", "256", "--method", "heun"]) == 0
    err = capsys.readouterr().err
    assert "heun" in err and "256 samples" in err
    for k in (1, 2):
        assert f"k={k}" in err
    assert "Traceback" not in err


def test_sample_says_what_it_draws_per_k_and_grid(run, tmp_path, capsys):
    assert main(["sample", str(run), "--steps", "2", "--grid", "0,0.5,1", "--n", "30", "--method", "heun",
                 "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "heun" in err and "30 samples" in err and "k=2:" in err and "grid 0, 0.5, 1:" in err


def test_evaluate_sampler_reports_progress_per_k():
    import torch

    from flowcore.eval import evaluate_sampler

    lines = []
    net = lambda s, t, x: -x
    evaluate_sampler(net, [1, 3], n=64, metrics=["energy"], progress=lines.append,
                     generator=torch.Generator().manual_seed(0))
    assert len(lines) == 2 and lines[0].startswith("k=1") and lines[1].startswith("k=3") and " s" in lines[1]


# ----------------------------------------------------------------------------------- item 9: "1 step"


def test_counted_is_singular_for_one():
    from flowcore.cli import counted

    assert counted(1, "step") == "1 step" and counted(2, "step") == "2 steps" and counted(0, "sample") == "0 samples"


def test_sample_titles_and_lines_say_one_step_and_one_sample(run, tmp_path, monkeypatch, capsys):
    from flowcore.eval import plots

    titles = []

    class Recording:
        samples = 10

        def plot(self, samples_by_k, data, path, title):
            titles.append(title)
            return path

    monkeypatch.setattr(plots, "sample_figure", lambda kind, dims: Recording())
    assert main(["sample", str(run), "--steps", "1", "2", "--n", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 sample each" in out and "1 samples" not in out
    assert any(title.endswith(", 1 step") for title in titles), titles
    assert any(title.endswith(", 2 steps") for title in titles), titles
    assert not any("uniform steps" in title or "1 steps" in title for title in titles)


def test_a_one_step_run_says_one_process_one_thread_one_step(tmp_path, capsys):
    """The trainer's header read "1 process(es), cpu, 1 threads, …: 1 steps of batch 64", the KL table "1 steps"."""
    overrides = [*TINY, "steps=1", "threads=1", f"out={tmp_path / 'run'}"]
    assert main(["train", *(f"--set={o}" for o in overrides)]) == 0
    out = capsys.readouterr().out
    assert "(1 process, cpu, 1 thread, backend torch): 1 step of batch 64" in out, out
    assert "this run, 1 step of batch 64" in out, out
    assert not any(word in out for word in ("process(es)", "1 threads", "1 steps")), out


def test_check_and_compile_count_one_example_and_one_kernel(capsys, monkeypatch):
    from flowcore.compiler import segments

    assert main(["check", "fm", "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "fm on torch: 1 example, worst" in out, out
    every = segments.program_kernels
    monkeypatch.setattr(segments, "program_kernels", lambda program: every(program)[:1])
    assert main(["compile", "fm", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "compiled fm for torch: 1 kernel;" in out, out
