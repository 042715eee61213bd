"""Run directories -> one runs table (parquet + CSV). Never crashes on a bad run directory:
corrupt or partial ones are skipped and listed with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

REQUIRED = ("run_id", "status", "budget_flops", "tokens", "sparsity", "params_total",
            "params_active", "flops_per_token")


def read_run(run_dir: Path) -> tuple[dict | None, str | None]:
    summary = run_dir / "summary.json"
    if not summary.exists():
        state = "has a checkpoint (interrupted or running)" if (
            run_dir / "checkpoint.pt").exists() else "not started or still running"
        return None, f"no summary.json: {state}"
    try:
        row = json.loads(summary.read_text())
    except (OSError, ValueError) as e:
        return None, f"corrupt summary.json: {e}"
    if not isinstance(row, dict):
        return None, "corrupt summary.json: not an object"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        return None, f"summary.json lacks {missing}"
    row["versions"] = json.dumps(row.get("versions"))  # nested: keep the table flat
    row["run_dir"] = str(run_dir)
    return row, None


def collect(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """All run directories below ``root`` (any depth: a sweep's runs/ or several sweeps)."""
    root = Path(root)
    candidates = sorted({p.parent for pat in ("summary.json", "config.yaml", "checkpoint.pt")
                         for p in root.rglob(pat)})
    rows, skipped = [], []
    for d in candidates:
        row, reason = read_run(d)
        if row is None:
            skipped.append((str(d), reason))
        else:
            rows.append(row)
    return pd.DataFrame(rows), skipped


def load_table(path: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """A runs table from a directory of runs, a .parquet or a .csv file."""
    path = Path(path)
    if path.is_dir():
        return collect(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path), []
    return pd.read_csv(path), []


def write_table(df: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": out_dir / "runs.parquet", "csv": out_dir / "runs.csv"}
    df.to_parquet(paths["parquet"], index=False)
    df.to_csv(paths["csv"], index=False)
    return paths


def done_runs(df: pd.DataFrame, loss_col: str) -> pd.DataFrame:
    if "status" in df.columns:
        df = df[df["status"] == "done"]
    return df[df[loss_col].notna()].reset_index(drop=True)
