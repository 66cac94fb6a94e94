"""The `flowcore` command. Each module of this package adds its subcommands through `register`.

    flowcore objectives                 every built-in: name, description, terms, derivatives
    flowcore show NAME|FILE.py          one declaration in readable math
    flowcore compile NAME|FILE.py       build its kernels (--backend torch|cpu|cuda, --emit DIR)
    flowcore check NAME|FILE.py         the property test compiled-vs-reference on it
    flowcore run                        every built-in evaluated once on a checkerboard batch
    flowcore bench                      training-step time: compiled vs eager vs torch.compile
    flowcore train [CONFIG.toml]        train a flow map (none: the quick checkerboard LSD run)
    flowcore sample | eval CKPT         k-step samples (grids for images) / the data's metrics per k
    flowcore reproduce checkerboard     the paper's checkerboard KL table, retrained
    flowcore reproduce digits           the FD-digits table of LSD, PSD-M, PSD-U and FM, on the CPU
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

# Modules that contribute subcommands, in the order `flowcore --help` lists them.
COMMAND_MODULES = ["objectives", "bench", "train"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowcore", description="Flow-map objectives: declare, compile, check.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    # torch's own forward-AD decompositions still call torch.jit.script; the notice is not ours.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"flowcore {args.command}: {message}", file=sys.stderr)
        return 2
