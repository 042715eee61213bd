"""Replay run directories into a tracker, for machines where it ran offline or not at all.

    python -m experiments.export_runs RUNS... --to tensorboard --out tb/kernel
    tensorboard --logdir tb/kernel

RUNS are run directories or folders holding them at any depth (a sweep's ``runs/``, a committed
study's ``docs/studies/<name>/runs``). Each run becomes one TensorBoard log (or one W&B run,
offline unless ``WANDB_MODE``/``WANDB_API_KEY`` say otherwise) named after its configuration
(``b6e+14_E16k1_d96_s0_<run id>``), fed its metrics.jsonl rows and its summary's final numbers.
Exporting twice replaces the TensorBoard logs (a run's folder is written afresh).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from experiments.files import read_json
from experiments.record import METRICS, SUMMARY, read_jsonl
from experiments.trainer.trackers import TensorBoardLog, WandBLog, scalars

FINAL = ("status", "val_loss", "val_loss_se", "icl_score", "mfu", "tokens", "epochs")


def run_dirs(sources: list[Path]) -> list[Path]:
    found: set[Path] = set()
    for src in sources:
        if (src / SUMMARY).exists():
            found.add(src)
        else:
            found |= {p.parent for p in src.rglob(SUMMARY)}
    return sorted(found)


def label(summary: dict) -> str:
    """b<budget>_E<experts>k<top-k>_d<width>_s<seed>_<run id>: readable and unique."""
    return (
        f"b{summary.get('budget_flops', 0):.3g}_E{summary.get('num_experts')}k"
        f"{summary.get('top_k')}_d{summary.get('d_model')}_s{summary.get('seed')}_"
        f"{summary['run_id']}"
    )


def export(run_dir: Path, to: str, out: Path) -> str:
    summary = read_json(run_dir / SUMMARY) or {}
    if "run_id" not in summary:
        raise ValueError(f"{run_dir}: no readable {SUMMARY}")
    name = label(summary)
    rows, _ = read_jsonl(run_dir / METRICS)
    if to == "tensorboard":
        shutil.rmtree(out / name, ignore_errors=True)
        log: TensorBoardLog | WandBLog = TensorBoardLog(out / name)
    else:
        config = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
        log = WandBLog(summary["run_id"], out, config, name=name)
    for row in rows:
        log.log(scalars(row), row["step"])
    final = {k: summary[k] for k in FINAL if summary.get(k) is not None}
    if summary.get("steps"):
        log.log(
            {f"final/{k}": float(v) for k, v in final.items() if k != "status"}, summary["steps"]
        )
    log.close(final)
    return name


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories or folders of them")
    ap.add_argument("--to", choices=("tensorboard", "wandb"), default="tensorboard")
    ap.add_argument("--out", type=Path, required=True, help="the log directory to write")
    a = ap.parse_args(argv)
    missing = [str(p) for p in a.runs if not p.exists()]
    if missing:
        print(f"error: {', '.join(missing)} does not exist", file=sys.stderr)
        sys.exit(2)
    dirs = run_dirs(a.runs)
    if not dirs:
        print(
            f"error: no run directories ({SUMMARY}) under {', '.join(map(str, a.runs))}",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        for i, d in enumerate(dirs, 1):
            name = export(d, a.to, a.out)
            print(f"[{i}/{len(dirs)}] {name}", flush=True)
    except ImportError as e:
        print(
            f"error: {e}; install the trackers with pip install -e '.[trackers]'", file=sys.stderr
        )
        sys.exit(2)
    print(f"{len(dirs)} runs exported to {a.out} ({a.to})")


if __name__ == "__main__":
    main()
