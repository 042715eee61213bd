"""The Trainer's extension points: callbacks, chosen by ``run.callbacks``.

A callback sees the Trainer (its config ``tc``, ``model``, run directory ``rd``, loop ``state``)
at six moments; every hook is optional:

- ``on_step_end(trainer, step)``: after every optimiser step, on every rank. Keep it cheap and
  never read a device value here (that makes the loop wait for the GPU).
- ``log_values(trainer, step) -> dict``: extra values for the row about to be logged.
- ``on_log(trainer, row)``: each logged row (rank 0).
- ``on_eval(trainer, values)``: after each validation, ``{"val_loss", "val_loss_se"}`` (rank 0).
- ``on_checkpoint(trainer, path)``: after a checkpoint is handed to its writer (rank 0).
- ``on_finish(trainer, summary)``: once, with the run's summary, whatever its status (rank 0).

Built-ins: ``metrics`` (metrics.jsonl and progress.json: the run's record of its curve) and
``console`` (the progress line). Yours: ``package.module:ClassName`` (constructed with no
arguments; subclassing Callback is optional: missing hooks are skipped), e.g. ``run.callbacks=[metrics,console,mylab.tracking:SlackOnFinish]``. A built-in
that fails stops the run (it is the record); one of yours that fails is switched off with a
one-line warning, and the run goes on.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

BUILT_IN = ("metrics", "console")


def fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


class Callback:
    """Base class: every hook does nothing."""

    critical = False  # True: an error stops the run (the run's own records)

    def on_step_end(self, trainer, step: int) -> None:
        pass

    def log_values(self, trainer, step: int) -> dict:
        return {}

    def on_log(self, trainer, row: dict) -> None:
        pass

    def on_eval(self, trainer, values: dict) -> None:
        pass

    def on_checkpoint(self, trainer, path) -> None:
        pass

    def on_finish(self, trainer, summary) -> None:
        pass


class MetricsFile(Callback):
    """metrics.jsonl (one row per logged step) and progress.json."""

    critical = True

    def on_log(self, trainer, row: dict) -> None:
        trainer.rd.append_metrics([row])
        trainer.rd.write_progress(
            {"step": row["step"], "total_steps": trainer.total, "train_loss": row["train_loss"]}
        )


class Console(Callback):
    """``[run id] step 100/1285 | tok 409.6k | loss 2.8 | ... | ETA 41s``."""

    critical = True

    def on_log(self, trainer, row: dict) -> None:
        tps = trainer.tc.tokens_per_step
        rate = row["tokens_per_s"]
        eta = (trainer.total - row["step"]) * tps / max(rate, 1e-9)
        val = f" | val {row['val_loss']:.4f}" if row.get("val_loss") is not None else ""
        print(
            f"[{trainer.rid}] step {row['step']}/{trainer.total} | tok {fmt_count(row['tokens'])}"
            f" | loss {row['train_loss']:.4f} | aux {row['aux_loss']:.4f}{val}"
            f" | lr {row['lr']:.2e} | {fmt_count(rate)} tok/s | ETA {eta:.0f}s",
            flush=True,
        )


def check_names(names: list[str], trackers: bool = False) -> str | None:
    """What is wrong with ``run.callbacks`` (or, ``trackers``, ``run.trackers``): one line."""
    if trackers:
        wrong = [n for n in names if n not in ("tensorboard", "wandb")]
        return f"unknown tracker(s) {wrong}; known: tensorboard, wandb" if wrong else None
    for name in names:
        if name not in BUILT_IN and ":" not in name:
            return (
                f"unknown callback {name!r}; built-ins: {', '.join(BUILT_IN)}, or "
                "package.module:ClassName for one of your own"
            )
    return None


def _load(name: str) -> Callback:
    if name == "metrics":
        return MetricsFile()
    if name == "console":
        return Console()
    if name in ("tensorboard", "wandb"):  # run.trackers; their libraries load when first used
        from experiments.trainer import trackers

        return trackers.TensorBoard() if name == "tensorboard" else trackers.WandB()
    module, _, cls = name.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)()
    except (ImportError, AttributeError, TypeError) as e:
        raise ValueError(f"run.callbacks: cannot make {name!r} ({e})") from None


class Callbacks:
    """The run's callbacks, called in order; see the module's docstring for the rules."""

    def __init__(self, names: list[str]):
        self.items = [_load(n) for n in names]

    def _call(self, hook: str, *args) -> list[Any]:
        out = []
        for cb in list(self.items):
            method = getattr(cb, hook, None)  # a class of one's own need not subclass Callback
            if method is None:
                continue
            try:
                out.append(method(*args))
            except Exception as e:
                if getattr(cb, "critical", False):
                    raise
                self.items.remove(cb)
                print(
                    f"warning: callback {type(cb).__name__}.{hook} failed ({type(e).__name__}: "
                    f"{e}); switched off for the rest of this run",
                    file=sys.stderr,
                    flush=True,
                )
        return out

    def step_end(self, trainer, step: int) -> None:
        self._call("on_step_end", trainer, step)

    def values(self, trainer, step: int) -> dict:
        row: dict = {}
        for extra in self._call("log_values", trainer, step):
            row |= extra or {}
        return row

    def log(self, trainer, row: dict) -> None:
        self._call("on_log", trainer, row)

    def eval(self, trainer, values: dict) -> None:
        self._call("on_eval", trainer, values)

    def checkpoint(self, trainer, path) -> None:
        self._call("on_checkpoint", trainer, path)

    def finish(self, trainer, summary) -> None:
        self._call("on_finish", trainer, summary)
