"""Bracketing each group's minimum (``sweep.sizes.extend``).

The sizes of a group (one budget, sparsity and variant) are centred on a prior
(``sizes.tokens_per_param``); when the prior is off, the group's lowest loss sits at its
smallest or largest size and its IsoFLOP parabola has no point beyond the minimum. With
``extend: n``, a group whose runs are all done and whose lowest loss (mean over seeds; the best
LR where there are several) is at an edge, or (4+ sizes) whose parabola has its vertex between
an edge size and its neighbour, gains the family's next member beyond that edge, up to n
members a side, as long as the member trains for ``min_steps`` and within ``max_epochs`` of
the corpus; a member that cannot be added is said, not skipped silently.

The extensions are derived again from the finished runs on every plan (as the LR grid's are,
lr_rule.extensions), so a sweep resumed on another machine plans the same runs, and a sweep
without ``extend`` plans exactly what it planned before.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experiments.files import read_json
from experiments.record import SUMMARY

Group = tuple[str | None, float, int, int]  # (variant, budget, E, K)


def group_of(r) -> Group:
    return (r.overrides.get("variant"), r.budget, r.num_experts, r.top_k)


def describe(g: Group) -> str:
    variant, budget, e, k = g
    return f"E{e}k{k} at {budget:.3g}" + (f" ({variant})" if variant else "")


@dataclass
class Extensions:
    """Members to add beyond each group's window, and what a plan could not add."""

    counts: dict[Group, tuple[int, int]] = field(default_factory=dict)  # (below, above)
    max_tokens: float | None = None  # sizes.max_epochs x the corpus's training tokens
    notes: list[str] = field(default_factory=list)
    added: dict[Group, tuple[int, int]] = field(default_factory=dict)  # what widen could add

    def widen(self, group: Group, cands: list, chosen: list, spec) -> list:
        """``chosen`` (members of ``cands``, ordered by size) with the group's extensions:
        the next members beyond each edge (neighbours, or ~x spacing apart)."""
        below, above = self.counts.get(group, (0, 0))
        if not below and not above:
            return chosen
        widths = [tc.model.d_model for tc in cands]
        index = [widths.index(tc.model.d_model) for tc in chosen]
        out = list(chosen)
        done = {"below": 0, "above": 0}
        for side, n in (("below", below), ("above", above)):
            edge = index[0] if side == "below" else index[-1]
            for _ in range(n):
                j = _beyond(cands, edge, side, spec)
                why = self._refusal(cands[j], spec) if j is not None else None
                if j is None or why:
                    at = f"d_model {widths[edge]}"
                    self.notes.append(
                        f"sizes.extend: {describe(group)}: lowest loss at its {side} edge "
                        f"({at}), and no member can be added {side} it: "
                        + (why or "the family ends there (sweep.family.d_model_min/max)")
                    )
                    break
                edge = j
                done[side] += 1
                out = [cands[j], *out] if side == "below" else [*out, cands[j]]
        if done["below"] or done["above"]:
            self.added[group] = (done["below"], done["above"])
        return out

    def _refusal(self, tc, spec) -> str | None:
        tokens = tc.steps * tc.tokens_per_step
        if tc.steps < spec.sizes.min_steps:
            return f"d_model {tc.model.d_model} gets {tc.steps} steps < min_steps"
        if self.max_tokens is not None and tokens > self.max_tokens:
            epochs = spec.sizes.max_epochs
            return (
                f"d_model {tc.model.d_model} would train {tokens:,} tokens, over "
                f"sizes.max_epochs={epochs:g} of the corpus ({self.max_tokens:,.0f})"
            )
        return None


def _beyond(cands: list, edge: int, side: str, spec) -> int | None:
    """The index of the member one step beyond ``edge``: the neighbour, or with a ratio
    spacing the member nearest N_edge / spacing (below) or N_edge x spacing (above)."""
    step = -1 if side == "below" else 1
    if not 0 <= edge + step < len(cands):
        return None
    if spec.sizes.spacing == "consecutive":
        return edge + step
    from experiments.sweep.plan import rule_n

    want = math.log(rule_n(spec, cands[edge])) + step * math.log(spec.sizes.spacing)
    side_members = range(0, edge) if side == "below" else range(edge + 1, len(cands))
    return min(side_members, key=lambda j: abs(math.log(rule_n(spec, cands[j])) - want))


def lowest_edges(runs_root: Path, runs: list) -> dict[Group, str]:
    r"""{group: "below" | "above"} for each group whose runs are all done and whose minimum
    has too few sizes on one side: its lowest loss is at its smallest or largest size, or the
    parabola in log N through its losses has its vertex between an edge size and that size's
    neighbour (one point then carries the whole of that side, and L\*'s interval runs open
    there: study 2's dense group at 6e15, lowest at its second size)."""
    loss: dict[Group, dict[int, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    n_of: dict[tuple[Group, int], int] = {}  # each group's N at each width
    unfinished: set[Group] = set()  # no decision for a group until all its runs are done
    for r in runs:
        s = read_json(Path(runs_root) / r.run_id / SUMMARY)
        if s is None or s.get("status") != "done" or s.get("val_loss") is None:
            unfinished.add(group_of(r))
        else:
            loss[group_of(r)][r.d_model][r.lr].append(float(s["val_loss"]))
            n_of[(group_of(r), r.d_model)] = r.n_rule
    out = {}
    for g, by_lr in loss.items():
        if g in unfinished or len(by_lr) < 2:
            continue
        widths = sorted(by_lr)
        # each width's loss: the mean over seeds, at its best LR where several were tried
        y = [min(sum(v) / len(v) for v in by_lr[d].values()) for d in widths]
        best = min(range(len(widths)), key=y.__getitem__)
        side = {0: "below", len(widths) - 1: "above"}.get(best)
        if side is None and len(widths) >= 4:  # with 3, every vertex is next to an edge
            x = np.log([n_of[(g, d)] for d in widths])
            a, b, _ = np.polyfit(x, y, 2)
            if a > 0:
                vertex = -b / (2 * a)
                side = "below" if vertex < x[1] else "above" if vertex > x[-2] else None
        if side:
            out[g] = side
    return out


def extended_plan(
    spec,
    runs_root: Path,
    make: Callable[[Extensions], tuple[list, list]],
    max_tokens: Callable[[list], float | None],
) -> tuple[list, list, str | None]:
    """(runs, configs, note): the plan ``make(extensions)`` with every group's extensions
    that its finished runs call for, each group at most ``sizes.extend`` members a side;
    ``max_tokens(configs)``: the most tokens a run may train (the corpus's cap)."""
    runs, configs = make(Extensions())
    cap = max_tokens(configs)
    ext = Extensions(max_tokens=cap)
    limit = spec.sizes.extend
    while True:
        grow = {}
        for g, side in lowest_edges(runs_root, runs).items():
            below, above = ext.counts.get(g, (0, 0))
            if side == "below" and below < limit:
                grow[g] = (below + 1, above)
            elif side == "above" and above < limit:
                grow[g] = (below, above + 1)
        if not grow:
            break
        ext = Extensions({**ext.counts, **grow}, cap)
        before = len(runs)
        runs, configs = make(ext)
        if len(runs) == before:  # every wanted member refused: said in the notes
            break
    lines = list(dict.fromkeys(ext.notes))  # a variant's groups are planned once each
    if ext.added:
        lines.insert(
            0,
            f"sizes.extend: {sum(b + a for b, a in ext.added.values())} size(s) added beyond "
            "the edges of "
            + ", ".join(f"{describe(g)} ({b} below, {a} above)" for g, (b, a) in ext.added.items()),
        )
    return runs, configs, "\n".join(lines) or None
