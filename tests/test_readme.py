"""The README's promises: its worked example runs as written and its objective's gradients are right."""
import math
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(marker: str, language: str) -> str:
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```{language}\n(.*?)```", README.read_text(), re.S)
    assert match, f"README.md has no ```{language} block after <!-- {marker} -->"
    return match.group(1)


@pytest.fixture(scope="module")
def example() -> dict:
    namespace: dict = {}
    exec(compile(_block("example: new-objective", "python"), "README example", "exec"), namespace)
    return namespace


def test_example_runs_and_trains_every_parameter(example):
    assert math.isfinite(example["result"].loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in example["net"].parameters())
    assert set(example["result"].terms) == {"fm", "lsd"}


def test_example_objective_matches_a_hand_written_loss(example):
    """The README objective, written out in plain torch: trig interpolant, adaptive LSD weight."""
    import flowcore as fc

    objective, net = example["my_objective"], example["net"].double()
    gen = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(24, 2, generator=gen, dtype=torch.float64), torch.randn(24, 2, generator=gen, dtype=torch.float64)
    n_fm, n_lsd = objective.split(24)
    t_fm = torch.rand(n_fm, generator=gen, dtype=torch.float64)
    s_l, t_l = torch.rand(n_lsd, generator=gen, dtype=torch.float64), torch.rand(n_lsd, generator=gen, dtype=torch.float64)
    got = fc.evaluate(objective, net, x1, x0, times={"fm": {"t": t_fm}, "lsd": {"s": s_l, "t": t_l}})

    half_pi = math.pi / 2
    alpha, beta = lambda tau: torch.cos(half_pi * tau)[:, None], lambda tau: torch.sin(half_pi * tau)[:, None]
    d_alpha, d_beta = lambda tau: -half_pi * beta(tau), lambda tau: half_pi * alpha(tau)
    a0, a1 = x0[:n_fm], x1[:n_fm]
    fm = (net(t_fm, t_fm, alpha(t_fm) * a0 + beta(t_fm) * a1) - d_alpha(t_fm) * a0 - d_beta(t_fm) * a1).square().sum(1)
    b0, b1 = x0[n_fm:], x1[n_fm:]
    xs = alpha(s_l) * b0 + beta(s_l) * b1
    flow = lambda tt: xs + (tt - s_l)[:, None] * net(s_l, tt, xs)  # noqa: E731
    x_st, dt_x = torch.func.jvp(flow, (t_l,), (torch.ones_like(t_l),))
    target = net(t_l, t_l, x_st.detach()).detach()
    ell = (dt_x - target).square().sum(1)
    lsd = ell / (ell.detach() + 1e-3)
    want = (fm.sum() + lsd.sum()) / 24

    # float64 throughout: both sides agree to rounding (~1e-16 relative per op over a few dozen ops).
    assert torch.allclose(got.loss, want, rtol=1e-12, atol=0)
    got_grads = torch.autograd.grad(got.loss, list(net.parameters()))
    want_grads = torch.autograd.grad(want, list(net.parameters()))
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12 * w.abs().max().item())


def test_quickstart_commands_are_two_and_ci_reads_the_second():
    text = README.read_text()
    run = _block("quickstart-run", "bash").strip().splitlines()
    test = _block("quickstart-test", "bash").strip().splitlines()
    assert len(run) == 1 and run[0].endswith("flowcore train")  # the quick checkerboard run
    assert len(test) == 1 and "pytest" in test[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "quickstart-test" in ci and "quickstart-test" in text
