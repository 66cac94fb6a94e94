"""Cold and warm compile times of an objective nobody has compiled (`fresh_objective`)."""
from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time

import torch

from ..codegen import backends
from .config import BenchConfig
from .measure import synchronize
from .steps import Models, draw_inputs, error_text


def fresh_objective(tag: str | None = None):
    """An LSD variant nobody has compiled: the teacher is scaled by ``1 + 1/c`` with c unique to this call.

    Declared here with flowcore's language, so its kernels (hence its cache key) are new.
    """
    import sympy

    from ..data import CHECKERBOARD_STD
    from ..lang import Dt, I, Objective, Term, Uniform, UpperTriangle, V, Var, X, s, sg, sqnorm, t

    tag = tag or secrets.token_hex(4)
    c = sympy.Integer(10**9 + int(tag, 16))
    x = Var("x")
    scale = 1 + 1 / c
    loss = sqnorm(Dt(X(s, t, x)) - scale * sg(V(t, t, sg(X(s, t, x))))).bind(x=I(s))
    return Objective(f"bench_lsd_{tag}", (Term("fm", sqnorm(V(t, t, I(t)) - Dt(I(t))), Uniform(t), 0.75),
                                          Term("lsd_variant", loss, UpperTriangle(s, t), 0.25)),
                     description="LSD with a unique constant (the benchmark's new objective)",
                     sigma=CHECKERBOARD_STD)


@contextlib.contextmanager
def _cache_dir(path: str):
    old = os.environ.get("FLOWCORE_CACHE_DIR")
    os.environ["FLOWCORE_CACHE_DIR"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FLOWCORE_CACHE_DIR", None)
        else:
            os.environ["FLOWCORE_CACHE_DIR"] = old


def _compile_once(objective, backend: str, device: torch.device, config: BenchConfig) -> dict:
    """fc.compile wall time (symbolic passes vs build), cache hit, and a first forward+backward."""
    from .. import compile as fc_compile
    from ..data import checkerboard

    start = time.perf_counter()
    compiled = fc_compile(objective, backend=backend)
    total = time.perf_counter() - start
    out = {"compile_s": total, "symbolic_s": total - compiled.compile_seconds, "build_s": compiled.compile_seconds,
           "cache_hit": bool(compiled.cache_hit)}
    models = Models(objective, config.net("small"), device, getattr(torch, config.dtype), config.seed)
    net = models.net
    x1 = checkerboard(64, torch.Generator().manual_seed(0), getattr(torch, config.dtype)).to(device)
    x0, z, times = draw_inputs(objective, 64, torch.Generator(device=device).manual_seed(0), x1)
    synchronize(device)
    start = time.perf_counter()
    compiled(net, x1, x0, z=z, times=times).loss.backward()
    synchronize(device)
    out["first_call_s"] = time.perf_counter() - start
    return out


def compile_times(device_name: str, config: BenchConfig) -> list[dict]:
    """Cold (empty FLOWCORE_CACHE_DIR) and warm (same cache, same process) compiles of a new objective.

    Per backend: the device's native one and ``torch``. The extension is loaded first (and timed
    on its own): a cold cache must not make the cold figure include building the extension.
    """
    device = torch.device(device_name)
    rows = []
    for backend in (backends.native_for(device.type), backends.portable()):
        row: dict = {"backend": backend.name, "device": device_name}
        try:
            if backend.uses_extension:
                from ..native.extension import extension_info, load_extension

                start = time.perf_counter()
                load_extension()
                row["extension_load_s"] = time.perf_counter() - start
                row["extension"] = extension_info().get("how")
            objective = fresh_objective()
            row["objective"] = objective.name
            with tempfile.TemporaryDirectory(prefix="flowcore-bench-cache-") as tmp, _cache_dir(tmp):
                row["cold"] = _compile_once(objective, backend.name, device, config)
                row["warm"] = _compile_once(objective, backend.name, device, config)
        except Exception as error:  # noqa: BLE001 - report it and go on
            row["error"] = error_text(error)
        rows.append(row)
    return rows
