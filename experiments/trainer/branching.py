"""Branches: a run that starts from another run's (its trunk's) kept state instead of from
scratch. A WSD trunk trained to the largest budget keeps its state at the step where each
smaller budget's decay begins (run.keep_steps); the branch of that budget loads it and decays
(Hägele et al. 2024). With the same warmup in steps, seed and data order, the branch's steps
are the same arithmetic as the run trained from scratch: on CPU it equals that run bit for bit
(tests/experiments/test_branches.py), so its id is that run's id.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments.files import read_json
from experiments.record import SUMMARY, RunDir, is_locked
from experiments.trainer.optim import decay_start
from models.typed import ConfigError

POLL_S = 2.0
SAY_EVERY_S = 300.0


def branch_source(branch_from: str, run_path: Path) -> Path:
    """run.branch_from as a directory: a run id names a sibling of this run's directory."""
    p = Path(branch_from)
    return p if len(p.parts) > 1 or p.is_absolute() else Path(run_path).parent / branch_from


class BranchPointMissing(RuntimeError):
    pass


def wait_for_branch_point(trunk: Path, step: int, wait_s: float, rid: str) -> Path:
    """The trunk's kept state at ``step``, once it exists. Waits while the trunk runs (or has
    not started, or was interrupted and may resume), up to ``wait_s``; fails at once, naming
    why, when the trunk is finished or failed without it."""
    point = RunDir(trunk).branch_point(step)
    t0 = last_said = time.monotonic()
    while not point.exists():
        summary = read_json(trunk / SUMMARY) or {}
        status = summary.get("status")
        if status in ("done", "failed") and not is_locked(trunk) and not point.exists():
            why = (
                f"trunk {trunk.name} is done without its state at step {step} (a branch that "
                "started once removed it: rerun that branch from its own checkpoint)"
                if status == "done"
                else f"trunk {trunk.name} failed ({summary.get('reason')}); retry it, then this run"
            )
            raise BranchPointMissing(why)
        waited = time.monotonic() - t0
        if waited > wait_s:
            raise BranchPointMissing(
                f"trunk {trunk.name} did not reach step {step} within run.branch_wait_s="
                f"{wait_s:g} s"
            )
        if time.monotonic() - last_said >= SAY_EVERY_S or waited == 0:
            print(f"[{rid}] waiting for trunk {trunk.name} to reach step {step}", flush=True)
            last_said = time.monotonic()
        time.sleep(POLL_S)
    return point


def check_branching(tc) -> None:
    """A branch equals its run trained from scratch only if the trunk's learning rate agreed
    with its own up to the branch step: the same warmup in steps, and no decay yet."""
    run, optim = tc.run, tc.optim
    late = [k for k in run.keep_steps if k >= tc.steps]
    if late:
        raise ConfigError(f"run.keep_steps: {late} not before the run's last step {tc.steps}")
    if run.branch_step is None:
        return
    if optim.schedule not in ("wsd", "constant"):
        raise ConfigError(
            f"run.branch_from: a branch needs optim.schedule=wsd or constant (its LR before the "
            f"decay must not depend on the run's length), got {optim.schedule}"
        )
    if optim.warmup_steps is None and optim.warmup_fraction > 0:
        raise ConfigError(
            "run.branch_from: set optim.warmup_steps (a warmup_fraction differs between a "
            "branch and its longer trunk)"
        )
    if run.branch_step > decay_start(tc.steps, optim):
        raise ConfigError(
            f"run.branch_step={run.branch_step} is past this run's decay start "
            f"{decay_start(tc.steps, optim)} (of {tc.steps} steps)"
        )


def start_from_trunk(trainer) -> None:
    """A branch's start: the trunk's state at run.branch_step (waiting for the trunk to get
    there), then a checkpoint of its own at once, so the trunk's kept state can go."""
    import torch

    from experiments.distributed import expert_parallel as ep_
    from experiments.trainer.checkpoint import load_training_state, set_rng_state

    run, st = trainer.tc.run, trainer.state
    trunk, step = branch_source(run.branch_from, trainer.rd.path), run.branch_step
    point = wait_for_branch_point(trunk, step, run.branch_wait_s, trainer.rid)
    ckpt = torch.load(point, map_location="cpu", weights_only=True)
    if ckpt["loop"]["step"] != step:
        raise RuntimeError(f"{point} holds step {ckpt['loop']['step']}, not {step}")
    load_training_state(
        trainer.model,
        trainer.opt,
        ep_.split_experts(ckpt, trainer.model.expert_parallel_params, trainer.ep),
    )
    st.load_state_dict(ckpt["loop"])
    # the trunk's history stays (first loss, recent losses); its time and evals are its own
    st.start_step, st.wall_time_s, st.time = step, 0.0, type(st.time)()
    st.val_loss = st.val_loss_se = st.icl_score = None
    set_rng_state(ckpt["rng"], trainer.device)
    print(f"[{trainer.rid}] branching from {trunk.name} at step {step}/{trainer.total}", flush=True)
    trainer.save_checkpoint(wait=True)
    if trainer.d.is_main:
        point.unlink(missing_ok=True)
