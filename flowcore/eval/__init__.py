"""Sampling and evaluating flow maps (docs/math.md §1, §5).

* :mod:`~flowcore.eval.sample`: k-step flow-map sampling on any time grid; Euler/Heun on the diagonal.
* :mod:`~flowcore.eval.metrics`: the metric registry (:func:`register_metric`), chosen per data kind
  by ``eval.metrics``; the built-ins live in :mod:`~flowcore.eval.checkerboard_kl` and
  :mod:`~flowcore.eval.distances`.
* :mod:`~flowcore.eval.frechet`: the Fréchet distance in float64, streaming feature statistics and
  :func:`frechet_metric`, a metric from any image feature extractor (FID, FD-digits).
* :mod:`~flowcore.eval.fd_digits`: FD-digits, the Fréchet distance in the features of a digits
  classifier flowcore trains and caches itself, registered for ``digits`` data with its noise floor.
* :mod:`~flowcore.eval.fid`: FID, the Fréchet distance in TF-Inception pool3 features through
  torch-fidelity (the ``fid`` extra), its weights from a local file only; registered for ``images``.
* :mod:`~flowcore.eval.evaluate`: :func:`evaluate_sampler`, the table of a sampler's metrics per k.
* :mod:`~flowcore.eval.plots`: samples per k beside the data, loss curves (matplotlib, on call).
"""
from .evaluate import EvaluationResults, evaluate_sampler, format_table
from .fd_digits import noise_floor as fd_digits_floor
from .fid import InceptionWeightsMissing, fid_metric
from .frechet import FeatureExtractor, feature_statistics, frechet_distance, frechet_metric
from .metrics import METRICS, Metric, register_metric, select_metrics
from .sample import flow_map_sample, ode_sample, time_grid, trajectories

__all__ = ["METRICS", "EvaluationResults", "FeatureExtractor", "InceptionWeightsMissing", "Metric", "evaluate_sampler",
           "fd_digits_floor", "feature_statistics", "fid_metric", "flow_map_sample",
           "format_table", "frechet_distance", "frechet_metric", "ode_sample", "register_metric",
           "select_metrics", "time_grid", "trajectories"]
