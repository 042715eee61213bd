"""Data- and expert-parallel scaling, measured through ``experiments.train`` (prints a table).

    python -m experiments.benchmarks.scaling \\
        --case 1gpu:1:train.batch_size=32 --case 2gpu:2:train.batch_size=64 \\
        --case 2gpu-ep:2:train.batch_size=64,moe.expert_parallel=2 \\
        --steps 300 --json docs/scaling.json -- model=base moe=e8k1 budget.flops=1e17

Each case is ``name:ranks:overrides`` (comma-separated); every case runs the shared overrides
after ``--`` through ``torchrun --nproc_per_node=ranks -m experiments.train`` for ``--steps``
optimiser steps (``run.stop_after_steps``: the run stops resumable, so ``budget.flops`` only
sets the LR schedule) in a fresh folder, with no checkpoint but the final one. Speed comes from
the run's own records: the steady rate between the first logged step past ``--skip`` of the
steps (compilation, autotuning) and the last one, from the cumulative tokens/s of
``metrics.jsonl``; MFU from that rate, the accounting's FLOPs per token and the peak the
trainer used for ``summary.json``'s MFU. ``scaling`` is the per-rank rate over the first case's
per-rank rate (weak scaling when the batch per rank is equal). Where a case trains the same
global batch as the first (same tokens per step), their logged training losses are compared
step by step: ``early|dL|`` is the largest difference over the first ``--early`` steps,
``mean|dL|`` the mean over the run. The data order is rank-independent, so only numerics
differ; with MoE also the load-balancing loss, which each rank computes over its own tokens
(as Megatron and MegaBlocks do): a difference of ~1e-5 at first that training amplifies.
On a CPU the ranks use gloo: the table then checks the plumbing, not GPU speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from experiments.files import read_json
from experiments.record import read_jsonl


def parse_case(text: str) -> tuple[str, int, list[str]]:
    try:
        name, ranks, overrides = text.split(":", 2)
        return name, int(ranks), [o for o in overrides.split(",") if o]
    except ValueError:
        raise SystemExit(f"error: --case {text!r}: expected name:ranks:override,override") from None


def steady_rate(rows: list[dict], tokens_per_step: int, skip: int) -> float | None:
    """Tokens/s between the first logged step past ``skip`` and the last logged step.

    A row's ``tokens_per_s`` is cumulative since the run started (step 0), so a row's elapsed
    time is step * tokens_per_step / tokens_per_s; the steady rate is a difference of two."""
    rows = [r for r in rows if r.get("tokens_per_s")]
    late = [r for r in rows if r["step"] > skip]
    if len(late) < 2:
        return None
    a, b = late[0], late[-1]
    elapsed = lambda r: r["step"] * tokens_per_step / r["tokens_per_s"]
    dt = elapsed(b) - elapsed(a)
    return (b["step"] - a["step"]) * tokens_per_step / dt if dt > 0 else None


def run_case(name, ranks, overrides, shared, steps, root: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={ranks}", "-m", "experiments.train", *shared, *overrides]
    cmd += [
        f"run.stop_after_steps={steps}",
        f"run.log_every={max(1, steps // 20)}",
        "run.checkpoint_every_s=1e9",
        f"run.root={root / name}",
    ]
    print(f"--- {name}: {' '.join(cmd[3:])}", flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    runs = list((root / name).glob("*/summary.json"))
    if out.returncode != 0 or not runs:
        tail = (out.stdout + out.stderr).strip().splitlines()[-3:]
        return {"case": name, "ranks": ranks, "error": " | ".join(tail)}
    summary = read_json(runs[0]) or {}
    rows, _ = read_jsonl(runs[0].parent / "metrics.jsonl")
    return {"case": name, "ranks": ranks, "summary": summary, "rows": rows}


def table(results: list[dict], skip_fraction: float, early_steps: int) -> list[dict]:
    out, first = [], None
    for res in results:
        if "error" in res:
            out.append({"case": res["case"], "ranks": res["ranks"], "error": res["error"]})
            continue
        s, rows = res["summary"], res["rows"]
        tps = s["batch_size"] * s["seq_len"]
        rate = steady_rate(rows, tps, int(s["steps"] * skip_fraction))
        # the peak x ranks the trainer divided by: recovered from its own MFU
        peak_all = s["tokens_per_s"] * s["flops_per_token"] / s["mfu"] if s.get("mfu") else None
        row = {
            "case": res["case"],
            "ranks": s["world_size"],
            "global_batch": s["batch_size"],
            "steps": s["steps"],
            "tokens_per_s": rate,
            "tokens_per_s_per_rank": rate / s["world_size"] if rate else None,
            "mfu": rate * s["flops_per_token"] / peak_all if rate and peak_all else None,
            "peak_memory_gb": s.get("peak_memory_gb"),
            "backend": s["backend"],
            "time": s["time"],
        }
        first = first or (row, rows)
        base = first[0]["tokens_per_s_per_rank"]
        row["scaling"] = row["tokens_per_s_per_rank"] / base if base and rate else None
        if row is not first[0] and row["global_batch"] == first[0]["global_batch"]:
            ref = {r["step"]: r["train_loss"] for r in first[1]}
            diffs = [(r["step"], abs(r["train_loss"] - ref[r["step"]])) for r in rows]
            diffs = [(step, d) for step, d in diffs if step in ref]
            early = [d for step, d in diffs if step <= early_steps]
            row["max_dloss_early"] = max(early) if early else None
            row["mean_dloss"] = sum(d for _, d in diffs) / len(diffs) if diffs else None
        out.append(row)
    return out


def fmt(rows: list[dict]) -> str:
    head = (
        f"{'case':<14} {'ranks':>5} {'batch':>6} {'tok/s':>11} {'tok/s/rank':>11} "
        f"{'MFU %':>6} {'scaling':>7} {'early|dL|':>10} {'mean|dL|':>9} {'mem GB':>7}"
    )
    lines = [head]
    num = lambda v, f: format(v, f) if v is not None else "-"
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:<14} {r['ranks']:>5} failed: {r['error'][:90]}")
            continue
        lines.append(
            f"{r['case']:<14} {r['ranks']:>5} {r['global_batch']:>6} "
            f"{num(r['tokens_per_s'], ',.0f'):>11} {num(r['tokens_per_s_per_rank'], ',.0f'):>11} "
            f"{num(r['mfu'] and 100 * r['mfu'], '.1f'):>6} {num(r['scaling'], '.2f'):>7} "
            f"{num(r.get('max_dloss_early'), '.1e'):>10} {num(r.get('mean_dloss'), '.1e'):>9} "
            f"{num(r['peak_memory_gb'], '.1f'):>7}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    shared = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--case", action="append", required=True, help="name:ranks:overrides")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--skip", type=float, default=0.3, help="fraction of steps to skip")
    ap.add_argument("--early", type=int, default=50, help="steps of the early loss comparison")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    a = ap.parse_args(own)
    cases = [parse_case(c) for c in a.case]
    root = a.keep or Path(tempfile.mkdtemp(prefix="scaling-"))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    results = [run_case(n, r, o, shared, a.steps, root) for n, r, o in cases]
    rows = table(results, a.skip, a.early)
    print(fmt(rows))
    if a.json:
        a.json.write_text(json.dumps({"shared": shared, "cases": a.case, "rows": rows}, indent=1))
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
