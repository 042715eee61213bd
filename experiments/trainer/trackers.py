"""Live trackers, offline first: TensorBoard event files and Weights & Biases runs.

``run.trackers=[tensorboard]`` (or ``wandb``, or both) adds them to the run's callbacks. They
are fed the same rows as metrics.jsonl (which stays the record), on rank 0 only, and a tracker
that fails (not installed, no disk, no network) is switched off with one line: it never fails a
run. Install them with ``pip install -e ".[trackers]"``.

- ``tensorboard``: event files in ``<run dir>/tensorboard``; a resumed run drops the events
  logged after its checkpoint (TensorBoard's purge_step), so curves never double back.
- ``wandb``: the run id is ours, so a resumed run continues the same W&B run; ``WANDB_MODE``
  is respected, and without it the run is offline unless ``WANDB_API_KEY`` is set (sync later
  with ``wandb sync <run dir>/wandb``); ``WANDB_PROJECT`` names the project.

``python -m experiments.export_runs`` replays finished run directories into either tracker.
"""

from __future__ import annotations

import os
from pathlib import Path

from experiments.trainer.callbacks import Callback

TRACKERS = ("tensorboard", "wandb")
PROJECT = "moe-sparsity-scaling"


def scalars(row: dict) -> dict[str, float]:
    """A metrics row as named scalars: numbers as they are, per-layer lists as ``name/layerN``,
    flags as 0/1; None and text left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key == "step" or value is None or isinstance(value, str):
            continue
        if isinstance(value, (list, tuple)):
            out |= {f"{key}/layer{i}": float(v) for i, v in enumerate(value) if v is not None}
        else:
            out[key] = float(value)
    return out


class TensorBoardLog:
    """One run's TensorBoard log (the callback's and the exporter's)."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, text: dict | None = None) -> None:
        if text:
            self.writer.add_text("summary", "  \n".join(f"{k}: {v}" for k, v in text.items()))
        self.writer.close()


class WandBLog:
    """One run's W&B run (the callback's and the exporter's)."""

    def __init__(self, run_id: str, directory: Path, config: dict, name: str | None = None):
        import wandb

        mode = os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") else "offline"
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            id=run_id,
            name=name or run_id,
            resume="allow",
            dir=str(directory),
            config=config,
            mode=mode,
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self, text: dict | None = None) -> None:
        if text:
            self.run.summary.update(text)
        self.run.finish()


def _final(summary) -> dict:
    return {
        k: getattr(summary, k)
        for k in ("status", "val_loss", "val_loss_se", "icl_score", "mfu", "reason")
        if getattr(summary, k, None) is not None
    }


class _Tracker(Callback):
    """A callback feeding one log (opened at the first row): logged rows, evaluations under
    eval/, and the summary's final values."""

    def __init__(self):
        self.log = None

    def _open(self, trainer):
        if self.log is None:
            self.log = self._create(trainer)
        return self.log

    def _create(self, trainer):
        raise NotImplementedError

    def on_log(self, trainer, row: dict) -> None:
        self._open(trainer).log(scalars(row), row["step"])

    def on_eval(self, trainer, values: dict) -> None:
        self._open(trainer).log(
            {f"eval/{k}": v for k, v in scalars(values).items()}, trainer.state.step
        )

    def on_finish(self, trainer, summary) -> None:
        self._open(trainer).close(_final(summary))


class TensorBoard(_Tracker):
    def _create(self, trainer) -> TensorBoardLog:
        # a resumed run's curve continues from its checkpoint (TensorBoard's purge_step)
        return TensorBoardLog(trainer.rd.path / "tensorboard", trainer.checkpointed_step or None)


class WandB(_Tracker):
    def _create(self, trainer) -> WandBLog:
        from experiments.config import as_dict

        return WandBLog(trainer.rid, trainer.rd.path, as_dict(trainer.tc))
