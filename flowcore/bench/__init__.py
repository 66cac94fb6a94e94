"""flowcore's benchmark suite: training-step time of compiled objectives vs the reference and torch.compile.

``flowcore bench`` (flowcore.cli.bench) and the scripts in ``benchmarks/`` drive it; from Python::

    from flowcore.bench import BenchConfig, run_suite, render
    result = run_suite(BenchConfig(objectives=["lsd"], nets=["small"], batches=[1024], devices=["cpu"]))
    print(render(result))

`flops` counts a step's GEMM FLOPs from the objective's plan, `measure` times steps, GEMMs and
memory, `config` says what to run, `steps` makes each variant's training step, `row` measures one
row, `compile_times` the compile of a new objective, `suite` runs them all, `report` prints tables
and writes the JSON file; `attention` is ``--op attention_jvp``, the fused attention JVP alone.
"""
from .compile_times import fresh_objective
from .config import NETS, QUICK_NETS, SCHEMA, BenchConfig, NetSpec
from .flops import Gemm, count_flops, plan_gemms, step_gemms, stream_units
from .report import render, write_json
from .suite import run_suite

__all__ = [
           "NETS",
           "QUICK_NETS",
           "SCHEMA",
           "BenchConfig",
           "Gemm",
           "NetSpec",
           "count_flops",
           "fresh_objective",
           "plan_gemms",
           "render",
           "run_suite",
           "step_gemms",
           "stream_units",
           "write_json",
]
