"""Hypothesis profiles: `ci` (derandomized, the default under CI=true) and `dev` (random, more examples).

Pick one with HYPOTHESIS_PROFILE=ci|dev. No deadlines anywhere: jvp-heavy examples vary in time.
The `registries` fixture undoes what a test registers in the data and metric registries.
"""
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=12, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=40, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def registries():
    """Whatever a test registers as a data set (sampled or loaded) or a metric is removed after it,
    so no other test sees it."""
    from flowcore.data import DATASETS, LOADED_DATASETS
    from flowcore.eval.metrics import METRICS

    before = {id(table): set(table) for table in (DATASETS, LOADED_DATASETS, METRICS)}
    yield
    for table in (DATASETS, LOADED_DATASETS, METRICS):
        for name in set(table) - before[id(table)]:
            del table[name]
