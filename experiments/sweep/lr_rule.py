"""Learning rates carried from a tuning budget to the others.

At the tuning budget every (size, E) point tries the spec's LR grid. The best LR of each point
(lowest validation loss) is fitted as log LR = a + b log N_active + c log E, the form
Ludziejewski et al. 2025 found (LR falls with size and with the number of experts), and the
other budgets' runs take the fitted LR of their own (N_active, E), kept inside the grid tried
(a fit is not trusted beyond the LRs it saw). With fewer than 4 tuned points, or one size,
the fit drops the terms the points cannot determine.

The rule is fitted once and kept in the sweep's ``lr_rule.json``: every later plan, on any
machine, reads it back while the tuned points are unchanged. A refit elsewhere can differ in
the last bits (another BLAS), and the LR is part of each run's identity, so a refitted rule
would give every finished run a new id and train it again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.files import read_json
from experiments.record import SUMMARY
from models.accounting import account


@dataclass
class LRRule:
    coef: list[float]  # a, b, c of log LR = a + b log N_active + c log E
    grid: list[float]
    points: list[dict]  # the best LR of each tuned (d_model, E)
    at_edge: int  # tuned points whose best LR was the grid's smallest or largest

    def __call__(self, tc) -> float:
        n = account(tc.model).params_active_non_embedding
        x = [1.0, math.log(n), math.log(tc.model.moe.num_experts / tc.model.moe.top_k)]
        # fsum, not sum: Python 3.12's sum() of floats compensates and 3.11's does not, and a
        # last-bit difference in the LR is a different run id on the other machine.
        lr = math.exp(math.fsum(c * v for c, v in zip(self.coef, x)))
        return float(min(max(lr, min(self.grid)), max(self.grid)))

    def describe(self) -> str:
        a, b, c = self.coef
        return (
            f"LR = exp({a:.3f} {b:+.3f} ln N_active {c:+.3f} ln E) from {len(self.points)} "
            f"tuned points (best at the grid's edge in {self.at_edge}), clipped to "
            f"[{min(self.grid):g}, {max(self.grid):g}]"
        )


def fit_lr_rule(runs_root: Path, tuning_runs: list, grid: list[float]) -> LRRule | None:
    """The rule from the tuning budget's finished runs; None if any of them is not done."""
    best: dict[tuple, tuple[float, float, int, float]] = {}
    for r in tuning_runs:
        s = read_json(Path(runs_root) / r.run_id / SUMMARY)
        if s is None or s.get("status") != "done":
            return None
        key = (r.d_model, r.num_experts / r.top_k)
        if key not in best or s["val_loss"] < best[key][0]:
            best[key] = (s["val_loss"], s["lr"], s["params_active_non_embedding"], key[1])
    points = [{"d_model": k[0], "E": k[1], "lr": v[1], "val_loss": v[0]} for k, v in best.items()]
    y = np.log([v[1] for v in best.values()])
    X = np.column_stack(
        [
            np.ones(len(y)),
            np.log([v[2] for v in best.values()]),
            np.log([v[3] for v in best.values()]),
        ]
    )
    keep = [0] + [j for j in (1, 2) if np.ptp(X[:, j]) > 0 and len(y) >= 4]
    coef = np.zeros(3)
    coef[keep] = np.linalg.lstsq(X[:, keep], y, rcond=None)[0]
    edge = sum(p["lr"] in (min(grid), max(grid)) for p in points) if len(grid) >= 3 else 0
    return LRRule(coef.tolist(), list(grid), points, int(edge))


def persisted(path: Path, fitted: LRRule) -> LRRule:
    """The rule kept at ``path`` if it was fitted on the same tuned points, else ``fitted``."""
    try:
        kept = LRRule(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return fitted
    if kept.points == fitted.points and kept.grid == fitted.grid:
        return kept
    print(f"note: the tuning results changed since {path} was written; the LR rule is refitted")
    return fitted


MAX_LR_EXTENSIONS = 2  # grid steps a tuned point may go beyond the spec's grid (lr_grid=auto)


def grid_step(grid: list[float]) -> float:
    """The grid's ratio between neighbouring LRs (their geometric mean)."""
    g = sorted(grid)
    return float(np.exp(np.mean(np.diff(np.log(g))))) if len(g) > 1 else 2.0


def _tried(runs_root: Path, tuning_runs: list) -> dict | None:
    """{(d_model, E): {lr: val_loss}} of the tuning budget's runs; None until all are done."""
    out: dict = {}
    for r in tuning_runs:
        s = read_json(Path(runs_root) / r.run_id / SUMMARY)
        if s is None or s.get("status") != "done":
            return None
        losses = out.setdefault((r.d_model, r.num_experts / r.top_k), {})
        losses[r.lr] = min(s["val_loss"], losses.get(r.lr, float("inf")))
    return out


def edges(tried: dict) -> dict:
    """{point: "low" | "high"} where its best LR is the smallest or largest of 3+ it tried."""
    out = {}
    for key, losses in tried.items():
        lrs = sorted(losses)
        best = min(losses, key=losses.get)
        if len(lrs) >= 3 and best in (lrs[0], lrs[-1]):
            out[key] = "low" if best == lrs[0] else "high"
    return out


def extensions(runs_root: Path, tuning_runs: list, grid: list[float], extra: dict) -> dict | None:
    """lr_grid=auto: the LRs to add, {point: [lr]}, one step beyond the best where it is at
    the edge of what its point tried (at most MAX_LR_EXTENSIONS steps past ``grid``); {} when
    none is needed; None until the tuning runs are done."""
    tried = _tried(runs_root, tuning_runs)
    if tried is None:
        return None
    step, lo, hi = grid_step(grid), min(grid), max(grid)
    out = {}
    for key, side in edges(tried).items():
        lrs = sorted(tried[key])
        nxt = lrs[-1] * step if side == "high" else lrs[0] / step
        if lo / step**MAX_LR_EXTENSIONS * 0.999 <= nxt <= hi * step**MAX_LR_EXTENSIONS * 1.001:
            out[key] = [*extra.get(key, []), float(f"{nxt:.6g}")]
    return out


def refusal(runs_root: Path, tuning_runs: list, grid: list[float]) -> str | None:
    """Why a rule fitted on these tuned points is not to be trusted (more than a third of
    them best at an edge of what they tried), with the grid that would fix it; else None."""
    tried = _tried(runs_root, tuning_runs) or {}
    at = edges(tried)
    if not tried or 3 * len(at) <= len(tried):
        return None
    step = grid_step(grid)
    high = sum(side == "high" for side in at.values())
    low = len(at) - high
    wider = sorted(grid)
    if high:
        wider.append(float(f"{wider[-1] * step:.3g}"))
    if low:
        wider.insert(0, float(f"{wider[0] / step:.3g}"))
    return (
        f"the LR rule is refused: the best LR was at the edge of its grid at {len(at)} of "
        f"{len(tried)} tuned points ({high} at the largest, {low} at the smallest), so it "
        f"carries a choice, not an optimum; extend sweep.lrs to {wider}, or set "
        "sweep.lr_grid=auto (the sweep extends it where needed), or sweep.lr_rule_at_edge=warn"
    )
