"""The native toolchain: the C++ compiler and nvcc, CUDA architectures, OpenMP flags, the sources digest.

Standard library only, and no import of flowcore: ``setup.py`` loads this file BY PATH
(``importlib.util.spec_from_file_location``), where torch may not be importable (build isolation)
and flowcore's package ``__init__`` must not run. What only torch knows — its parallel backend, its
version, its guess of CUDA_HOME, the visible GPUs — callers pass in as arguments
(flowcore.native.extension binds them to the running torch). Everything else that compiles native
code (the cpu and cuda backends, the extension's just-in-time build, the CUDA compile check of
``.ci/compile_cuda.py``) finds and runs its compilers here, so there is one answer to "which
compiler, which flags, which architectures" (docs/design.md, the native layer).

Environment: ``FLOWCORE_CXX`` (else ``CXX``, else ``g++``) picks the C++ compiler; ``FLOWCORE_NVCC``
(else ``$CUDA_HOME/bin/nvcc`` or ``$CUDA_PATH/bin/nvcc``, else ``nvcc`` on PATH) picks nvcc;
``TORCH_CUDA_ARCH_LIST`` ("8.0;9.0+PTX", "9.0a", "Hopper", "native") the CUDA architectures.

Every build runs through `run_build`: in a session of its own, under a guard process (this file run
as a script) that ends the whole session — ninja, g++, cc1plus, nvcc — when the caller dies, even by
SIGKILL, so a killed build never leaves compilers running; a build that takes long says so on stderr.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["DEFAULT_ARCH", "SLOW_BUILD_NOTICE", "SOURCE_SUFFIXES", "CompilerError", "announce", "arch_list",
           "cuda_home", "cxx_compiler", "cxx_version", "find_nvcc", "gencode_flags", "nvcc_toolkit", "nvcc_version",
           "openmp_flags", "run_build", "run_compiler", "sources_digest"]

#: the architecture compiled for where TORCH_CUDA_ARCH_LIST is unset and no GPU is visible
DEFAULT_ARCH = "9.0"
#: the extension's source files (csrc/) that its digest covers
SOURCE_SUFFIXES = (".cpp", ".cu", ".h", ".cuh")
_NAMED_ARCHES = {  # as torch.utils.cpp_extension names them
    "Volta": "7.0+PTX", "Turing": "7.5+PTX", "Ampere": "8.0;8.6+PTX", "Ada": "8.9+PTX", "Hopper": "9.0+PTX",
    "Blackwell": "10.0;10.3;12.0;12.1+PTX",
}
_LOG_LIMIT = 8000  # characters of a failed compiler's output kept in the error (head and tail)
#: seconds after which a compiler still running says so on stderr (and, when done, how long it took)
SLOW_BUILD_NOTICE = 5.0
_GUARD_POLL = 0.1  # seconds between the guard's checks that its caller is alive
_GRACE = 5.0  # seconds a stopped build's processes get to exit on SIGTERM (ninja ends its jobs) before SIGKILL
_GUARD_CANNOT_START = 127  # the guard's exit status when the command cannot be started ...
_GUARD_MARK = "flowcore build guard: cannot start: "  # ... and the line it writes to stderr then


class CompilerError(RuntimeError):
    """A C++ compiler or nvcc is missing, cannot be run, or rejected its input (the message has its
    command and diagnostics)."""


# -- the C++ compiler ---------------------------------------------------------------------------------
def cxx_compiler() -> str:
    """The C++ compiler's command: ``FLOWCORE_CXX``, else ``CXX``, else ``g++``."""
    return os.environ.get("FLOWCORE_CXX") or os.environ.get("CXX") or "g++"


@functools.cache
def cxx_version(executable: str) -> str:
    """``"<path>: <first line of --version>"`` (part of every cache key of a C++ build)."""
    path = shutil.which(executable)
    if path is None:
        raise CompilerError(f"flowcore's cpu backend needs a C++ compiler; `{executable}` is not on PATH "
                            "(set FLOWCORE_CXX or CXX, or use the torch backend)")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as e:
        raise CompilerError(f"cannot run the C++ compiler `{path}`: {e}") from e
    first = (out.stdout or out.stderr).strip().splitlines()
    return f"{path}: {first[0] if first else 'unknown version'}"


def run_compiler(command: list[str], what: str, cwd: Path, notice_after: float | None = None) -> None:
    """Run `command` in `cwd` (`run_build`); a failure raises `CompilerError` naming `what` was being
    built. Still running after `notice_after` seconds (default `SLOW_BUILD_NOTICE`), it says so."""
    try:
        out = run_build(command, cwd, what=what, notice_after=SLOW_BUILD_NOTICE if notice_after is None else notice_after)
    except OSError as e:
        raise CompilerError(f"cannot run `{command[0]}` to build {what}: {e}") from e
    if out.returncode != 0:
        log = (out.stderr or out.stdout).strip()
        if len(log) > _LOG_LIMIT:
            log = log[:_LOG_LIMIT // 2] + "\n...\n" + log[-_LOG_LIMIT // 2:]
        raise CompilerError(f"building {what} failed (exit {out.returncode}):\n$ {shlex.join(command)}\n{log}")


# -- running a build: a session of its own, ended with its caller -------------------------------------
def announce(text: str) -> None:
    """One line to stderr: what a build that makes the user wait is doing, or how long it took."""
    print(text, file=sys.stderr, flush=True)


def run_build(command: list[str], cwd: Path | str | None = None, *, env: dict[str, str] | None = None,
              capture: bool = True, what: str = "", notice_after: float | None = None) -> subprocess.CompletedProcess:
    """Run a build `command` to completion and return its exit status and (with `capture`) output.

    It runs under a guard (this file as a script) in a new session: a Ctrl-C of the terminal reaches
    only the caller, which then ends the build before the KeyboardInterrupt goes on, and a caller that
    dies in any other way (SIGTERM, SIGKILL) is noticed by the guard, which ends every process of the
    session (ninja's jobs included) — nothing keeps compiling for a process that is gone. Still
    running after `notice_after` seconds, it announces ``still compiling <what>`` and, when it has
    succeeded, ``built <what> in N s``. A command that cannot be started raises OSError."""
    guarded = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--guard", str(os.getpid()), *command]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True} if capture else {}
    process = subprocess.Popen(guarded, cwd=cwd, env=env, start_new_session=True, **pipes)
    started = time.monotonic()
    try:
        try:
            out, err = process.communicate(timeout=notice_after)
        except subprocess.TimeoutExpired:
            announce(f"flowcore: still compiling {what} ({notice_after:.0f} s so far)…")
            out, err = process.communicate()
            if process.returncode == 0:
                announce(f"flowcore: built {what} in {time.monotonic() - started:.0f} s")
    except BaseException:  # KeyboardInterrupt above all: end the build, then let it go on
        process.terminate()  # the guard ends the session on SIGTERM
        try:
            process.wait(timeout=3 * _GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    if process.returncode == _GUARD_CANNOT_START and err and _GUARD_MARK in err:
        raise OSError(err.split(_GUARD_MARK, 1)[1].strip())
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _guard(parent: int, command: list[str]) -> int:
    """The guard: run `command` and return its exit status, or, once `parent` has exited or a signal
    asks it to stop, end every process of its session (the build, nothing else: the caller started
    the guard in a new one) and return 143."""
    stop: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: stop.append(number))
    try:
        child = subprocess.Popen(command)
    except OSError as e:
        print(f"{_GUARD_MARK}{e}", file=sys.stderr, flush=True)
        return _GUARD_CANNOT_START
    while not stop and os.getppid() == parent:  # the parent's exit reparents the guard
        try:
            code = child.wait(timeout=_GUARD_POLL)
        except subprocess.TimeoutExpired:
            continue
        return code if code >= 0 else 128 - code
    _end_session(child)
    return 128 + signal.SIGTERM


def _session_members() -> list[int] | None:
    """The live processes of the guard's session but the guard (Linux: /proc), None where unknown."""
    if not os.path.isdir("/proc/self"):
        return None
    me, session, members = os.getpid(), os.getsid(0), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == session:
            members.append(int(entry))
    return members


def _end_session(child: subprocess.Popen) -> None:
    """SIGTERM to the session (ninja then ends its jobs, each in a process group of its own), and after
    `_GRACE` seconds SIGKILL to whatever is left. Without /proc: the guard's process group."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        members = _session_members()
        if members is None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.killpg(0, signum)  # SIGKILL ends the guard too
        else:
            for pid in members:
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass
        deadline = time.monotonic() + _GRACE
        while time.monotonic() < deadline:
            child.poll()  # reaps the direct child, which would otherwise linger as a zombie
            if not _session_members():
                return
            time.sleep(0.05)


# -- nvcc and the CUDA toolkit ------------------------------------------------------------------------
def find_nvcc() -> str | None:
    """nvcc's path: ``FLOWCORE_NVCC``, ``$CUDA_HOME/bin/nvcc`` (or CUDA_PATH), or ``nvcc`` on PATH."""
    if os.environ.get("FLOWCORE_NVCC"):
        return shutil.which(os.environ["FLOWCORE_NVCC"])
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


@functools.cache
def nvcc_version(nvcc: str) -> str:
    """``"<path>: <last line of --version>"`` (part of every cache key of a CUDA build)."""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return f"{nvcc}: {lines[-1] if lines else 'unknown version'}"


@functools.cache
def nvcc_toolkit(nvcc: str) -> str | None:
    """The CUDA toolkit root of `nvcc`, as nvcc itself reports it (nvcc may be a wrapper script outside
    the toolkit, e.g. /usr/local/bin/nvcc)."""
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True, check=False)
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, flags=re.MULTILINE)
    return str(Path(match.group(1).strip()).resolve()) if match else None


def _has_cuda_headers(home: str | None) -> bool:
    return bool(home) and (Path(home) / "include" / "cuda_runtime_api.h").is_file()


def cuda_home(torch_guess: str | None) -> str | None:
    """The CUDA toolkit to build the extension against: `torch_guess` (torch.utils.cpp_extension's
    CUDA_HOME, derived from nvcc's directory) if it has the headers, else the toolkit that the found
    nvcc reports, else None."""
    if _has_cuda_headers(torch_guess):
        return torch_guess
    nvcc = find_nvcc()
    toolkit = nvcc_toolkit(nvcc) if nvcc else None
    return toolkit if _has_cuda_headers(toolkit) else None


def arch_list(spec: str | None = None, capabilities: Iterable[tuple[int, int]] = ()) -> list[str]:
    """Architectures as ``["8.0", "9.0+PTX"]``: from `spec`, else ``TORCH_CUDA_ARCH_LIST``, else the
    compute `capabilities` of the visible GPUs (the newest one also as PTX), else `DEFAULT_ARCH`."""
    spec = (spec if spec is not None else os.environ.get("TORCH_CUDA_ARCH_LIST", "")).strip()
    if not spec or spec == "native":
        caps = sorted(set(capabilities))
        if not caps:
            return [DEFAULT_ARCH]
        archs = [f"{major}.{minor}" for major, minor in caps]
        archs[-1] += "+PTX"
        return archs
    for name, value in _NAMED_ARCHES.items():
        spec = spec.replace(name, value)
    archs = [a for a in re.split(r"[;\s,]+", spec) if a]
    for arch in archs:
        if not re.fullmatch(r"\d+\.\d+[af]?(\+PTX)?", arch):
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: cannot read the architecture {arch!r} (in {spec!r}); "
                             "write e.g. '8.0;9.0+PTX' or '9.0a'")
    return archs


def gencode_flags(archs: list[str]) -> list[str]:
    """nvcc -gencode flags: SASS for each arch, plus PTX for those marked +PTX."""
    flags = []
    for arch in archs:
        number = arch.removesuffix("+PTX").replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


# -- the torch extension's build ----------------------------------------------------------------------
def openmp_flags(parallel_info: str, platform: str = sys.platform) -> list[str]:
    """``["-fopenmp"]`` where ATen's thread pool is OpenMP on Linux (`parallel_info` is
    ``torch.__config__.parallel_info()``): ``at::parallel_for`` is a header template whose ``#pragma
    omp parallel`` is compiled into the extension, so without the flag every op of the extension runs
    on one thread. The extension then needs libgomp.so.1, which torch has already loaded: one runtime."""
    return ["-fopenmp"] if platform.startswith("linux") and "parallel backend: OpenMP" in parallel_info else []


def sources_digest(root: Path | str, torch_version: str) -> str:
    """16 hex digits over the extension's sources in `root` (csrc/) and `torch_version`. setup.py
    compiles it into flowcore._C as ``FLOWCORE_SOURCES_HASH=<digest>``; the loader refuses a _C whose
    digest differs, without loading it."""
    h = hashlib.sha256()
    for path in sorted(Path(root).iterdir()):
        if path.is_file() and path.suffix in SOURCE_SUFFIXES:
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(b"torch=" + torch_version.encode())
    return h.hexdigest()[:16]


if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "--guard":  # run_build's guard process
    sys.exit(_guard(int(sys.argv[2]), sys.argv[3:]))
