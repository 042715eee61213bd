"""Run directories -> one runs table (parquet + CSV), and the checks every table passes.

Never crashes on a bad run directory: corrupt or partial ones are skipped and listed with the
reason. A table that cannot be analysed (missing file or columns, no rows, losses that are not
finite and positive) raises TableError with one line that says which runs or columns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from experiments.files import read_json
from experiments.record import CHECKPOINT, CONFIG, SUMMARY

REQUIRED = (
    "run_id",
    "status",
    "budget_flops",
    "tokens",
    "sparsity",
    "params_total",
    "params_active",
    "flops_per_token",
)
NESTED = ("versions", "time", "hardware")  # dict fields kept as JSON text so the table stays flat


class TableError(ValueError):
    """The table cannot be analysed; the message says why in one line."""


def read_run(run_dir: Path) -> tuple[dict | None, str | None]:
    summary = run_dir / SUMMARY
    if not summary.exists():
        state = (
            "has a checkpoint (interrupted or running)"
            if (run_dir / CHECKPOINT).exists()
            else "not started or still running"
        )
        return None, f"no {SUMMARY}: {state}"
    row = read_json(summary)
    if row is None:
        return None, f"corrupt {SUMMARY}: not a readable JSON object"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        return None, f"{SUMMARY} lacks {missing}"
    for key in NESTED:
        row[key] = json.dumps(row.get(key))
    row["run_dir"] = str(run_dir)
    return row, None


def collect(
    source: Path | list[Path] | tuple[Path, ...],
) -> tuple[pd.DataFrame, list[tuple[str, str | None]]]:
    """The given run directories, or every run directory below one folder (any depth)."""
    if isinstance(source, (list, tuple)):
        candidates = [Path(p) for p in source]
    else:
        root = Path(source)
        candidates = sorted(
            {p.parent for pat in (SUMMARY, CONFIG, CHECKPOINT) for p in root.rglob(pat)}
        )
    rows, skipped = [], []
    for d in candidates:
        row, reason = read_run(d)
        if row is None:
            skipped.append((str(d), reason))
        else:
            rows.append(row)
    return pd.DataFrame(rows), skipped


def load_table(source) -> tuple[pd.DataFrame, list[tuple[str, str | None]]]:
    """A runs table from run directories (a folder or a list), a .parquet or a .csv file."""
    if isinstance(source, (list, tuple)):
        return collect(source)
    path = Path(source)
    if not path.exists():
        raise TableError(f"{path} does not exist")
    if path.is_dir():
        return collect(path)
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path), []
        return pd.read_csv(path), []
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as e:
        raise TableError(f"{path}: not a readable table ({str(e).splitlines()[0]})") from None


def write_table(df: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": out_dir / "runs.parquet", "csv": out_dir / "runs.csv"}
    df.to_parquet(paths["parquet"], index=False)
    df.to_csv(paths["csv"], index=False)
    return paths


def require_columns(df: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TableError(f"{what} needs column(s) {missing}; the table has {sorted(df.columns)}")


def _labels(df: pd.DataFrame) -> pd.Series:
    return df["run_id"].astype(str) if "run_id" in df.columns else pd.Series(range(len(df)))


def refuse_duplicates(df: pd.DataFrame) -> None:
    """A run counted twice (a copied run directory, a duplicated row) would pass for a
    replicate with zero noise and make every interval a point: refuse it, naming the copies."""
    if "run_id" in df.columns:
        dup = df[df["run_id"].duplicated(keep=False)]
        where = "run_dir" if "run_dir" in df.columns else None
    else:
        dup = df[df.duplicated(keep=False)]
        where = None
    if dup.empty:
        return
    first = dup.iloc[0]
    same = dup[dup["run_id"] == first["run_id"]] if "run_id" in df.columns else dup
    places = f" ({', '.join(map(str, same[where]))})" if where else ""
    what = f"run {first['run_id']}" if "run_id" in df.columns else "a row"
    raise TableError(
        f"{what} appears {len(same)} times{places}: a copied run directory or a duplicated "
        f"row would pass for a replicate; keep one ({dup.shape[0]} duplicate rows in all)"
    )


def refuse_bad_numbers(
    df: pd.DataFrame,
    positive: list[str],
    fractions: list[str],
    non_negative: tuple[str, ...] | list[str] = (),
) -> None:
    """Columns the analysis computes with must hold finite numbers: positive ones (budgets,
    tokens, parameter counts), fractions in [0, 1) (sparsity) and counts that may be zero
    (embedding parameters). One NaN budget would drop a whole budget from the fits with no
    word said."""
    checks = (
        [(c, lambda v: v > 0, "a finite positive number") for c in positive]
        + [(c, lambda v: 0 <= v < 1, "a finite number in [0, 1)") for c in fractions]
        + [(c, lambda v: v >= 0, "a finite number >= 0") for c in non_negative]
    )
    for col, ok, want in checks:
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = [i for i, v in enumerate(values) if not (math.isfinite(v) and ok(v))]
        if bad:
            label = _labels(df)
            listed = ", ".join(f"{label.iloc[i]}={df[col].iloc[i]}" for i in bad[:10])
            raise TableError(
                f"{len(bad)} run(s) have a {col} that is not {want}: {listed}; fix or drop them"
            )


def done_runs(df: pd.DataFrame, loss_col: str) -> pd.DataFrame:
    """Finished runs with a usable loss; refuses losses that are not finite and positive
    (a diverged run that slipped through, a unit mix-up) and lists the runs that have them,
    and refuses runs that appear twice."""
    if df.empty:
        raise TableError("the table has no rows")
    require_columns(df, [loss_col], "fitting")
    refuse_duplicates(df)
    if "status" in df.columns:
        df = df[df["status"] == "done"]
    df = df[df[loss_col].notna()].reset_index(drop=True)
    values = pd.to_numeric(df[loss_col], errors="coerce")
    bad = [i for i, v in enumerate(values) if not (math.isfinite(v) and v > 0)]
    if bad:
        label = _labels(df)
        listed = ", ".join(f"{label.iloc[i]}={df[loss_col].iloc[i]}" for i in bad[:10])
        raise TableError(
            f"{len(bad)} run(s) have a {loss_col} that is not a finite positive "
            f"number: {listed}; fix or drop them"
        )
    df[loss_col] = values
    return df


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.collect RUNS --out runs.csv``: one table of every run found below
    RUNS (every variant, every status), the table a study commits beside its runs."""
    import argparse
    import sys

    from experiments.files import atomic_write_bytes

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("runs", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    df, skipped = collect(a.runs)
    if df.empty:
        print(f"error: no run records below {a.runs}", file=sys.stderr)
        return 2
    df = df.sort_values("run_id").reset_index(drop=True) if "run_id" in df.columns else df
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(a.out, df.to_csv(index=False).encode())  # never half a table
    print(f"{a.out}: {len(df)} runs ({len(skipped)} folders skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
