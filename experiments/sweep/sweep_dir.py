"""A sweep's folder: its paths, the state of its runs, and its throughput record.

    <sweep dir>/runs/<run id>/     one run directory per planned run (experiments/record.py)
    <sweep dir>/plan/planned/      one Hydra config per run (the multirun's +planned=<id>)
    <sweep dir>/plan.json          the spec and every planned run
    <sweep dir>/lr_rule.json       the fitted LR rule, read back by every later plan
    <sweep dir>/sweep_log.jsonl    one line per invocation that trained: wall time, GPUs, FLOPs
    <sweep dir>/compile_cache/     torch.compile's caches, shared by the sweep's runs
    <sweep dir>/report/            the analysis report

A run's state is read from its run directory, never from a process table: "running" means a
process holds the run's lock, not that a file is recent, so an interrupted run is resumable at
once and a crashed one's lock is already free. The throughput record covers the sweep's wall
time, packing, start-up and compilation included: the sweep's one number.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from experiments.files import read_json
from experiments.record import CHECKPOINT, PROGRESS, SUMMARY, is_locked, read_jsonl


@dataclass(frozen=True)
class RunWork:
    """What a planned run trains: its steps (a branch's count on from its trunk's step, which
    its trunk trained) and the FLOPs and tokens of each."""

    first_step: int
    last_step: int
    flops_per_step: float
    tokens_per_step: float


ORDER = ("done", "running", "interrupted", "failed", "pending")
State = tuple[str, str | None, str | None]  # (status, reason, failure kind)


@dataclass(frozen=True)
class SweepDir:
    path: Path

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    @property
    def plan_configs(self) -> Path:
        return self.path / "plan"  # the multirun's --config-dir; configs in plan/planned/

    def planned_config(self, run_id: str) -> Path:
        return self.plan_configs / "planned" / f"{run_id}.yaml"

    def planned_overrides(self, run_id: str) -> dict:
        """What a run's planned config sets (the values the planner named the run by)."""
        return yaml.safe_load(self.planned_config(run_id).read_text()) or {}

    @property
    def plan(self) -> Path:
        return self.path / "plan.json"

    @property
    def lr_rule(self) -> Path:
        return self.path / "lr_rule.json"

    @property
    def log(self) -> Path:
        return self.path / "sweep_log.jsonl"

    @property
    def compile_cache(self) -> Path:
        return self.path / "compile_cache"

    @property
    def report(self) -> Path:
        return self.path / "report"

    def run(self, run_id: str) -> Path:
        return self.runs / run_id

    def states(self, run_ids: list[str]) -> dict[str, State]:
        return {rid: run_state(self.run(rid)) for rid in run_ids}

    def done_summaries(self) -> dict[str, dict]:
        """The summaries of the folder's done runs, planned now or not (an earlier seed, or a
        budget or variant this invocation leaves out), by run id."""
        found = {p.parent.name: read_json(p) for p in sorted(self.runs.glob(f"*/{SUMMARY}"))}
        return {rid: s for rid, s in found.items() if s and s.get("status") == "done"}

    def steps_done(self, run_ids: list[str]) -> dict[str, int]:
        """The optimiser steps each run has recorded (its summary's, else its progress's)."""
        out = {}
        for rid in run_ids:
            s = read_json(self.run(rid) / SUMMARY)
            if s and s.get("status") == "done":
                out[rid] = int(s.get("steps") or 0)
            else:
                out[rid] = int((read_json(self.run(rid) / PROGRESS) or {}).get("step") or 0)
        return out

    def record_throughput(
        self,
        before: dict[str, int],
        work: dict[str, RunWork],
        wall: float,
        gpus: int,
        peak: float | None,
        conditions: dict | None = None,
    ) -> dict:
        """Append this invocation's throughput to the log, and return it: the steps its runs
        advanced past what they had recorded when it started (``before``, from steps_done),
        at each run's FLOPs and tokens a step. A sweep stopped and resumed over several
        invocations is counted once: a resumed run's earlier steps belong to the invocation
        that trained them, an interrupted run's steps to this one, and steps trained again
        after a kill lost them count nowhere (they are the waste the number should show).
        ``conditions``: what the number was measured under (runs at once, MPS), kept with it:
        a sweep once ran without MPS and its log did not say so."""
        after = self.steps_done(list(before))
        flops = tokens = 0.0
        steps = finished = 0
        for rid, was in before.items():
            w = work[rid]
            new = max(0, after[rid] - max(was, w.first_step))
            steps += new
            flops += new * w.flops_per_step
            tokens += new * w.tokens_per_step
            finished += after[rid] >= w.last_step > was
        entry = {
            "time": time.time(),
            "wall_s": wall,
            "gpus": gpus,
            "runs": finished,
            "steps": steps,
            "flops": flops,
            "tokens": tokens,
            "peak_flops_per_gpu": peak,
        } | (conditions or {})
        with open(self.log, "a") as f:
            f.write(json.dumps(entry) + "\n")
        return entry

    def throughput_log(self) -> list[dict]:
        return read_jsonl(self.log)[0]


def run_state(run_dir: Path) -> State:
    """(status, reason, failure kind): status is one of ORDER."""
    run_dir = Path(run_dir)
    if is_locked(run_dir):
        return "running", "a process holds its lock", None
    if (run_dir / SUMMARY).exists():
        s = read_json(run_dir / SUMMARY)
        if s is None:
            return "failed", "corrupt summary.json", None
        return s.get("status") or "failed", s.get("reason"), s.get("failure_kind")
    if (run_dir / CHECKPOINT).exists():
        return "interrupted", "resumes from its checkpoint", None
    return "pending", None, None


def to_train(states: dict[str, State], retry_failed: bool) -> list[str]:
    """Runs a sweep launches: pending and interrupted ones, failed setups (retried
    automatically), and failed trainings when asked."""
    out = []
    for rid, (status, _, kind) in states.items():
        if status in ("pending", "interrupted") or (
            status == "failed" and (kind == "setup" or retry_failed)
        ):
            out.append(rid)
    return out


def format_status(states: dict[str, State], names: dict[str, str]) -> str:
    counts = Counter(s for s, _, _ in states.values())
    lines = [f"{len(states)} runs: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ORDER)]
    for rid, (status, reason, kind) in states.items():
        if status == "failed":
            tag = " (setup: retried on the next launch)" if kind == "setup" else ""
            lines.append(f"  FAILED {names.get(rid, rid)} ({rid}){tag}: {reason}")
    return "\n".join(lines)


def format_efficiency(entries: list[dict]) -> str:
    wall = sum(e["wall_s"] for e in entries)
    flops, tokens = sum(e["flops"] for e in entries), sum(e["tokens"] for e in entries)
    runs = sum(e["runs"] for e in entries)
    gpus = max((e["gpus"] for e in entries), default=0)
    peak = next((e["peak_flops_per_gpu"] for e in entries if e.get("peak_flops_per_gpu")), None)
    text = (
        f"throughput: {runs} runs finished in {wall:.0f}s of sweep wall time: "
        f"{tokens / max(wall, 1e-9):,.0f} tokens/s"
    )
    if peak and gpus:
        gpu_time = sum(e["wall_s"] * e["gpus"] for e in entries)
        text += (
            f", aggregate MFU {100 * flops / (gpu_time * peak):.1f}% ({flops:.3g} FLOPs over "
            f"{gpus} GPU(s) x {peak / 1e12:.0f} TFLOP/s bf16 peak)"
        )
    return text
