"""A study's preregistered reading, evaluated from its runs: supported, rejected or inconclusive,
and which condition decided it.

    python -m analysis.verdict docs/studies/study2/runs [MORE_RUNS...] \
        --reading docs/studies/study2/reading.json --out docs/studies/study2/verdict

Several sources are read as one table: keep a check's runs (the LR check's) in a folder of their
own, so that the study's report, which keeps the best LR per point, never sees them.

The reading (a JSON file; the defaults below are the second study's, docs/studies/study2/PLAN.md)
names the endpoint, Delta = L*(sparse) - L*(dense), at a primary and a secondary budget, and the
conditions a verdict needs. Each condition comes out ``met``, ``failed`` or ``missing`` (the runs
that would show it are not in the table), with the numbers behind it:

- **primary**: the upper end of Delta's 95% interval below 0 at the primary budget. Where the
  sparse group is not bracketed, Delta is censored: its lowest size-mean loss minus the dense
  L* bounds Delta from above (analysis/effects.py), which can support, never reject;
- **secondary**: the estimate at the secondary budget has the primary's sign;
- **bracketed**: every group of the main arm at both budgets has an interior minimum;
- **epochs**: no run trains over ``max_epochs`` of its corpus;
- **early phase**: the runs at the size nearest each group's optimum (N*, or the best size of an
  unbracketed group) leave the early plateau (training loss below ``early_phase_loss``) within
  ``early_phase_max`` of their tokens; read from each run's metrics.jsonl;
- **LR check**: each run of ``lr_check_sweep``, against the main grid's run of the same budget,
  variant, sparsity, width and seed, is not lower by more than ``lr_check_sigmas`` times that
  budget's seed sigma. The primary budget's check runs are required; a check at another budget
  counts too (the plan re-tunes the LR if a check wins anywhere);
- **gate**: Delta with the gate arm's runs in place of the main arm's sparse ones (the main arm's
  dense runs against the gate arm, analysed as one table) does not flip the sign: at no budget
  the arm has does its interval lie wholly on the other side of 0 than the primary estimate.

Supported: primary, secondary and every condition met. Rejected: Delta's lower end above
``reject_above`` at both budgets (never from a censored Delta) and every condition met.
Otherwise inconclusive, with the conditions that failed or are missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.collect import TableError, load_table
from analysis.laws import Columns
from analysis.pilot import plateau_tokens
from analysis.render import clean
from analysis.source import SourceAnalysis, analyse_source
from experiments.record import METRICS

MET, FAILED, MISSING = "met", "failed", "missing"


@dataclass(frozen=True)
class Reading:
    """What the plan fixed in advance (PLAN.md "Reading"); every field can be set in the file."""

    primary_budget: float = 6e15
    secondary_budget: float = 3e15
    sparse: float = 0.9375  # S of the endpoint's sparse group (E16 at top-1)
    variant: str | None = "top1"  # the main arm
    gate_variant: str | None = "g2renorm"  # the gate ablation's arm (None: no such condition)
    main_sweep: str | None = "study2"  # runs of other sweeps (checks) are not the grid
    lr_check_sweep: str | None = "study2_lr"
    lr_check_sigmas: float = 2.0
    reject_above: float = -0.02
    max_epochs: float = 0.9
    early_phase_max: float = 0.15
    early_phase_loss: float = 3.0
    n_boot: int = 1000

    @classmethod
    def load(cls, path: Path | None) -> Reading:
        if path is None:
            return cls()
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TableError(f"{path}: unknown reading keys {unknown} (known: {sorted(known)})")
        for f in fields(cls):
            value, default = data.get(f.name), f.default
            if f.name not in data or (value is None and "None" in str(f.type)):
                continue
            numeric = isinstance(default, (int, float)) and not isinstance(value, bool)
            if not (isinstance(value, (int, float)) if numeric else isinstance(value, str)):
                raise TableError(f"{path}: {f.name}={value!r} is not a {type(default).__name__}")
        return cls(**data)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.05 * max(abs(a), abs(b))


def _condition(name: str, state: str, detail: str, **numbers) -> dict:
    return {"condition": name, "state": state, "detail": detail, **numbers}


def _effect(a: SourceAnalysis, budget: float, sparse: float) -> dict | None:
    """{estimate, ci, censored, paired} of Delta at a budget, or None where the table cannot
    give it (``paired``: the contrast at matched width and seed, analysis/effects.py)."""
    key = f"{sparse:.4f}"
    for b, e in (a.iso.effects if a.iso else {}).items():
        if not _close(float(b), budget):
            continue
        paired = (e.get("paired") or {}).get(key)
        if key in (e.get("vs_dense") or {}):
            d = e["vs_dense"][key]
            return {"estimate": d["delta"], "ci": d["ci"], "censored": False, "paired": paired}
        if key in (e.get("vs_dense_bound") or {}):
            d = e["vs_dense_bound"][key]
            return {
                "estimate": d["delta_at_most"],
                "ci": d["ci"],
                "censored": True,
                "paired": paired,
            }
    return None


def _groups(a: SourceAnalysis, budgets: list[float]) -> list[dict]:
    return [g for g in (a.iso.groups if a.iso else []) if any(_close(g["C"], b) for b in budgets)]


def _bracketed(a: SourceAnalysis, r: Reading) -> dict:
    budgets = [r.primary_budget, r.secondary_budget]
    groups = _groups(a, budgets)
    if not groups:
        return _condition("bracketed", MISSING, "no IsoFLOP group at the reading's budgets")
    open_ = [f"C={g['C']:.2g} S={g['sparsity']:.4g}" for g in groups if not g["bracketed"]]
    seen = {(round(np.log10(g["C"]), 2)) for g in groups}
    if len(seen) < 2:
        return _condition("bracketed", MISSING, "groups at one of the two budgets only")
    if open_:
        return _condition("bracketed", FAILED, "not bracketed: " + ", ".join(open_))
    return _condition("bracketed", MET, f"all {len(groups)} groups have an interior minimum")


def _epochs(table: pd.DataFrame, r: Reading) -> dict:
    if "epochs" not in table or table["epochs"].isna().all():
        return _condition("epochs", MISSING, "the table has no epochs column")
    worst = float(table["epochs"].max())
    state = MET if worst <= r.max_epochs else FAILED
    return _condition("epochs", state, f"largest {worst:.3f} (cap {r.max_epochs})", largest=worst)


def _nearest_runs(a: SourceAnalysis, g: dict) -> pd.DataFrame:
    """The runs of a group at its size nearest the optimum (N* if bracketed, else best size)."""
    df = a.df
    mine = df[(df["budget_group"] == g["budget"]) & (df["sparsity"] == g["sparsity"])]
    target = g["n_star"] if g["bracketed"] and np.isfinite(g["n_star"]) else g["best_n"]
    sizes = np.sort(mine["N_total"].unique())
    nearest = sizes[np.argmin(np.abs(np.log(sizes) - np.log(target)))]
    return mine[mine["N_total"] == nearest]


def _early_phase(a: SourceAnalysis, r: Reading) -> dict:
    groups = _groups(a, [r.primary_budget, r.secondary_budget])
    worst, where, unread = 0.0, "", 0
    for g in groups:
        for _, run in _nearest_runs(a, g).iterrows():
            metrics = Path(str(run.get("run_dir", ""))) / METRICS
            if not metrics.exists():
                unread += 1
                continue
            tokens = plateau_tokens(metrics, r.early_phase_loss)
            frac = 1.0 if tokens is None else tokens / float(run["tokens"])
            if frac >= worst:
                worst, where = frac, f"C={g['C']:.2g} S={g['sparsity']:.4g} d={run['d_model']}"
    if not groups or unread:
        return _condition(
            "early phase", MISSING, f"{unread} runs near an optimum have no metrics.jsonl here"
        )
    state = MET if worst < r.early_phase_max else FAILED
    return _condition(
        "early phase",
        state,
        f"largest {100 * worst:.1f}% of the tokens ({where}); limit {100 * r.early_phase_max:.0f}%",
        largest=worst,
    )


def _done_at(table: pd.DataFrame, sweep: str | None, budget: float | None = None) -> pd.DataFrame:
    """The finished runs of one sweep, at one budget unless ``budget`` is None."""
    done = table[(table["sweep"] == sweep) & (table["status"] == "done")]
    if budget is None:
        return done
    return done[[_close(float(c), budget) for c in done["budget_flops"]]]


def _lr_check(table: pd.DataFrame, a: SourceAnalysis, r: Reading) -> dict:
    if r.lr_check_sweep is None:
        return _condition("LR check", MET, "the reading has none")
    if "sweep" not in table:
        return _condition("LR check", MISSING, "the table has no sweep column")
    # The plan re-tunes the LR if a check wins anywhere, so every budget the check has runs at
    # is read, each against its own seed sigma; the primary budget's runs are required.
    checks = _done_at(table, r.lr_check_sweep)
    budgets = sorted({float(c) for c in checks["budget_flops"]}, reverse=True)
    if not any(_close(b, r.primary_budget) for b in budgets):
        return _condition(
            "LR check", MISSING, f"no run of {r.lr_check_sweep} at the primary budget"
        )
    parts, n_pairs, failed = [], 0, False
    for budget in budgets:
        part = _lr_check_at(table, a, r, budget)
        if part is None:
            if _close(budget, r.primary_budget):
                return _condition(
                    "LR check", MISSING, f"no seed sigma or planned run at C={budget:g}"
                )
            continue
        detail, pairs, better = part
        parts.append(detail)
        n_pairs += pairs
        failed |= better > 0
    return _condition("LR check", FAILED if failed else MET, "; ".join(parts), pairs=n_pairs)


def _lr_check_at(
    table: pd.DataFrame, a: SourceAnalysis, r: Reading, budget: float
) -> tuple[str, int, int] | None:
    """One budget's pairs of a check run and its planned run: (detail, pairs, how many of them
    the check LR wins by more than the sigmas allowed), or None where it cannot be read."""
    noise = [n for b, n in (a.iso.noise_by_budget if a.iso else {}).items() if _close(b, budget)]
    sigma = noise[0].noise.sigma if noise and noise[0].noise is not None else None
    if sigma is None:
        return None
    key = ["variant", "sparsity", "d_model", "seed"]
    checks = _done_at(table, r.lr_check_sweep, budget)
    grid = _done_at(table, r.main_sweep, budget)
    pairs = checks.merge(grid, on=key, suffixes=("", "_planned"))
    if pairs.empty:
        return None
    pairs["gain"] = pairs["val_loss_planned"] - pairs["val_loss"]  # > 0: the check LR is better
    worst = pairs.loc[pairs["gain"].idxmax()]
    better = int((pairs["gain"] > r.lr_check_sigmas * sigma).sum())
    detail = (
        f"C={budget:g}: {len(pairs)} pairs; largest gain of a check LR {worst['gain']:+.4f} "
        f"(lr {worst['lr']:g} vs {worst['lr_planned']:g}, S={worst['sparsity']:.4g}, "
        f"d={worst['d_model']}) against {r.lr_check_sigmas:g} sigma = "
        f"{r.lr_check_sigmas * sigma:.4f}"
    )
    return detail, len(pairs), better


def _gate(table: pd.DataFrame, main: SourceAnalysis, r: Reading, sign: float) -> dict:
    if r.gate_variant is None:
        return _condition("gate", MET, "the reading has none")
    gate = table[table["variant"] == r.gate_variant]
    if gate.empty:
        return _condition("gate", MISSING, f"no run of the {r.gate_variant} arm")
    dense = main.table[main.table["sparsity"] == 0]
    both = pd.concat([dense, gate], ignore_index=True).assign(variant=r.gate_variant)
    a = analyse_source(
        f"dense + {r.gate_variant}", (), Columns(), n_boot=r.n_boot, loaded=(both, [])
    )
    readings, flipped = {}, []
    for budget in (r.primary_budget, r.secondary_budget):
        e = _effect(a, budget, r.sparse)
        if e is None:
            continue
        readings[f"{budget:.2g}"] = e
        if _opposite(e, sign):
            flipped.append(f"{budget:.2g}")
    if not readings:
        return _condition("gate", MISSING, "the gate arm has no IsoFLOP group against dense")
    detail = "; ".join(f"C={b}: {_delta_text(e)}" for b, e in readings.items())
    return _condition("gate", FAILED if flipped else MET, detail, readings=readings)


def _opposite(e: dict, sign: float) -> bool:
    """Whether Delta's interval lies wholly on the other side of 0 than ``sign`` (a censored
    Delta is an upper bound: it can show a negative Delta, never a positive one)."""
    ci = e.get("ci")
    if not ci or None in ci:
        return False
    if sign < 0:
        return not e["censored"] and ci[0] > 0
    return ci[1] < 0


def _delta_text(e: dict) -> str:
    ci = e.get("ci")
    interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci and None not in ci else ""
    text = f"Delta {'<= ' if e['censored'] else ''}{e['estimate']:+.3f}{interval}"
    text += " (censored: an upper bound)" if e["censored"] else ""
    p = e.get("paired")
    if p and p.get("ci"):
        text += f", paired {p['mean']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] ({p['pairs']})"
    return text


def evaluate(sources, reading: Reading) -> dict:
    """The verdict of the runs in ``sources`` (runs tables or sweeps' runs folders; one, or a
    list read as one table)."""
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    table = pd.concat([load_table(s)[0] for s in sources], ignore_index=True)
    source = ", ".join(map(str, sources))
    if "variant" not in table:
        table["variant"] = reading.variant
    table["variant"] = table["variant"].fillna(reading.variant or "")
    grid = table
    if reading.main_sweep is not None and "sweep" in table:
        grid = table[table["sweep"] == reading.main_sweep]
    main_table = grid[grid["variant"] == reading.variant] if reading.variant else grid
    if main_table.empty:
        raise TableError(f"no run of the main arm ({reading.variant}) in {source}")
    main = analyse_source(source, (), Columns(), n_boot=reading.n_boot, loaded=(main_table, []))
    primary = _effect(main, reading.primary_budget, reading.sparse)
    secondary = _effect(main, reading.secondary_budget, reading.sparse)
    sign = np.sign(primary["estimate"]) if primary else -1.0
    conditions = [
        _primary(primary),
        _secondary(primary, secondary),
        _bracketed(main, reading),
        _epochs(grid, reading),
        _early_phase(main, reading),
        _lr_check(table, main, reading),
        _gate(grid, main, reading, sign),
    ]
    verdict, why = _decide(conditions, primary, secondary, reading)
    return {
        "source": source,
        "reading": asdict(reading),
        "primary": primary,
        "secondary": secondary,
        "conditions": conditions,
        "verdict": verdict,
        "why": why,
    }


def _primary(e: dict | None) -> dict:
    if e is None or not e.get("ci") or e["ci"][1] is None:
        return _condition("primary", MISSING, "no interval of Delta at the primary budget")
    state = MET if e["ci"][1] < 0 else FAILED
    return _condition("primary", state, _delta_text(e))


def _secondary(primary: dict | None, e: dict | None) -> dict:
    if e is None:
        return _condition("secondary", MISSING, "no Delta at the secondary budget")
    same = primary is not None and np.sign(e["estimate"]) == np.sign(primary["estimate"])
    return _condition("secondary", MET if same else FAILED, _delta_text(e))


def _decide(conditions, primary, secondary, r: Reading) -> tuple[str, str]:
    state = {c["condition"]: c["state"] for c in conditions}
    others = [c for c in conditions if c["condition"] not in ("primary", "secondary")]
    not_met = [f"{c['condition']} {c['state']}" for c in others if c["state"] != MET]
    if state["primary"] == MET and state["secondary"] == MET and not not_met:
        return "supported", "Delta's upper end is below 0 and every condition is met"
    small = [
        e is not None
        and not e["censored"]
        and e.get("ci")
        and e["ci"][0] is not None
        and e["ci"][0] > r.reject_above
        for e in (primary, secondary)
    ]
    if all(small) and not not_met:
        return "rejected", f"Delta's lower end is above {r.reject_above} at both budgets"
    lacking = [f"{c['condition']} {c['state']}" for c in conditions if c["state"] != MET]
    return "inconclusive", "; ".join(lacking) or "neither supported nor rejected"


def render(v: dict) -> str:
    r = v["reading"]
    lines = [
        f"# Verdict: {v['verdict']}",
        "",
        f"{v['why']}.",
        "",
        f"Source: `{v['source']}`; endpoint Delta = L*(S={r['sparse']:.4g}) - L*(dense), primary "
        f"C={r['primary_budget']:.2g}, secondary C={r['secondary_budget']:.2g}.",
        "",
        "| condition | state | detail |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {c['condition']} | {c['state']} | {c['detail']} |" for c in v["conditions"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "sources", nargs="+", help="runs tables (csv/parquet) or sweeps' runs folders: one table"
    )
    ap.add_argument("--reading", type=Path, help="the plan's reading (JSON); default: study 2's")
    ap.add_argument("--out", type=Path, help="write verdict.json and verdict.md here")
    a = ap.parse_args(argv)
    try:
        v = evaluate(a.sources, Reading.load(a.reading))
    except (TableError, TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = render(v)
    print(text, end="")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "verdict.json").write_text(json.dumps(clean(v), indent=1))
        (a.out / "verdict.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
