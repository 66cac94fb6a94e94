"""The trainer: one flow map, one objective, the paper's recipe (docs/math.md §3). Read top to bottom.

    trainer = Trainer(load_config("configs/checkerboard-lsd.toml"))
    summary = trainer.train()        # checkpoints, metrics.csv, TensorBoard, samples.png under config.out

A step: draw the global batch (``batch_stream.py``), run this rank's micro-batches through the compiled
objective and backpropagate, average gradients over the ranks (``distributed.py``), clip their
global norm, and — unless the loss or the gradient is not finite — take an optimizer step (RAdam by
default, ``optim.py``) at the scheduled learning rate and update the EMAs. The teacher of
self-distillation is the network itself with its CURRENT weights (it is inside the objective);
samples and evaluations use an EMA.
A run stopped by SIGINT/SIGTERM writes a checkpoint first; ``resume=True`` continues from the
latest checkpoint bit for bit — refusing a configuration that changes what is trained (the network,
σ, the objective, the data: ``RESUME_FIXED``), noting any other change (steps, learning rate, …), and
saying so when there is nothing to resume from. Checkpoints already in the output folder are an
error, except with ``resume`` — or with ``restart=True`` when they belong to a run of exactly this
configuration, which then starts over (the CLI's built-in quick run).
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import make_source
from ..eval import evaluate as evaluation
from ..eval.metrics import select_metrics
from ..wording import counted
from . import checkpoint as ckpt
from . import distributed
from .batch_stream import BatchStream, check_batch_memory
from .best import BestCheckpoints
from .build import build_objective, compile_objective, load_teacher, make_network, make_weight_head, pick_backend
from .config import ConfigError, TrainConfig, from_dict
from .ema import EMA
from .optim import make_optimizer
from .precision import autocast_dtype, wrap
from .progress import Progress
from .schedule import learning_rate


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. too many consecutive non-finite steps); the message says why."""


@dataclass
class Summary:
    """What a finished (or interrupted) run produced."""

    out: Path
    step: int
    skipped: int
    seconds: float
    interrupted: str | None = None          # "SIGINT" / "SIGTERM" when a signal stopped it
    trained: int = 0                        # steps taken by this call (0: a resumed run already at its end)
    checkpoint: Path | None = None
    results: dict = field(default_factory=dict)    # {k: {metric: …}} of the final evaluation
    samples: Path | None = None                    # samples.png
    losses: Path | None = None                     # losses.png


class Trainer:
    def __init__(self, config: TrainConfig, *, out: str | Path | None = None, resume: bool = False,
                 restart: bool = False, context: distributed.Context | None = None):
        self.config = config
        self.out = Path(out if out is not None else config.out)
        self.context = context or distributed.setup(config.device)
        self.device = self.context.device
        c = config

        # Data: every rank reads the same global stream and keeps its shard (batch_stream.py).
        self.data = make_source(c.data.name, c.data.batch, seed=c.seed, key=c.data.key or None,
                                options=c.data.source_options())
        # The metrics of eval.metrics (empty: the data kind's defaults), checked before any step runs.
        self.metrics = [metric.name for metric in select_metrics(self.data.kind, c.eval.metrics,
                                                                 c.eval.metric_options())]
        self.sigma = self.data.std if c.network.sigma == "data" else float(c.network.sigma)

        # The objective, compiled once; its options carry η, the interpolant and the reduction.
        self.objective = build_objective(c.objective, self.sigma)
        self.backend = pick_backend(c.backend, self.device)
        self.compiled = compile_objective(self.objective, self.backend)
        self.term_names = [term.name for term in self.objective.terms]

        # Networks: the same seed on every rank gives the same initial weights.
        torch.manual_seed(c.seed)
        self.net = make_network(c, self.data.dims, self.sigma).to(self.device)
        self.weight_net = None
        if self.objective.needs_weight_net:
            self.weight_net = make_weight_head(c).to(self.device)  # the network kind's (docs/math.md §3)
        self.teacher = None
        if self.objective.needs_teacher:
            if not c.objective.teacher:
                raise ValueError(f"objective {c.objective.name!r} distils a teacher: set objective.teacher to a "
                                 "flowcore checkpoint (e.g. a trained fm run)")
            self._teacher_net, self.teacher = load_teacher(c.objective.teacher, self.device)
        self.model = wrap(self.net, autocast_dtype(c.autocast, self.device), self.device)

        self.parameters = list(self.net.parameters())
        if self.weight_net is not None:
            self.parameters += list(self.weight_net.parameters())
        self.optimizer = make_optimizer(self.parameters, c.optim)
        self.ema = EMA(self.net, c.ema, c.ema_warmup)

        # x0, z and the times come from one generator, on the device, seeded apart from the data.
        self.generator = torch.Generator(self.device).manual_seed(c.seed + 1)
        self.batches = BatchStream(self.objective, self.data, self.generator, self.device,
                                   shards=self.context.world * c.accumulate, network=self.net)
        # Before any batch is drawn: a batch too large for the memory is one line, not an OOM kill.
        check_batch_memory(self.objective, self.data, self.device, self.model,
                           micro_batch=c.data.batch // (self.context.world * c.accumulate))

        self.step = 0
        self.skipped = 0          # non-finite steps skipped in total
        self.consecutive = 0      # ... in a row, up to now
        self.checkpoints = ckpt.CheckpointDir(self.out / "checkpoints", c.checkpoint.keep_last)
        self._signal: str | None = None
        self.resumed_from: Path | None = None
        self.restarted = restart and not resume and self._start_over()
        latest = self.checkpoints.latest()
        self.nothing_to_resume = resume and latest is None
        if resume and latest is not None:
            self.load(latest)
            self.resumed_from = latest
        elif latest is not None:
            raise FileExistsError(f"{self.out} already holds checkpoints (latest: {latest.name}); pass --resume "
                                  "(resume=True) to continue that run, or choose another output directory")

    def _start_over(self) -> bool:
        """Remove a run of exactly this configuration from `out` (``restart``: the quick run starts
        over); any other run stays, for the check after this to refuse. Every rank looks before
        the main rank removes, and none goes on before it has: ranks removing the same folder at
        once, or one finding it half removed, can fail."""
        same = _holds_run_of(self.out, self.config)
        distributed.barrier(self.context)
        if same and self.context.is_main:
            shutil.rmtree(self.out / "checkpoints")
            BestCheckpoints(self.out).forget()   # the old run's best records and kept checkpoints
        distributed.barrier(self.context)
        return same

    # ------------------------------------------------------------------ one step

    def train_step(self) -> dict:
        """One optimizer step (or a skipped one); returns its numbers."""
        c, world, rank = self.config, self.context.world, self.context.rank
        started = time.perf_counter()
        lr = learning_rate(c.optim, self.step, c.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.batches.next()
        self.optimizer.zero_grad(set_to_none=True)
        stats = torch.zeros(2 + len(self.term_names), device=self.device)  # loss, term means, stop flag
        for micro in range(c.accumulate):
            shard = self.batches.shard(batch, micro * world + rank)
            result = self.compiled(self.model, shard.x1, shard.x0, z=shard.z, times=shard.times,
                                   teacher=self.teacher, weight_net=self.weight_net, dropout_seeds=shard.dropout_seeds)
            if result.loss.requires_grad:
                (result.loss / c.accumulate).backward()
            terms = [result.terms[name].mean.detach().float() for name in self.term_names]
            stats[:-1] += torch.stack([result.loss.detach().float(), *terms]) / c.accumulate
        stats[-1] = 1.0 if self._signal else 0.0
        stats = distributed.reduce_gradients(self.parameters, stats, self.context)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, c.optim.clip or math.inf)
        values = torch.cat([stats, grad_norm.detach().float().reshape(1).to(stats.device)]).tolist()
        loss, terms, stop, grad_norm = values[0], values[1:-2], values[-2], values[-1]
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            if (project := getattr(self.net, "project_to_sphere", None)) is not None:
                project()  # forced weight normalisation of MP layers (docs/math.md §4)
            self.ema.update(self.net)
            self.consecutive = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.consecutive += 1
        self.step += 1
        return {"loss": loss, "terms": dict(zip(self.term_names, terms)), "grad_norm": grad_norm, "lr": lr,
                "finite": finite, "stop": stop > 0, "seconds": time.perf_counter() - started}

    # ------------------------------------------------------------------ the loop

    def train(self) -> Summary:
        c, main = self.config, self.context.is_main
        started = time.perf_counter()
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.checkpoints.remove_temporaries()
            (self.out / "config.toml").write_text(c.to_toml())
        progress = Progress(self.out, self.term_names, c.steps, self.step, enabled=main, bar=c.log.progress,
                            tensorboard=c.log.tensorboard)
        if self.resumed_from is not None:
            progress.message(f"resumed from {self.resumed_from} at step {self.step}")
        if self.nothing_to_resume:
            progress.message(f"note: no checkpoint in {self.out} to resume from: starting a fresh run there")
        start = self.step
        where = f"{self.device}, {counted(c.threads or torch.get_num_threads(), 'thread')}" \
            if self.device.type == "cpu" else str(self.device)
        if start >= c.steps:
            progress.message(f"{self.out}: {finished(start, c.steps)}: nothing to train; evaluating its checkpoint")
        else:
            processes = counted(self.context.world, "process", "processes")
            progress.message(f"training {self.objective.name} on {c.data.name} ({processes}, "
                             f"{where}, backend {self.backend}): {counted(c.steps, 'step')} of batch {c.data.batch}, "
                             f"network {c.network.kind} ({sum(p.numel() for p in self.parameters):,} parameters), "
                             f"optimizer {c.optim.name}; output {self.out}")
        summary = Summary(self.out, self.step, self.skipped, 0.0)
        previous = self._install_signal_handlers(progress)
        threads = torch.get_num_threads()
        if c.threads:
            torch.set_num_threads(c.threads)
        try:
            while self.step < c.steps:
                record = self.train_step()
                progress.step(self.step, record["loss"], record["lr"])
                if not record["finite"]:
                    progress.message(f"step {self.step}: non-finite loss ({record['loss']:.4g}) or gradient norm "
                                     f"({record['grad_norm']:.4g}); skipped ({self.consecutive} in a row, "
                                     f"{self.skipped} in all)")
                    if self.consecutive >= c.nan_guard:
                        raise TrainingStopped(
                            f"stopped at step {self.step}: {self.consecutive} consecutive steps had a non-finite loss "
                            f"or gradient (nan_guard = {c.nan_guard}); the weights are those of the last good step. "
                            f"Lower optim.lr, keep optim.clip on, or check the data; the last checkpoint is "
                            f"{self.checkpoints.latest() or 'none'}")
                if self.step % c.log.every == 0 or self.step == c.steps:
                    progress.log(self.step, record["loss"], record["terms"], record["grad_norm"], record["lr"],
                                 record["seconds"], self.skipped)
                if record["stop"]:   # said once, by the caller (the CLI prints how to continue)
                    summary.interrupted = self._signal or "a signal on another rank"
                    summary.checkpoint = self.save()
                    break
                if c.checkpoint.every and self.step % c.checkpoint.every == 0 and self.step < c.steps:
                    self.save()
                if c.eval.every and self.step % c.eval.every == 0 and self.step < c.steps:
                    self.evaluate(progress)
            else:
                # A resumed run already at its end keeps the checkpoint it was resumed from.
                kept = self.checkpoints.path_for(self.step)
                summary.checkpoint = kept if self.step == start and self.resumed_from == kept else self.save()
                summary.results = self.evaluate(progress)
                if main and c.log.figures:
                    summary.samples, summary.losses = self.figures(progress)
                # Every rank leaves together, so that none tears its process group down while
                # rank 0 still evaluates (a gloo peer shut down mid-way can abort the other).
                distributed.barrier(self.context)
        finally:
            torch.set_num_threads(threads)
            self._restore_signal_handlers(previous)
            progress.close()
        summary.step, summary.skipped, summary.trained = self.step, self.skipped, self.step - start
        summary.seconds = time.perf_counter() - started
        return summary

    # ------------------------------------------------------------------ evaluation and figures

    def averaged_network(self) -> torch.nn.Module:
        """A frozen copy of the network with the weights that sample (eval.ema; 0: the raw weights)."""
        return self.ema.copy_of(self.net, self.config.eval.ema)

    def evaluate(self, progress: Progress | None = None) -> dict:
        """The metrics (eval.metrics) of the k-step samplers (rank 0); also checks that the ranks agree."""
        distributed.check_agreement(self.parameters, self.context, self.step)
        if not self.context.is_main:
            return {}
        e = self.config.eval
        results = evaluation.evaluate(self.averaged_network(), e.steps, e.samples, self.sigma, e.seed,
                                      self.config.data.name, self.config.data.key, metrics=self.metrics,
                                      data_options=self.config.data.source_options(), options=e.metric_options())
        if progress is not None:
            weights = f"EMA {e.ema}" if e.ema else "raw weights"
            progress.evaluation(self.step, weights, results, evaluation.format_table(results))
        checkpoint = self.checkpoints.path_for(self.step)   # saved before every evaluation that has one
        BestCheckpoints(self.out).update(self.step, checkpoint if checkpoint.is_file() else None, results)
        return results

    def figures(self, progress: Progress) -> tuple[Path | None, Path | None]:
        from ..eval.plots import plot_losses, sample_figure

        samples_path = losses_path = None
        figure = sample_figure(self.data.kind, self.data.dims)  # by data kind: points scatter, image grid, none
        if figure is not None:
            e = self.config.eval
            drawn = evaluation.draw(self.averaged_network(), e.steps, min(e.samples, figure.samples), self.sigma,
                                    self.data.dims, e.seed, self.device)
            reference = make_source(self.config.data.name, min(e.samples, figure.samples), seed=e.seed + 1,
                                    key=self.config.data.key or None, options=self.config.data.source_options())
            title = f"{self.objective.name}, step {self.step}, {'EMA ' + str(e.ema) if e.ema else 'raw weights'}"
            samples_path = figure.plot(drawn, next(reference), self.out / "samples.png", title=title)
        series = progress.loss_series()
        if series.get("step"):
            losses_path = plot_losses(series, self.out / "losses.png", title=f"{self.objective.name} training loss")
        return samples_path, losses_path

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        rng = ckpt.global_rng_state()
        rng["data"] = self.data.state_dict()
        rng["batches"] = self.generator.get_state()
        return {"format": ckpt.FORMAT, "step": self.step, "skipped": self.skipped, "consecutive": self.consecutive,
                "config": self.config.to_dict(), "sigma": self.sigma, "dims": list(self.data.dims),
                "objective": self.objective.name, "model": self.net.state_dict(),
                "weight_net": self.weight_net.state_dict() if self.weight_net is not None else None,
                "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": {"name": self.config.optim.schedule, "step": self.step}, "rng": rng,
                "world": self.context.world}

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0; the others wait)."""
        path = None
        if self.context.is_main:
            path = self.checkpoints.save(self.state_dict(), self.step)
        distributed.barrier(self.context)
        return path or self.checkpoints.path_for(self.step)

    def load(self, path: str | Path) -> None:
        """Continue from checkpoint `path`: refuse one of another run (``RESUME_FIXED`` differs, or its
        weights do not fit), note the other settings that differ, then restore every state."""
        state = ckpt.read(path, resume=True)
        try:
            saved = from_dict(state["config"])
        except ConfigError as error:
            raise ckpt.CheckpointError(f"{path}: its config is not one this flowcore runs: {error}") from None
        fixed, noted = _split_changes(_differences(saved.to_dict(), self.config.to_dict()))
        if float(state["sigma"]) != self.sigma and not any(text.startswith("network.sigma ") for text in fixed):
            fixed.append(f"σ {float(state['sigma']):.6g} → {self.sigma:.6g}")
        if fixed:
            raise ckpt.CheckpointError(f"{path}: cannot resume with a different {'; '.join(fixed)}: that changes "
                                       "what is trained; resume with the checkpoint's settings, or train in "
                                       "another output directory")
        problem = ckpt.weights_mismatch(self.net.state_dict(), state["model"])
        if problem:
            raise ckpt.CheckpointError(f"{path}: its model weights do not fit this run's network: {problem}")
        try:
            self.net.load_state_dict(state["model"])
            if self.weight_net is not None:
                if state.get("weight_net") is None:
                    raise ValueError("this run has a learned loss weight, the checkpoint none")
                self.weight_net.load_state_dict(state["weight_net"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.data.load_state_dict(state["rng"]["data"])
            self.generator.set_state(state["rng"]["batches"])
            ckpt.set_global_rng_state(state["rng"])
        except (KeyError, ValueError, RuntimeError, TypeError) as error:
            detail = ckpt.first_line(error) if not isinstance(error, KeyError) else f"it lacks {error}"
            raise ckpt.CheckpointError(f"{path}: does not fit this run's configuration: {detail}") from None
        self.step, self.skipped, self.consecutive = state["step"], state["skipped"], state["consecutive"]
        if noted and self.context.is_main:
            print(f"note: resuming with settings that differ from the checkpoint's: {'; '.join(noted)}", flush=True)

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self, progress: Progress) -> dict:
        """SIGINT/SIGTERM stop the run after the current step, which is said at once: that step may be
        long (the first one builds the extension for about a minute). The handlers found (under
        `flowcore train`, the CLI's "interrupted" for SIGINT) take the second signal, at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum, frame):
            self._signal = signal.Signals(signum).name
            # A second signal of the same kind acts at once (the default behaviour).
            signal.signal(signum, previous.get(signum, signal.SIG_DFL))
            if self.context.is_main:  # torchrun passes the signal to every rank: one says it
                again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {self._signal} again"
                below_the_bar = "\n" if progress.bar is not None else ""
                # os.write: the handler may run while the main thread is inside a print to stderr
                os.write(2, f"{below_the_bar}{self._signal}: stopping after this step ({again} to stop now)\n"
                         .encode())

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


# Settings a resumed run may not change: they change what is trained (the network and its σ, the
# objective, the data), so the checkpoint's weights and optimizer state would continue another run.
# A teacher checkpoint may move; the data's batch and flips, the budget, the schedule, the logs may change.
RESUME_FIXED = ("objective.", "network.", "data.")
RESUME_FREE = ("objective.teacher", "data.batch", "data.flip")


def _differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(key, "key old → new") for each setting that differs; ``out`` is where the run is now, not a setting."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _differences(a, b, f"{prefix}{key}.")
        elif a != b and f"{prefix}{key}" != "out":
            changes.append((f"{prefix}{key}", f"{prefix}{key} {a!r} → {b!r}"))
    return changes


def _split_changes(changes: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The changes a resume refuses (``RESUME_FIXED``) and those it only notes."""
    fixed = [text for key, text in changes if key.startswith(RESUME_FIXED) and key not in RESUME_FREE]
    return fixed, [text for key, text in changes if text not in fixed]


def finished(step: int, steps: int) -> str:
    """"already at step 8000 of 8000" (or past it, when a resumed run asks for fewer steps)."""
    return f"already at step {step} of {steps}" if step == steps else f"already at step {step}, past steps = {steps}"


def train(config: TrainConfig, **options) -> Summary:
    """``Trainer(config, **options).train()``."""
    return Trainer(config, **options).train()


def _holds_run_of(out: Path, config: TrainConfig) -> bool:
    """Whether `out` holds checkpoints of a run with exactly this configuration."""
    if not (out / "checkpoints").is_dir():
        return False
    try:
        return from_dict(ckpt.read(ckpt.resolve(out))["config"]).to_dict() == config.to_dict()
    except (ckpt.CheckpointError, KeyError, ValueError):
        return False
