"""Sweep throughput on the GPU, measured the way users run sweeps (prints a table).

    python -m experiments.benchmarks.sweep_bench [--configs packed,single,...] [--json out.json]

Each configuration runs the same fixed slice (conf/sweep/gpu_bench.yaml: 8 runs of the GPU
study's family and corpus) through ``python -m experiments.sweep`` in a fresh sweep folder,
and reads the sweep's own throughput record (sweep_log.jsonl: every run's FLOPs by our
accounting over the sweep's wall time x the GPU's bf16 datasheet peak). ``base`` is one
``experiments.train model=base moe=e8k1`` run (its default batch of 64 x 1024), read from its
own summary.json. MPS is started for its row (``nvidia-cuda-mps-control -d``) and stopped after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "packed": ("runs packed on the GPU (runs_per_gpu=auto), eager", [], ["train.compile=false"]),
    "single": ("1 run at a time, eager", ["runs_per_gpu=1"], ["train.compile=false"]),
    "compile": ("packed, torch.compile", [], ["train.compile=true"]),
    "mps": ("packed under NVIDIA MPS, eager", [], ["train.compile=false"]),
    "graphs": (
        "packed, torch.compile reduce-overhead (CUDA graphs)",
        [],
        ["train.compile=true", "train.compile_mode=reduce-overhead"],
    ),
    "graphs-mps": (
        "packed under MPS, CUDA graphs",
        [],
        ["train.compile=true", "train.compile_mode=reduce-overhead"],
    ),
    "megablocks": (
        "packed, MegaBlocks backend, eager",
        [],
        ["train.compile=false", "moe.backend=megablocks"],
    ),
}
BASE = ["model=base", "moe=e8k1", "budget.flops=2e16", "run.log_every=50"]


def _mps(start: bool) -> str:
    if start:
        out = subprocess.run(
            ["nvidia-cuda-mps-control", "-d"], capture_output=True, text=True, check=False
        )
        return "started" if out.returncode == 0 else f"failed: {out.stderr.strip()[:100]}"
    subprocess.run(
        ["nvidia-cuda-mps-control"], input="quit\n", text=True, check=False, capture_output=True
    )
    return "stopped"


def run_config(name: str, workdir: Path) -> dict:
    label, launch, train = CONFIGS[name]
    sweep_dir = workdir / name
    mps = name.endswith("mps")
    note = _mps(True) if mps else ""
    t0 = time.time()
    cmd = [
        sys.executable,
        "-m",
        "experiments.sweep",
        "sweep=gpu_bench",
        "report=false",
        f"hydra.sweep.dir={sweep_dir}",
        *launch,
        "train_overrides=[" + ",".join(f"'{t}'" for t in train) + "]",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    if mps:
        _mps(False)
    (workdir / f"{name}.log").write_text(out.stdout + out.stderr)
    log = (
        [json.loads(x) for x in (sweep_dir / "sweep_log.jsonl").read_text().splitlines()]
        if (sweep_dir / "sweep_log.jsonl").exists()
        else []
    )
    row = {
        "config": name,
        "label": label,
        "wall_s": wall,
        "returncode": out.returncode,
        "note": note,
    }
    if log:
        e = log[-1]
        row |= {
            "runs": e["runs"],
            "sweep_wall_s": e["wall_s"],
            "tokens_per_s": e["tokens"] / e["wall_s"],
            "mfu": e["flops"] / (e["wall_s"] * e["gpus"] * e["peak_flops_per_gpu"]),
        }
        packing = next((x for x in out.stdout.splitlines() if x.startswith("packing:")), "")
        row["packing"] = packing
    return row


def run_base(workdir: Path, compile_: bool) -> dict:
    root = workdir / f"base-{'compile' if compile_ else 'eager'}"
    cmd = [
        sys.executable,
        "-m",
        "experiments.train",
        *BASE,
        "data=bin",
        f"data.path={os.environ.get('MOE_GPU_DATA', 'corpora/linux-8k')}",
        f"train.compile={str(compile_).lower()}",
        f"run.root={root}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    (workdir / f"{root.name}.log").write_text(out.stdout + out.stderr)
    try:
        s = json.loads(next(root.glob("*/summary.json")).read_text())
    except StopIteration:
        return {"config": root.name, "returncode": out.returncode}
    return {
        "config": root.name,
        "label": f"single run model=base moe=e8k1, {'compiled' if compile_ else 'eager'}",
        "tokens_per_s": s["tokens_per_s"],
        "mfu": s["mfu"],
        "time": s["time"],
        "steps": s["steps"],
        "peak_memory_gb": s["peak_memory_gb"],
        "returncode": out.returncode,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="packed,single,compile,mps,megablocks,base,base-compile")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", default=None, help="copy the sweep folders and logs here")
    a = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    rows = []
    for name in a.configs.split(","):
        t0 = time.time()
        if name.startswith("base"):
            row = run_base(workdir, compile_=name == "base-compile")
        else:
            row = run_config(name, workdir)
        rows.append(row)
        mfu = f"{100 * row['mfu']:5.1f}%" if row.get("mfu") else "  –  "
        tps = f"{row['tokens_per_s']:>12,.0f}" if row.get("tokens_per_s") else f"{'–':>12}"
        print(
            f"{row.get('label', name):<58} {tps} tok/s  MFU {mfu}  "
            f"({time.time() - t0:.0f}s) {row.get('packing', '')}",
            flush=True,
        )
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.keep:
        shutil.copytree(
            workdir, a.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pt", ".lock")
        )


if __name__ == "__main__":
    main()
