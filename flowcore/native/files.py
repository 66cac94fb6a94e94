"""Writing a file so that a reader finds either the old file or the complete new one, never a part.

The content goes to a temporary file in the target's folder (same file system), is flushed to
disk, and is then ``os.replace``d over the target (atomic on POSIX and Windows). A run killed
mid-write leaves at worst a stray hidden ``.tmp`` file, never a truncated checkpoint, cache entry
or record. Standard library only, like the rest of flowcore.native.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomically(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = True) -> Path:
    """Call ``write(file)`` on a temporary file beside `path`, then move it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb" if binary else "w") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
