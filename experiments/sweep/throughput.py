"""The sweep's one number: tokens/s and aggregate MFU over the wall time of its invocations.

Each ``experiments.sweep.driver`` invocation that trains appends a line to ``sweep_log.jsonl`` with its
wall time, GPUs and the FLOPs and tokens of the runs it finished (from their own summaries), so
the figure covers packing, start-up and compilation, not a best step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from experiments.record import SUMMARY, read_jsonl

LOG = "sweep_log.jsonl"


def efficiency(
    sweep_dir: Path, run_ids: list[str], wall: float, gpus: int, peak: float | None
) -> dict:
    """Throughput of the runs this invocation finished: the sweep's one number."""
    flops = tokens = 0.0
    runs = 0
    for rid in run_ids:
        try:
            s = json.loads((sweep_dir / "runs" / rid / SUMMARY).read_text())
        except (OSError, ValueError):
            continue
        if s.get("status") == "done":
            flops, tokens, runs = flops + s["flops"], tokens + s["tokens"], runs + 1
    entry = {
        "time": time.time(),
        "wall_s": wall,
        "gpus": gpus,
        "runs": runs,
        "flops": flops,
        "tokens": tokens,
        "peak_flops_per_gpu": peak,
    }
    with open(sweep_dir / LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return entry


def format_efficiency(entries: list[dict]) -> str:
    wall = sum(e["wall_s"] for e in entries)
    flops, tokens = sum(e["flops"] for e in entries), sum(e["tokens"] for e in entries)
    runs = sum(e["runs"] for e in entries)
    gpus = max((e["gpus"] for e in entries), default=0)
    peak = next((e["peak_flops_per_gpu"] for e in entries if e.get("peak_flops_per_gpu")), None)
    text = (
        f"throughput: {runs} runs trained in {wall:.0f}s of sweep wall time: "
        f"{tokens / max(wall, 1e-9):,.0f} tokens/s"
    )
    if peak and gpus:
        gpu_time = sum(e["wall_s"] * e["gpus"] for e in entries)
        text += (
            f", aggregate MFU {100 * flops / (gpu_time * peak):.1f}% ({flops:.3g} FLOPs over "
            f"{gpus} GPU(s) x {peak / 1e12:.0f} TFLOP/s bf16 peak)"
        )
    return text


def read_sweep_log(sweep_dir: Path) -> list[dict]:
    return read_jsonl(sweep_dir / LOG)[0]
