"""flowcore.native.cache: keys, hits, corruption recovery, and locking across (killed) processes.

Helper processes load cache.py by file path (it imports only the standard library at import time),
so they start in milliseconds instead of paying for ``import torch``.
"""
import fcntl
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowcore.native import cache as cache_mod
from flowcore.native.cache import (BuildCache, CacheBuildError, CacheLockTimeout, CacheWarning, cache_key,
                                   cache_root, clear)

SOURCES = {"kernel.cu": "__global__ void k(float* x) { x[0] = 1; }\n", "bind.cpp": "#include <torch/extension.h>\n"}
FLAGS = ["-O3", "--use_fast_math"]


@pytest.fixture
def root(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FLOWCORE_CACHE_DIR", str(d))
    return d


class Builder:
    """Writes `payload` as lib.so (and a sidecar) and counts its calls."""

    def __init__(self, payload=b"\x7fELF-fake-shared-object" * 64, names=("lib.so", "lib.json")):
        self.payload, self.names, self.calls = payload, names, 0

    def __call__(self, tmp: Path):
        self.calls += 1
        (tmp / "lib.so").write_bytes(self.payload)
        (tmp / "lib.json").write_text('{"symbols": ["k"]}')
        (tmp / "build.log").write_text("not an artifact unless listed\n")
        return list(self.names) if self.names is not None else None


def lock_is_free(root: Path, key: str) -> bool:
    fd = os.open(root / f"{key}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def leftovers(root: Path):
    return sorted(p.name for p in root.iterdir() if ".tmp-" in p.name or ".stale-" in p.name)


# -- keys -------------------------------------------------------------------------------------------

def test_key_shape_and_dict_order_independence():
    k = cache_key(SOURCES, FLAGS, {"cxx": "g++ 12", "backend": "cuda"})
    assert len(k) == 24 and int(k, 16) >= 0
    assert cache_key(dict(reversed(SOURCES.items())), FLAGS, {"backend": "cuda", "cxx": "g++ 12"}) == k
    assert cache_key(SOURCES, FLAGS) != k


@pytest.mark.parametrize("change", [
    lambda s, f, e: ({**s, "kernel.cu": s["kernel.cu"].replace("1", "2")}, f, e),
    lambda s, f, e: ({("kern.cu" if n == "kernel.cu" else n): t for n, t in s.items()}, f, e),
    lambda s, f, e: ({**s, "extra.h": ""}, f, e),
    lambda s, f, e: (s, ["-O2", *f[1:]], e),
    lambda s, f, e: (s, [*f, "-g"], e),
    lambda s, f, e: (s, list(reversed(f)), e),
    lambda s, f, e: (s, f, {"cxx": "g++ 13"}),
], ids=["source-byte", "source-name", "source-added", "flag-changed", "flag-added", "flag-order", "extra"])
def test_key_changes_with_inputs(change):
    base = cache_key(SOURCES, FLAGS, {"cxx": "g++ 12"})
    assert cache_key(*change(dict(SOURCES), list(FLAGS), {"cxx": "g++ 12"})) != base


@pytest.mark.parametrize("field", ["torch", "cuda", "python-version", "python-impl", "machine"])
def test_key_changes_with_environment(field, monkeypatch):
    base = cache_key(SOURCES, FLAGS)
    if field == "torch":
        monkeypatch.setattr(torch, "__version__", "99.0.0+fake")
    elif field == "cuda":
        monkeypatch.setattr(torch.version, "cuda", "99.9" if torch.version.cuda != "99.9" else "98.0")
    elif field == "python-version":
        monkeypatch.setattr(sys, "version_info", (3, 99, 0, "final", 0))
    elif field == "python-impl":
        monkeypatch.setattr(platform, "python_implementation", lambda: "FakePython")
    else:
        monkeypatch.setattr(platform, "machine", lambda: "riscv128")
    assert cache_key(SOURCES, FLAGS) != base


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=40), min_size=1, max_size=4),
       st.data())
def test_key_property_any_byte_matters_order_does_not(sources, data):
    k = cache_key(sources, FLAGS)
    assert cache_key(dict(reversed(list(sources.items()))), FLAGS) == k
    name = data.draw(st.sampled_from(sorted(sources)))
    text = sources[name]
    i = data.draw(st.integers(0, len(text) - 1))
    c = data.draw(st.characters(codec="utf-8").filter(lambda c: c != text[i]))
    assert cache_key({**sources, name: text[:i] + c + text[i + 1:]}, FLAGS) != k


# -- hits and misses --------------------------------------------------------------------------------

def test_build_then_hit(root):
    build, key = Builder(), cache_key(SOURCES, FLAGS)
    first = BuildCache().get_or_build(key, build, describe={"objective": "fm", "backend": "cpu"})
    assert first.hit is False and build.calls == 1 and first.path == root / key
    assert set(first.files) == {"lib.so", "lib.json"} and first.files["lib.so"].read_bytes() == build.payload
    assert first.metadata["describe"] == {"objective": "fm", "backend": "cpu"} and first.metadata["key"] == key
    assert 0 <= first.build_seconds < 60
    second = BuildCache().get_or_build(key, build)
    assert second.hit is True and build.calls == 1 and second.build_seconds == 0.0
    assert second.files == first.files and second.metadata == first.metadata
    assert leftovers(root) == []


def test_none_records_every_regular_file_and_bad_names_fail(root):
    entry = BuildCache().get_or_build("k1", Builder(names=None))
    assert set(entry.files) == {"lib.so", "lib.json", "build.log"}
    with pytest.raises(CacheBuildError, match="k2"):
        BuildCache().get_or_build("k2", Builder(names=["lib.so", "missing.so"]))
    with pytest.raises(CacheBuildError):
        BuildCache().get_or_build("k3", Builder(names=["../escape"]))
    with pytest.raises(ValueError):
        BuildCache().get_or_build("../evil", Builder())
    assert not (root / "k2").exists() and not (root / "k3").exists() and leftovers(root) == []


def test_threads_build_once(root):
    calls, results = [], []

    def slow(tmp):
        calls.append(1)
        time.sleep(0.3)
        (tmp / "lib.so").write_bytes(b"x" * 100)
        return None

    threads = [threading.Thread(target=lambda: results.append(BuildCache().get_or_build("tk", slow)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 1 and sorted(r.hit for r in results) == [False, True, True, True]


# -- corruption ------------------------------------------------------------------------------------

CORRUPTIONS = {
    "truncated-artifact": lambda e: e.files["lib.so"].write_bytes(e.files["lib.so"].read_bytes()[:10]),
    "same-size-other-bytes": lambda e: e.files["lib.so"].write_bytes(b"\0" * e.files["lib.so"].stat().st_size),
    "artifact-missing": lambda e: e.files["lib.json"].unlink(),
    "metadata-missing": lambda e: (e.path / "metadata.json").unlink(),
    "metadata-garbled": lambda e: (e.path / "metadata.json").write_text('{"key": "trunc'),
    "metadata-wrong-shape": lambda e: (e.path / "metadata.json").write_text("[1, 2]"),
    "entry-is-a-file": lambda e: (__import__("shutil").rmtree(e.path), e.path.write_text("junk")),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_entry_is_rebuilt(root, corrupt):
    build = Builder()
    entry = BuildCache().get_or_build("ck", build)
    corrupt(entry)
    with pytest.warns(CacheWarning, match="ck.*rebuilding"):
        again = BuildCache().get_or_build("ck", build)
    assert again.hit is False and build.calls == 2
    assert again.files["lib.so"].read_bytes() == build.payload and again.files["lib.json"].is_file()
    assert BuildCache().get_or_build("ck", build).hit is True and build.calls == 2
    assert leftovers(root) == []


# -- failures, leftovers, locks ----------------------------------------------------------------------

def test_failing_builder_raises_and_leaves_nothing(root):
    def boom(tmp):
        (tmp / "half.so").write_bytes(b"half")
        raise ValueError("nvcc exploded")

    with pytest.raises(CacheBuildError) as info:
        BuildCache().get_or_build("fk", boom, describe={"objective": "lagrangian-distill"})
    msg = str(info.value)
    assert "fk" in msg and "lagrangian-distill" in msg and "nvcc exploded" in msg
    assert isinstance(info.value.__cause__, ValueError)
    assert not (root / "fk").exists() and leftovers(root) == [] and lock_is_free(root, "fk")
    assert BuildCache().get_or_build("fk", Builder()).hit is False


def test_lock_timeout_and_lock_free_hits(root):
    BuildCache().get_or_build("valid", Builder())
    fd = os.open(root / "lk.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fd2 = os.open(root / "valid.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd2, fcntl.LOCK_EX)
    try:
        with pytest.raises(CacheLockTimeout):
            BuildCache(lock_timeout=0.2).get_or_build("lk", Builder())
        assert BuildCache(lock_timeout=0.2).get_or_build("valid", Builder()).hit is True  # hits never lock
    finally:
        os.close(fd)
        os.close(fd2)
    assert BuildCache(lock_timeout=5).get_or_build("lk", Builder()).hit is False


def _held_lock(root: Path, key: str, seconds: float) -> threading.Thread:
    """Another builder of `key`: its lock taken now, released after `seconds` (a thread of its own)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / f"{key}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # an open file description of its own: conflicts as another process's would
    release = threading.Timer(seconds, os.close, (fd,))
    release.start()
    return release


@pytest.mark.parametrize("describe, what", [({"what": "flowcore torch extension", "cuda": False},
                                             "flowcore torch extension"),
                                            ({"backend": "cpu", "objective": "fm"}, "the cpu kernels of fm"),
                                            (None, "cache entry wk")])
def test_a_long_wait_for_another_build_says_so_once(root, capsys, monkeypatch, describe, what):
    """Waiting for another process's build was silent (a minute, for the extension): after
    WAIT_NOTICE_SECONDS one line says what is awaited and which lock; its end adds nothing."""
    monkeypatch.setattr(cache_mod, "WAIT_NOTICE_SECONDS", 0.3)
    release = _held_lock(root, "wk", 1.0)
    entry = BuildCache().get_or_build("wk", Builder(), describe=describe)
    release.join()
    assert entry.hit is False
    err = capsys.readouterr().err
    assert err == f"flowcore: waiting for another process's build of {what} (lock {root / 'wk.lock'})…\n"


def test_a_short_wait_for_another_build_says_nothing(root, capsys, monkeypatch):
    monkeypatch.setattr(cache_mod, "WAIT_NOTICE_SECONDS", 5.0)
    release = _held_lock(root, "sk", 0.3)
    assert BuildCache().get_or_build("sk", Builder()).hit is False
    release.join()
    assert capsys.readouterr().err == ""


def test_sweep_removes_dead_leftovers_but_not_live_builders(root):
    root.mkdir(parents=True)
    dead, live, stale = root / "deadkey.tmp-999999-aa", root / "livekey.tmp-1-bb", root / "oldkey.stale-cc"
    for d in (dead, live, stale):
        d.mkdir()
        (d / "lib.so").write_bytes(b"partial")
    fd = os.open(root / "livekey.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live builder of "livekey" holds its lock
    try:
        BuildCache().get_or_build("mykey", Builder())
        assert not dead.exists() and not stale.exists() and live.is_dir()
    finally:
        os.close(fd)


def test_clear(root):
    build = Builder()
    BuildCache().get_or_build("a1", build)
    BuildCache().get_or_build("b2", build)
    clear("a1")
    assert not (root / "a1").exists() and (root / "b2").is_dir()
    assert BuildCache().get_or_build("a1", build).hit is False
    clear()
    assert list(root.iterdir()) == []
    assert BuildCache().get_or_build("b2", build).hit is False and build.calls == 4


def test_cache_dir_override_and_fallbacks(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCORE_CACHE_DIR", str(tmp_path / "override"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "override"
    entry = BuildCache().get_or_build("ok", Builder())
    assert entry.path == tmp_path / "override" / "ok" and entry.files["lib.so"].is_file()
    monkeypatch.delenv("FLOWCORE_CACHE_DIR")
    assert cache_root() == tmp_path / "xdg" / "flowcore"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "flowcore"


# -- across processes ------------------------------------------------------------------------------

CHILD = r"""
import hashlib, importlib.util, json, os, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("_flowcore_cache_child", sys.argv[1])
cache = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = cache
spec.loader.exec_module(cache)
root, key, mode, work = sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5])

def build(tmp):
    if mode == "count":
        time.sleep(1.0)
        with open(work / "counter", "a") as f:
            f.write(f"{os.getpid()}\n")
        (tmp / "lib.so").write_bytes(b"built-once" * 1000)
    elif mode == "hang":
        (tmp / "lib.so").write_bytes(b"partial")
        (work / "ready").write_text(str(os.getpid()))
        time.sleep(120)
    else:
        (tmp / "lib.so").write_bytes(b"good" * 100)
    return ["lib.so"]

if mode == "count":  # barrier, so that both processes ask for the key at the same moment
    (work / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 30
    while len(list(work.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
e = cache.BuildCache(root).get_or_build(key, build)
data = e.files["lib.so"].read_bytes()
print(json.dumps({"hit": e.hit, "path": str(e.path), "sha": hashlib.sha256(data).hexdigest(), "data": data[:16].decode()}))
"""


def child(root, key, mode, work):
    return [sys.executable, "-c", CHILD, cache_mod.__file__, str(root), key, mode, str(work)]


def test_two_processes_build_once(root, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    procs = [subprocess.Popen(child(root, "pk", "count", work), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    assert len((work / "counter").read_text().splitlines()) == 1
    assert sorted(o["hit"] for o in outs) == [False, True]
    assert outs[0]["path"] == outs[1]["path"] == str(root / "pk") and outs[0]["sha"] == outs[1]["sha"]
    assert BuildCache().get_or_build("pk", Builder()).hit is True


def test_killed_builder_does_not_deadlock(root, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    hang = subprocess.Popen(child(root, "kk", "hang", work), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (work / "ready").exists():
            assert hang.poll() is None, hang.stderr.read()
            assert time.monotonic() < deadline, "the hanging builder never started building"
            time.sleep(0.01)
        assert not lock_is_free(root, "kk"), "the builder should hold the lock mid-build"
        assert leftovers(root) and not (root / "kk").exists()
    finally:
        os.kill(hang.pid, signal.SIGKILL)
        hang.wait(10)
    assert [n for n in leftovers(root) if n.startswith("kk.tmp-")]  # the killed build's directory is left
    done = subprocess.run(child(root, "kk", "fast", work), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["hit"] is False and out["data"] == "goodgoodgoodgood"
    assert (root / "kk" / "lib.so").read_bytes() == b"good" * 100 and leftovers(root) == []
