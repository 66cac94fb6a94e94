"""Subcommands that train, sample and evaluate flow maps, and reproduce the paper's checkerboard.

    flowcore train [CONFIG.toml] [--set k=v ...] [--out DIR] [--resume]
    flowcore sample CKPT --steps 1 2 4 8 16 --n N --out DIR [--grid 0,0.5,1 ...] [--method heun]
    flowcore eval CKPT --steps 1 2 4 8 16 [--json FILE] [--method flow_map|euler|heun]
    flowcore reproduce checkerboard|digits [--budget small|paper|tiny] [--out DIR] [--objectives a,b]

With no CONFIG, `train` runs the built-in quick checkerboard LSD run (a few minutes on a CPU).
Data-parallel: ``torchrun --standalone --nproc_per_node=N -m flowcore.cli train CONFIG.toml``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
DEFAULT_STEPS = [1, 2, 4, 8, 16]


def _kl_rows(results: dict, label: str, paper: dict | None) -> str:
    from .table import table

    steps = sorted(results)
    rows = [[label] + [f"{results[k]['kl']:.4f}" for k in steps]]
    if paper:
        rows.append(["paper, 150k steps of batch 100k"] + [f"{paper[k]:.4f}" if k in paper else "—" for k in steps])
    return table(rows, ["checkerboard KL ↓ (k steps)"] + [str(k) for k in steps])


def cmd_train(args: argparse.Namespace) -> int:
    from ..eval.evaluate import PAPER_CHECKERBOARD_KL, format_table
    from ..train import Trainer, load_config
    from ..train.checkpoint import read, resolve
    from ..train.config import from_dict
    from ..train.trainer import finished
    from . import counted

    config_path, run = _config_or_run(args)
    config = load_config(config_path, args.set)
    out = Path(run or args.out or config.out)
    if config_path is None and args.resume and (out / "checkpoints").is_dir():
        # the run's own config, its --set overrides included, so that plain --resume continues it exactly
        config = from_dict(read(resolve(out))["config"], args.set).with_overrides({"out": str(out)})
    from ..runtime.allocator import retain_freed_memory

    retain_freed_memory()  # a CPU step's buffers are reused, not faulted in again (no effect on CUDA memory)
    # The built-in quick run starts over each time unless asked to resume; any other run in `out`
    # is left alone (the Trainer refuses to overwrite it).
    trainer = Trainer(config, out=out, resume=args.resume, restart=config_path is None)
    if trainer.restarted and trainer.context.is_main:
        print(f"note: started the quick run over in {out} (pass --resume to continue it)")
    summary = trainer.train()
    # Only after a clean finish: a rank that failed must not wait for peers still inside a
    # collective (the launcher stops them); see train/distributed.py.
    from ..train.distributed import teardown

    teardown()
    if not trainer.context.is_main:
        return EXIT_CODES.get(summary.interrupted, 0) if summary.interrupted else 0
    if summary.interrupted:   # the one line that says so (the trainer leaves it to its caller)
        print(f"interrupted by {summary.interrupted} at step {summary.step}; checkpoint {summary.checkpoint}\n"
              f"continue with: flowcore train --resume {shlex.quote(str(out))}")
        return EXIT_CODES.get(summary.interrupted, 1)
    if summary.trained == 0:
        print(f"\ntrained no steps ({finished(summary.step, config.steps)}); checkpoint {summary.checkpoint}")
    else:
        first = summary.step - summary.trained + 1
        since = f" (steps {first}–{summary.step})" if first > 1 else ""
        print(f"\ntrained {counted(summary.trained, 'step')}{since} in {summary.seconds:.0f} s "
              f"({summary.skipped} skipped); checkpoint {summary.checkpoint}")
    if summary.results:
        if all("kl" in row for row in summary.results.values()):
            name = trainer.objective.name.removesuffix("_logvar")
            paper = PAPER_CHECKERBOARD_KL.get(name) if config.data.name == "checkerboard" else None
            label = f"this run, {counted(summary.step, 'step')} of batch {config.data.batch}"
            print(_kl_rows(summary.results, label, paper))
            # eval/checkerboard_kl.py: E[KL] ≈ (M − 1) / 2N for N exact samples, M = 1396 bins of the 50×50 grid
            print(f"({config.eval.samples} samples: histogram noise alone gives KL ≈ "
                  f"{1395 / (2 * config.eval.samples):.3f}, the floor under any sampler)")
        else:
            print(format_table(summary.results))
    if summary.samples:
        print(f"samples: {summary.samples}")
    if summary.losses:
        print(f"losses: {summary.losses}")
    return 0


def _config_or_run(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(TOML config, run directory) of `flowcore train`: ``flowcore train --resume DIR`` reaches us
    with DIR as the config (``--resume`` is a flag), so with --resume a path that is not a TOML file
    names the run to continue (or to start fresh in, when it holds none)."""
    given = args.config
    if given is None or given.endswith(".toml") or Path(given).is_file():
        return given, None
    if not args.resume:
        if Path(given).is_dir():
            raise ValueError(f"{given} is a run directory, not a TOML config: continue the run in it with "
                             f"flowcore train --resume {shlex.quote(given)}, or give a .toml config to train")
        return given, None   # load_config names the missing file
    if args.out and Path(args.out) != Path(given):
        raise ValueError(f"--resume {given} and --out {args.out} name two run directories; give one")
    return None, given


def _network(args: argparse.Namespace):
    from ..train.build import network_from_checkpoint
    from ..train.checkpoint import read, resolve

    path = resolve(args.checkpoint)
    state = read(path)
    weights = "eval" if args.ema is None else args.ema
    net, config, sigma = network_from_checkpoint(state, weights)
    decay = config.eval.ema if weights == "eval" else float(weights)
    return net, config, sigma, path, state["step"], (f"EMA {decay}" if decay else "raw weights"), tuple(state["dims"])


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data import make_source
    from ..eval.evaluate import draw
    from . import counted, output_folder

    out = output_folder("--out", args.out, Path(args.out), create=False)  # before the sampling, which can take long
    net, config, sigma, path, step, weights, dims = _network(args)
    prefix = "" if args.method == "flow_map" else f"{args.method}_"  # the ODE check is named apart
    # --grid alone samples the grid alone; the default k's come only when no grid is asked for
    steps = args.steps if args.steps is not None else ([] if args.grid else DEFAULT_STEPS)
    method = "flow map" if args.method == "flow_map" else f"{args.method} ODE of the diagonal"
    say = lambda line: print(f"  {line}", file=sys.stderr, flush=True)
    print(f"sampling {path}: {method}, {counted(args.n, 'sample')} each", file=sys.stderr, flush=True)
    arrays, titles = {}, {}
    for k, x in draw(net, steps, args.n, sigma, dims, args.seed, "cpu", args.method, progress=say).items():
        arrays[f"{prefix}k{k}"], titles[f"{prefix}k{k}"] = (k, x), counted(k, "step")
    for grid in args.grid or []:
        ((k, x),) = draw(net, [], args.n, sigma, dims, args.seed, "cpu", args.method, grid=grid,
                         progress=say).items()
        name = f"{prefix}grid-{'-'.join(f'{t:g}' for t in grid)}"  # named by its times: grid-0-0.5-1
        arrays[name], titles[name] = (k, x), f"grid {', '.join(f'{t:g}' for t in grid)}"
    output_folder("--out", args.out, out)
    np.savez(out / "samples.npz", **{name: x.numpy() for name, (_, x) in arrays.items()})
    print(f"{path} (step {step}, {weights}): {counted(args.n, 'sample')} each, {method}: {', '.join(arrays)}")
    print(f"wrote {out / 'samples.npz'} (arrays {', '.join(arrays)})")
    from ..eval.plots import sample_figure

    source = make_source(config.data.name, min(args.n, 20000), seed=args.seed + 1, key=config.data.key or None,
                         options=config.data.source_options())
    figure = sample_figure(source.kind, dims)  # by data kind: points scatter, image grid, none
    if figure is not None:
        data = next(source)[:figure.samples]
        for name, (k, x) in arrays.items():
            picture = figure.plot({k: x}, data, out / f"samples_{name}.png",
                                  title=f"{config.objective.name}, step {step}, {weights}, {method}, {titles[name]}")
            print(f"wrote {picture}")
        uniform = {k: x for name, (k, x) in arrays.items() if name.startswith(f"{prefix}k")}
        if len(uniform) > 1:   # every k together: one row (images) or panel (points) per k, then the data
            picture = figure.plot(uniform, data, out / f"{prefix}samples.png",
                                  title=f"{config.objective.name}, step {step}, {weights}, {method}")
            print(f"wrote {picture}")
    return 0


def _grid(text: str) -> list[float]:
    """``--grid 0,0.25,1``: a time grid for the flow-map sampler (checked by flowcore.eval.sample)."""
    from ..eval.sample import time_grid

    try:
        return time_grid(grid=[float(v) for v in text.split(",")])
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from ..eval.evaluate import evaluate, format_table
    from . import counted, output_folder

    if args.json:  # before the evaluation, which can take a minute
        output_folder("--json", args.json, Path(args.json).parent, create=False)
    net, config, sigma, path, step, weights, _ = _network(args)
    metrics = args.metrics if args.metrics is not None else config.eval.metrics
    method = "flow map" if args.method == "flow_map" else f"{args.method} ODE of the diagonal"
    # a heun evaluation of 65536 samples takes most of a minute: say what runs, then a line per k
    say = lambda line: print(f"  {line}", file=sys.stderr, flush=True)
    print(f"evaluating {path}: {method} with {counted(args.n, 'sample')} at k = {', '.join(map(str, args.steps))}",
          file=sys.stderr, flush=True)
    results = evaluate(net, args.steps, args.n, sigma, args.seed, config.data.name, config.data.key, args.method,
                       metrics, data_options=config.data.source_options(), options=config.eval.metric_options(),
                       progress=say)
    print(f"{path} (step {step}, {weights}, {config.objective.name} on {config.data.name}, "
          f"{counted(args.n, 'sample')}, {method})")
    print(format_table(results))
    if args.json:
        output_folder("--json", args.json, Path(args.json).parent)
        Path(args.json).write_text(json.dumps({"checkpoint": str(path), "step": step, "weights": weights,
                                               "method": args.method, "samples": args.n, "data": config.data.name,
                                               "results": {str(k): v for k, v in results.items()},
                                               "floors": dict(results.floors)}, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..runtime.allocator import retain_freed_memory
    from ..train.reproduce import reproduce

    retain_freed_memory()
    names = [name.strip() for name in args.objectives.split(",") if name.strip()] if args.objectives else None
    try:
        reproduce(args.experiment, args.budget, args.out, names, args.set)
    except KeyboardInterrupt as error:
        print(f"flowcore reproduce: {error.args[0] if error.args else 'interrupted'}", file=sys.stderr)
        return 130
    return 0


def _reporting_errors(command):
    """Errors a user can act on become one line on stderr and exit status 2 (1 for a stopped run)."""
    import functools

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from ..train import CheckpointError, TrainingStopped

        try:
            return command(args)
        except TrainingStopped as error:
            print(f"flowcore {args.command}: {error}", file=sys.stderr)
            return 1
        except (CheckpointError, FileExistsError) as error:
            print(f"flowcore {args.command}: {error}", file=sys.stderr)
            return 2

    return run


def register(commands) -> None:
    """Add this module's subcommands to the `flowcore` parser."""
    from . import positive_int

    train = commands.add_parser("train", help="train a flow map from a TOML config (none: a quick checkerboard run)")
    train.add_argument("config", nargs="?", help="a TOML config (configs/*.toml); none: the built-in quick run")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
    train.add_argument("--out", help="output directory (default: the config's `out`)")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output")
    train.set_defaults(func=_reporting_errors(cmd_train))

    def add_checkpoint_options(parser, n_default, steps_default, steps_help):
        parser.add_argument("checkpoint", help="a checkpoint file or a run directory (its latest checkpoint)")
        parser.add_argument("--steps", type=positive_int("--steps"), nargs="+", default=steps_default, metavar="K",
                            help=steps_help)
        parser.add_argument("--n", type=positive_int("--n"), default=n_default,
                            help=f"number of samples (default: {n_default})")
        parser.add_argument("--ema", type=float,
                            help="EMA decay to use (0: raw weights; default: the config's eval.ema)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
        parser.add_argument("--method", choices=["flow_map", "euler", "heun"], default="flow_map",
                            help="flow_map: k composed flow-map steps; euler/heun: k steps of the diagonal's ODE "
                                 "(a check on the learned velocity)")

    sample = commands.add_parser("sample", help="draw samples from a checkpoint (.npz and a PNG per k)")
    add_checkpoint_options(sample, 20000, None, "k of the k-step sampler (default: 1 2 4 8 16, or none when "
                                                "--grid is given)")
    sample.add_argument("--out", required=True, help="output directory")
    sample.add_argument("--grid", type=_grid, action="append", metavar="T0,T1,...",
                        help="sample on this time grid (0 = noise, ..., 1 = data), e.g. 0,0.5,0.8,1, named by it "
                             "(grid-0-0.5-0.8-1); repeatable")
    sample.set_defaults(func=_reporting_errors(cmd_sample))
    evaluate = commands.add_parser("eval", help="metrics table (e.g. KL / energy / sliced W2) of a checkpoint's "
                                               "k-step samplers")
    add_checkpoint_options(evaluate, 65536, DEFAULT_STEPS, "k of the k-step sampler (default: 1 2 4 8 16)")
    evaluate.add_argument("--json", metavar="FILE", help="also write the results and the metrics' noise floors "
                                                          "as JSON")
    evaluate.add_argument("--metrics", nargs="+", metavar="NAME",
                          help="metrics to compute (flowcore.eval.metrics; default: the config's eval.metrics, "
                               "or the data kind's defaults)")
    evaluate.set_defaults(func=_reporting_errors(cmd_eval))
    from ..train.reproduce import TARGETS

    reproduce = commands.add_parser("reproduce", help="retrain a table of the paper: "
                                    + "; ".join(f"{name}: {target.describe}" for name, target in TARGETS.items()))
    reproduce.add_argument("experiment", choices=list(TARGETS))
    reproduce.add_argument("--budget", choices=list(dict.fromkeys(b for t in TARGETS.values() for b in t.budgets)),
                           default="small",
                           help="checkerboard: small (two CPU cores, < 40 min) or paper (batch 100k, 150k steps: a "
                                "GPU); digits: small (two CPU cores, about 45 min) or tiny (seconds, for tests)")
    reproduce.add_argument("--out", help="output directory (default: runs/reproduce-EXPERIMENT-BUDGET)")
    reproduce.add_argument("--objectives", help="comma-separated objectives (default: the experiment's; "
                           + "; ".join(f"{name}: {','.join(t.objectives)}" for name, t in TARGETS.items()) + ")")
    reproduce.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override a budget value for every objective")
    reproduce.set_defaults(func=_reporting_errors(cmd_reproduce))
