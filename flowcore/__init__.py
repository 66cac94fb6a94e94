"""flowcore: flow-map training objectives declared symbolically, compiled, checked against autograd.

The language (``flowcore.lang``) declares objectives; ``flowcore.reference`` defines what they mean;
``flowcore.compile`` turns one into fused kernels (torch, C++, CUDA); ``flowcore.testing`` checks a
compiled objective against the reference; ``flowcore.objectives`` holds the built-ins of Boffi,
Albergo & Vanden-Eijnden (arXiv 2505.18825) and their relatives.

Importing the package is cheap: its public names (the language's, ``compile``, ``evaluate``, …) and
its subpackages load on first use (PEP 562), because they import torch, which takes seconds. So the
``flowcore`` command — whose console script imports this package first — installs its Ctrl-C
handling before any of that runs (flowcore.cli.main; docs/design.md on the layers).
"""
import importlib
import importlib.util
from typing import TYPE_CHECKING

from . import _source_tree

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from .lang import *
    from .reference import evaluate as evaluate
    from .reference import evaluate_term as evaluate_term
    from .runtime.compiled import CompiledObjective as CompiledObjective
    from .runtime.compiled import compile as compile
    from .terms import Evaluation as Evaluation
    from .terms import TermResult as TermResult

_source_tree.install()  # a source checkout finds the built-ins in ../objectives (see the module)

__version__ = "0.1.0"

# The names defined here besides the language's (flowcore.lang.__all__), with the module each comes from.
_HOMES = {"CompiledObjective": "runtime.compiled", "compile": "runtime.compiled", "Evaluation": "terms",
          "TermResult": "terms", "evaluate": "reference", "evaluate_term": "reference"}


def objective(name: str, **options):
    """The built-in objective `name` (``flowcore objectives`` lists them), built with `options`."""
    from . import objectives

    return objectives.get(name, **options)


def _public() -> list[str]:
    from .lang import __all__ as language

    return list(language) + sorted(_HOMES) + ["objective", "__version__"]


def __getattr__(name: str):
    """A public name or a subpackage, imported when first asked for and kept (PEP 562)."""
    if name == "__all__":
        value = _public()
    elif name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    elif name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    else:
        language = importlib.import_module(".lang", __name__)
        if name in language.__all__:
            value = getattr(language, name)
        elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
            value = importlib.import_module(f".{name}", __name__)
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_public()))
