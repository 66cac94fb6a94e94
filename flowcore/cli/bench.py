"""`flowcore bench`: training-step benchmark of compiled objectives (flowcore.bench; benchmarks/README.md)."""
from __future__ import annotations

import argparse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def config_from_args(args: argparse.Namespace):
    from ..bench import BenchConfig

    return BenchConfig(objectives=args.objective, nets=args.net, batches=args.batch, variants=args.variant,
                       devices=args.device,
                       repeats=args.repeats, warmup=args.warmup, quick=args.quick, torch_compile=args.torch_compile,
                       torch_compile_backend=args.torch_compile_backend, profile=args.profile,
                       compile_times=args.compile_times, threads=args.threads, seed=args.seed, dtype=args.dtype,
                       retain_memory=args.retain_memory, back_to_back=args.back_to_back, data_path=args.data_path,
                       op=args.op)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import render, run_suite, write_json

    config = config_from_args(args).resolved()  # bad values raise ValueError before anything runs
    if args.json:
        from pathlib import Path

        folder = Path(args.json).parent
        if not folder.is_dir():
            raise FileNotFoundError(f"--json {args.json}: the folder {folder} does not exist")
    if args.op:
        return _op_bench(args, config)
    if args.tokens:
        raise ValueError("--tokens sets the sequence lengths of --op attention_jvp; give --op too")
    on_row = (lambda result: write_json(result, args.json)) if args.json else None
    result = run_suite(config, on_row=on_row)
    print(render(result))
    if args.json:
        print(f"\nwrote {write_json(result, args.json)}")
    failed = [row for row in result["rows"] if "error" in row or "error" in row["variants"].get("flowcore", {})]
    return 1 if failed else 0


def _op_bench(args: argparse.Namespace, config) -> int:
    """``--op attention_jvp``: the op alone against torch.func.jvp of math attention (flowcore.bench.attention)."""
    from ..bench.attention import render_attention, run_attention_bench
    from ..bench.report import write_json

    on_case = (lambda result: write_json(result, args.json)) if args.json else None
    result = run_attention_bench(config, args.tokens, on_case=on_case)
    print(render_attention(result))
    if args.json:
        print(f"\nwrote {write_json(result, args.json)}")
    failed = [case for case in result["cases"] if "error" in case["variants"].get("flowcore", {})]
    return 1 if failed else 0


def register(commands) -> None:
    """Add `flowcore bench` to the `flowcore` parser."""
    from ..bench.attention import OP_NAMES
    from ..bench.config import NETS, VARIANTS

    bench = commands.add_parser(
        "bench", help="benchmark training steps: compiled vs reference vs torch.compile",
        description="Median training-step time (forward + backward + RAdam) of flowcore's compiled objectives, "
                    "the reference interpreter and torch.compile of it, against a GEMM bound measured in the same "
                    "run; peak memory; cold/warm compile time of a new objective. See benchmarks/README.md.")
    bench.add_argument("--objective", nargs="+", metavar="NAME",
                       help="built-in names or .py files (default: fm lsd esd psd_m meanflow)")
    bench.add_argument("--net", nargs="+", choices=list(NETS),
                       help="paper = MLP 5x512 GELU, small = 4x256 GELU (on the checkerboard), unet-digits = the "
                            "digits UNet preset on the 8x8 digits, unet-cifar = the cifar10 preset on 32x32x3 images "
                            "(default: paper small)")
    bench.add_argument("--batch", nargs="+", type=_positive, metavar="B",
                       help="batch sizes (default: the net's own: 1024 4096 16384 for the MLPs, 128 for unet-digits, "
                            "32 for unet-cifar)")
    bench.add_argument("--data-path", metavar="PATH",
                       help="the files of a net whose data is read from disk (unet-cifar: the CIFAR-10 python folder "
                            "or .tar.gz; default: random images of its shape, said in each row)")
    bench.add_argument("--op", choices=list(OP_NAMES),
                       help="time one op alone instead of training steps: attention_jvp (forward+tangent and the "
                            "backward through both outputs) against torch.func.jvp of math attention, "
                            "B=16 H=4 D=64 (quick: tiny); honours --device --repeats --warmup --threads --dtype "
                            "--json --quick, and --variant flowcore / reference")
    bench.add_argument("--tokens", nargs="+", type=_positive, metavar="N",
                       help="sequence lengths N of --op attention_jvp (default 64 256 1024; quick 7 33)")
    bench.add_argument("--variant", nargs="+", choices=list(VARIANTS),
                       help="what to time (default: all): flowcore (native backend), flowcore_torch, reference, "
                            "torch_compile (of the reference), handwritten (eager PyTorch), handwritten_compile")
    bench.add_argument("--device", nargs="+", choices=["cpu", "cuda"], help="default: cpu, and cuda when available")
    bench.add_argument("--repeats", type=_positive, help="timed steps per variant (default 10; quick 1)")
    bench.add_argument("--warmup", type=_count, help="untimed steps first (default 3; quick 1)")
    bench.add_argument("--json", metavar="FILE", help="also write every row and the machine info to FILE")
    bench.add_argument("--quick", action="store_true",
                       help="smoke mode: tiny nets named by their size (paper: mlp-2x32, small: mlp-1x16), batch 64, "
                            "1 repeat, no torch.compile, with profiles")
    bench.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                       help="time torch.compile of the reference (default: on, off with --quick)")
    bench.add_argument("--torch-compile-backend", default="inductor", metavar="NAME",
                       help="torch.compile backend (default inductor; aot_eager compiles fast)")
    bench.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                       help="profile one step per variant: GEMM / fused / other ops / overhead (default: quick only)")
    bench.add_argument("--compile-times", action=argparse.BooleanOptionalAction, default=True,
                       help="cold and warm compile time of a new objective (default: on)")
    bench.add_argument("--threads", type=_positive, help="torch.set_num_threads (default: torch's)")
    bench.add_argument("--back-to-back", type=_positive, default=1, metavar="N",
                       help="steps per variant and round, the last timed (default 1: every timed step follows "
                            "another variant's; 2: a step after a step of its own kind, as in training)")
    bench.add_argument("--retain-memory", action=argparse.BooleanOptionalAction, default=True,
                       help="glibc malloc keeps freed memory for reuse, for every variant (default on)")
    bench.add_argument("--dtype", choices=["float32", "float64", "float16", "bfloat16"], default="float32",
                       help="float16 / bfloat16: --op on --device cuda only (default: float32)")
    bench.add_argument("--seed", type=int, default=0)
    bench.set_defaults(func=cmd_bench)
