"""Compare studies side by side: two or more runs tables (sweeps, corpora, code versions).

    python -m analysis.compare sweeps/a/runs docs/studies/kernel/runs.csv --out reports/a_vs_kernel
    python -m analysis.compare a/runs b/runs --law apple --law chinchilla --budgets 1e18 1e19

Each source is analysed exactly as `analysis.report` analyses it (analysis/source.py: its own
IsoFLOP groups, noise per budget, lack-of-fit test, laws with Chinchilla per sparsity and the
fit-quality gate), then set in one aligned table, one column per source:
- **IsoFLOP optima** per (budget, sparsity): L*, N*, N*_active with 95% intervals; budgets of
  different sources within --budget-tolerance share a row;
- **the sparsity effect** per budget: the slope of L* per doubling of E and ΔL* against dense,
  per source, and each source's difference from the first with its interval (the two studies'
  bootstrap draws are independent, so the difference of paired draws is a draw of the
  difference);
- **laws**: parameters with intervals, the held-out error, and the joint optimum at each budget
  (none for a misspecified law).
`*` marks a quantity whose intervals do not overlap between sources. `--out DIR` writes the
table (compare.csv, compare.json, compare.md) and overlaid figures: L*, N* and N*_active against
log2 E, and S*(N) of each identifiable sparsity law. Bad inputs end with one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import compare_figures
from analysis.collect import TableError, load_table
from analysis.design import add_column_args, columns_from, group_budgets
from analysis.effects import mean_with_t_interval
from analysis.fit import percentile_interval
from analysis.flops import CONVENTIONS
from analysis.laws import LAWS, Columns
from analysis.render import ci, clean, num, size
from analysis.report import law_s_star_curves
from analysis.source import SourceAnalysis, analyse_source, variants_of
from analysis.study import LawStudy
from experiments.files import atomic_write_bytes

ISO_QUANTITIES = (("loss_star", "L*"), ("n_star", "N*"), ("n_star_active", "N*_active"))


def distinct_labels(sources: list[Path]) -> list[str]:
    """The shortest path tails that tell the sources apart (`a/runs`, `b/runs`)."""
    parts = [Path(s).resolve().parts for s in sources]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{p[-1]}#{i + 1}" for i, p in enumerate(parts)]


def overlap(cis: list) -> bool:
    if any(c is None or None in c for c in cis):
        return True  # an unbounded interval overlaps everything
    return max(lo for lo, _ in cis) <= min(hi for _, hi in cis)


def _record(section, row, source, estimate, interval=None, budget=None, sparsity=None, note=""):
    lo, hi = interval if interval else (None, None)
    return {
        "section": section,
        "row": row,
        "budget": budget,
        "sparsity": sparsity,
        "source": source,
        "estimate": estimate,
        "lo": lo,
        "hi": hi,
        "note": note,
    }


def _common_budgets(analyses: dict[str, SourceAnalysis], tolerance: float) -> dict:
    """(label, the source's own C) -> the shared C of its row (budgets within tolerance)."""
    own = [
        (lbl, float(g["C"]))
        for lbl, a in analyses.items()
        if a.iso is not None
        for g in a.iso.groups
    ]
    if not own:
        return {}
    shared = group_budgets(np.array([c for _, c in own]), tolerance)
    return {key: float(c) for key, c in zip(own, shared)}


def _isoflop_records(analyses, shared) -> list[dict]:
    out = []
    for lbl, a in analyses.items():
        for g in a.iso.groups if a.iso else []:
            c, s = shared[(lbl, float(g["C"]))], float(g["sparsity"])
            note = "" if g["bracketed"] else "not bracketed"
            for key, name in ISO_QUANTITIES:
                out.append(_record("isoflop", name, lbl, g[key], g[f"{key}_ci"], c, s, note))
    return out


def _effect_records(analyses, shared) -> list[dict]:
    """Per source and budget: per doubling of E and ΔL* vs dense; then each later source's
    difference from the first where both have the contrast's draws."""
    out: list[dict] = []
    draws: dict[tuple, np.ndarray | None] = {}
    for lbl, a in analyses.items():
        if a.iso is None:
            continue
        c_of = {f"{g['budget']:.4g}": shared[(lbl, float(g["C"]))] for g in a.iso.groups}
        for b, e in a.iso.effects.items():
            c = c_of[b]
            if "per_doubling" in e:
                out.append(
                    _record(
                        "effect",
                        "per doubling of E",
                        lbl,
                        e["per_doubling"],
                        e["per_doubling_ci"],
                        c,
                    )
                )
                draws[(lbl, c, "per doubling of E", None)] = a.iso.effect_draws.get(
                    (b, "per_doubling")
                )
            for s, d in (e.get("vs_dense") or {}).items():
                row = f"ΔL* vs dense, S={float(s):.4g}"
                out.append(_record("effect", row, lbl, d["delta"], d["ci"], c, float(s)))
                draws[(lbl, c, row, float(s))] = a.iso.effect_draws.get((b, f"vs_dense@{s}"))
    first = next(iter(analyses))
    estimate = {(r["source"], r["budget"], r["row"]): r["estimate"] for r in out}
    for (lbl, c, row, s), mine in draws.items():
        base = draws.get((first, c, row, s))
        if lbl == first or (first, c, row) not in estimate:
            continue
        interval = None
        if mine is not None and base is not None:
            k = min(len(mine), len(base))
            interval = percentile_interval(mine[:k] - base[:k], 0.95)
        diff = estimate[(lbl, c, row)] - estimate[(first, c, row)]
        out.append(_record("effect", row, f"{lbl} − {first}", diff, interval, c, s))
    return out


def _paired_records(analyses, shared, loss: str) -> list[dict]:
    """Each later source minus the first, run against run at the same budget, sparsity, width,
    seed and LR, with a t interval over the pairs: the contrast that needs no parabola (for
    variants of one sweep, an ablation arm against the main one at its own sizes)."""
    first, *rest = analyses
    base = _points(analyses[first], first, shared, loss)
    out: list[dict] = []
    for lbl in rest:
        mine = _points(analyses[lbl], lbl, shared, loss)
        if base is None or mine is None:
            continue
        both = mine.index.intersection(base.index)
        diffs = mine.loc[both] - base.loc[both]
        for (c, s), d in diffs.groupby(level=[0, 1]):
            e = mean_with_t_interval(d.to_numpy())
            row = f"paired ΔL at matched width and seed, S={s:.4g}"
            note = f"{e['pairs']} pairs"
            out.append(_record("paired", row, f"{lbl} − {first}", e["mean"], e["ci"], c, s, note))
    return out


def _points(a: SourceAnalysis, lbl: str, shared, loss: str) -> pd.Series | None:
    """A source's fitted runs' losses indexed by (common budget, sparsity, width, seed, LR):
    one run each (the design refuses a point trained twice at one seed, and keeps a point's
    best LR). None for a table of no IsoFLOP budgets (a law's points alone)."""
    df = a.df
    if a.iso is None or "C" not in df:
        return None
    key = pd.MultiIndex.from_arrays(
        [
            [shared.get((lbl, float(c)), float(c)) for c in df["C"]],
            df["sparsity"].round(6),
            df["d_model"] if "d_model" in df else df["N_active"],
            df["seed"] if "seed" in df else np.zeros(len(df)),
            df["lr"] if "lr" in df else np.zeros(len(df)),
        ]
    )
    return pd.Series(df[loss].to_numpy(), index=key)


def _law_records(analyses) -> list[dict]:
    out = []
    for lbl, a in analyses.items():
        for name, st in a.studies.items():
            if not isinstance(st, LawStudy):
                out.append(
                    _record(
                        f"law {name}",
                        "status",
                        lbl,
                        None,
                        note="not identifiable: " + "; ".join(st.reasons),
                    )
                )
                continue
            status = "misspecified: no optimum" if st.misspecified else "fitted"
            out.append(_record(f"law {name}", "status", lbl, None, note=status))
            for p, v in st.params.items():
                out.append(_record(f"law {name}", p, lbl, v["estimate"], v["ci"]))
            if st.holdout:
                err = 100 * st.holdout["held_out"]["mean_abs_rel_error"]
                out.append(_record(f"law {name}", "held-out |rel. err| %", lbl, err))
            for c, o in (a.fits["laws"][name].get("optima") or {}).items():
                j = o["joint"]
                out.append(
                    _record(
                        f"law {name}",
                        f"optimum at C={float(c):.3g}",
                        lbl,
                        None,
                        budget=float(c),
                        note=f"N={size(j['n'])} S={j['s']:.3f}",
                    )
                )
    return out


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    if r["estimate"] is None:
        return r["note"]
    value = size(r["estimate"]) if r["row"] in ("N*", "N*_active") else num(r["estimate"])
    text = value if r["lo"] is None and r["hi"] is None else f"{value} {ci([r['lo'], r['hi']])}"
    return text + (f" ({r['note']})" if r["note"] else "")


def _row_key(r: dict) -> tuple:
    return (
        r["section"],
        r["budget"] or 0.0,
        r["sparsity"] if r["sparsity"] is not None else -1,
        r["row"],
    )


def render_table(records: list[dict]) -> str:
    """One aligned table per section: a row per quantity, a column per source (and per
    difference), `*` where the sources' intervals do not overlap."""
    columns = list(dict.fromkeys(r["source"] for r in records))
    lines = []
    for section in dict.fromkeys(r["section"] for r in records):
        mine = [r for r in records if r["section"] == section]
        keys = sorted(dict.fromkeys(_row_key(r) for r in mine), key=lambda k: k[1:])
        cols = [c for c in columns if any(r["source"] == c for r in mine)]
        table = [["", *cols, ""]]
        for key in keys:
            cells = {r["source"]: r for r in mine if _row_key(r) == key}
            name = key[3]
            if key[1]:
                name = (
                    f"C={key[1]:.3g} "
                    + (f"S={key[2]:.4g} " if key[2] >= 0 and section == "isoflop" else "")
                    + name
                )
            sources = [cells[c] for c in cols if c in cells and "−" not in c]
            flag = ""
            bounded = all(r["lo"] is not None or r["hi"] is not None for r in sources)
            if len(sources) > 1 and bounded and not overlap([[r["lo"], r["hi"]] for r in sources]):
                flag = "* intervals do not overlap"
            table.append([name, *(_cell(cells.get(c)) for c in cols), flag])
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines.append(f"\n== {section}")
        for row in table:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def compare(
    sources: list[Path],
    laws: list[str],
    cols: Columns,
    n_given: bool,
    n_boot: int,
    budgets: list[float] | None,
    n_convention: str = "non_embedding",
    out: Path | None = None,
    budget_tolerance: float = 0.05,
    flops_convention: str = "ours",
    seed: int = 0,
    by_variant: bool = False,
) -> str:
    """``by_variant``: every sweep variant of every source is a column of its own."""
    columns: list[tuple[str, Path, str | None, tuple]] = []  # (label, source, variant, read)
    for lbl, src in zip(distinct_labels(sources), sources):
        read = load_table(src)  # once per source, whatever its number of variants
        names = variants_of(read[0]) if by_variant else []
        columns += [(f"{lbl}:{v}", src, v, read) for v in names] or [(lbl, src, None, read)]
    if len(columns) < 2:
        raise ValueError("compare needs two or more sources (or variants, with --by-variant)")
    analyses = {
        lbl: analyse_source(
            src,
            laws,
            cols,
            n_given,
            n_boot,
            budgets=budgets,
            n_convention=n_convention,
            flops_convention=flops_convention,
            budget_tolerance=budget_tolerance,
            seed=seed,
            variant=variant,
            loaded=(read[0].copy(), read[1]),
        )
        for lbl, src, variant, read in columns
    }
    shared = _common_budgets(analyses, budget_tolerance)
    records = (
        _isoflop_records(analyses, shared)
        + _effect_records(analyses, shared)
        + _paired_records(analyses, shared, cols.loss)
        + _law_records(analyses)
    )
    text = render_table(records)
    if out is not None:
        write_outputs(Path(out), analyses, records, text)
    return text


def write_outputs(out: Path, analyses: dict[str, SourceAnalysis], records, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "compare.csv", pd.DataFrame(records).to_csv(index=False).encode())
    doc = {"sources": {lbl: a.fits["source"] for lbl, a in analyses.items()}, "rows": records}
    atomic_write_bytes(out / "compare.json", json.dumps(clean(doc), indent=1).encode())
    figs = out / "figures"
    frames = {lbl: a.iso.frame() if a.iso else pd.DataFrame() for lbl, a in analyses.items()}
    drawn = []
    if any(len(f) for f in frames.values()):
        for key, _ in ISO_QUANTITIES:
            drawn.append(compare_figures.optima_vs_sparsity(frames, key, figs, f"{key}_vs_e"))
    for law in dict.fromkeys(n for a in analyses.values() for n in a.studies):
        curves = {}
        for lbl, a in analyses.items():
            st = a.studies.get(law)
            if isinstance(st, LawStudy):
                c = law_s_star_curves(st, a.budgets)
                if c:
                    curves[lbl] = c
        if curves:
            drawn.append(compare_figures.s_star_vs_n(curves, figs, law))
    md = (
        "# Comparison\n\n```"
        + text
        + "\n```\n\n"
        + "".join(f"![{p.stem}](figures/{p.name})\n\n" for p in drawn)
    )
    atomic_write_bytes(out / "compare.md", md.encode())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("sources", nargs="+", help="run directories or .parquet/.csv tables")
    ap.add_argument("--law", action="append", choices=sorted(LAWS), help="default: apple")
    add_column_args(ap)
    ap.add_argument("--flops-convention", choices=CONVENTIONS, default="ours")
    ap.add_argument("--budget-tolerance", type=float, default=0.05)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="seed of every bootstrap")
    ap.add_argument("--budgets", type=float, nargs="*", help="budgets at which to compare optima")
    ap.add_argument("--out", type=Path, help="write compare.csv/.json/.md and figures here")
    ap.add_argument(
        "--by-variant", action="store_true", help="a column per sweep variant of each source"
    )
    a = ap.parse_args(argv)
    if len(a.sources) < 2 and not a.by_variant:
        print("error: compare needs two or more sources", file=sys.stderr)
        sys.exit(2)
    try:
        text = compare(
            [Path(s) for s in a.sources],
            a.law or ["apple"],
            columns_from(a),
            a.N is not None,
            a.bootstrap,
            a.budgets,
            a.n_convention,
            a.out,
            a.budget_tolerance,
            a.flops_convention,
            a.seed,
            a.by_variant,
        )
    except (TableError, ValueError, KeyError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    print(text)
    if a.out:
        print(f"\nwritten: {a.out}/compare.md (.csv, .json, figures/)")


if __name__ == "__main__":
    main()
