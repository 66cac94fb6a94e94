"""Subcommands about objectives: list, show, compile, check, and the main job `run`."""
from __future__ import annotations

import argparse
import time

import torch

from ..codegen import backends
from .table import table as _table


def cmd_objectives(args: argparse.Namespace) -> int:
    from .. import objectives

    rows = []
    for name in objectives.names():
        objective = objectives.get(name)
        terms = ", ".join(f"{term.name} ({term.share:g})" for term in objective.terms)
        rows.append([name, objective.description, terms, " ".join(objective.derivatives) or "none"])
    print(_table(rows, ["name", "description", "terms (share)", "derivatives"]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..catalog import load

    print(load(args.objective))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    """Build an objective's kernels and say how long it took and whether the cache had them."""
    from ..catalog import load
    from ..compiler.driver import compile_program
    from ..compiler.segments import program_kernels
    from . import counted

    objective = load(args.objective)
    start = time.perf_counter()
    compilation = compile_program(objective)
    symbolic = time.perf_counter() - start
    kernels = program_kernels(compilation.program)
    backend = backends.get(args.backend)
    if args.compile_only and backend.compile_only is not None:
        start = time.perf_counter()
        library_path = backend.compile_only(objective.name, compilation.digest, kernels)
        what = counted(len(kernels), f"{backend.name.upper()} kernel")
        print(f"compiled {what} of {objective.name} to {library_path} "
              f"in {time.perf_counter() - start:.2f} s (symbolic passes {symbolic:.2f} s; nothing loaded)")
        sources = None
    else:
        library = backend.build(objective.name, compilation.digest, kernels)
        print(f"compiled {objective.name} for {args.backend}: {counted(len(kernels), 'kernel')}; symbolic passes "
              f"{symbolic:.2f} s, build {library.build_seconds:.2f} s, cache {'hit' if library.cache_hit else 'miss'}")
        sources = library.sources
    if args.emit:
        from pathlib import Path

        out = Path(args.emit)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (sources or backend.emit(objective.name, compilation.digest, kernels)).items():
            (out / name).write_text(text)
            print(f"wrote {out / name}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Property test: the compiled objective against the reference interpreter."""
    from ..catalog import load
    from ..testing import check_objective

    objective = load(args.objective)
    report = check_objective(objective, backend=args.backend, examples=args.examples, seed=args.seed)
    print(report)
    return 0 if report.passed else 1


def cmd_run(args: argparse.Namespace) -> int:
    """Evaluate built-in objectives on a checkerboard batch through the reference interpreter."""
    from .. import objectives, reference
    from ..data import CHECKERBOARD_STD, checkerboard
    from ..nn import FlowMapMLP
    from . import counted

    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    names = args.objectives.split(",") if args.objectives else objectives.names()
    torch.manual_seed(args.seed)
    net = FlowMapMLP(2, args.width, args.depth, sigma=CHECKERBOARD_STD).to(dtype)
    # An untrained stand-in teacher for the distillation objectives (LMD, EMD, PFMM, consistency).
    teacher_net = FlowMapMLP(2, args.width, args.depth, sigma=CHECKERBOARD_STD).to(dtype).requires_grad_(False)
    teacher = lambda tau, x: teacher_net(tau, tau, x)
    generator = torch.Generator().manual_seed(args.seed)
    x1 = checkerboard(args.batch, generator, dtype)
    print(f"checkerboard batch {args.batch}, network {args.depth}x{args.width} GELU, {args.dtype}, "
          f"reference interpreter (torch.func.jvp), torch {torch.__version__}, "
          f"{counted(torch.get_num_threads(), 'thread')}")
    rows = []
    for name in names:
        objective = objectives.get(name, sigma=CHECKERBOARD_STD)
        start = time.perf_counter()
        result = reference.evaluate(objective, net, x1, generator=torch.Generator().manual_seed(args.seed),
                                    teacher=teacher)
        grads = torch.autograd.grad(result.loss, list(net.parameters()))
        elapsed = time.perf_counter() - start
        grad_norm = torch.sqrt(sum(g.square().sum() for g in grads))
        terms = "  ".join(f"{term}={r.mean.item():.4g}" for term, r in result.terms.items())
        rows.append([name, f"{result.loss.item():.5g}", f"{grad_norm.item():.4g}", f"{1e3 * elapsed:.0f}", terms])
    print(_table(rows, ["objective", "loss", "|grad|", "ms", "per-term mean loss"]))
    return 0


def register(commands) -> None:
    """Add this module's subcommands to the `flowcore` parser."""
    from . import positive_int

    commands.add_parser("objectives", help="list the built-in objectives").set_defaults(func=cmd_objectives)
    show = commands.add_parser("show", help="print a declaration in readable math")
    show.add_argument("objective", help="a built-in name or a Python file declaring one Objective")
    show.set_defaults(func=cmd_show)
    build = commands.add_parser("compile", help="build an objective's kernels")
    build.add_argument("objective", help="a built-in name or a Python file declaring one Objective")
    build.add_argument("--backend", choices=backends.names(), default="cpu",
                       help="where its kernels run (default: cpu, C++ built with the system compiler)")
    build.add_argument("--emit", metavar="DIR", help="write the generated sources to DIR")
    build.add_argument("--compile-only", action="store_true",
                       help=f"{', '.join(b.name for b in backends.REGISTERED if b.compile_only)}: "
                            "compile without a device and load nothing")
    build.set_defaults(func=cmd_compile)
    check = commands.add_parser("check", help="property-test compiled against reference")
    check.add_argument("objective", help="a built-in name or a Python file declaring one Objective")
    check.add_argument("--backend", choices=backends.names(), default="torch",
                       help="the backend whose compiled objective is checked (default: torch, which needs no "
                            "compiler; cpu and cuda build C++ first)")
    check.add_argument("--examples", type=positive_int("--examples"), default=20,
                       help="hypothesis examples: batches, shapes and hard times drawn (default: 20)")
    check.add_argument("--seed", type=int, default=0, help="seed of the drawn examples (default: 0)")
    check.set_defaults(func=cmd_check)
    run = commands.add_parser("run",
                              help="evaluate every built-in once on a checkerboard batch (losses, gradient norms)")
    run.add_argument("--batch", type=positive_int("--batch"), default=1024, help="batch size (default: 1024)")
    run.add_argument("--width", type=positive_int("--width"), default=512, help="MLP width (default: 512)")
    run.add_argument("--depth", type=positive_int("--depth"), default=5, help="MLP depth (default: 5)")
    run.add_argument("--seed", type=int, default=0, help="(default: 0)")
    run.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="(default: float32)")
    run.add_argument("--objectives", help="comma-separated names (default: every built-in)")
    run.set_defaults(func=cmd_run)
