"""The state of a planned run, read from its run directory (never from a process table).

"running" means a process holds the run's lock (experiments/record.py), not that a file is
recent: an interrupted run is resumable at once, and a crashed one's lock is already free.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from experiments.record import CHECKPOINT, SUMMARY, is_locked

ORDER = ("done", "running", "interrupted", "failed", "pending")


def run_state(run_dir: Path) -> tuple[str, str | None, str | None]:
    """(status, reason, failure kind): status is one of ORDER."""
    run_dir = Path(run_dir)
    if is_locked(run_dir):
        return "running", "a process holds its lock", None
    summary = run_dir / SUMMARY
    if summary.exists():
        try:
            s = json.loads(summary.read_text())
            return s.get("status") or "failed", s.get("reason"), s.get("failure_kind")
        except ValueError:
            return "failed", "corrupt summary.json", None
    if (run_dir / CHECKPOINT).exists():
        return "interrupted", "resumes from its checkpoint", None
    return "pending", None, None


def sweep_states(
    runs_root: Path, run_ids: list[str]
) -> dict[str, tuple[str, str | None, str | None]]:
    return {rid: run_state(Path(runs_root) / rid) for rid in run_ids}


def to_train(states: dict, retry_failed: bool) -> list[str]:
    """Runs a sweep launches: pending and interrupted ones, failed setups (retried
    automatically), and failed trainings when asked."""
    out = []
    for rid, (status, _, kind) in states.items():
        if status in ("pending", "interrupted") or (
            status == "failed" and (kind == "setup" or retry_failed)
        ):
            out.append(rid)
    return out


def format_status(states: dict, names: dict[str, str]) -> str:
    counts = Counter(s for s, _, _ in states.values())
    lines = [f"{len(states)} runs: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ORDER)]
    for rid, (status, reason, kind) in states.items():
        if status == "failed":
            tag = " (setup: retried on the next launch)" if kind == "setup" else ""
            lines.append(f"  FAILED {names.get(rid, rid)} ({rid}){tag}: {reason}")
    return "\n".join(lines)
