"""One batch drawer: the reference interpreter, the compiled objective, the trainer's batch stream
and the benchmark's steps draw (x0, z, times) with flowcore.terms's steps, in one order, so one
seed gives one stream everywhere."""
import pytest
import torch

import flowcore as fc
from flowcore.bench.steps import draw_inputs
from flowcore.data import make_source
from flowcore.lang.interpolants import TAU, custom
from flowcore.terms import draw_noise_and_times
from flowcore.train.batch_stream import BatchStream


def _objective():
    # γ ≠ 0: the interpolant is stochastic, so z is drawn too; PSD-U's second term draws s, t and γ
    stochastic = custom(1 - TAU, TAU, TAU * (1 - TAU), name="stochastic")
    return fc.objective("psd_u").with_options(sigma=0.5, interpolant=stochastic)


def _gen(seed=3):
    return torch.Generator().manual_seed(seed)


def _assert_same_times(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert {s.name for s in x} == {s.name for s in y}
        by_name = {s.name: v for s, v in y.items()}
        assert all(torch.equal(v, by_name[s.name]) for s, v in x.items())


def test_the_order_of_the_draws():
    objective = _objective()
    x1 = torch.randn(40, 3, generator=_gen(0))
    drawn = draw_noise_and_times(objective, x1, _gen())
    generator = _gen()
    x0 = 0.5 * torch.randn(40, 3, generator=generator)
    z = torch.randn(40, 3, generator=generator)
    times = [term.sampler.sample(count, generator, x1.dtype, x1.device)
             for term, count in zip(objective.terms, objective.split(40))]
    assert torch.equal(drawn.x0, x0) and torch.equal(drawn.z, z)
    _assert_same_times(drawn.times, times)
    assert [len(next(iter(t.values()))) for t in drawn.times] == list(objective.split(40))


def test_reference_compiled_stream_and_bench_draw_alike():
    objective = _objective()
    net = fc.nn.FlowMapMLP(2, 8, 2, sigma=0.5)
    source = make_source("checkerboard", 48, seed=0)
    batch = BatchStream(objective, source, _gen(), torch.device("cpu")).next()
    x1 = batch.x1
    drawn = draw_noise_and_times(objective, x1, _gen())
    assert torch.equal(batch.x0, drawn.x0) and torch.equal(batch.z, drawn.z)
    _assert_same_times(batch.times, drawn.times)
    x0, z, named = draw_inputs(objective, 48, _gen(), x1)
    assert torch.equal(x0, drawn.x0) and torch.equal(z, drawn.z)
    for term, times in zip(objective.terms, drawn.times):
        assert all(torch.equal(named[term.name][s.name], v) for s, v in times.items())
    for result in (fc.evaluate(objective, net, x1, generator=_gen()),
                   fc.compile(objective)(net, x1, generator=_gen())):
        _assert_same_times([result.terms[term.name].times for term in objective.terms], drawn.times)
    with torch.no_grad():
        given = fc.evaluate(objective, net, x1, drawn.x0, z=drawn.z, times=named).loss
        sampled = fc.evaluate(objective, net, x1, generator=_gen()).loss
    assert torch.equal(given, sampled)  # the same draws give the same loss, to the bit


def test_given_inputs_are_kept_and_checked():
    objective = _objective()
    x1 = torch.randn(8, 2)
    x0, z = torch.zeros(8, 2), torch.ones(8, 2)
    drawn = draw_noise_and_times(objective, x1, _gen(), x0=x0, z=z)
    assert drawn.x0 is x0 and drawn.z is z
    with pytest.raises(ValueError, match=r"x0 has shape \(8, 3\) but x1 has \(8, 2\)"):
        draw_noise_and_times(objective, x1, _gen(), x0=torch.zeros(8, 3))
    with pytest.raises(ValueError, match="batch = 9 but the data holds 8 rows"):
        draw_inputs(objective, 9, _gen(), x1)
