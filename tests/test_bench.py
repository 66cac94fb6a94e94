"""`flowcore bench`: the quick mode end to end, the GEMM FLOP count, the CLI and its errors. No timing is asserted."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flowcore
from flowcore.bench import NETS, QUICK_NETS, BenchConfig, NetSpec, count_flops, step_gemms, stream_units
from flowcore.bench.config import VARIANTS, load_objective
from flowcore.bench.flops import Gemm
from flowcore.bench.handwritten import handwritten_for, handwritten_loss
from flowcore.bench.measure import GemmStep, gemm_operands
from flowcore.bench.row import bench_row
from flowcore.bench.steps import Builds, TrainingStep, draw_inputs
from flowcore.cli import build_parser, main
from flowcore.nn import FlowMapMLP, registry
from flowcore.nn.mlp import layer_shapes as mlp_layers
from flowcore.nn.registry import gemm_layers, register_network
from flowcore.testing.nets import SmoothVelocity

VARIANT_KEYS = {"median_ms", "min_ms", "max_ms", "samples_ms", "first_step_ms", "first_loss", "last_loss",
                "peak_memory_bytes", "efficiency", "breakdown"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One `flowcore bench --quick --json` run, shared by the tests that read it."""
    path = tmp_path_factory.mktemp("bench") / "quick.json"
    code = main(["bench", "--quick", "--json", str(path)])
    return code, json.loads(path.read_text())


def test_quick_mode_runs_and_writes_every_row(quick):
    code, result = quick
    assert code == 0
    assert result["schema"] == "flowcore-bench/1"
    assert {"date", "platform", "cpu_model", "torch", "threads", "device_name", "cuda_available"} <= set(result["machine"])
    config = result["config"]
    assert config["quick"] and config["batches"] == [64] and config["repeats"] == 1 and not config["torch_compile"]
    rows = result["rows"]
    expected = {(o, n) for o in ("fm", "lsd", "esd", "psd_m", "meanflow") for n in ("mlp-2x32", "mlp-1x16")}
    assert {(r["objective"], r["net"]) for r in rows} == expected and len(rows) == len(expected)
    for row in rows:
        assert "error" not in row, row
        assert row["batch"] == 64 and row["device"] == "cpu" and row["width"] <= 32  # tiny nets
        assert row["gemm_flops"] > 0 and row["bound_ms"] > 0
        assert set(row["variants"]) == set(VARIANTS)
        assert row["variants"]["torch_compile"].get("skipped") and row["variants"]["handwritten_compile"].get("skipped")
        handwritten = row["objective"] in ("fm", "lsd", "psd_m")  # the transcribed ones (flowcore.bench.handwritten)
        if not handwritten:
            assert "no hand-written step" in row["variants"]["handwritten"]["skipped"]
        for variant in ("flowcore", "flowcore_torch", "reference") + (("handwritten",) if handwritten else ()):
            measured = row["variants"][variant]
            assert "error" not in measured, measured
            assert VARIANT_KEYS <= set(measured), set(measured)
            assert len(measured["samples_ms"]) == 1
            assert set(measured["breakdown"]) == {"wall_ms", "gemm_ms", "fused_ms", "other_ms", "overhead_ms"}
        assert row["variants"]["flowcore"]["backend"] in ("cpu", "torch")
        assert row["first_loss_rel_diff"] < 1e-4  # same weights, same draws: same first loss
        assert max(row["first_loss_rel_diffs"].values()) < 1e-4
        assert {"reference/flowcore", "torch_compile/flowcore", "objective/fm", "objective/fm flops"} <= set(row["ratios"])
        assert row["ratios"]["torch_compile/flowcore"] is None
        assert row["fm_flowcore_ms"] > 0 and row["ratios"]["objective/fm"] > 0  # fm timed within every row
        assert row["ratios"]["objective/fm flops"] == row["gemm_flops"] / row["fm_gemm_flops"]
    fm = [r for r in rows if r["objective"] == "fm"]
    assert all(r["ratios"]["objective/fm"] == 1.0 for r in fm)
    backends = {entry["backend"] for entry in result["compile"]}
    assert backends == {"cpu", "torch"}
    for entry in result["compile"]:
        assert "error" not in entry, entry
        assert entry["cold"]["cache_hit"] is False and entry["cold"]["compile_s"] > 0
        assert entry["warm"]["compile_s"] > 0
    assert next(e for e in result["compile"] if e["backend"] == "cpu")["warm"]["cache_hit"] is True


def test_quick_mode_tables_render_from_the_json(quick):
    from flowcore.bench import render

    text = render(quick[1])
    for heading in ("flowcore ms", "reference ms", "bound ms", "eff fc", "peak MiB fc", "overhead",
                    "cold compile s"):
        assert heading in text


def test_quick_nets_are_named_by_their_size_not_as_the_nets_they_stand_in_for():
    """--quick runs tiny MLPs where --net says paper / small: their rows must not claim those names."""
    from flowcore.bench.report import times_table

    config = BenchConfig(quick=True).resolved()
    for key, size in (("paper", "2x32"), ("small", "1x16")):
        spec = config.net(key)
        assert spec.name == f"mlp-{size}" and spec.label == size
        table = times_table([_report_row(net=spec.name, label=spec.label)])
        assert f"mlp-{size}" in table and "paper" not in table and "small" not in table
        assert f"mlp-{size} {size}" not in table  # the size said once
    assert times_table([_report_row(net="paper", label="5x512")]).count("paper 5x512") == 1  # full size: as before


def _report_row(efficiency=0.9, net="paper", label="5x512"):
    """A row as flowcore.bench.row writes it, with only what the tables read."""
    return {"objective": "fm", "net": net, "label": label, "depth": 5, "width": 512, "batch": 64, "device": "cpu",
            "gemm_flops": 1e9, "bound_ms": 1.0, "ratios": {}, "notes": [],
            "variants": {"flowcore": {"median_ms": 1.1, "efficiency": efficiency},
                         "reference": {"median_ms": 2.0, "efficiency": 0.5}}}


def _report(rows, threads=4, cores=2):
    machine = {"flowcore": "0.1.0", "date": "today", "torch": "2", "threads": threads, "cpu_model": "cpu",
               "cpu_count": cores}
    return {"machine": machine, "config": {"repeats": 1, "warmup": 1}, "rows": rows, "compile": [], "notes": []}


def test_an_efficiency_above_100_percent_is_printed_as_unreliable():
    from flowcore.bench import render

    text = render(_report([_report_row(efficiency=32.94)]))
    assert "3294%" not in text and "—*" in text
    footnote = [line for line in text.splitlines() if line.startswith("*")]
    assert len(footnote) == 1 and "unreliable" in footnote[0] and "bound" in footnote[0]
    assert "50%" in text  # the plausible efficiency of the same row is still printed
    plain = render(_report([_report_row(efficiency=0.9)]))
    assert "90%" in plain and "—*" not in plain and "unreliable" not in plain


def _attention_report(efficiency: float) -> dict:
    """A ``--op attention_jvp`` result with one case, only what render_attention reads."""
    def timed(ms):
        return {"median_ms": ms}

    def variant(eff):
        return {"fwd": {**timed(1.0), "efficiency": eff}, "bwd": {**timed(2.0), "efficiency": 0.5},
                "saved_bytes": 1024, "peak_memory_bytes": 2048}

    case = {"batch": 2, "heads": 2, "tokens": 1, "head_dim": 8, "device": "cpu", "ratios": {}, "notes": [],
            "variants": {"flowcore": variant(efficiency), "reference": variant(0.25)},
            "bound": {"fwd": timed(0.5), "bwd": timed(1.0), "matmul_gflops": 10.0},
            "gemms_alone": {"fwd": timed(0.7), "bwd": timed(1.4)}, "rel_diff": 1e-7}
    machine = {"flowcore": "0.1.0", "date": "today", "torch": "2", "threads": 1, "cpu_model": "cpu", "cpu_count": 1}
    return {"machine": machine, "config": {"repeats": 1, "warmup": 1}, "cases": [case], "notes": []}


def test_the_attention_table_prints_an_efficiency_above_100_percent_as_unreliable():
    from flowcore.bench.attention import render_attention

    text = render_attention(_attention_report(efficiency=32.94))
    assert "3294%" not in text and "—*" in text
    footnote = [line for line in text.splitlines() if line.startswith("*")]
    assert len(footnote) == 1 and "unreliable" in footnote[0] and "bound" in footnote[0]
    assert "25%" in text and "50%" in text  # the plausible efficiencies are still printed
    assert "1 thread," in text and "(1 core)" in text
    plain = render_attention(_attention_report(efficiency=0.9))
    assert "90%" in plain and "—*" not in plain and "unreliable" not in plain


def test_the_busy_machine_note_is_readable():
    from flowcore.bench.suite import busy_note

    assert busy_note([1.68701171875, 1.421875, 1.419921875], 2) == \
        "the machine was busy (load average 1.69, 1.42, 1.42 on 2 cores): timings are noisy"
    assert busy_note([0.9, 0.5, 0.1], 1).endswith("on 1 core): timings are noisy")
    assert busy_note([0.2, 0.2, 0.2], 2) is None and busy_note(None, 2) is None


def test_the_machine_line_counts_one_thread_and_one_core():
    from flowcore.bench import render

    line = render(_report([_report_row()], threads=1, cores=1)).splitlines()[0]
    assert "1 thread," in line and "(1 core)" in line and "threads" not in line and "cores" not in line


# ------------------------------------------------------------------------------------------------
# FLOP counting


def test_flops_of_a_tiny_net_match_a_hand_count():
    # FlowMapMLP(2, width 4, depth 2): layers 4→4, 4→4, 4→2: 2·(16 + 16 + 8) = 80 FLOPs per row forward.
    layers = mlp_layers(2, 4, 2)
    assert layers == [(4, 4), (4, 4), (4, 2)] == gemm_layers("mlp", FlowMapMLP(2, 4, 2))
    # FM, batch 8: forward 8·80; weight grads 8·80; input grads of layers 2 and 3 only: 2·8·(16 + 8).
    assert count_flops(flowcore.objective("fm"), 8, layers) == 640 + 640 + 384 == 1664
    # LSD, batch 8 → 6 on the diagonal (as FM: 6·80 + 6·80 + 2·6·24 = 1248) and 2 off it:
    #   the JVP call, primal + tangent stacked on 4 rows: forward 4·80, weight grads 4·80, input grads 2·4·24;
    #   the sg'd teacher V(t, t, sg(X)): forward only, 2·80.
    assert count_flops(flowcore.objective("lsd"), 8, layers) == 1248 + (320 + 320 + 192) + 160 == 2240
    gemms = step_gemms(flowcore.objective("lsd"), 8, layers)
    jvp = [g for g in gemms if g.call == "net1"]
    assert {(g.kind, g.m) for g in jvp if g.layer == 1} == {("fwd", 4), ("dgrad", 4), ("wgrad", 4)}
    assert all(g.kind == "fwd" for g in gemms if g.call == "net2")


@pytest.mark.parametrize("kind, m, k, n, transposed", [
    ("fwd", 96, 4, 32, False), ("dgrad", 96, 32, 4, False), ("wgrad", 32, 96, 32, False),
    ("wgrad", 2, 96, 32, False),  # the last layer: fewer outputs than inputs
    ("wgrad", 32, 96, 4, True),   # the first layer: few inputs, computed as (hᵀ·g)ᵀ like csrc/mlp_net.cpp
])
def test_the_bound_multiplies_each_gemm_in_its_faster_orientation(kind, m, k, n, transposed):
    a, b = gemm_operands(kind, m, k, n, "cpu", torch.float64)
    assert (a @ b).shape == ((n, m) if transposed else (m, n))
    assert a.shape[1] == b.shape[0] == k  # the same m·n·k multiply-adds either way
    step = GemmStep([Gemm(kind, m, k, n, "net0", 0)], torch.device("cpu"), torch.float64)
    step()
    assert step.flops == 2 * m * k * n


def test_stream_units_follow_the_cost_model():
    # docs/math.md §6: FM 3 units per sample, LSD off-diagonal 7; η = 0.75 → LSD ≈ 4/3 FM.
    assert stream_units(flowcore.objective("fm"), 1024) == {"fm": 3.0, "mean": 3.0}
    lsd = stream_units(flowcore.objective("lsd"), 1024)
    assert lsd["lsd"] == 7.0 and lsd["mean"] == pytest.approx(4.0)
    assert stream_units(flowcore.objective("esd"), 1024)["esd"] == 8.0  # both tangents share one primal pass
    assert stream_units(flowcore.objective("psd_m"), 1024)["psd_m"] == 5.0
    assert stream_units(flowcore.objective("meanflow"), 1024)["meanflow"] == 4.0  # the sg'd tangent has no backward
    wide = mlp_layers(2, 512, 5)
    ratio = count_flops(flowcore.objective("lsd"), 4096, wide) / count_flops(flowcore.objective("fm"), 4096, wide)
    assert ratio == pytest.approx(4 / 3, rel=1e-3)


def test_a_frozen_teacher_has_no_backward_unless_its_input_is_live():
    layers = mlp_layers(2, 8, 2)
    gemms = step_gemms(flowcore.objective("lmd", eta=0.0), 16, layers, layers)
    teacher = [g for g in gemms if g.call.startswith("teacher")]
    assert teacher and not any(g.kind == "wgrad" for g in teacher)
    assert not any(g.kind == "dgrad" for g in teacher)  # LMD's teacher input is sg(X̂): no gradient
    diagonal = step_gemms(flowcore.objective("emd"), 16, layers, layers)
    assert all(g.kind == "fwd" for g in diagonal if g.call.startswith("teacher"))


def test_bench_nets_are_network_kinds_built_and_counted_by_their_registration(monkeypatch):
    assert {spec.kind for spec in [*NETS.values(), *QUICK_NETS.values()]} == {"mlp", "unet"}
    net = NETS["small"].build((2,), 1.0)
    assert isinstance(net, FlowMapMLP) and gemm_layers("mlp", net) == mlp_layers(2, 256, 4)
    # A kind registered from outside: the bench builds it through the registry and counts its GEMMs with
    # the counter registered beside it (SmoothVelocity: (s, t, x) → width → width → x).
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    register_network("smooth", lambda config, shape, sigma: SmoothVelocity(shape, config.width, dtype=torch.float32),
                     gemm_layers=lambda net: [(m.in_features, m.out_features) for m in net.children()])
    spec = NetSpec("smooth", "smooth", 1, 8)
    config = BenchConfig(objectives=["fm"], nets=["small"], batches=[16], quick=True, profile=False).resolved()
    row = bench_row("fm", spec, 16, "cpu", config, Builds(), variants=("reference",))
    assert row["gemm_flops"] == count_flops(flowcore.objective("fm"), 16, [(4, 8), (8, 8), (8, 2)])
    assert not row["native_jvp"] and row["variants"]["reference"]["median_ms"] > 0
    monkeypatch.setitem(NETS, "odd", NetSpec("odd", "no_such_kind", 1, 8))
    with pytest.raises(ValueError, match=r"unknown network kind 'no_such_kind'; registered kinds: mlp, unet, smooth"):
        BenchConfig(nets=["odd"], devices=["cpu"]).resolved()


# ------------------------------------------------------------------------------------------------
# The digits UNet (--net unet-digits) and the hand-written variants


def test_a_tiny_unet_row_runs_every_eager_variant_on_digits():
    """`unet-digits` is a named net spec like the MLPs: kind "unet" from the registry, the digits data.
    --quick's tiny UNet, batch 8, one round; the fields, not the times, are checked."""
    config = BenchConfig(objectives=["lsd"], nets=["unet-digits"], batches=[8], quick=True, repeats=1, warmup=0,
                         profile=False).resolved()
    spec = config.net("unet-digits")
    row = bench_row("lsd", spec, 8, "cpu", config, Builds())
    assert "error" not in row, row.get("traceback")
    assert (row["kind"], row["data"], row["sample_shape"], row["batch"]) == ("unet", "digits", [1, 8, 8], 8)
    assert row["label"] == spec.label and 0 < row["parameters"] < 1e5  # the tiny UNet, not the 1.0M preset
    assert row["gemm_flops"] > 0 and row["bound_ms"] > 0 and row["native_jvp"]  # FlowMapUNet.jvp (issue 14)
    for variant in ("flowcore", "flowcore_torch", "reference", "handwritten"):
        measured = row["variants"][variant]
        assert "error" not in measured, measured.get("traceback")
        assert {"median_ms", "first_loss", "last_loss", "peak_memory_bytes", "efficiency"} <= set(measured)
    assert row["variants"]["flowcore_torch"]["backend"] == "torch"
    assert row["variants"]["torch_compile"]["skipped"] == "torch.compile not requested"
    assert max(row["first_loss_rel_diffs"].values()) < 1e-5  # float32, same weights and draws
    assert {"reference/flowcore_torch", "handwritten/flowcore", "handwritten_compile/flowcore"} <= set(row["ratios"])


def _fake_cifar10(folder: Path, per_batch: int = 3) -> Path:
    """CIFAR-10's python folder in miniature: the five training batches and the test batch, each a
    pickle of {b"data": uint8 (n, 3072), b"labels": [n ints]} (protocol 4: bytes as bytes; the official
    files are protocol-2 Python 2 pickles, which test_image_data covers)."""
    import pickle

    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), b"labels": [0] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    return folder


def test_the_cifar_unet_row_trains_on_stand_in_images_or_the_files_given(tmp_path):
    """`unet-cifar` is the cifar10 preset (quick: a tiny UNet of the same 32×32×3 shape, dropout 0.13 as
    the preset). Without --data-path random images of CIFAR-10's shape stand in, and the row says so;
    with it, the CIFAR-10 files are read."""
    assert NETS["unet-cifar"].options == (("preset", "cifar10"),) and NETS["unet-cifar"].batches == (32,)
    config = BenchConfig(objectives=["fm"], nets=["unet-cifar"], quick=True, repeats=1, warmup=0,
                         profile=False).resolved()
    row = bench_row("meanflow", config.net("unet-cifar"), 4, "cpu", config, Builds(),
                    variants=("flowcore", "reference"))
    assert "error" not in row, row.get("traceback")
    assert (row["kind"], row["sample_shape"], row["native_jvp"]) == ("unet", [3, 32, 32], True)
    assert row["data"].startswith("random 3x32x32") and any("no cifar10 path" in n for n in row["notes"])
    for variant in ("flowcore", "reference"):
        assert {"median_ms", "peak_memory_bytes", "efficiency"} <= set(row["variants"][variant])
    assert row["gemm_flops"] > 0 and row["bound_ms"] > 0
    assert row["first_loss_rel_diff"] < 1e-5  # float32, same weights and draws

    folder = _fake_cifar10(tmp_path / "cifar-10-batches-py")
    files = BenchConfig(objectives=["fm"], nets=["unet-cifar"], quick=True, repeats=1, warmup=0, profile=False,
                        data_path=str(folder)).resolved()
    row = bench_row("fm", files.net("unet-cifar"), 4, "cpu", files, Builds(), variants=("flowcore",))
    assert "error" not in row, row.get("traceback")
    assert row["data"] == "cifar10" and not row["notes"] and row["variants"]["flowcore"]["median_ms"] > 0


def _unet_with_gains(seed: int = 0):
    """A tiny float64 UNet whose scalar gains are non-zero (at initialisation v̂ = 0, which would make
    every transcription of a loss agree trivially)."""
    from flowcore.nn import FlowMapUNet

    torch.manual_seed(seed)
    net = FlowMapUNet(resolution=8, in_channels=1, model_channels=8, channel_mult=(1, 2), num_blocks=1,
                      attn_resolutions=(4,), channels_per_head=8).double()
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 0:
                p.fill_(0.7)
    return net


@pytest.mark.parametrize("name", ["fm", "lsd", "psd_m"])
def test_the_handwritten_losses_equal_the_reference(name):
    """The hand-written step times the same loss as the others: in float64 on a UNet, its loss and
    every parameter gradient equal the reference interpreter's (same draws), to FLOAT64_RTOL
    (flowcore.testing: the same function in a different op order)."""
    from flowcore.testing import FLOAT64_RTOL, relative_error

    objective = load_objective(name, 0.5)
    terms, why = handwritten_for(name, objective)
    assert why is None
    net = _unet_with_gains()
    x1 = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    x0, z, times = draw_inputs(objective, 6, torch.Generator().manual_seed(2), x1)
    hand = handwritten_loss(objective, terms)(net, None, None)(x1, x0, z, times)
    reference = flowcore.evaluate(objective, net, x1, x0, z=z, times=times).loss
    assert relative_error(hand, reference) <= FLOAT64_RTOL
    params = list(net.parameters())
    for got, want in zip(torch.autograd.grad(hand, params), torch.autograd.grad(reference, params)):
        assert relative_error(got, want) <= FLOAT64_RTOL


def test_an_objective_without_a_transcription_says_why():
    assert "no hand-written step for esd" in handwritten_for("esd", load_objective("esd"))[1]
    trig = load_objective("lsd").with_options(interpolant=flowcore.trig())
    assert "linear interpolant" in handwritten_for("lsd", trig)[1]
    assert handwritten_for("lsd:eta=0.5", load_objective("lsd:eta=0.5"))[1] is None  # the split follows eta


# ------------------------------------------------------------------------------------------------
# Paths the quick run does not take: torch.compile, its failure, the torch-backend fallback


def _tiny_row(objective="fm", **options):
    config = BenchConfig(objectives=[objective], nets=["small"], batches=[16], quick=True, repeats=1, warmup=1,
                         profile=False, **options).resolved()
    return bench_row(objective, config.net("small"), 16, "cpu", config, Builds())


def test_torch_compile_variant_runs_with_a_fast_backend():
    row = _tiny_row(torch_compile=True, torch_compile_backend="aot_eager")
    measured = row["variants"]["torch_compile"]
    assert "error" not in measured, measured.get("traceback")
    assert measured["median_ms"] > 0 and measured["compile_s"] >= 0 and measured["backend"] == "aot_eager"
    assert row["ratios"]["torch_compile/flowcore"] is not None
    assert abs(measured["first_loss"] - row["variants"]["reference"]["first_loss"]) < 1e-4


STOCHASTIC = """
import sympy
from flowcore import Dt, I, Objective, Term, UpperTriangle, V, Var, X, s, sg, sqnorm, t
from flowcore.lang.interpolants import TAU, custom

x = Var("x")
objective = Objective("stochastic_lsd", [Term(
    "lsd", sqnorm(Dt(X(s, t, x)) - sg(V(t, t, sg(X(s, t, x))))).bind(x=I(s)), UpperTriangle(s, t), 1.0)],
    interpolant=custom(1 - TAU, TAU, gamma=sympy.sqrt(2 * TAU * (1 - TAU))))
"""


def test_every_variant_sees_the_same_draws_of_a_stochastic_interpolant(tmp_path):
    """z is drawn with x0 and the times, outside the variants (it used to come from each variant's own
    draw, so their first losses differed by ~5e-4)."""
    path = tmp_path / "stochastic_lsd.py"
    path.write_text(STOCHASTIC)
    row = _tiny_row(str(path))
    # the same float32 loss by two evaluation orders: agreement to float32 rounding of O(10) terms
    assert row["first_loss_rel_diff"] < 1e-5, row["first_loss_rel_diff"]


def test_a_failing_torch_compile_is_recorded_and_the_row_goes_on():
    row = _tiny_row(torch_compile=True, torch_compile_backend="no_such_backend")
    assert "no_such_backend" in row["variants"]["torch_compile"]["error"]
    assert "no_such_backend" in row["variants"]["handwritten_compile"]["error"]
    assert row["variants"]["flowcore"]["median_ms"] > 0 and row["variants"]["reference"]["median_ms"] > 0
    assert row["ratios"]["torch_compile/flowcore"] is None


def test_back_to_back_steps_run_each_variant_that_many_times_a_round(monkeypatch):
    calls = {}
    real = TrainingStep.__call__

    def counting(self):
        calls[id(self)] = calls.get(id(self), 0) + 1
        return real(self)

    monkeypatch.setattr(TrainingStep, "__call__", counting)
    row = _tiny_row("fm", back_to_back=3, torch_compile=False)
    assert row["variants"]["flowcore"]["median_ms"] > 0
    # per variant (flowcore, flowcore_torch, reference, handwritten): its first step, warmup − 1 = 0
    # untimed rounds, 1 round of 3 calls, 1 for the peak memory
    assert sorted(calls.values()) == [1 + 3 + 1] * 4, calls


def test_an_unbuildable_backend_falls_back_to_torch_with_a_note(monkeypatch):
    real = flowcore.compile

    def broken(objective, backend="torch", **kw):
        if backend != "torch":
            raise RuntimeError("no compiler here")
        return real(objective, backend=backend, **kw)

    monkeypatch.setattr(flowcore, "compile", broken)
    config = BenchConfig(objectives=["fm"], nets=["small"], batches=[16], quick=True, profile=False).resolved()
    row = bench_row("fm", config.net("small"), 16, "cpu", config, Builds(), variants=("flowcore",))
    assert row["variants"]["flowcore"]["backend"] == "torch"
    assert any("fell back to the torch backend" in note and "no compiler here" in note for note in row["notes"])


# ------------------------------------------------------------------------------------------------
# flowcore bench --op attention_jvp


def test_the_attention_op_rows_run_in_quick_mode_and_produce_their_fields(tmp_path):
    path = tmp_path / "op.json"
    assert main(["bench", "--op", "attention_jvp", "--quick", "--json", str(path), "--tokens", "1", "33"]) == 0
    result = json.loads(path.read_text())
    assert result["op"] == "attention_jvp" and result["machine"]["torch"] == torch.__version__
    assert [c["tokens"] for c in result["cases"]] == [1, 33]
    for case in result["cases"]:
        assert (case["batch"], case["heads"], case["head_dim"], case["device"]) == (2, 2, 8, "cpu")
        for name in ("flowcore", "reference"):
            measured = case["variants"][name]
            assert "error" not in measured, measured
            for phase in ("fwd", "bwd"):
                assert measured[phase]["median_ms"] > 0 and len(measured[phase]["samples_ms"]) == 1
                assert measured[phase]["efficiency"] > 0
            assert measured["saved_bytes"] > 0 and measured["peak_memory_bytes"] > 0
        assert set(case["ratios"]) == {"reference/flowcore fwd", "reference/flowcore bwd"}
        assert case["bound"]["units"] == {"fwd": 6, "bwd": 12} and case["bound"]["fwd"]["median_ms"] > 0
        assert case["bound"]["matmul_gflops"] > 0 and case["gemms_alone"]["bwd"]["median_ms"] > 0
        # the bound is the FLOPs at one measured rate: backward's 12 units take twice forward's 6
        assert case["bound"]["bwd"]["median_ms"] == pytest.approx(2 * case["bound"]["fwd"]["median_ms"])
        assert isinstance(case["fused_kernels"], bool)
        # o, ȯ and the six gradients agree with torch.func.jvp's: float32, sums of ≤ 33 terms of size O(1)
        assert case["rel_diff"] < 1e-4
    from flowcore.bench.attention import render_attention

    text = render_attention(result)
    for heading in ("ref/fc fwd", "ref/fc bwd", "bound bwd ms", "bmm fwd ms", "saved MiB fc", "peak MiB ref",
                    "GFLOP/s", "max rel diff"):
        assert heading in text


def test_saved_bytes_count_what_autograd_keeps_beyond_the_inputs():
    from flowcore.bench.attention import saved_bytes

    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert saved_bytes(lambda x: x * x, [x]) == 0                # saves x twice: an input, not counted
    assert saved_bytes(lambda x: x.exp(), [x]) == 15 * 8         # saves its output
    assert saved_bytes(lambda x: (x * 2.0).exp().sum(), [x]) == 15 * 8  # a wrapped 2.0 has no storage
    # torch.func.jvp's wrapped tensors are counted by the storage under them: sin and the tangent's cos save
    # x (the input), the tangent cos(x)·ẋ saves ẋ for the gradient w.r.t. cos(x) (ẋ needs none): 15 doubles
    assert saved_bytes(lambda x: torch.func.jvp(torch.sin, (x,), (torch.ones_like(x),)), [x]) == 15 * 8


def test_the_attention_bound_counts_the_ops_gemms():
    from flowcore.bench.attention import AttentionBound, AttentionCase, attention_cases

    assert [c.shape for c in attention_cases()] == [(16, 4, n, 64) for n in (64, 256, 1024)]
    case = AttentionCase(2, 3, 5, 4)
    bound = AttentionBound(case, "cpu", torch.float64)
    # forward: S (1), Ṡ (2), o (1), ȯ (2) units of N²·D; backward: dv 2, dv̇ 1, dP 2, dṖ 1, dq 2, dk 2, dq̇ 1, dk̇ 1
    assert (bound.forward_units, bound.backward_units) == (6, 12)
    assert case.unit_flops() == 2 * 6 * 25 * 4
    assert (bound.forward_flops, bound.backward_flops) == (6 * case.unit_flops(), 12 * case.unit_flops())
    bound.fwd()
    bound.bwd()
    assert bound.throughput() > 0


# ------------------------------------------------------------------------------------------------
# The command line


def test_cli_parses_every_option():
    args = build_parser().parse_args(
        ["bench", "--objective", "fm", "lsd", "--net", "small", "paper", "--batch", "1024", "4096", "--device", "cpu",
         "--repeats", "5", "--warmup", "0", "--json", "out.json", "--quick", "--torch-compile", "--profile",
         "--no-compile-times", "--threads", "1", "--back-to-back", "3", "--no-retain-memory", "--data-path", "."])
    from flowcore.cli.bench import config_from_args

    config = config_from_args(args).resolved()
    assert config.objectives == ["fm", "lsd"] and config.nets == ["small", "paper"]
    assert config.batches == [1024, 4096] and config.devices == ["cpu"]
    assert (config.repeats, config.warmup, config.quick, config.torch_compile, config.profile) == (5, 0, True, True, True)
    assert not config.compile_times and config.threads == 1 and args.json == "out.json"
    assert config.back_to_back == 3 and not config.retain_memory and config.data_path == "."
    op = build_parser().parse_args(["bench", "--op", "attention_jvp", "--tokens", "64", "128"])
    assert op.op == "attention_jvp" and op.tokens == [64, 128]
    defaults = config_from_args(build_parser().parse_args(["bench"])).resolved()
    assert defaults.objectives == ["fm", "lsd", "esd", "psd_m", "meanflow"] and defaults.nets == ["paper", "small"]
    assert defaults.batches is None and defaults.batches_for("small") == [1024, 4096, 16384]
    assert defaults.batches_for("unet-digits") == [128] and defaults.variants == list(VARIANTS)
    assert defaults.batches_for("unet-cifar") == [32] and defaults.data_path is None
    unet = config_from_args(build_parser().parse_args(
        ["bench", "--net", "unet-digits", "--objective", "fm", "lsd", "psd_m", "--variant", "reference", "handwritten"]))
    unet = unet.resolved()
    assert unet.nets == ["unet-digits"] and unet.batches_for("unet-digits") == [128]
    assert unet.variants == ["reference", "handwritten"]
    assert defaults.torch_compile and not defaults.profile and defaults.repeats == 10
    assert defaults.back_to_back == 1 and defaults.retain_memory


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "expected a positive integer, got 0"),
    (["--batch", "lots"], "expected a positive integer, got 'lots'"),
    (["--repeats", "-2"], "expected a positive integer, got -2"),
    (["--warmup", "-1"], "expected an integer >= 0, got -1"),
    (["--net", "huge"], "invalid choice: 'huge'"),
    (["--variant", "fastest"], "invalid choice: 'fastest'"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--back-to-back", "0"], "expected a positive integer, got 0"),
    (["--op", "matmul"], "invalid choice: 'matmul'"),
    (["--tokens", "0"], "expected a positive integer, got 0"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--objective", "lsdd"], "unknown objective 'lsdd'"),
    (["--objective", "lsd:eta=2"], "eta must lie in [0, 1)"),
    (["--objective", "lsd:nonsense"], "options are written name:key=value"),
    (["--objective", "missing.py"], "no objective file at missing.py"),
    (["--json", "/no/such/folder/out.json"], "does not exist"),
    (["--data-path", "/no/such/cifar"], "--data-path /no/such/cifar: no such file or folder"),
    (["--tokens", "64"], "--tokens sets the sequence lengths of --op attention_jvp; give --op too"),
])
def test_bad_values_are_clear_errors_before_anything_runs(argv, message, capsys):
    assert main(["bench", "--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowcore bench: ") and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_asking_for_cuda_without_one_is_a_clear_error(capsys):
    assert main(["bench", "--quick", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_the_gpu_check_script_rehearses_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.sh is run on a lent GPU by hand; GPU_CHECK_DRY=1 runs its stages here."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    env = {**os.environ, "GPU_CHECK_DRY": "1", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(script), str(tmp_path / "out"), "build", "attention"], env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert summary.startswith("build: exit 0") and "tests:" not in summary  # only the stages asked for
    assert "attention: exit 0" in summary and "unet:" not in summary
    assert "'how'" in (tmp_path / "out" / "build.log").read_text()  # extension_info() of the loaded build
    assert json.loads((tmp_path / "out" / "attention.json").read_text())["op"] == "attention_jvp"
    if not torch.cuda.is_available():
        env.pop("GPU_CHECK_DRY")
        result = subprocess.run(["bash", str(script), str(tmp_path / "gpu")], env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 2 and "no GPU visible" in result.stderr


def test_half_dtypes_are_for_an_op_on_cuda_alone():
    """float16 / bfloat16 rows exist only for `--op` on CUDA (the op's CUDA kernels take them); the
    training-step rows and the CPU kernels are float32 / float64."""
    with pytest.raises(ValueError, match="--op"):
        BenchConfig(dtype="bfloat16", devices=["cpu"]).resolved()
    with pytest.raises(ValueError, match="--op"):
        BenchConfig(dtype="float16", op="attention_jvp", devices=["cpu"]).resolved()
    with pytest.raises(ValueError, match="float32 or float64"):
        BenchConfig(dtype="int8").resolved()
    if torch.cuda.is_available():
        assert BenchConfig(dtype="bfloat16", op="attention_jvp", devices=["cuda"]).resolved().dtype == "bfloat16"
