"""Dropout in the diagonal calls only (docs/math.md §4): which terms drop out, which calls get a seed,
and that the reference interpreter, every compiled backend and the trainer apply the same masks."""
from __future__ import annotations

import pytest
import torch

import flowcore
from flowcore import catalog, reference
from flowcore.lang import DeclarationError, Term, Uniform, V, X, I, Dt, s, sqnorm, t
from flowcore.nn import FlowMapUNet
from flowcore.terms import draw_dropout_seeds, draw_noise_and_times, shard_seeds
from flowcore.train import Trainer, load_config

from backends import available
import unets

F64 = torch.float64
BACKENDS = [b for b in available() if b in ("torch", "cpu")]


def tiny_unet(dropout: float) -> FlowMapUNet:
    """The shared tiny UNet (tests/unets.py) with `dropout`."""
    return unets.tiny_unet(0, dropout=dropout)


class Spy(torch.nn.Module):
    """A velocity that records, per call, its batch size and the dropout seed it was given."""

    dropout_rate = 0.5

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))
        self.calls: list[tuple[int, int | None]] = []

    def forward(self, s, t, x, *, dropout_seed=None):
        self.calls.append((x.shape[0], dropout_seed))
        return self.scale * x * (1 + t - s).reshape(-1, *[1] * (x.ndim - 1))


# -- which terms drop out ----------------------------------------------------------------------------
def test_only_the_diagonal_terms_drop_out_by_default():
    for name in catalog.builtin_names():
        for term in catalog.load(name).terms:
            assert term.dropout == (term.name in ("fm", "diagonal")), (name, term.name)


def test_a_term_can_say_otherwise_and_bad_values_are_named():
    loss = sqnorm(V(t, t, I(t)) - Dt(I(t)))
    assert Term("fm", loss, Uniform(t), 1.0).dropout is True
    assert Term("fm", loss, Uniform(t), 1.0, dropout=False).dropout is False
    off = sqnorm(X(s, t, I(s)) - I(t))
    from flowcore.lang import UpperTriangle
    assert Term("map", off, UpperTriangle(s, t), 1.0).dropout is False
    assert Term("map", off, UpperTriangle(s, t), 1.0, dropout=True).dropout is True
    with pytest.raises(DeclarationError, match="term 'fm': dropout is True, False or None"):
        Term("fm", loss, Uniform(t), 1.0, dropout=0.5)


# -- which calls get a seed --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lsd", "psd_m", "meanflow"])
def test_only_the_calls_of_dropout_terms_get_the_seed(name):
    objective = catalog.load(name)
    x1 = torch.randn(16, 2, dtype=F64)
    fm_rows = objective.split(16)[0]
    spy = Spy()
    seeds = {"fm": 1234}
    reference.evaluate(objective, spy, x1, generator=torch.Generator().manual_seed(0), dropout_seeds=seeds)
    assert (fm_rows, 1234) in spy.calls
    assert all(seed is None for rows, seed in spy.calls if rows != fm_rows) and spy.calls
    for backend in BACKENDS:
        spy.calls.clear()
        flowcore.compile(objective, backend=backend)(spy, x1, generator=torch.Generator().manual_seed(0),
                                                     dropout_seeds=seeds)
        assert spy.calls.count((fm_rows, 1234)) >= 1
        assert {seed for _, seed in spy.calls} == {1234, None}, (backend, spy.calls)


def test_no_seed_and_no_draw_without_dropout():
    objective = catalog.load("lsd")
    x1 = torch.randn(8, 1, 8, 8, dtype=F64)
    assert draw_dropout_seeds(objective, tiny_unet(0.0), torch.Generator()) == {}
    assert draw_dropout_seeds(objective, tiny_unet(0.3).eval(), torch.Generator()) == {}   # eval mode: none
    gen = torch.Generator().manual_seed(5)
    draw_noise_and_times(objective, x1, gen)
    before = gen.get_state()
    draw_dropout_seeds(objective, tiny_unet(0.0), gen)
    assert torch.equal(before, gen.get_state())          # a network without dropout leaves the stream alone
    seeds = draw_dropout_seeds(objective, tiny_unet(0.3), gen)
    assert list(seeds) == ["fm"] and not torch.equal(before, gen.get_state())
    sharded = [shard_seeds(seeds, index) for index in range(3)]
    assert sharded[0] == seeds and len({s["fm"] for s in sharded}) == 3


# -- the same masks everywhere ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fm", "lsd", "psd_m", "meanflow", "esd"])
def test_compiled_equals_reference_with_dropout(name):
    """float64: one seed, one set of masks, so loss and gradients agree to rounding (the dropout
    changes them by O(1): checked against the run without)."""
    objective = catalog.load(name)
    net = tiny_unet(0.3)
    x1 = torch.randn(12, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(1))

    def loss_and_grads(run, **options):
        net.zero_grad()
        loss = run(objective, net, x1, generator=torch.Generator().manual_seed(2), **options).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters()]

    want, want_grads = loss_and_grads(reference.evaluate)
    without, _ = loss_and_grads(reference.evaluate, dropout_seeds={})
    assert not torch.allclose(want, without)                          # dropout did something
    for backend in BACKENDS:
        compiled = flowcore.compile(objective, backend=backend)
        got, got_grads = loss_and_grads(lambda o, *args, **kw: compiled(*args, **kw))
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


# -- the trainer ------------------------------------------------------------------------------------
TINY_UNET = ["data.name=digits", "data.batch=16", "network.kind=unet", "network.model_channels=8",
             "network.channel_mult=[1, 2]", "network.num_blocks=1", "network.attn_resolutions=[4]",
             "network.channels_per_head=8", "network.sigma=0.5", "objective.name=lsd", "backend=torch",
             "optim.lr=1e-2", "eval.samples=64", "eval.steps=[1]", "log.tensorboard=false", "log.figures=false",
             "log.progress=off", "checkpoint.every=2", "threads=1"]


def test_training_with_dropout_resumes_exactly(tmp_path):
    """The dropout seeds come from the run's generator, whose state the checkpoint keeps: 4 steps in
    one go equal 2 + 2 resumed (and differ from a run without dropout). The learned weight puts the
    image log-variance head in the run too."""
    config = lambda out, rate: load_config(None, TINY_UNET + ["steps=4", f"network.dropout={rate}",  # noqa: E731
                                                              "objective.learned_weight=true", f"out={out}"])
    straight = Trainer(config(tmp_path / "a", 0.3))
    straight.train()
    first = Trainer(config(tmp_path / "b", 0.3))
    step = first.train_step

    def step_then_interrupt():
        if first.step == 1:
            first._signal = "SIGINT"              # what the signal handler does
        return step()

    first.train_step = step_then_interrupt
    assert first.train().step == 2
    resumed = Trainer(config(tmp_path / "b", 0.3), resume=True)
    resumed.train()
    plain = Trainer(config(tmp_path / "c", 0.0))
    plain.train()
    assert straight.net.dropout_rate == 0.3 and plain.net.dropout_rate == 0.0
    assert type(straight.weight_net).__name__ == "ImageLogVarHead"
    for (name, a), b in zip(straight.state_dict()["model"].items(), resumed.state_dict()["model"].values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(straight.net.state_dict().values(),
                                                     plain.net.state_dict().values()))


def test_a_preset_takes_an_explicit_dropout():
    from flowcore.nn.registry import build_network
    from flowcore.train.config import NetworkConfig

    assert build_network("unet", NetworkConfig(kind="unet", preset="digits"), (1, 8, 8)).dropout_rate == 0.0
    chosen = build_network("unet", NetworkConfig(kind="unet", preset="digits", dropout=0.2), (1, 8, 8))
    assert chosen.dropout_rate == 0.2


def test_bf16_autocast_passes_the_seed_and_trains_the_unet(tmp_path):
    """The GPU default (bf16 autocast, docs/math.md §3) on the CPU: the wrapper forwards dropout_rate
    and the seed, the output comes back in x's dtype, and a tiny dropout UNet run stays finite."""
    from flowcore.train.precision import wrap

    net = tiny_unet(0.3).float()
    wrapped = wrap(net, torch.bfloat16, torch.device("cpu"))
    x = torch.randn(4, 1, 8, 8)
    s, t = torch.full((4,), 0.2), torch.full((4,), 0.7)
    with torch.no_grad():
        out = wrapped(s, t, x, dropout_seed=3)
        assert wrapped.dropout_rate == 0.3 and out.dtype == torch.float32
        assert torch.equal(out, wrapped(s, t, x, dropout_seed=3)) and not torch.equal(out, wrapped(s, t, x))
    summary = Trainer(load_config(None, TINY_UNET + ["steps=2", "autocast=bf16", "network.dropout=0.3",
                                                     f"out={tmp_path}"])).train()
    assert summary.step == 2 and summary.skipped == 0
