"""The GEMMs one training step needs, as flowcore.bench counts them (the bound's FLOPs).

    python benchmarks/gemm_plan.py lsd --net paper --batch 4096

Prints every GEMM (kind, shape, planned call, layer), the FLOPs, and the per-sample stream units
of docs/math.md §6's cost model (1 unit = one forward through the net).
"""
import argparse
import sys

import flowcore
from flowcore.bench import NETS, step_gemms, stream_units
from flowcore.cli.table import table
from flowcore.nn.registry import gemm_layers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("objective")
    parser.add_argument("--net", choices=list(NETS), default="paper")
    parser.add_argument("--batch", type=int, default=4096)
    args = parser.parse_args(argv)
    spec = NETS[args.net]
    objective = flowcore.objective(args.objective)
    source = spec.data_source(1, seed=0)
    layers = gemm_layers(spec.kind, spec.build(tuple(source.dims), spec.resolved_sigma()))
    gemms = step_gemms(objective, args.batch, layers)
    rows = [[g.call, str(g.layer), g.kind, f"{g.m} x {g.k} @ {g.k} x {g.n}", f"{g.flops / 1e6:.1f}"] for g in gemms]
    print(table(rows, ["call", "layer", "kind", "shape", "MFLOP"]))
    fm = step_gemms(flowcore.objective("fm"), args.batch, layers)
    total, base = sum(g.flops for g in gemms), sum(g.flops for g in fm)
    units = ", ".join(f"{k} {v:g}" for k, v in stream_units(objective, args.batch).items())
    print(f"\n{args.objective}, net {args.net} ({spec.label}), batch {args.batch}: "
          f"{total / 1e9:.2f} GFLOP ({total / base:.3f}x fm); stream units per sample: {units}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
