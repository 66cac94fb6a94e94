"""The README's promises: its worked examples run as written, and what it says about calling an objective
(times, shapes, teacher, reductions, results) holds."""
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


@pytest.fixture(scope="module")
def calling() -> dict:
    namespace: dict = {}
    exec(compile(_block("example: calling-an-objective", "python"), "README calling example", "exec"), namespace)
    return namespace


def test_calling_example_trains_the_net_and_never_the_teacher(calling):
    assert math.isfinite(calling["result"].loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in calling["net"].parameters())
    assert all(p.grad is None for p in calling["teacher"].parameters())


def test_calling_example_compiled_equals_the_reference(calling):
    # float32 on both sides; the compiled kernels group the same few dozen ops differently, so the
    # two agree to a few float32 roundings (eps 1.2e-7) per op, well inside 1e-5 relative.
    assert torch.allclose(calling["same"].loss, calling["result"].loss, rtol=1e-5, atol=0)
    for name, term in calling["result"].terms.items():
        assert torch.allclose(calling["same"].terms[name].per_sample, term.per_sample, rtol=1e-5, atol=1e-7)


def test_times_are_used_as_given_and_term_results_hold_what_the_readme_says(calling):
    import flowcore as fc

    result, times, objective = calling["result"], calling["times"], calling["objective"]
    assert [term.count for term in result.terms.values()] == list(objective.split(9)) == [5, 4]
    psd = result.terms["psd"]
    assert psd.per_sample.shape == (4,) and torch.equal(psd.mean, psd.per_sample.mean())
    assert set(psd.times) == {fc.s, fc.t, calling["gamma"], fc.u}  # keyed by the sympy symbols
    for symbol, value in times["psd"].items():
        assert torch.equal(psd.times[symbol], value)
    assert torch.equal(result.terms["diagonal"].times[fc.t], times["diagonal"]["t"])  # given by name
    # The two reductions, as defined next to the example.
    assert torch.allclose(result.loss, sum(term.per_sample.sum() for term in result.terms.values()) / 9)
    term_mean = fc.evaluate(objective, calling["net"], calling["x1"], calling["x0"], times=times,
                            teacher=calling["teacher"], reduction="term_mean")
    assert torch.allclose(term_mean.loss, sum(term.per_sample.mean() for term in result.terms.values()))


def test_derived_times_must_be_given_too(calling):
    import flowcore as fc

    times = {"psd": {k: v for k, v in calling["times"]["psd"].items() if k != fc.u}}
    with pytest.raises(ValueError, match="term 'psd': no times given for u"):
        fc.evaluate(calling["objective"], calling["net"], calling["x1"], times=times, teacher=calling["teacher"])


def test_the_network_and_the_teacher_receive_the_documented_shapes(calling):
    import flowcore as fc

    seen = []
    record = lambda module, args: seen.append((module, *(tuple(a.shape) for a in args)))  # noqa: E731
    hooks = [calling["net"].register_forward_pre_hook(record), calling["teacher"].register_forward_pre_hook(record)]
    try:
        args = (calling["net"], calling["x1"], calling["x0"])
        fc.evaluate(calling["objective"], *args, times=calling["times"], teacher=calling["teacher"])
        calling["compiled"](*args, times=calling["times"], teacher=calling["teacher"])
    finally:
        for hook in hooks:
            hook.remove()
    assert {module for module, *_ in seen} == {calling["net"], calling["teacher"]}
    for module, *shapes in seen:
        rows = shapes[-1][0]
        want = [(rows,), (rows,), (rows, 3, 8, 8)] if module is calling["net"] else [(rows,), (rows, 3, 8, 8)]
        assert shapes == want


def test_fixed_weight_of_the_times_and_uniform_on_a_param(calling):
    import flowcore as fc

    objective, net, teacher = calling["objective"], calling["net"], calling["teacher"]
    unweighted = objective.with_options(terms=(fc.Term("psd", calling["semigroup"], objective.terms[1].sampler, 1.0),))
    times, psd = calling["times"]["psd"], calling["result"].terms["psd"]
    plain = fc.evaluate(unweighted, net, calling["x1"][5:], calling["x0"][5:], times={"psd": times}, teacher=teacher)
    weight = 1 / (1 + times[fc.t] - times[fc.s])
    # float32: λ is computed in a different op order than here, a few roundings (eps 1.2e-7) apart.
    assert torch.allclose(psd.per_sample, weight * plain.terms["psd"].per_sample, rtol=1e-6)

    drawn = fc.evaluate(objective, net, calling["x1"], generator=torch.Generator().manual_seed(0), teacher=teacher)
    d = drawn.terms["psd"].times
    assert ((d[calling["gamma"]] >= 0.25) & (d[calling["gamma"]] <= 0.75)).all()
    assert torch.allclose(d[fc.u], d[fc.s] + d[calling["gamma"]] * (d[fc.t] - d[fc.s]))


def test_psd_gamma_fixed_by_hand_is_the_fraction_from_s_to_t():
    """README: ``between(u, s, t, gamma, fixed=0.25)`` is u = s + 0.25(t − s) (the paper's γ = 0.75)."""
    import flowcore as fc

    gamma = fc.param("gamma")
    drawn = (fc.UpperTriangle(fc.s, fc.t) & fc.between(fc.u, fc.s, fc.t, gamma, fixed=0.25)).sample(
        64, torch.Generator().manual_seed(1))
    s, t, u = drawn[fc.s], drawn[fc.t], drawn[fc.u]
    assert torch.allclose(u, s + 0.25 * (t - s), rtol=0, atol=1e-15)  # float64 draws, one rounding


def test_the_show_example_is_what_flowcore_show_prints():
    """The README's ``$ flowcore show lsd`` block, against the declaration it prints (``cmd_show``
    prints ``str(objective)``), citation line included."""
    import flowcore as fc

    match = re.search(r"\n```\n\$ flowcore show lsd\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md has no ``` block starting with `$ flowcore show lsd`"
    assert match.group(1).rstrip("\n") == str(fc.objective("lsd"))


def test_quickstart_commands_are_two_and_ci_reads_the_second():
    text = README.read_text()
    run = _block("quickstart-run", "bash").strip().splitlines()
    test = _block("quickstart-test", "bash").strip().splitlines()
    assert len(run) == 1 and run[0].endswith("flowcore train")  # the quick checkerboard run
    assert len(test) == 1 and "pytest" in test[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "quickstart-test" in ci and "quickstart-test" in text


def _training_commands() -> list[str]:
    match = re.search(r"\n## Training\n\n```bash\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, "README.md has no ```bash block right after '## Training'"
    return [line for line in match.group(1).splitlines() if line.strip()]


# "# ... about 2 min", "40 s", "3 days", "a GPU job": what each command costs, in its comment
DURATION = re.compile(r"#.*(\d+(?:[.,]\d+)?\s*(?:s|seconds?|min|minutes?|h|hours?|days?)\b|a GPU job)")


def test_training_leads_with_a_run_of_minutes_and_says_how_long_each_command_takes():
    """Issue 15: the section's first command used to start a 150,000-step run (days on a CPU) with
    nothing saying so."""
    from flowcore.train import load_config

    commands = _training_commands()
    for line in commands:
        assert DURATION.search(line), f"README 'Training': no duration in the comment of {line!r}"
    first = commands[0].split("#")[0].split()
    assert first[:2] == ["flowcore", "train"] and first[2].endswith(".toml"), commands[0]
    sets = [first[i + 1] for i, word in enumerate(first) if word == "--set"]
    assert load_config(README.parent / first[2], sets).steps <= 10_000, commands[0]
    assert re.search(r"#.*\b\d+\s*min", commands[0]), commands[0]


def test_the_resume_example_continues_a_run_shown_above_it():
    """Plain ``flowcore train --resume DIR`` reads the run's saved config (its --set included), so
    the example names only the run directory, one that a command above it trains into."""
    commands = _training_commands()
    index, resume = next((i, line) for i, line in enumerate(commands) if "--resume" in line)
    match = re.match(r"flowcore train --resume (\S+)\s+#", resume)
    assert match, resume
    assert any(f"--out {match.group(1)}" in line for line in commands[:index] if line.startswith("flowcore train ")), \
        commands[:index]


def test_the_small_config_and_the_build_notice_are_in_the_readme():
    text = README.read_text()
    assert "configs/checkerboard-small.toml" in text
    # what flowcore.native.extension prints when it builds (tests/test_build_process.py checks the line)
    assert "building flowcore's C++ extension once for this torch/Python (about a minute)…" in text


def test_the_grid_example_names_the_array_and_picture_sample_writes(tmp_path):
    """``sample --grid`` writes its array and picture named by the grid (issue 15: they were
    ``k3``, like a uniform k): the README says so for its example's grid, and the command does it."""
    import numpy as np

    from flowcore.cli import main
    from flowcore.train import Trainer, load_config

    line = next(line for line in _training_commands() if line.startswith("flowcore sample") and "--grid" in line)
    grid = re.search(r"--grid (\S+)", line).group(1)
    name = "grid-" + "-".join(f"{float(t):g}" for t in grid.split(","))
    text = " ".join(README.read_text().split())  # the prose's line breaks as spaces
    assert f"`{name}` in `samples.npz`" in text and f"`samples_{name}.png`" in text, name

    run = tmp_path / "run"
    Trainer(load_config(None, ["steps=1", "network.width=16", "network.depth=2", "data.batch=64", "eval.samples=256",
                               "eval.steps=1", "log.tensorboard=false", "log.figures=false", "log.progress=off",
                               "checkpoint.every=0", "backend=torch", f"out={run}"])).train()
    assert main(["sample", str(run), "--grid", grid, "--n", "64", "--out", str(tmp_path / "grid")]) == 0
    assert np.load(tmp_path / "grid" / "samples.npz").files == [name]
    assert (tmp_path / "grid" / f"samples_{name}.png").is_file()
