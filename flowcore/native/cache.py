"""On-disk cache for built kernels (shared libraries and their companions).

Builds with g++/nvcc take seconds, so every artifact set is cached under a key that covers
everything that shapes the binary.  flowcore keys and locks this cache itself rather than relying
on ``torch.utils.cpp_extension``'s cache, because that one (a) keys on the extension name and
sources but not on the torch version, so a stale ``.so`` survives a torch upgrade, and (b) uses a
lock *file* whose existence means "locked", so a build killed mid-way leaves the next one waiting
forever.

Layout under :func:`cache_root`::

    <key>/                      one finished entry: artifacts + metadata.json (written last)
    <key>.lock                  flock(2) target; the lock is the kernel's, not the file's existence
    <key>.tmp-<pid>-<rand>/     a build in progress (or the leftover of a killed one)
    <key>.stale-<rand>/         a corrupt entry moved aside before it is deleted

An entry counts only if ``metadata.json`` parses and every artifact it lists exists with the
recorded size and sha256; anything else is rebuilt.  Only the standard library is imported at
module import time (torch is imported lazily by :func:`build_environment`), so helper processes
that only touch the cache start fast. It belongs to the native layer (flowcore.native): the
backends of flowcore.codegen build into it, and so does the extension loader.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["BuildCache", "CacheBuildError", "CacheDirectoryError", "CacheEntry", "CacheLockTimeout", "CacheWarning",
           "build_environment", "cache_key", "cache_root", "clear"]

log = logging.getLogger(__name__)

#: Bumped when the key recipe or the entry layout changes, so old entries are simply never found.
FORMAT = 1
METADATA = "metadata.json"
WAIT_NOTICE_SECONDS = 2.0  # a wait for another process's build longer than this says so
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # no dots: '.' separates key from .lock/.tmp-/.stale-


class CacheBuildError(RuntimeError):
    """A build for a cache entry failed; ``__cause__`` holds the builder's own exception."""


class CacheLockTimeout(TimeoutError):
    """Another process held an entry's build lock for longer than ``lock_timeout``."""


class CacheWarning(UserWarning):
    """An existing entry was found corrupt or incomplete and was rebuilt."""


class CacheDirectoryError(ValueError):
    """The cache directory cannot be one: it is a file, lies below a file, or cannot be created.
    A ValueError, so that the command line prints it as one line naming the path."""


def cache_root() -> Path:
    """``$FLOWCORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/flowcore``, else ``~/.cache/flowcore``;
    a :class:`CacheDirectoryError` naming the path and its variable when that is a file or below one."""
    if os.environ.get("FLOWCORE_CACHE_DIR"):
        root, origin = Path(os.environ["FLOWCORE_CACHE_DIR"]).expanduser(), "FLOWCORE_CACHE_DIR"
    elif (xdg := os.environ.get("XDG_CACHE_HOME")) and os.path.isabs(xdg):  # relative values are to be ignored
        root, origin = Path(xdg) / "flowcore", "XDG_CACHE_HOME"
    else:
        root, origin = Path.home() / ".cache" / "flowcore", None
    _check_directory(root, origin)
    return root


def _check_directory(root: Path, origin: str | None) -> None:
    """Refuse a root that is a file, or whose nearest existing ancestor is one (mkdir would fail)."""
    where = f" (set by {origin})" if origin else ""
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                blocker = "it is a file" if path == root else f"{path} is a file"
                raise CacheDirectoryError(f"the flowcore cache directory {root}{where} is not a directory: {blocker}; "
                                          f"point FLOWCORE_CACHE_DIR at a directory")
            return


def _make_root(root: Path) -> None:
    """mkdir -p of the cache root, its failure one line naming the path instead of an OSError traceback."""
    _check_directory(root, None)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CacheDirectoryError(f"cannot create the flowcore cache directory {root}: {error.strerror}; "
                                  f"point FLOWCORE_CACHE_DIR at a writable directory") from None


def build_environment() -> dict[str, str]:
    """The parts of the environment that change a binary without changing its sources.

    A different torch (ABI, headers), CUDA toolkit, Python (C API) or CPU architecture means a
    cached library may not load or, worse, load and misbehave, so each is part of every key.
    """
    try:
        import torch
        torch_version, cuda = str(torch.__version__), str(torch.version.cuda)
    except ImportError:  # pragma: no cover - flowcore depends on torch
        torch_version, cuda = "none", "none"
    return {
        "torch": torch_version,
        "cuda": cuda,
        "python": f"{platform.python_implementation()}-{sys.version_info[0]}.{sys.version_info[1]}",
        "machine": platform.machine(),
        "system": platform.system(),
    }


def cache_key(sources: dict[str, str], flags: Sequence[str], extra: dict[str, str] | None = None) -> str:
    """A 24-hex-digit sha256 over source names and contents, flags, the build environment and `extra`.

    Dict order does not matter; flag order does (``-O2 -O0`` is not ``-O0 -O2``).  Pass what only
    the caller knows cheaply in `extra`, e.g. ``{"cxx": "g++ 12.2.0", "backend": "cuda"}``.
    """
    def digest(text: str | bytes) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text).hexdigest()

    payload = {
        "format": FORMAT,
        "sources": {str(name): digest(text) for name, text in sources.items()},
        "flags": [str(f) for f in flags],
        "env": build_environment(),
        "extra": {str(k): str(v) for k, v in (extra or {}).items()},
    }
    return digest(json.dumps(payload, sort_keys=True))[:24]


@dataclass(frozen=True)
class CacheEntry:
    """A valid entry. `hit` is True when this call built nothing; `build_seconds` is this call's
    build time (0.0 on a hit; the original build time is ``metadata["build_seconds"]``)."""
    path: Path
    files: dict[str, Path]
    hit: bool
    build_seconds: float
    metadata: dict = field(repr=False)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class BuildCache:
    """Build-once-per-key storage of artifact directories, safe across threads and processes.

    `lock_timeout` (seconds, None = wait forever) bounds the wait for another process's build;
    a *dead* builder never blocks anyone, because the kernel drops its flock when it exits.
    """

    def __init__(self, root: str | os.PathLike | None = None, lock_timeout: float | None = None):
        if fcntl is None:
            raise RuntimeError("flowcore's build cache needs fcntl.flock (POSIX); it is unavailable here")
        self.root = Path(root) if root is not None else cache_root()
        self.lock_timeout = lock_timeout

    # -- public -----------------------------------------------------------------------------------
    def get_or_build(self, key: str, build: Callable[[Path], list[str] | None],
                     describe: dict | None = None) -> CacheEntry:
        """The entry for `key`, calling ``build(tmpdir)`` first if there is no valid one.

        `build` writes artifacts into the empty directory it is given and returns their names
        relative to it (None: every regular file).  Exceptions become :class:`CacheBuildError`.
        """
        _check_key(key)
        entry, _ = self._load(key)  # fast path: no lock for a valid entry
        if entry is not None:
            return entry
        _make_root(self.root)
        with self._lock(key, waiting=_awaited(key, describe)):
            entry, problem = self._load(key)  # someone may have built it while we waited
            if entry is not None:
                return entry
            if problem is not None:
                msg = f"flowcore cache entry {key} is unusable ({problem}); rebuilding it"
                warnings.warn(msg, CacheWarning, stacklevel=2)
            self._sweep(holding=key)
            return self._build(key, build, describe or {})

    def clear(self, key: str | None = None) -> None:
        """Delete the entry for `key`, or every entry (and leftover) under the root."""
        if key is not None:
            _check_key(key)
        if not self.root.is_dir():
            return
        names = (p.name.split(".", 1)[0] for p in self.root.iterdir())
        keys = [key] if key is not None else sorted({k for k in names if _KEY_RE.match(k)})
        for k in keys:  # under each key's lock, so no build is torn out from under its builder
            with self._lock(k, unlink=True):
                _remove(self.root / k)
                for p in self.root.glob(f"{k}.tmp-*"):
                    _remove(p)
                for p in self.root.glob(f"{k}.stale-*"):
                    _remove(p)

    # -- internals --------------------------------------------------------------------------------
    def _load(self, key: str) -> tuple[CacheEntry | None, str | None]:
        """(entry, None) if valid; (None, None) if absent; (None, why) if present but unusable."""
        path = self.root / key
        meta_path = path / METADATA
        if not path.exists():
            return None, None
        try:
            meta = json.loads(meta_path.read_text())
            artifacts = meta["artifacts"]
            if meta.get("key") != key or meta.get("format") != FORMAT or not isinstance(artifacts, dict):
                return None, "metadata does not describe this key/format"
            files = {}
            for name, rec in artifacts.items():
                p = path / name
                if not p.is_file():
                    return None, f"artifact {name!r} is missing"
                if p.stat().st_size != rec["size"]:
                    return None, f"artifact {name!r} has size {p.stat().st_size}, expected {rec['size']}"
                if _sha256_file(p) != rec["sha256"]:
                    return None, f"artifact {name!r} fails its sha256 check"
                files[name] = p
        except FileNotFoundError:
            return None, "metadata.json is missing (an interrupted or partial entry)"
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            return None, f"metadata.json is unreadable ({type(e).__name__}: {e})"
        return CacheEntry(path, files, hit=True, build_seconds=0.0, metadata=meta), None

    def _build(self, key: str, build: Callable[[Path], list[str] | None], describe: dict) -> CacheEntry:
        tmp = self.root / f"{key}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            t0 = time.perf_counter()
            names = build(tmp)
            seconds = time.perf_counter() - t0
            names = _artifact_names(tmp, names)
            meta = {
                "format": FORMAT, "key": key, "created": time.time(), "build_seconds": seconds,
                "artifacts": {n: {"size": (tmp / n).stat().st_size, "sha256": _sha256_file(tmp / n)} for n in names},
                "describe": describe,
            }
            part = tmp / (METADATA + ".part")
            part.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            os.replace(part, tmp / METADATA)  # metadata last: its presence marks a complete build
            final = self.root / key
            if final.exists() or final.is_symlink():  # corrupt leftover: move aside, then delete
                stale = self.root / f"{key}.stale-{secrets.token_hex(4)}"
                os.rename(final, stale)
                _remove(stale)
            os.rename(tmp, final)
        except BaseException as e:
            _remove(tmp)
            if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit: not a build error
                raise
            raise CacheBuildError(f"building flowcore cache entry {key} failed"
                                  f"{f' for {describe}' if describe else ''}: {type(e).__name__}: {e}") from e
        log.info("built flowcore cache entry %s in %.2fs (%s)", key, seconds, describe)
        files = {n: final / n for n in names}
        meta = json.loads(json.dumps(meta, default=str))  # exactly what a later hit will read back
        return CacheEntry(final, files, hit=False, build_seconds=seconds, metadata=meta)

    def _sweep(self, holding: str) -> None:
        """Best effort: delete ``*.tmp-*``/``*.stale-*`` leftovers of builders that are gone.

        A builder holds its key's flock for as long as its tmp dir exists, so a leftover is dead
        exactly when that lock is free.  This is checked with a non-blocking flock rather than by
        asking whether the pid in the name is alive: a pid says nothing about builders in another
        container sharing the cache, and pids are reused.  For `holding` we own the lock already.
        """
        for p in list(self.root.glob("*.tmp-*")) + list(self.root.glob("*.stale-*")):
            k = p.name.split(".", 1)[0]
            if k == holding:
                _remove(p)
                continue
            if not _KEY_RE.match(k):
                continue
            with contextlib.suppress(OSError), self._lock(k, blocking=False) as got:
                if got:
                    _remove(p)

    @contextlib.contextmanager
    def _lock(self, key: str, blocking: bool = True, unlink: bool = False, waiting: str = "") -> Iterator[bool]:
        """Exclusive flock on ``root/<key>.lock``; yields False if non-blocking and busy.

        A blocking wait for `waiting` (what the other process builds) that lasts WAIT_NOTICE_SECONDS
        says so once on stderr: the extension's build holds its lock for about a minute.

        The file is never treated as the lock itself.  If it was unlinked and recreated while we
        waited (``clear`` does that), we locked an orphaned inode, so retry on the current file.
        """
        path = self.root / f"{key}.lock"
        deadline = None if self.lock_timeout is None else time.monotonic() + self.lock_timeout
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                notice = f"flowcore: waiting for another process's build of {waiting} (lock {path})…" \
                    if waiting else ""
                if not _flock(fd, blocking, deadline, notice):
                    if not blocking:
                        yield False
                        return
                    raise CacheLockTimeout(f"waited {self.lock_timeout}s for the build lock {path}")
                try:
                    same = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    try:
                        yield True
                    finally:
                        if unlink:
                            with contextlib.suppress(FileNotFoundError):
                                path.unlink()
                    return
            finally:
                os.close(fd)  # closing the descriptor releases the flock


def _awaited(key: str, describe: dict | None) -> str:
    """What the build of `key` makes, in words, from its `describe` (see get_or_build's callers)."""
    describe = describe or {}
    if describe.get("what"):
        return str(describe["what"])
    if describe.get("objective"):
        return f"the {describe.get('backend', 'compiled')} kernels of {describe['objective']}"
    return f"cache entry {key}"


def _flock(fd: int, blocking: bool, deadline: float | None, notice: str = "") -> bool:
    """Lock `fd`; a blocking wait (until `deadline`, None: for ever) prints `notice` to stderr once
    when it has lasted WAIT_NOTICE_SECONDS, and nothing when it ends."""
    if blocking and deadline is None and not notice:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    started, delay = time.monotonic(), 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            now = time.monotonic()
            if not blocking or (deadline is not None and now >= deadline):
                return False
            if notice and now - started >= WAIT_NOTICE_SECONDS:
                print(notice, file=sys.stderr, flush=True)
                notice = ""
                if deadline is None:  # said; from here the kernel wakes us when the lock is free
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    return True
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"cache keys are 1-128 characters of [A-Za-z0-9_-], got {key!r}")


def _artifact_names(tmp: Path, names: list[str] | None) -> list[str]:
    """Validate the builder's list (relative, inside `tmp`, regular files), or list every file."""
    if names is None:
        return sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")
                      if p.is_file() and not p.is_symlink() and p.name != METADATA)
    out = []
    for n in names:
        rel = Path(n)
        if rel.is_absolute() or ".." in rel.parts or rel.as_posix() in ("", ".", METADATA):
            raise ValueError(f"artifact name {n!r} must be a relative path inside the build directory")
        if not (tmp / rel).is_file():
            raise FileNotFoundError(f"the builder listed artifact {n!r} but did not write it")
        out.append(rel.as_posix())
    return sorted(set(out))


def clear(key: str | None = None, root: str | os.PathLike | None = None) -> None:
    """Delete one cache entry (`key`) or the whole cache under `root` (default :func:`cache_root`)."""
    BuildCache(root).clear(key)
