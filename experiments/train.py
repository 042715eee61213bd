"""One training run: ``python -m experiments.train model=tiny moe.num_experts=4 budget.flops=3e12``.

Rerunning a finished config is a no-op that says so; rerunning an interrupted one resumes from
its checkpoint; one whose training failed is left alone unless ``run.retry_failed=true`` (a
failure in setup, such as a missing GPU or empty data folder, is retried automatically). One
process at a time holds a run directory; a directory that belongs to another config is
refused. Ctrl-C or SIGTERM saves a checkpoint and exits with one line. Bad configs fail before
training with one line and exit code 2. Under torchrun every rank runs this; rank 0 alone
writes the run record.
"""

from __future__ import annotations

import gc
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.config import (
    ConfigError,
    DataError,
    TrainConfig,
    as_dict,
    from_dict,
    register_defaults,
)
from experiments.files import LocksUnsupported
from experiments.record import ForeignRunDir, RunBusy, RunDir, RunSummary, run_id

if TYPE_CHECKING:
    from experiments.distributed.ranks import Dist

EXIT_FAILED, EXIT_CONFIG = 1, 2
PREVIOUS_FAILURE = "previous_failure.json"  # a retried run's last failure record
SET_ASIDE_CHECKPOINT = "checkpoint.not-learning.pt"  # a run that was not learning: kept apart
register_defaults()


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


def _say(d, message: str) -> None:
    if d.is_main:
        print(message, flush=True)


def _should_train(tc: TrainConfig, rid: str, rd: RunDir) -> dict | None:
    """None to train; else the summary that says why not (done, failed, running)."""
    previous = rd.read_summary()
    status = (previous or {}).get("status")
    if previous and status == "done" and previous.get("run_id") == rid:
        val = previous.get("val_loss")
        print(f"[{rid}] already done (val_loss {val:.4f}); nothing to train: {rd.path}", flush=True)
        return previous
    if previous and status == "failed" and previous.get("run_id") == rid:
        if previous.get("failure_kind") == "setup":
            print(f"[{rid}] setup failed before ({previous.get('reason')}); retrying", flush=True)
        elif not tc.run.retry_failed:
            print(
                f"[{rid}] failed before ({previous.get('reason')}); pass "
                f"run.retry_failed=true to retry: {rd.path}",
                flush=True,
            )
            return previous
    return None


def _open_run_dir(tc: TrainConfig, rid: str, rd: RunDir) -> dict | None:
    """Rank 0: check, claim and lock the directory. Returns a summary when not training."""
    try:
        rd.create()
        rd.claim(rid, tc.run.overwrite, named_by_id=tc.run.dir is None)
    except (PermissionError, ForeignRunDir) as e:
        raise RunError(str(e)) from None
    skip = _should_train(tc, rid, rd)
    if skip is not None:
        return skip
    try:
        rd.lock()
    except RunBusy as e:
        print(f"[{rid}] skipped: {e}", flush=True)
        return {"run_id": rid, "status": "running", "reason": str(e)}
    except LocksUnsupported as e:  # not "held by another process": nothing could be held
        raise RunError(str(e)) from None
    torn = rd.clear_torn_writes()
    if torn:
        print(f"[{rid}] removed what an earlier process left half-written: {torn}", flush=True)
    previous = rd.read_summary()
    if previous and previous.get("status") == "failed":
        # A retry resumes from the run's last checkpoint, if it has one: nothing already
        # trained is deleted. The failure's record is kept beside it.
        rd.summary.replace(rd.path / PREVIOUS_FAILURE)
    rd.write_config(as_dict(tc))  # the validated config (a corpus's vocabulary filled in)
    return None


def _failed(tc, rid, kind: str, reason: str) -> RunSummary:
    return replace(RunSummary.planned(tc, rid), status="failed", failure_kind=kind, reason=reason)


def execute(resolved: dict, planned_id: str | None = None) -> dict:
    """Run (or skip, or resume) the run this resolved config describes; return its summary.
    ``planned_id``: the run id a sweep planned this config under (refused if it differs)."""
    tc = from_dict(resolved)
    # torch is imported here, not with the module: a sweep's multirun parent imports this
    # module only to hand its runs to the workers, and a config error exits before torch
    from experiments.distributed import ranks as dist_

    d = dist_.init()
    try:
        return _execute(tc, d, planned_id)
    finally:
        # Every rank leaves the process group before the interpreter exits: gloo's threads abort
        # the process ("terminate called without an active exception") when it is left alive.
        dist_.close(d)


def _execute(tc: TrainConfig, d: Dist, planned_id: str | None = None) -> dict:
    from experiments.data.dataset import check_lengths, open_dataset
    from experiments.distributed import ranks as dist_
    from experiments.distributed.devices import DeviceUnavailable, gpu_slot
    from experiments.trainer.interrupts import sweep_stopping
    from experiments.trainer.loop import Trainer
    from models.backends import BackendUnavailable

    local = tc.train.batch_size // d.world
    micro = tc.train.micro_batch_size
    if micro and local % micro:
        raise ConfigError(
            f"train.micro_batch_size={micro} does not divide the {local} sequences each of "
            f"the {d.world} ranks takes per step"
        )
    if tc.train.batch_size % d.world:
        raise ConfigError(
            f"train.batch_size={tc.train.batch_size} is not divisible by the "
            f"{d.world} data-parallel ranks"
        )
    rid = run_id(tc.identity())
    if planned_id is not None and rid != planned_id:
        # Trained, it would land in another directory than the sweep looks in, and the sweep
        # would plan it again at every invocation.
        raise RunError(
            f"planned run {planned_id} would train as {rid}: an override beside its planned "
            "config changed what the sweep planned"
        )
    rd = run_directory(tc, rid)
    skip = _open_run_dir(tc, rid, rd) if d.is_main else None
    skip = dist_.broadcast_object(skip, d)
    if skip is not None:
        return skip
    if tc.run.threads:
        import torch

        torch.set_num_threads(tc.run.threads)
    setup_failure, trainer = None, None
    try:
        with gpu_slot(tc.run.device, tc.run.gpu_slots, dist_.device_for(d)) as device:
            if sweep_stopping():  # checked once the slot is ours: a run may wait long for it
                return _not_started(d, rid)
            try:
                data = open_dataset(tc.data)
                check_lengths(data, tc.model.seq_len)
                trainer = Trainer(tc, rid, rd, data, device, d)
            except (DataError, ValueError, BackendUnavailable, RuntimeError, LocksUnsupported) as e:
                setup_failure = _failed(tc, rid, "setup", f"setup: {e}")
                raise RunError(f"[{rid}] {e}") from None
            _say(
                d,
                f"[{rid}] {tc.steps} steps x {tc.tokens_per_step} tokens, "
                f"{trainer.acc.params_active:,} active / {trainer.acc.params_total:,} total "
                f"params, S={trainer.acc.sparsity:.3f}, device {device} x{d.world}, backend "
                f"{trainer.backend}{', compiled' if trainer.compiled else ''}: {rd.path}",
            )
            if sweep_stopping():  # asked during the setup, before this run's handlers were in
                return _not_started(d, rid)
            summary = _train_and_record(trainer, d, rd)
    except DeviceUnavailable as e:  # a setup failure too: retried on the next run
        setup_failure = _failed(tc, rid, "setup", f"setup: {e}")
        raise RunError(f"[{rid}] {e}") from None
    finally:
        if setup_failure is not None and d.is_main:
            rd.write_summary(setup_failure)
        if d.is_main:
            rd.release()
        del trainer
        _free_memory()
    _report(d, rid, rd, summary)
    return summary.to_dict()


def _train_and_record(trainer, d: Dist, rd: RunDir) -> RunSummary:
    """Train, then write the run's record, with the stop signals ours until it is written.

    A signal that comes while the record is being written acts once it is written: torchrun
    sends SIGTERM to the ranks left when one is lost, and under the default action rank 0
    died before recording that it had lost a rank (a resumable run, not a failure).
    """
    from experiments.distributed import ranks as dist_
    from experiments.trainer.health import TrainingFailed
    from experiments.trainer.interrupts import Interrupted, Interrupts

    summary = None
    with Interrupts() as interrupts:
        try:
            summary = trainer.run(interrupts)
        except TrainingFailed as e:
            summary = trainer.summary("failed", str(e))
            summary.failure_kind = "training"
            if e.restart and d.is_main:  # set aside, never deleted: a retry starts afresh
                trainer.ckpt.wait()
                if rd.checkpoint.exists():
                    rd.checkpoint.rename(rd.path / SET_ASIDE_CHECKPOINT)
        except Interrupted as e:
            summary = e.summary
            raise
        except Exception as e:  # OOM, kernel errors...: record why, never lose the run
            if dist_.lost_peer(e, d):  # not a failure: the rerun resumes
                why = str(e).strip().splitlines()[0][:200]
                summary = trainer.summary(
                    "interrupted",
                    f"lost a rank at step {trainer.state.step} ({why}); rerun to resume "
                    f"from the checkpoint at step {trainer.checkpointed_step}",
                )
            else:
                summary = trainer.summary("failed", f"{type(e).__name__}: {e}")
                summary.failure_kind = "training"
                traceback.print_exc()
        finally:
            if summary is not None and d.is_main:
                rd.write_summary(summary)
                trainer.callbacks.finish(trainer, summary)
    return summary


def _not_started(d, rid: str) -> dict:
    _say(d, f"[{rid}] not started: its sweep was asked to stop")
    return {"run_id": rid, "status": "pending", "reason": "the sweep was stopped"}


def _report(d, rid: str, rd: RunDir, s: RunSummary) -> None:
    if s.status == "failed":
        _say(d, f"[{rid}] FAILED: {s.reason}: {rd.path}")
    elif s.status == "interrupted":
        _say(d, f"[{rid}] {s.reason}: {rd.path}")
    else:
        _say(
            d,
            f"[{rid}] done: val_loss {s.val_loss:.4f}, {s.tokens_per_s:.0f} tok/s"
            f"{f', MFU {100 * s.mfu:.1f}%' if s.mfu else ''}, run directory: {rd.path}",
        )


def _free_memory() -> None:
    """A sweep's worker process trains run after run: give the GPU memory back."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _planned_id() -> str | None:
    """The run id of the sweep's planned config this run was given (``+planned=<id>``)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().runtime.choices.get("planned")
    except ValueError:
        return None


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig):
    from experiments.trainer.interrupts import Interrupted

    try:
        summary = execute(resolve(cfg), _planned_id())
    except (ConfigError, DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        if _is_multirun():  # a sweep keeps going; the sweep's status reports the failure
            return {"status": "failed", "reason": str(e)}
        sys.exit(EXIT_CONFIG)
    except Interrupted as e:  # the whole process stops, a sweep too: that is what was asked
        print(f"stopped: {e}", file=sys.stderr, flush=True)
        e.chain()  # saved and recorded: now a scheduler's own handler (requeue) may act
        sys.exit(e.code)
    stopped = summary.get("status") == "interrupted" and "lost a rank" in (
        summary.get("reason") or ""
    )
    if (summary.get("status") == "failed" or stopped) and not _is_multirun():
        sys.exit(EXIT_FAILED)
    return summary


if __name__ == "__main__":
    main()
