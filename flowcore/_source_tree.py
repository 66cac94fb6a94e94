"""Running from a source checkout: ``flowcore.objectives`` is the top-level ``objectives/`` folder.

Packaging ships that folder as ``flowcore.objectives`` (setup.py's package_dir). In a checkout the
folder sits beside ``flowcore/`` instead, so ``python -m flowcore.cli`` or ``torchrun -m
flowcore.cli`` started in the repository root — where Python imports the checkout, not the
installed copy — would not find the built-ins. This finder maps the name to the folder there, and
does nothing in an installed package (which has its own ``flowcore/objectives``).
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

NAME = "flowcore.objectives"


class SourceObjectivesFinder(importlib.abc.MetaPathFinder):
    """Finds ``flowcore.objectives`` in ``<checkout>/objectives``; submodules follow its __path__."""

    def __init__(self, folder: Path):
        self.folder = folder

    def find_spec(self, fullname, path=None, target=None):
        if fullname != NAME:
            return None
        return importlib.util.spec_from_file_location(NAME, self.folder / "__init__.py",
                                                      submodule_search_locations=[str(self.folder)])


def install() -> None:
    package = Path(__file__).resolve().parent
    folder = package.parent / "objectives"
    if (package / "objectives").is_dir() or not (folder / "__init__.py").is_file():
        return  # installed, or a layout this finder does not know
    if not any(isinstance(finder, SourceObjectivesFinder) for finder in sys.meta_path):
        sys.meta_path.append(SourceObjectivesFinder(folder))  # after the standard finders and editable installs
