"""Runs that finish before a deadline: what a sweep launches when its machine will be gone.

``finish_within=<seconds>`` tells the driver that whatever is still training after that many
seconds is lost (a lent GPU machine that goes back bare, a job whose scratch disk is wiped at
its time limit): a run stopped there leaves a checkpoint nobody will read. So the driver
launches only the runs that its own measurements say will finish in time, in the order the
multirun would start them, and leaves the rest, untouched, to the next invocation.

The pace is measured, never assumed: seconds of training per FLOP of each finished run in the
sweep folder (``wall_time_s / trained_flops`` from its summary, compilation and evaluation
included), the median over the runs of the same kind (experts, top-k, granularity), so packed
neighbours, compile caches and this GPU are all in it. A kind that has not finished a run yet
takes the slowest known kind's pace; with no finished run at all nothing is held back (and
the driver says so). Resumed runs need only what is left of them and go first: they finish
soonest, and their checkpoints are what the deadline would otherwise waste.
"""

from __future__ import annotations

import heapq
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.files import read_json
from experiments.record import CHECKPOINT, SUMMARY
from experiments.sweep.sweep_dir import RunWork, SweepDir

Kind = tuple[int, int, int]  # (experts, top-k, granularity)
MARGIN = 1.15  # fewer neighbours finish faster, a colder cache slower: room for the latter
START_S = 30.0  # a run's start (process, data mapping, model build) outside its wall time


@dataclass(frozen=True)
class Pace:
    """Seconds per FLOP by kind, measured on the sweep's finished runs."""

    by_kind: dict[Kind, float]
    runs: int  # finished runs measured

    def seconds(self, kind: Kind, flops: float) -> float:
        pace = self.by_kind.get(kind, max(self.by_kind.values()))
        return START_S + MARGIN * pace * flops

    def describe(self) -> str:
        kinds = ", ".join(
            f"E{e} k{k}{f' g{g}' if g != 1 else ''} {1e12 * p:.3g} s/PFLOP"
            for (e, k, g), p in sorted(self.by_kind.items())
        )
        return f"pace from {self.runs} finished run(s): {kinds}"


def kind_of(summary: dict) -> Kind:
    return (
        int(summary.get("num_experts") or 1),
        int(summary.get("top_k") or 1),
        int(summary.get("granularity") or 1),
    )


def measured_pace(runs_dir: Path) -> Pace | None:
    """The pace of each kind from the finished runs under runs_dir; None without any."""
    samples: dict[Kind, list[float]] = defaultdict(list)
    for path in sorted(runs_dir.glob(f"*/{SUMMARY}")) if runs_dir.exists() else []:
        s = read_json(path) or {}  # a torn or foreign file is not a measurement
        flops, wall = s.get("trained_flops") or s.get("flops"), s.get("wall_time_s")
        if s.get("status") == "done" and flops and wall and wall > 0:
            samples[kind_of(s)].append(wall / flops)
    if not samples:
        return None
    by_kind = {k: statistics.median(v) for k, v in samples.items()}
    return Pace(by_kind, sum(len(v) for v in samples.values()))


def fitting(
    order: list[str], seconds: Callable[[str], float], slots: int, time_left: float
) -> tuple[list[str], list[str]]:
    """(runs to launch, runs held back): the multirun starts runs in ``order`` as its
    ``slots`` free up; a run whose estimated end falls after ``time_left`` is held back and
    its slot goes to the next one that fits."""
    free = [0.0] * max(slots, 1)  # when each slot is next free, seconds from now
    keep, held = [], []
    for rid in order:
        start = heapq.heappop(free)
        end = start + seconds(rid)
        if end <= time_left:
            keep.append(rid)
            heapq.heappush(free, end)
        else:
            held.append(rid)
            heapq.heappush(free, start)
    return keep, held


def resumed_first(order: list[str], steps_done: dict[str, int]) -> list[str]:
    """The launch order with the runs that have progress moved to the front (stable)."""
    return sorted(order, key=lambda rid: steps_done.get(rid, 0) == 0)


def within_deadline(
    order: list[str],
    remaining_flops: dict[str, float],
    kinds: dict[str, Kind],
    pace: Pace | None,
    slots: int,
    time_left: float,
) -> tuple[list[str], str]:
    """(runs to launch, the line that says what was held back and why)."""
    if pace is None:
        return order, (
            "finish_within: no finished run in this sweep to measure the pace by; "
            f"launching all {len(order)}"
        )
    keep, held = fitting(
        order, lambda rid: pace.seconds(kinds[rid], remaining_flops[rid]), slots, time_left
    )
    line = (
        f"finish_within: {len(keep)} of {len(order)} runs finish in the {max(time_left, 0):.0f} s "
        f"left on {slots} slot(s) ({pace.describe()})"
    )
    if held:
        line += f"; {len(held)} left for the next invocation"
    return keep, line


def finishing(
    sweep_dir: SweepDir,
    todo: list[str],
    work: dict[str, RunWork],  # every planned run's (launch.work_of)
    cost: dict,  # run id -> its TrainConfig
    before: dict[str, int],  # steps each run has recorded (SweepDir.steps_done)
    slots: int,
    deadline: float,  # time.time() by which the runs must be done
) -> list[str]:
    """The runs of ``todo`` that finish before ``deadline`` (``finish_within``), in the order
    the multirun will start them."""
    resumable = {  # progress without a checkpoint starts again from step 0
        rid: before[rid] if (sweep_dir.run(rid) / CHECKPOINT).exists() else 0 for rid in todo
    }
    left = {
        rid: max(0, work[rid].last_step - max(steps, work[rid].first_step))
        * work[rid].flops_per_step
        for rid, steps in resumable.items()
    }
    kinds = {
        rid: (
            cost[rid].model.moe.num_experts,
            cost[rid].model.moe.top_k,
            cost[rid].model.moe.granularity,
        )
        for rid in todo
    }
    keep, line = within_deadline(
        resumed_first(todo, resumable),
        left,
        kinds,
        measured_pace(sweep_dir.runs),
        slots,
        deadline - time.time(),
    )
    print(line, flush=True)
    return keep
