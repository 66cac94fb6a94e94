"""Builds end with the process that started them, and say what they are doing (issue 15).

A build killed mid-way used to leave its ninja and g++ children compiling on until they finished.
Every compiler flowcore starts (flowcore.native.toolchain.run_build: the cpu and cuda backends'
kernel libraries, the extension's just-in-time build) now runs under a guard in a session of its
own, which ends that session when its caller dies (docs/design.md, the native layer). These tests
start a real build in a child process, kill the child (SIGTERM, SIGKILL) and read /proc: no process
of the build may survive it, and nothing half-built may become a cache entry. Linux only (/proc).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time) of a live process, None if it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def _processes() -> dict[int, tuple[int, int, int]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


def _descendants(root: int) -> dict[int, tuple[int, int, int]]:
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = table[child]
            todo.append(child)
    return out


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _survivors(snapshot: dict[int, tuple[int, int, int]], sessions: set[int]) -> dict[int, str]:
    """Processes of the snapshot still alive (same pid and start time), and any process of its sessions."""
    alive = {}
    for pid, (parent, session, started) in _processes().items():
        if (pid in snapshot and snapshot[pid][2] == started) or session in sessions:
            alive[pid] = _name(pid)
    return alive


def _kill_build_and_check(child: subprocess.Popen, ready, how: signal.Signals, timeout: float = 90.0) -> None:
    """Wait until `ready(descendants)` says the build's compiler is running, send `how` to `child`, and
    assert that every process of the build is gone within 10 s (killing any survivor before failing)."""
    deadline = time.monotonic() + timeout
    snapshot: dict = {}
    while time.monotonic() < deadline:
        snapshot = _descendants(child.pid)
        if ready(snapshot):
            break
        if child.poll() is not None:
            pytest.fail(f"the build process exited ({child.returncode}) before its compiler ran: "
                        f"{child.stderr.read() if child.stderr else ''}")
        time.sleep(0.05)
    else:
        child.kill()
        pytest.fail(f"no compiler among the build's processes after {timeout:.0f} s: "
                    f"{[_name(p) for p in snapshot]}")
    sessions = {session for _, session, _ in snapshot.values()} | {child.pid}
    sessions.discard(os.getsid(0))  # never this test's own session
    child.send_signal(how)
    child.wait(timeout=30)
    deadline = time.monotonic() + 10
    while (left := _survivors(snapshot, sessions)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:  # do not leave them compiling on a shared machine
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"{len(left)} process(es) of the build outlived its {how.name}-ed parent: {left}"


FAKE_COMPILER = """\
#!/bin/sh
# a compiler driver with two long-running children, as g++ has cc1plus and as
sleep 300 &
sleep 300 &
wait
"""

KERNEL_BUILD = """
import sys
from pathlib import Path
from flowcore.codegen.cpu.build import compile_library
compile_library({"k.cpp": "int k;"}, Path(sys.argv[1]), "libk.so", cxx=sys.argv[2], flags=[])
"""


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_kernel_library_build_leaves_no_compiler_running(tmp_path, how):
    compiler = tmp_path / "fake-g++"
    compiler.write_text(FAKE_COMPILER)
    compiler.chmod(0o755)
    (tmp_path / "build").mkdir()
    child = subprocess.Popen([sys.executable, "-c", KERNEL_BUILD, str(tmp_path / "build"), str(compiler)],
                             cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True)

    def ready(processes):
        return sum(_name(pid).startswith("sleep 300") for pid in processes) == 2

    _kill_build_and_check(child, ready, how)


EXTENSION_BUILD = """
from flowcore.native import extension
extension._load_jit(with_cuda=False)
"""


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_extension_build_leaves_no_ninja_or_gxx_running_and_no_entry(tmp_path, how):
    """The real just-in-time build of the extension (torch.utils.cpp_extension: ninja, g++), killed
    once g++ compiles: it announces itself first, nothing of it survives, and the half-built
    directory never becomes a cache entry (the next build starts over)."""
    env = dict(os.environ, FLOWCORE_CACHE_DIR=str(tmp_path / "cache"), FLOWCORE_EXTENSION_CUDA="0", MAX_JOBS="1",
               OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", EXTENSION_BUILD], cwd=ROOT, env=env, start_new_session=True,
                             stderr=subprocess.PIPE, text=True)

    def ready(processes):
        return any(Path(_name(pid).split(" ")[0]).name in ("cc1plus", "g++", "c++") for pid in processes)

    _kill_build_and_check(child, ready, how)
    announced = child.stderr.read()
    assert "building flowcore's C++ extension once for this torch/Python" in announced, announced
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and "." not in p.name]
    assert not entries, f"a killed build left a cache entry: {entries}"


def test_a_slow_kernel_build_says_so_and_how_long_it_took(tmp_path, monkeypatch, capsys):
    from flowcore.native import toolchain

    compiler = tmp_path / "slow-g++"
    compiler.write_text("#!/bin/sh\nsleep 1.5\n")
    compiler.chmod(0o755)
    monkeypatch.setattr(toolchain, "SLOW_BUILD_NOTICE", 0.5)
    toolchain.run_compiler([str(compiler)], "libk.so from k.cpp", tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("flowcore: still compiling libk.so from k.cpp"), err
    assert err[1].startswith("flowcore: built libk.so from k.cpp in "), err


def test_a_quick_kernel_build_is_silent(tmp_path, capsys):
    from flowcore.native import toolchain

    toolchain.run_compiler(["true"], "libk.so from k.cpp", tmp_path)
    assert capsys.readouterr().err == ""


def test_an_interrupted_build_ends_its_compiler(tmp_path):
    """Ctrl-C, sent as a terminal sends it (SIGINT to the foreground process group), no longer reaches
    the build, which has a session of its own: run_build's caller ends it before the KeyboardInterrupt
    goes on."""
    code = textwrap.dedent("""
        import importlib.util, signal, sys, time
        # Python's Ctrl-C, even where this test runs with SIGINT ignored (a background job inherits that)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        spec = importlib.util.spec_from_file_location("toolchain", sys.argv[1])
        toolchain = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(toolchain)
        try:
            toolchain.run_compiler([sys.argv[2]], "a long thing", ".")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            time.sleep(30)
    """)
    compiler = tmp_path / "fake-g++"
    compiler.write_text(FAKE_COMPILER)
    compiler.chmod(0o755)
    child = subprocess.Popen([sys.executable, "-c", code, str(ROOT / "flowcore" / "native" / "toolchain.py"),
                              str(compiler)], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            snapshot = _descendants(child.pid)
            if sum(_name(pid).startswith("sleep 300") for pid in snapshot) == 2:
                break
            assert time.monotonic() < deadline, "the fake compiler never started"
            time.sleep(0.05)
        sessions = {session for _, session, _ in snapshot.values()} - {os.getsid(0)}
        os.killpg(child.pid, signal.SIGINT)  # the child leads its process group, as a shell's job does
        assert child.stdout.readline().strip() == "interrupted"
        deadline = time.monotonic() + 10
        while True:
            left = {pid: name for pid, name in _survivors(snapshot, sessions).items() if pid != child.pid}
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"the interrupted build's processes are still running: {left}"
    finally:
        child.kill()
        child.wait()


def test_the_extension_build_says_when_it_starts_and_how_long_it_took(tmp_path, monkeypatch, capsys):
    """The first compiled call builds the extension for about a minute: one line before, one after;
    a cached build says nothing."""
    import torch

    from flowcore.native import extension

    def fake_build(cpp_extension, name, paths, src_dir, directory, with_cuda, arch, verbose):
        (directory / f"{name}.so").write_bytes(b"not really a library")

    monkeypatch.setenv("FLOWCORE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(extension, "_build_with_torch", fake_build)
    monkeypatch.setattr(extension, "_build_cpu_without_ninja",
                        lambda cpp_extension, paths, src_dir, output, verbose: output.write_bytes(b"not really"))
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    monkeypatch.setattr(extension, "_state", {})
    extension._load_jit(with_cuda=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert err[0] == "flowcore: building flowcore's C++ extension once for this torch/Python (about a minute)…"
    assert err[1].startswith("flowcore: built flowcore's C++ extension in ") and " s (cached in " in err[1], err
    extension._load_jit(with_cuda=False)
    assert capsys.readouterr().err == ""  # a cache hit builds nothing and says nothing
