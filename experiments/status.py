"""The state of a planned run, read from its run directory (never from a process table)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

STALE_AFTER_S = 120  # a run whose progress.json is older than this is no longer running


def run_state(run_dir: Path) -> tuple[str, str | None]:
    """(status, reason): done | failed | running | interrupted | pending."""
    summary = run_dir / "summary.json"
    if summary.exists():
        try:
            s = json.loads(summary.read_text())
            return s.get("status", "failed"), s.get("reason")
        except ValueError:
            return "failed", "corrupt summary.json"
    progress = run_dir / "progress.json"
    if progress.exists():
        try:
            p = json.loads(progress.read_text())
            if time.time() - p.get("time", 0) < STALE_AFTER_S:
                return "running", f"step {p['step']}/{p['total_steps']}"
        except (ValueError, KeyError):
            pass
    if (run_dir / "checkpoint.pt").exists():
        return "interrupted", "resumes from its checkpoint"
    return "pending", None


def sweep_states(runs_root: Path, run_ids: list[str]) -> dict[str, tuple[str, str | None]]:
    return {rid: run_state(runs_root / rid) for rid in run_ids}


def format_status(states: dict[str, tuple[str, str | None]], names: dict[str, str]) -> str:
    counts = Counter(s for s, _ in states.values())
    order = ("done", "running", "interrupted", "failed", "pending")
    lines = [f"{len(states)} runs: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in order)]
    for rid, (status, reason) in states.items():
        if status == "failed":
            lines.append(f"  FAILED {names.get(rid, rid)} ({rid}): {reason}")
    return "\n".join(lines)
