"""flowcore: flow-map training objectives declared symbolically, compiled, checked against autograd.

The language (``flowcore.lang``) declares objectives; ``flowcore.reference`` defines what they mean;
``flowcore.compile`` turns one into fused kernels (torch, C++, CUDA); ``flowcore.testing`` checks a
compiled objective against the reference; ``flowcore.objectives`` holds the built-ins of Boffi,
Albergo & Vanden-Eijnden (arXiv 2505.18825) and their relatives.
"""
from . import _source_tree

_source_tree.install()  # a source checkout finds the built-ins in ../objectives (see the module)

from .lang import *  # noqa: E402,F401,F403 - the language is the public API
from .lang import __all__ as _lang_all  # noqa: E402
from . import nn  # noqa: E402,F401 - flowcore.nn is part of the public API
from .terms import Evaluation, TermResult  # noqa: E402
from .reference import evaluate, evaluate_term  # noqa: E402
from .runtime.compiled import CompiledObjective, compile  # noqa: E402

__version__ = "0.1.0"


def objective(name: str, **options):
    """The built-in objective `name` (``flowcore objectives`` lists them), built with `options`."""
    from . import objectives

    return objectives.get(name, **options)


__all__ = list(_lang_all) + ["CompiledObjective", "Evaluation", "TermResult", "compile", "evaluate", "evaluate_term",
                             "objective", "__version__"]
