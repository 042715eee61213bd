"""A pilot's table: runs grouped by what varies, with the seed noise and how long each run sat
on the early plateau (prints markdown, writes CSV/JSON); on a main grid, one row per point.

    python -m analysis.pilot RUN_DIRS... [--plateau 3.0] [--out DIR]

RUN_DIRS are sweep run folders (``<sweep>/runs`` or a study's committed copy). A group is one
(budget, width, variant, E, granularity, top-k, LR); its rows are seeds (a pilot has one
budget and width; a grid's sizes are never pooled, which would count size as noise). Columns:
- ``val_loss``: the mean over seeds, ``seed_diff`` the largest minus the smallest;
- ``icl``: validation loss at late minus early positions (< 0: context helps), the mean;
- ``plateau_tokens``: the tokens each run took to bring its training loss below ``--plateau``
  (the first study sat near 3.5 nats for 8-15M tokens; the mean over seeds), and that as a
  fraction of its tokens;
- ``learned``: false where a run's validation loss is at or above ``--stuck`` (default 5.0, far
  above any learning run here; such runs are listed apart and kept out of sigma).
``sigma`` below the table is the pooled seed standard deviation over groups with 2+ seeds:
sqrt(mean over groups of the within-group variance), with its degrees of freedom.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from analysis.collect import collect
from experiments.record import METRICS, read_jsonl

GROUP = ["budget_flops", "d_model", "variant", "num_experts", "granularity", "top_k", "lr"]


def plateau_tokens(metrics: Path, level: float) -> float | None:
    """Tokens at the first logged step whose training loss is below ``level`` (None: never)."""
    for row in read_jsonl(metrics)[0]:
        loss = row.get("train_loss")
        if loss is not None and loss < level:
            return float(row["tokens"])
    return None


def read_runs(dirs: list[Path], level: float) -> pd.DataFrame:
    """The finished runs under ``dirs`` (read as the runs table is: analysis.collect)."""
    tables = [collect(root)[0].assign(source=str(root)) for root in dirs]
    df = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if df.empty or not (df["status"] == "done").any():
        raise SystemExit(f"no finished runs under {', '.join(map(str, dirs))}")
    df = df[df["status"] == "done"].reset_index(drop=True)
    df["plateau_tokens"] = [plateau_tokens(Path(d) / METRICS, level) for d in df["run_dir"]]
    df["variant"] = df["variant"].fillna("")
    return df


def pooled_sigma(df: pd.DataFrame) -> tuple[float, int]:
    """sqrt(mean within-group variance) over groups of 2+ seeds, and its degrees of freedom."""
    var, dof = 0.0, 0
    for _, g in df.groupby(GROUP, dropna=False):
        if len(g) >= 2:
            var += g["val_loss"].var(ddof=1) * (len(g) - 1)
            dof += len(g) - 1
    return (math.sqrt(var / dof), dof) if dof else (float("nan"), 0)


def table(df: pd.DataFrame) -> pd.DataFrame:
    out = (
        df.groupby(GROUP, dropna=False)
        .agg(
            seeds=("seed", "count"),
            val_loss=("val_loss", "mean"),
            seed_diff=("val_loss", lambda v: v.max() - v.min()),
            icl=("icl_score", "mean"),
            plateau_mtokens=("plateau_tokens", lambda v: v.mean() / 1e6),
            plateau_fraction=("plateau_tokens", "mean"),
            tokens=("tokens", "mean"),
        )
        .reset_index()
    )
    out["plateau_fraction"] = out["plateau_fraction"] / out["tokens"]
    return out.drop(columns="tokens")


def markdown(df: pd.DataFrame) -> str:
    """A markdown table, numbers to 4 significant digits (no tabulate dependency)."""
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    rows = [list(df.columns), ["---"] * len(df.columns)]
    rows += [[cell(v) for v in r] for r in df.itertuples(index=False)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--plateau", type=float, default=3.0, help="training loss that ends it")
    ap.add_argument("--stuck", type=float, default=5.0, help="val loss of a run that never learned")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    df = read_runs(a.runs, a.plateau)
    stuck = df[df["val_loss"] >= a.stuck]
    learned = df[df["val_loss"] < a.stuck]
    t = table(learned)
    sigma, dof = pooled_sigma(learned)
    text = markdown(t)
    text += f"\n\nseed sigma (pooled over groups of 2+ seeds): {sigma:.4f} ({dof} d.o.f.)\n"
    for _, r in stuck.iterrows():
        text += (
            f"did not learn (left out): {r['run_id']} {r['variant']} E{r['num_experts']} "
            f"G{r['granularity']} lr {r['lr']:g} seed {r['seed']}: val_loss {r['val_loss']:.3f}\n"
        )
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        t.to_csv(a.out / "pilot.csv", index=False)
        (a.out / "pilot.md").write_text(text)
        info = {"sigma": sigma, "dof": dof, "stuck": stuck["run_id"].tolist()}
        (a.out / "pilot.json").write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
