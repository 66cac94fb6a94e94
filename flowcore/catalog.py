"""Finding an objective by name (a built-in) or by path (a user's Python file declaring one).

A user's file is the user's code: an error in it (a syntax error, a NameError, a malformed
declaration) is reported as one line naming the file and line, the `flowcore show/compile/check`
answer, instead of a traceback through flowcore (docs/design.md, "Extension points").
"""
from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

from .lang import DeclarationError, Objective


def builtin_names() -> list[str]:
    from . import objectives

    return objectives.names()


def load(name_or_path: str, **options) -> Objective:
    """The built-in `name_or_path`, or the one `Objective` defined at module level in a .py file.

    A file may instead define ``build(**options) -> Objective``; `options` go to it (or to the
    built-in's builder).
    """
    from . import objectives

    path = Path(name_or_path)
    if path.suffix != ".py":
        return objectives.get(name_or_path, **options)
    if not path.is_file():
        raise FileNotFoundError(f"no objective file at {path}")
    module = _run_user_code(path, _execute, path)
    if callable(getattr(module, "build", None)):
        built = _run_user_code(path, module.build, **options)
        if not isinstance(built, Objective):
            # a ValueError, as every bad input the CLI reports in one line (not a TypeError)
            raise ValueError(f"{path}: build() returned {type(built).__name__}, "  # noqa: TRY004
                             "expected flowcore.Objective")
        return built
    found = {id(value): (name, value) for name, value in vars(module).items() if isinstance(value, Objective)}
    if len(found) != 1:  # one Objective bound to two names is one objective
        names = f": {', '.join(name for name, _ in found.values())}" if found else ""
        raise ValueError(f"{path} must define exactly one Objective at module level (or a build() function); "
                         f"found {len(found)}{names}")
    (_, objective), = found.values()
    if options:
        return objective.with_options(**options)
    return objective


def _execute(path: Path):
    spec = importlib.util.spec_from_file_location(f"flowcore_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def _run_user_code(path: Path, function, *args, **kwargs):
    """`function(*args, **kwargs)`, with an error raised in the user's file re-raised as one line
    ``FILE:LINE: message`` (a DeclarationError stays one, with its `.where` and `.reason`)."""
    try:
        return function(*args, **kwargs)
    except SyntaxError as error:
        if Path(error.filename or "").resolve() != path.resolve():
            raise
        raise ValueError(f"{path}:{error.lineno}: SyntaxError: {error.msg}") from None
    except Exception as error:  # anything the user's code raises, named by its line
        line = _line_in(path, error)
        if line is None:
            raise
        if isinstance(error, DeclarationError):
            located = DeclarationError(error.where, error.reason)
            located.args = (f"{path}:{line}: {error}",)
            raise located from None
        raise ValueError(f"{path}:{line}: {type(error).__name__}: {error}") from None


def _line_in(path: Path, error: BaseException) -> int | None:
    """The last line of `path` in the error's traceback (where the user's code went wrong)."""
    target = path.resolve()
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if Path(frame.filename).resolve() == target]
    return lines[-1] if lines else None
