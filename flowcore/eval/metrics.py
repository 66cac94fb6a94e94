"""The metric registry: sample-quality metrics by name, each declaring the data kinds it applies to.

A metric is one function ``f(samples, data, **options) -> float`` (samples of the sampler and
reference samples of the data, both (N, *dims)) plus one :func:`register_metric` call naming it
and the data kinds (flowcore.data.registry) it applies to. ``eval.metrics`` in a training config
chooses metrics by name; left empty, every metric registered as a default for the data's kind is
computed, in registration order (docs/math.md §5, docs/design.md). The built-ins:

* ``kl``: the checkerboard KL (:mod:`flowcore.eval.checkerboard_kl`), for ``checkerboard`` data;
* ``energy``: the energy distance, ``sw2``: the sliced 2-Wasserstein distance
  (:mod:`flowcore.eval.distances`), for data of every kind;
* ``fd_digits``: FD-digits (:mod:`flowcore.eval.fd_digits`, registered there), for ``digits`` data,
  with its noise floor;
* ``fid``: FID (:mod:`flowcore.eval.fid`, registered there), for ``images`` data when listed in
  ``eval.metrics`` (not a default: it needs the Inception weights file), with a readiness check.

Every metric says which way is better (``lower_is_better``; all the built-ins are distances), which
the best-checkpoint record of a run reads (flowcore.train.best).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..data.registry import CHECKERBOARD
from .checkerboard_kl import checkerboard_kl
from .distances import energy_distance, sliced_wasserstein2

MetricFunction = Callable[..., float]


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``kinds`` the data kinds it applies to (None: every kind), ``default``
    whether it is computed when ``eval.metrics`` is left empty, ``floor`` (optional) ``f(data) ->
    float``: the value real samples score against the reference `data` — the noise floor that
    evaluation tables print beside the metric (e.g. FD-digits: held-out digits vs the train split);
    ``lower_is_better`` which way the metric improves (a distance: True); ``check`` (optional)
    ``f(**options) -> None`` raising what would stop the metric from running here (FID: its weights
    file missing), which :func:`select_metrics` calls so a run fails before it trains, not at its
    first evaluation."""

    name: str
    function: MetricFunction
    kinds: tuple[str, ...] | None
    default: bool
    floor: Callable[[torch.Tensor], float] | None = None
    lower_is_better: bool = True
    check: Callable[..., None] | None = None

    def applies_to(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def __call__(self, samples: torch.Tensor, data: torch.Tensor, **options) -> float:
        return float(self.function(samples, data, **options))


METRICS: dict[str, Metric] = {}


def register_metric(name: str, function: MetricFunction, *, kinds: Sequence[str] | None = None,
                    default: bool = True, floor: Callable[[torch.Tensor], float] | None = None,
                    lower_is_better: bool = True, check: Callable[..., None] | None = None) -> Metric:
    """Make `function` ``(samples, data, **options) -> float`` available as metric `name` for data of
    the given `kinds` (None: every kind); `default`: computed when ``eval.metrics`` is empty;
    `floor`: ``f(data) -> float``, the metric's noise floor for reference `data`; `lower_is_better`:
    which way it improves; `check`: ``f(**options)`` raising when it cannot run here (see :class:`Metric`)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a metric's name must be an identifier (it names a table row and a column), got {name!r}")
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered (registered: {', '.join(METRICS)})")
    if not callable(function):
        raise TypeError(f"metric {name!r}: expected a function (samples, data) -> float, got {function!r}")
    if isinstance(kinds, str):
        raise TypeError(f"metric {name!r}: kinds must be a sequence of data kinds, e.g. ({kinds!r},), not a string")
    if kinds is not None and (not kinds or not all(isinstance(k, str) and k for k in kinds)):
        raise ValueError(f"metric {name!r}: kinds must name at least one data kind (or be None for every kind)")
    if floor is not None and not callable(floor):
        raise TypeError(f"metric {name!r}: floor must be a function (data) -> float, got {floor!r}")
    if not isinstance(lower_is_better, bool):
        raise TypeError(f"metric {name!r}: lower_is_better must be True or False, got {lower_is_better!r}")
    if check is not None and not callable(check):
        raise TypeError(f"metric {name!r}: check must be a function (**options) -> None, got {check!r}")
    METRICS[name] = Metric(name, function, None if kinds is None else tuple(kinds), bool(default), floor,
                           lower_is_better, check)
    return METRICS[name]


def check_metric_names(names: Sequence[str]) -> None:
    """A ValueError naming every unknown metric in `names` and the registered ones."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"registered: {', '.join(METRICS) or 'none'}")


def select_metrics(kind: str, names: Sequence[str] | None = None,
                   options: Mapping[str, Mapping[str, object]] | None = None) -> list[Metric]:
    """The metrics to compute for data of `kind`: `names` in order, each checked to exist and to
    apply to `kind`; with no names, the defaults for `kind` in registration order. Each chosen
    metric's ``check`` runs with its `options` (by metric name), so what would stop it (a missing
    weights file) is raised here, before any sampling or training."""
    chosen = _choose(kind, names)
    for metric in chosen:
        if metric.check is not None:
            metric.check(**dict((options or {}).get(metric.name, {})))
    return chosen


def _choose(kind: str, names: Sequence[str] | None) -> list[Metric]:
    if not names:
        return [metric for metric in METRICS.values() if metric.default and metric.applies_to(kind)]
    check_metric_names(names)
    if len(set(names)) != len(names):
        raise ValueError(f"metrics listed twice: {', '.join(names)}")
    refused = [METRICS[name] for name in names if not METRICS[name].applies_to(kind)]
    if refused:
        usable = ", ".join(m.name for m in METRICS.values() if m.applies_to(kind)) or "none"
        detail = "; ".join(f"{m.name!r} applies to {', '.join(m.kinds)} data" for m in refused)
        raise ValueError(f"metric{'s' if len(refused) > 1 else ''} {', '.join(repr(m.name) for m in refused)} "
                         f"cannot score {kind!r} data ({detail}); metrics for {kind!r} data: {usable}")
    return [METRICS[name] for name in names]


def _checkerboard_kl(samples: torch.Tensor, data: torch.Tensor, *, bins: int = 50, floor: float = 1e-10) -> float:
    """Against the checkerboard's exact density: the data samples are not needed."""
    return checkerboard_kl(samples, bins, floor)


register_metric("kl", _checkerboard_kl, kinds=(CHECKERBOARD,))
register_metric("energy", energy_distance)
register_metric("sw2", sliced_wasserstein2)
