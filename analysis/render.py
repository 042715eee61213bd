"""fits.json -> report.md: the one place numbers are formatted for people."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def clean(obj):
    """JSON-safe: numpy -> python, NaN/inf -> None, drop bootstrap sample arrays."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items() if not str(k).endswith("_samples")}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def num(v, digits: int = 4) -> str:
    """A number for people: 4 significant digits, '–' for missing."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)) and abs(v) < 10**digits:
        return str(int(v))
    return f"{v:.{digits}g}"


def size(v) -> str:
    """A parabola's N*: 'no minimum' where it opens downwards (N* = 0 or inf)."""
    if v is None or v == 0 or (isinstance(v, float) and not math.isfinite(v)):
        return "no minimum"
    return num(v)


def ci(interval) -> str:
    """[lo, hi]; a side the resamples do not bound prints as 'unbounded'; no interval '–'."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return "–"
    lo, hi = ("unbounded" if v is None else num(v) for v in interval)
    return f"[{lo}, {hi}]"


def _isoflop(iso: dict) -> list[str]:
    if iso.get("skipped"):
        return [f"IsoFLOP analysis skipped: {iso['skipped']}.\n"]
    lines = ["## IsoFLOP optima (a parabola of loss in log N per budget and sparsity)\n"]
    by_budget = iso.get("noise_by_budget") or {}
    lines.append(
        "Noise of one run's loss, each budget its own (never borrowed from another budget). "
        "Intervals: 95% from a parametric bootstrap of the whole design (every loss redrawn "
        "with its budget's noise, every group refitted, every quantity recomputed from the "
        "same draw).\n"
    )
    for b, n in by_budget.items():
        if n.get("sigma") is None or n.get("transition_dominated"):
            what = f"σ = {num(n['sigma'])} ({n['df']} df); " if n.get("sigma") is not None else ""
            lines.append(f"- C={b}: {what}**no intervals**: {n['no_interval_reason']}.")
        else:
            source = "replicate runs" if n["source"] == "replicates" else "residuals"
            flag = f" ({n['flag']})" if n.get("flag") else ""
            lines.append(f"- C={b}: σ = {num(n['sigma'])} ({n['df']} df, from {source}){flag}.")
    lines.append("")
    lines.append(
        "| C | S | runs | bracketed | curve (lack of fit) | N* | 95% CI | N*_active | 95% CI | "
        "D* | L* | 95% CI | best observed |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for g in iso["groups"]:
        br = "yes" if g["bracketed"] else f"no: {g['why_not_bracketed']}"
        lof = g.get("lack_of_fit")
        test = f"p = {lof['p']:.2g}" if lof else "not testable"
        lines.append(
            f"| {num(g['C'], 3)} | {g['sparsity']:.3f} | {g['n_runs']} | {br} | "
            f"{g.get('shape', 'parabola')} ({test}) | "
            f"{size(g['n_star'])} | {ci(g['n_star_ci'])} | {size(g['n_star_active'])} | "
            f"{ci(g['n_star_active_ci'])} | {num(g['d_star'])} | {num(g['loss_star'])} | "
            f"{ci(g['loss_star_ci'])} | {num(g['best_loss'])} at N={num(g['best_n'])} |"
        )
    cubic = [g for g in iso["groups"] if g.get("shape") == "cubic"]
    if cubic:
        lines.append(
            f"\n{len(cubic)} group(s) failed the parabola's lack-of-fit test against the "
            "replicate noise (p < 0.05): their N\\* and L\\* are the local minimum of a cubic "
            "in log N, which follows an asymmetric IsoFLOP curve.\n"
        )
    failed = [(g, f) for g in iso["groups"] for f in g.get("failed") or []]
    if failed:
        lines.append("\nRuns missing from their groups:\n")
        lines += [
            f"- C={num(g['C'], 3)}, S={g['sparsity']:.3f}: `{f['run_id']}` "
            f"(N={num(f['N_total'])}) {f['status']}: {f['reason']}"
            for g, f in failed
        ]
    lines.append(
        "\nOnly bracketed groups (the lowest observed loss at an interior size) are "
        "used below. L* is the parabola's vertex, which can lie below every observed "
        "loss; the best observed loss is beside it.\n"
    )
    lines += _effects(iso.get("sparsity_effect") or {})
    slopes = iso.get("loss_star_vs_sparsity", {})
    if slopes:
        lines.append("**Slope of L\\* vs S** (negative: sparser is better at fixed compute):\n")
        for c, v in slopes.items():
            excl = (
                f"; excluded (not bracketed): S={v['excluded_sparsities']}"
                if v["excluded_sparsities"]
                else ""
            )
            if "slope" in v:
                lines.append(
                    f"- C={c}: {num(v['slope'])} {ci(v.get('slope_ci'))} over S="
                    f"{[round(s, 4) for s in v['sparsities']]}{excl}"
                )
            else:
                lines.append(f"- C={c}: not estimated ({v['reason']}){excl}")
        lines.append("")
    for s, v in iso.get("size_scaling", {}).items():
        if "reason" in v:
            lines.append(f"- S={s}: no C-exponents ({v['reason']})")
        else:
            lines.append(
                f"- S={s}: N* ∝ C^{num(v['n_star']['exponent'], 3)} "
                f"{ci(v['n_star']['ci'])}, N*_active ∝ C^"
                f"{num(v['n_star_active']['exponent'], 3)} {ci(v['n_star_active']['ci'])}"
                f", D* ∝ C^{num(v['d_star']['exponent'], 3)} {ci(v['d_star']['ci'])}"
            )
    return [*lines, ""]


def _effects(effects: dict) -> list[str]:
    """The sparsity effect per budget: per doubling of E, vs dense, and paired."""
    if not effects:
        return []
    lines = [
        "**The sparsity effect** (negative: sparser is better at fixed compute). Per doubling of "
        "E (the slope of L\\* in log2 E, E = 1/(1-S)); ΔL\\* against dense per sparsity; and the "
        "paired contrast: a sparse run minus the dense run of the same width and seed, averaged "
        "over the pairs (t interval; it compares equal widths, not optima):\n"
    ]
    for c, e in effects.items():
        parts = []
        if "per_doubling" in e:
            parts.append(f"per doubling of E {num(e['per_doubling'])} {ci(e['per_doubling_ci'])}")
        for s, d in (e.get("vs_dense") or {}).items():
            parts.append(f"ΔL\\*(S={float(s):.4g}) {num(d['delta'])} {ci(d['ci'])}")
        for s, d in (e.get("paired") or {}).items():
            parts.append(
                f"paired S={float(s):.4g}: {num(d['mean'])} {ci(d['ci'])} ({d['pairs']} pairs)"
            )
        for s, d in (e.get("vs_dense_bound") or {}).items():
            parts.append(
                rf"ΔL\*(S={float(s):.4g}) at most {num(d['delta_at_most'])} {ci(d['ci'])} "
                r"(not bracketed: its lowest loss minus the dense L\*, an upper bound)"
            )
        lines.append(f"- C={c}: " + ("; ".join(parts) if parts else "nothing bracketed to compare"))
    return [*lines, ""]


def _law(name: str, e: dict, delta: float) -> list[str]:
    lines = [f"## Law: {name}\n"]
    if not e.get("identifiable", False):
        lines.append(
            "**Not identifiable from these runs**: "
            + "; ".join(e["reasons"])
            + ". What would fix it: "
            + "; ".join(e["fixes"])
            + ".\n"
        )
        return lines
    c = e["columns"]
    consts = ""
    if e.get("constants"):
        shown = ", ".join(
            f"{k}={'inf' if v is None else num(v)}" for k, v in e["constants"].items()
        )
        consts = f" Ê's constants, profiled over a grid: {shown}."
    lines.append(
        f"`{e['formula']}` with N=`{c['N']}` ({e['n_kind']} parameters), D=`{c['D']}`, "
        f"S=`{c['S']}`; Huber δ={delta:g} on log residuals, L-BFGS-B from a grid, "
        f"{e['n_bootstrap']} bootstrap resamples of runs "
        f"({100 * e['bootstrap_other_basin_fraction']:.0f}% of them found a better "
        f"minimum away from the point estimate's).{consts}\n"
    )
    lines.append("| parameter | estimate | 95% CI |\n|---|---|---|")
    lines += [f"| {p} | {num(v['estimate'])} | {ci(v['ci'])} |" for p, v in e["params"].items()]
    err = e["fit_errors"]
    lines.append(
        f"\nIn-sample: RMSE {num(err['rmse'])}, mean |rel. error| "
        f"{100 * err['mean_abs_rel_error']:.2f}%."
    )
    if e["holdout"]:
        h = e["holdout"]
        lines.append(
            f"Held out {h['rule']}: fit on {h['fit_n']} runs, error on "
            f"{h['held_out']['n']}: mean |rel. error| "
            f"{100 * h['held_out']['mean_abs_rel_error']:.2f}%."
        )
    if e.get("misspecified"):
        lines.append(f"\n**Misspecified: no optimum reported.** {e['misspecified'].capitalize()}.")
    if e["flags"]:
        lines.append("\n**Warnings:** " + "; ".join(e["flags"]) + ".")
    lo, hi = e["trained_sparsity_range"]
    for cb, o in (e.get("optima") or {}).items():
        j = o["joint"]
        edge = (
            " — at the largest trained S: the law says sparser, beyond what was trained"
            if j.get("s_at_upper_edge")
            else ""
        )
        edge += " — N at the edge of the search" if j.get("n_at_edge") else ""
        text = (
            f"- C={cb}: optimum inside S∈[{lo:.3f}, {hi:.3f}]: N={num(j['n'])}, "
            f"S={j['s']:.3f}, L={num(j['loss'])}{edge}"
        )
        if "s_star_at_n" in o:
            sn = o["s_star_at_n"]
            mark = " (the largest trained S)" if sn["at_upper_edge"] else ""
            text += f"; S* at N={num(sn['n'])}: {sn['s_star']:.3f}{mark} {ci(sn['ci'])}"
        lines.append(text)
    return [*lines, ""]


def _schedule(sched: dict | None) -> list[str]:
    """How the runs were trained, where it is not one cosine run each."""
    if not sched:
        return []
    lines = [
        f"- schedule: {sched['schedule']}; {sched['branches']} run(s) branched from "
        f"{sched['trunks']} trunk(s) (a trunk and its branches are one cluster in the law "
        "bootstraps)"
    ]
    for s, d in (sched.get("minus_controls") or {}).items():
        lines.append(
            f"- {sched['schedule']} minus cosine control at S={float(s):.4g}: {num(d['mean'])} "
            f"{ci(d['ci'])} ({d['pairs']} pairs)"
        )
    return lines


def render(fits: dict, figs, out: Path) -> str:
    lines = [
        "# Scaling-law report\n",
        f"Source: `{fits['source']}` — {fits['n_runs']} runs read, {fits['n_fitted']} "
        f"finished runs fitted. N convention: **{fits['n_convention']}**; FLOPs convention: "
        f"**{fits['flops_convention']}**. Tables: `runs.parquet`, `runs.csv`; numbers: "
        "`fits.json`.\n",
    ]
    lines += [f"- {n}" for n in fits.get("notes", [])]
    lr = fits.get("learning_rates")
    if lr:
        lines.append(
            f"- learning rate: best of {lr['grids']} kept per point; the best was at "
            f"the edge of a grid of 3+ in {lr['best_at_edge']} of {lr['points']} points"
            + (" (the grid was too narrow there)" if lr["best_at_edge"] else "")
        )
    if fits.get("repeated_runs"):
        lines.append(f"- repeated data (more than one epoch): {fits['repeated_runs']}")
    lines += _schedule(fits.get("schedule"))
    if fits.get("not_in_plan"):
        lines.append(f"- run directories not in the current plan (not used): {fits['not_in_plan']}")
    if fits["skipped"]:
        lines.append("\nSkipped run directories:\n")
        lines += [f"- `{s['run']}`: {s['reason']}" for s in fits["skipped"]]
    lines.append("")
    lines += _isoflop(fits.get("isoflop", {}))
    for name, entry in fits["laws"].items():
        lines += _law(name, entry, fits["huber_delta"])
    lines.append("## Figures\n")
    for title, path in figs:
        lines.append(f"### {title}\n\n![{title}]({Path(path).relative_to(out)})\n")
    return "\n".join(lines)
