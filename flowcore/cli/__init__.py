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
import contextlib
import importlib
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path

from ..wording import counted as counted  # the subcommands' wording (flowcore.wording imports nothing)

# Modules that contribute subcommands, in the order `flowcore --help` lists them.
COMMAND_MODULES = ["objectives", "bench", "train"]
INTERRUPTED, BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE: what a shell reports for a tool so ended

# A number or a comma list of numbers that starts with a minus sign: a value, never an option
# (argparse's own rule knows only "-1" and "-.5", so `--grid -0.5,0,1` was "expected one argument").
_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
NEGATIVE_NUMBERS = re.compile(rf"^(?=-){_NUMBER}(?:,\s*{_NUMBER})*$")


class Parser(argparse.ArgumentParser):
    """argparse with flowcore's two conventions: a mistake is one line naming the argument (the
    usage summary is what ``--help`` is for), and a value may start with a minus sign."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBERS

    def error(self, message: str):
        # argparse writes "argument --n: ..."; a message that names its argument itself stands alone
        head, _, rest = message.partition(": ")
        if head.startswith("argument ") and rest.startswith(head.removeprefix("argument ")):
            message = rest
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def positive_int(option: str):
    """An argparse `type` for `option`: an integer >= 1, else "OPTION must be a positive integer, got X"."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < 1:
            raise argparse.ArgumentTypeError(f"{option} must be a positive integer, got {text}")
        return value

    return parse


def output_folder(option: str, given: str, folder: Path, create: bool = True) -> Path:
    """``mkdir -p`` of `folder` for the output of `option` (given as `given`; `create` False: only
    checked, to fail before a long computation), or one line naming them when a file stands where a
    directory must be (instead of "[Errno 17] File exists")."""
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                where = "it" if path == Path(given) else str(path)
                raise ValueError(f"{option} {given}: {where} is a file, not a directory")
            break
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="flowcore", description="Flow-map objectives: declare, compile, check.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(commands)
    return parser


@contextlib.contextmanager
def _interrupt_ends_the_command(command: list[str]):
    """While a command runs, Ctrl-C ends it at once with one line and 130 — not a KeyboardInterrupt,
    which prints a traceback wherever it lands (imports, building, data) and aborts the process when it
    lands in a Python callback of C++ code ("terminate called after throwing pybind11::error_already_set"
    was seen at start-up). Nothing is lost: cache entries and checkpoints are written atomically, and a
    build's guard ends the compilers of a caller that is gone (flowcore.native.toolchain). The trainer
    installs its own handler while it trains (a checkpoint, then "interrupted by SIGINT"), and gives
    this one back; the caller's handler is back when the command ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum, frame):
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.write(2, f"{command[0]}: interrupted\n".encode())  # unbuffered: stderr may be mid-write
        os._exit(INTERRUPTED)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A mistake the user can fix is one line on stderr and exit status 2; Ctrl-C
    (unless the command handles SIGINT itself, as training does) is "interrupted" and 130; a reader
    that closed the pipe (``flowcore objectives | head -1``) ends the command quietly with 141."""
    # torch's own forward-AD decompositions still call torch.jit.script; the notice is not ours.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    command = ["flowcore"]  # named once the arguments are parsed
    try:
        with _interrupt_ends_the_command(command):
            args = build_parser().parse_args(argv)
            command[0] = f"flowcore {args.command}"
            code = args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except (KeyError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{command[0]}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # raised by code (a SIGINT itself ends the command above)
        print(f"{command[0]}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # Python's documented idiom: what is still buffered for stdout goes to /dev/null, so the
        # flush at exit does not raise again (docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
