"""Finding an objective by name (a built-in) or by path (a user's Python file declaring one)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .lang import Objective


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
    spec = importlib.util.spec_from_file_location(f"flowcore_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    if callable(getattr(module, "build", None)):
        return module.build(**options)
    found = [value for value in vars(module).values() if isinstance(value, Objective)]
    if len(found) != 1:
        raise ValueError(f"{path} must define exactly one Objective at module level (or a build() function); "
                         f"found {len(found)}")
    if options:
        return found[0].with_options(**options)
    return found[0]
