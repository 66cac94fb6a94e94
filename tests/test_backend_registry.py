"""flowcore.codegen.backends: one registry, and every place that names backends reads it.

The former name sites — flowcore.compile, flowcore.codegen.emit_sources, the `--backend` choices of
`flowcore compile` / `flowcore check`, the training config's `backend` (and "auto"), the
benchmark's native backend and fallback — offer exactly the registered backends; a backend added by
one registration reaches all of them.
"""
from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

import flowcore as fc
from flowcore.cli import build_parser
from flowcore.codegen import backends, emit_sources
from flowcore.codegen.base import Backend
from flowcore.compiler.driver import compile_program
from flowcore.train import ConfigError, from_dict
from flowcore.train.build import pick_backend


def _backend_choices(command: str) -> tuple[str, ...]:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    option = next(a for a in subparsers.choices[command]._actions if "--backend" in a.option_strings)
    return tuple(option.choices)


def _config_accepts(name: str) -> bool:
    try:
        from_dict({"backend": name})
        return True
    except ConfigError:
        return False


def _forward_kernels(name: str = "fm"):
    compilation = compile_program(fc.objective(name))
    return compilation.digest, [seg.kernel for seg in compilation.program.segments if seg.kernel is not None]


def check_every_site_offers_exactly(expected: tuple[str, ...]) -> None:
    assert backends.names() == expected
    for command in ("compile", "check"):
        assert _backend_choices(command) == expected, command
    assert all(_config_accepts(name) for name in ("auto", *expected))
    assert not _config_accepts("no-such-backend")
    with pytest.raises(ValueError, match=f"unknown backend 'no-such-backend'; choose one of {', '.join(expected)}"):
        fc.compile("fm", backend="no-such-backend")
    digest, kernels = _forward_kernels()
    for name in expected:
        sources = emit_sources(name, "fm", digest, kernels)
        assert sources and all(isinstance(text, str) and text for text in sources.values()), name
        for device in backends.get(name).devices:
            assert pick_backend(name, torch.device(device)) == name


def test_every_name_site_offers_exactly_the_registered_backends():
    check_every_site_offers_exactly(("torch", "cpu", "cuda"))


def test_registered_records_are_complete():
    for backend in backends.REGISTERED:
        assert backend.name and backend.devices and backend.description
        assert callable(backend.emit) and callable(backend.build)
        reason = backend.unavailable()
        assert reason is None or (isinstance(reason, str) and reason), backend.name
        assert backend.available() == (reason is None)
    assert backends.get("torch").available()  # torch needs nothing but torch
    assert [b.name for b in backends.REGISTERED if b.portable] == ["torch"]


def test_device_choices_of_the_trainer_and_the_benchmark():
    assert backends.native_for("cpu").name == "cpu" and backends.native_for("cuda").name == "cuda"
    assert backends.native_for("mps") is backends.portable()  # no backend of its own: the fallback
    assert backends.default_for("cpu").name == "torch" and backends.default_for("cuda").name == "cuda"
    assert pick_backend("auto", torch.device("cpu")) == "torch"
    assert pick_backend("auto", torch.device("cuda")) == "cuda"
    with pytest.raises(ValueError, match="backend = 'cuda' needs device = 'cuda'"):
        pick_backend("cuda", torch.device("cpu"))


def test_cuda_unavailability_says_why():
    reason = backends.get("cuda").unavailable()
    if torch.version.cuda is not None and torch.cuda.is_available() and reason is None:
        pytest.skip("the cuda backend runs here")
    assert "cuda backend needs" in reason or "nvcc" in reason


def test_a_new_backend_is_one_registration(monkeypatch):
    """A backend registered in REGISTERED alone (here the torch backend's code under another name)
    is offered by every site and compiles an objective that matches the torch backend."""
    torch_backend = backends.get("torch")

    def build(title, digest, kernels):
        library = torch_backend.build(title, digest, kernels)
        return dataclasses.replace(library, backend="echo")

    echo = Backend(name="echo", devices=("cpu",), emit=torch_backend.emit, build=build,
                   unavailable=lambda: None, description="the torch backend under another name")
    registered = (*backends.REGISTERED, echo)
    monkeypatch.setattr(backends, "REGISTERED", registered)
    monkeypatch.setattr(backends, "_BY_NAME", backends._check(registered))
    check_every_site_offers_exactly(("torch", "cpu", "cuda", "echo"))
    compiled, reference = fc.compile("fm", backend="echo"), fc.compile("fm", backend="torch")
    assert compiled.backend == "echo" and compiled.library.backend == "echo"
    layer = torch.nn.Linear(2, 2).double()

    def net(s, t, x):
        return layer(x) * (t - s)[:, None]

    x1 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = compiled(net, x1, generator=torch.Generator().manual_seed(1)).loss
    want = reference(net, x1, generator=torch.Generator().manual_seed(1)).loss
    assert torch.equal(got, want)  # the same emitted code on the same draws


def test_the_registry_refuses_duplicate_or_reserved_names():
    torch_backend = backends.get("torch")
    with pytest.raises(ValueError, match="registered twice or reserved"):
        backends._check((torch_backend, torch_backend))
    with pytest.raises(ValueError, match="registered twice or reserved"):
        backends._check((torch_backend, dataclasses.replace(torch_backend, name="auto", portable=False)))
    with pytest.raises(ValueError, match="exactly one registered backend must be portable"):
        backends._check((dataclasses.replace(torch_backend, portable=False),))
