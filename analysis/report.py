"""Runs (or any table with the right columns) -> runs table, fits.json, figures, report.md.

python -m analysis.report sweeps/demo/runs --out reports/demo
python -m analysis.report runs.csv --law chinchilla --N params --D tokens --loss loss
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import figures
from analysis.collect import done_runs, load_table, write_table
from analysis.isoflop import isoflop_table, loss_star_vs_sparsity, optimal_size_scaling
from analysis.laws import LAWS, Columns
from analysis.study import bootstrap_samples, law_optima, s_star_curves, study_law

DEFAULT_LAWS = ("chinchilla", "apple")


def _clean(obj):
    """JSON-safe: numpy -> python, NaN -> None, drop bootstrap sample arrays."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items() if not str(k).endswith("_samples")}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.4g}"


def _ci(ci) -> str:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:  # None, or NaN from a group without one
        return "–"
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def build_report(
    source,
    out: Path,
    laws=DEFAULT_LAWS,
    cols: Columns | None = None,
    n_given: bool = False,
    n_boot: int = 1000,
    max_inits: int = 512,
    budgets: list[float] | None = None,
    not_in_plan: list[str] | None = None,
) -> Path:
    t0 = time.time()
    cols = cols or Columns()
    out = Path(out)
    fig_dir = out / "figures"
    table, skipped = load_table(source)
    if table.empty:
        raise ValueError(f"no readable runs in {source}")
    write_table(table, out)
    df = done_runs(table, cols.loss)
    label = f"{len(source)} planned run directories" if isinstance(source, list) else str(source)
    fits: dict = {
        "source": label,
        "not_in_plan": not_in_plan or [],
        "n_runs": len(table),
        "n_fitted": len(df),
        "skipped": [{"run": r, "reason": why} for r, why in skipped],
        "laws": {},
    }
    figs: list[tuple[str, Path]] = []
    is_ours = {"budget_flops", "sparsity", "params_total", "params_active", "tokens"} <= set(df)
    iso = pd.DataFrame()
    if is_ours:
        iso = isoflop_table(df, cols.loss, cols.budget, n_boot=n_boot)
        fits["isoflop"] = iso.to_dict(orient="records")
        fits["optimal_size_scaling"] = optimal_size_scaling(iso)
        fits["loss_star_vs_sparsity"] = loss_star_vs_sparsity(iso)
        figs.append(
            (
                "IsoFLOP curves (total parameters)",
                figures.isoflop_curves(df, iso, fig_dir, cols.loss),
            )
        )
        figs.append(
            (
                "IsoFLOP curves (active parameters)",
                figures.isoflop_curves(df, iso, fig_dir, cols.loss, "params_active", "coef_active"),
            )
        )
        if "loss_star" in iso:
            figs.append(("L* vs sparsity", figures.loss_star_vs_sparsity(iso, fig_dir)))
            figs.append(("N* vs sparsity", figures.n_star_vs_sparsity(iso, fig_dir)))
    budgets = budgets or (sorted(df[cols.budget].unique().tolist()) if cols.budget in df else [])
    n_fixed = {}
    if len(iso) and "n_star" in iso:
        for c, g in iso.dropna(subset=["n_star"]).groupby("budget"):
            n_fixed[c] = float(np.exp(np.log(g["n_star"]).mean()))
    sparsities = sorted(df[cols.S].unique().tolist()) if cols.S in df else [0.0]
    studies = {}
    for name in laws:
        try:
            st = study_law(df, name, cols, n_given, n_boot=n_boot, max_inits=max_inits)
        except (ValueError, KeyError) as e:
            fits["laws"][name] = {"error": str(e)}
            continue
        studies[name] = st
        entry = st.to_json()
        entry["optima"] = law_optima(st, budgets, n_fixed, sparsities)
        fits["laws"][name] = entry
        pred = st.law.predict(st.theta, st.data)
        figs.append(
            (
                f"{name} fit",
                figures.law_fit(
                    st.law,
                    pred,
                    st.loss,
                    st.held_out_mask,
                    fig_dir,
                    df[cols.S].to_numpy(float) if cols.S in df else None,
                ),
            )
        )
        figs.append(
            (
                f"{name} bootstrap",
                figures.bootstrap_params(
                    st.law,
                    bootstrap_samples(st),
                    {p: v["estimate"] for p, v in st.params.items()},
                    fig_dir,
                ),
            )
        )
        if budgets and st.fcoef is not None and name != "chinchilla":
            lo, hi = df[st.columns.N].min(), df[st.columns.N].max()
            curves = s_star_curves(
                st, budgets, np.exp(np.linspace(np.log(lo) - 1, np.log(hi) + 1, 40))
            )
            if curves:
                figs.append((f"S* vs N ({name})", figures.s_star_vs_n(curves, fig_dir, name)))
    fits["elapsed_s"] = time.time() - t0
    (out / "fits.json").write_text(json.dumps(_clean(fits), indent=1))
    report = out / "report.md"
    report.write_text(render(fits, iso, studies, figs, out))
    return report


def render(fits: dict, iso: pd.DataFrame, studies: dict, figs, out: Path) -> str:
    lines = [
        "# Scaling-law report\n",
        f"Source: `{fits['source']}` — {fits['n_runs']} runs read, {fits['n_fitted']} "
        f"finished runs fitted. Tables: `runs.parquet`, `runs.csv`; numbers: `fits.json`.\n",
    ]
    if fits["skipped"]:
        lines.append("Skipped run directories:\n")
        lines += [f"- `{s['run']}`: {s['reason']}" for s in fits["skipped"]]
        lines.append("")
    if len(iso):
        lines.append("## IsoFLOP optima (parabola in log N per budget and sparsity)\n")
        lines.append(
            "| budget C | S | runs | N* (total) | 95% CI | N*_active | D* | L* | 95% CI "
            "| bracketed |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for _, r in iso.iterrows():
            lines.append(
                f"| {r['budget']:.3g} | {r['sparsity']:.3f} | {r['n_runs']} | "
                f"{_fmt(r.get('n_star'))} | {_ci(r.get('n_star_ci'))} | "
                f"{_fmt(r.get('n_star_active'))} | {_fmt(r.get('d_star'))} | "
                f"{_fmt(r.get('loss_star'))} | {_ci(r.get('loss_star_ci'))} | "
                f"{r.get('bracketed', '–')} |"
            )
        lines.append(
            "\nCI: bootstrap over runs within the group; `–` where a group has fewer "
            "than 4 sizes (a parabola through 3 points has no residuals to resample).\n"
        )
        slopes = fits.get("loss_star_vs_sparsity", {})
        if slopes:
            lines.append(
                "**Slope of L* vs S** (negative: sparser is better at fixed compute): "
                + "; ".join(
                    f"C={c}: {_fmt(v['slope'])} {_ci(v.get('slope_ci'))}" for c, v in slopes.items()
                )
                + "\n"
            )
        for s, v in fits.get("optimal_size_scaling", {}).items():
            lines.append(
                f"- S={s}: N* ∝ C^{_fmt(v['n_star']['exponent'])} "
                f"{_ci(v['n_star'].get('exponent_ci'))}, D* ∝ C^"
                f"{_fmt(v['d_star']['exponent'])} {_ci(v['d_star'].get('exponent_ci'))}"
            )
        lines.append("")
    for name, entry in fits["laws"].items():
        lines.append(f"## Law: {name}\n")
        if "error" in entry:
            lines.append(f"Not fitted: {entry['error']}\n")
            continue
        c = entry["columns"]
        lines.append(
            f"`{entry['formula']}` with N=`{c['N']}`, D=`{c['D']}`, S=`{c['S']}`, "
            f"loss=`{c['loss']}`; Huber δ=1e-3 on log residuals, L-BFGS from a grid, "
            f"{entry['n_bootstrap']} bootstrap resamples of runs.\n"
        )
        lines.append("| parameter | estimate | 95% CI |\n|---|---|---|")
        lines += [
            f"| {p} | {_fmt(v['estimate'])} | {_ci(v['ci'])} |" for p, v in entry["params"].items()
        ]
        e = entry["fit_errors"]
        lines.append(
            f"\nIn-sample: RMSE {_fmt(e['rmse'])}, mean |rel. error| "
            f"{100 * e['mean_abs_rel_error']:.2f}%."
        )
        if entry["holdout"]:
            h = entry["holdout"]
            lines.append(
                f"Held out {h['rule']}: fit on {h['fit_n']} runs, error on "
                f"{h['held_out']['n']}: RMSE {_fmt(h['held_out']['rmse'])}, mean |rel. "
                f"error| {100 * h['held_out']['mean_abs_rel_error']:.2f}%."
            )
        for cb, o in entry.get("optima", {}).items():
            j = o["joint"]
            edge = " (at the edge of the search range)" if j["at_edge"] else ""
            text = (
                f"- C={cb}: joint optimum N={_fmt(j['n'])}, S={j['s']:.3f}, "
                f"L={_fmt(j['loss'])}{edge}"
            )
            if "s_star_at_n" in o:
                sn = o["s_star_at_n"]
                text += f"; S* at N={_fmt(sn['n'])}: {sn['s_star']:.3f} {_ci(sn['ci'])}"
            lines.append(text)
        lines.append("")
    lines.append("## Figures\n")
    for title, path in figs:
        lines.append(f"### {title}\n\n![{title}]({Path(path).relative_to(out)})\n")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("source", help="a directory of run directories, or a .parquet/.csv table")
    ap.add_argument("--out", default=None, help="output directory (default: <source>/../report)")
    ap.add_argument(
        "--law",
        action="append",
        choices=sorted(LAWS),
        help="law(s) to fit (repeatable; default: chinchilla and apple)",
    )
    for sym, default in (
        ("N", None),
        ("D", "tokens"),
        ("S", "sparsity"),
        ("E", "num_experts"),
        ("loss", "val_loss"),
        ("budget", "budget_flops"),
    ):
        ap.add_argument(
            f"--{sym}",
            default=default,
            help=f"column for {sym}" + (" (default: each law's own)" if sym == "N" else ""),
        )
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--inits", type=int, default=512, help="L-BFGS initialisations (max)")
    ap.add_argument("--budgets", type=float, nargs="*", help="budgets for the optima")
    a = ap.parse_args(argv)
    source = Path(a.source)
    out = Path(a.out) if a.out else (source if source.is_dir() else source.parent) / "report"
    cols = Columns(N=a.N or "params_active", D=a.D, S=a.S, E=a.E, loss=a.loss, budget=a.budget)
    path = build_report(
        source,
        out,
        tuple(a.law or DEFAULT_LAWS),
        cols,
        n_given=a.N is not None,
        n_boot=a.bootstrap,
        max_inits=a.inits,
        budgets=a.budgets,
    )
    print(f"report: {path}")


if __name__ == "__main__":
    main()
