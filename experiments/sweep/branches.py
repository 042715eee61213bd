"""WSD branches (sweep.schedule.kind=wsd_branches): one trunk per (size, sparsity, seed, LR)
serves every budget that point is planned at.

Each point's runs at its budgets become warmup-stable-decay runs sharing a warmup in steps
(warmup_fraction of the shortest one's steps). The one at the largest budget is the *trunk*:
it trains in full and keeps its state at the step where each shorter run's decay begins
(run.keep_steps); each shorter run is a *branch* that starts from that state (run.branch_from)
and trains only its decay, `cooldown` of its steps. A branch equals its run trained from
scratch (tests/experiments/test_branches.py), so it is planned, identified and recorded as that
run; what it saves is the trunk's share of its steps. Points planned at one budget only are
plain WSD runs. Cosine controls (sweep.schedule.cosine_controls) add, at chosen budgets, the
cosine run of every point, for the report's paired WSD-minus-cosine difference.
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict

from experiments.trainer.optim import decay_start


def _point_key(overrides: dict) -> str:
    """What a run is but for its budget: the runs of one trunk share it."""
    rest = {k: v for k, v in overrides.items() if k != "budget"}
    return json.dumps(rest, sort_keys=True, default=str)


def _wsd(overrides: dict, sched, warmup: int) -> dict:
    ov = copy.deepcopy(overrides)
    ov["optim"] = {
        **ov.get("optim", {}),
        "schedule": "wsd",
        "decay_fraction": sched.cooldown,
        "decay_shape": sched.decay_shape,
        "warmup_steps": warmup,
    }
    return ov


def branch_plan(spec, runs: list, compose, planned) -> list:
    """The cosine plan ``runs`` as trunks, branches, plain WSD runs and cosine controls.
    ``compose(overrides) -> TrainConfig``; ``planned(tc, overrides, target) -> PlannedRun``."""
    sched = spec.schedule
    points: dict[str, list] = defaultdict(list)
    for r in runs:
        points[_point_key(r.overrides)].append(r)
    out_trunks, out_plain, out_branches, out_controls = [], [], [], []
    for members in points.values():
        members.sort(key=lambda r: r.budget)
        # the schedule changes no run's length: the planned steps are the WSD runs' steps
        fraction = compose(members[0].overrides).optim.warmup_fraction
        warmup = math.ceil(fraction * min(r.steps for r in members))
        wsd = [compose(_wsd(r.overrides, sched, warmup)) for r in members]
        starts = [decay_start(tc.steps, tc.optim) for tc in wsd]
        # a shorter run branches where its decay begins, which lies in the trunk's stable phase
        # (decay_start never decreases with the length); equal lengths have nothing to share
        branches = [i for i in range(len(members) - 1) if wsd[i].steps < wsd[-1].steps]
        trunk_name = ""
        mine = []  # this point's branches
        for i, (r, tc) in enumerate(zip(members, wsd)):
            ov = _wsd(r.overrides, sched, warmup)
            is_trunk = i == len(members) - 1 and bool(branches)
            if i in branches:
                ov["run"] = {"branch_from": "<trunk>", "branch_step": starts[i]}
            elif is_trunk:
                ov["run"] = {"keep_steps": sorted(starts[j] for j in branches)}
            p = planned(compose(ov), ov, r.n_target)
            if i in branches:
                p.role, p.trunk_step = "branch", starts[i]
                p.trained_flops = p.flops * (tc.steps - starts[i]) / tc.steps
                mine.append(p)
            elif is_trunk:
                p.role, trunk_name = "trunk", p.name
                out_trunks.append(p)
            else:
                out_plain.append(p)
            if any(abs(r.budget - b) <= 1e-9 * b for b in sched.cosine_controls):
                control = copy.copy(r)
                control.role = "control"
                out_controls.append(control)
        for p in mine:
            p.trunk = trunk_name
        out_branches += mine
    out_branches.sort(key=lambda p: p.trunk_step)
    # trunks first, branches last: a launcher that starts runs in order (joblib, the basic
    # launcher) never has a branch waiting for a trunk that has not started
    return out_trunks + out_plain + out_controls + out_branches


def link_branches(runs: list) -> None:
    """Once run ids exist: each branch's run.branch_from names its trunk's id (logistics: it
    changes no run id)."""
    ids = {r.name: r.run_id for r in runs if r.role == "trunk"}
    for r in runs:
        if r.role == "branch":
            r.overrides["run"]["branch_from"] = ids[r.trunk]


def flops_summary(runs: list) -> str | None:
    """FLOPs the plan trains, against the same runs each trained from scratch."""
    if not any(r.role == "branch" for r in runs):
        return None
    trained = sum(r.trained_flops or r.flops for r in runs)
    full = sum(r.flops for r in runs)
    n = sum(r.role == "branch" for r in runs)
    return (
        f"WSD branches: {n} of {len(runs)} runs branch from {sum(r.role == 'trunk' for r in runs)}"
        f" trunks; the plan trains {trained:.3g} FLOPs, {100 * trained / full:.0f}% of the "
        f"{full:.3g} its runs would take each from scratch"
    )
