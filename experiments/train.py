"""One training run: ``python -m experiments.train model=tiny moe.num_experts=4 budget.flops=3e12``.

Rerunning a finished config is a no-op that says so; rerunning an interrupted one resumes from
its checkpoint; a failed one is left alone unless ``run.retry_failed=true``. Bad configs fail
before training with one line.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.config import ConfigError, DataError, TrainConfig, from_dict
from experiments.record import RunDir, run_id

EXIT_FAILED, EXIT_CONFIG = 1, 2


class RunError(Exception):
    """A run could not start; the message is one line for the user."""


def resolve(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        raise ConfigError(f"{key}: {getattr(e, 'msg', str(e)).splitlines()[0]}") from None


def run_directory(tc: TrainConfig, rid: str) -> RunDir:
    return RunDir(Path(tc.run.dir) if tc.run.dir else Path(tc.run.root) / rid)


def execute(resolved: dict) -> dict:
    """Run (or skip, or resume) the run this resolved config describes; return its summary."""
    from experiments.data import prepare
    from experiments.devices import select_device
    from experiments.trainer import Trainer, TrainingFailed, base_summary
    from models.backends import BackendUnavailable

    tc = from_dict(resolved)
    rid = run_id(tc.identity())
    rd = run_directory(tc, rid)
    previous = rd.read_summary()
    if previous and previous.get("status") == "done":
        print(f"[{rid}] already done (val_loss {previous.get('val_loss'):.4f}); "
              f"nothing to train: {rd.path}", flush=True)
        return previous
    if previous and previous.get("status") == "failed" and not tc.run.retry_failed:
        print(f"[{rid}] failed before ({previous.get('reason')}); pass run.retry_failed=true "
              f"to retry: {rd.path}", flush=True)
        return previous
    try:
        rd.create()
    except PermissionError as e:
        raise RunError(str(e)) from None
    if previous:  # retrying a failed run: start from scratch
        rd.summary.unlink(missing_ok=True)
        rd.checkpoint.unlink(missing_ok=True)
    rd.write_config(resolved)
    try:
        device = select_device(tc.run.device)
        data = prepare(tc.data)
        trainer = Trainer(tc, rid, rd, data, device)
    except (DataError, ValueError, BackendUnavailable, RuntimeError) as e:
        summary = base_summary(tc, rid) | {"status": "failed", "reason": f"setup: {e}"}
        rd.write_summary(summary)
        raise RunError(f"[{rid}] {e}") from None
    print(f"[{rid}] {tc.steps} steps x {tc.tokens_per_step} tokens, "
          f"{trainer.acc.params_active:,} active / {trainer.acc.params_total:,} total params, "
          f"S={trainer.acc.sparsity:.3f}, device {device}, backend {trainer.backend}: {rd.path}",
          flush=True)
    try:
        summary = trainer.run()
    except TrainingFailed as e:
        summary = trainer.summary("failed", str(e))
    except Exception as e:  # OOM, kernel errors...: record why, never lose the run silently
        summary = trainer.summary("failed", f"{type(e).__name__}: {e}")
        traceback.print_exc()
    if summary["status"] == "interrupted":
        print(f"[{rid}] stopped at step {summary['step']} as asked; rerun to resume: {rd.path}")
        return summary
    rd.write_summary(summary)
    if summary["status"] == "failed":
        print(f"[{rid}] FAILED: {summary['reason']}: {rd.path}", flush=True)
    else:
        print(f"[{rid}] done: val_loss {summary['val_loss']:.4f}, "
              f"{summary['tokens_per_s']:.0f} tok/s, run directory: {rd.path}", flush=True)
    return summary


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig):
    try:
        summary = execute(resolve(cfg))
    except (ConfigError, DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        if _is_multirun():  # a sweep keeps going; the sweep's status reports the failure
            return {"status": "failed", "reason": str(e)}
        sys.exit(EXIT_CONFIG)
    if summary.get("status") == "failed" and not _is_multirun():
        sys.exit(EXIT_FAILED)
    return summary


if __name__ == "__main__":
    main()
