"""A benchmark's corpus small enough to carry to a bare GPU machine in one call (prints a line).

    python -m experiments.benchmarks.bench_corpus <prepared corpus dir> <out dir> [--tokens 50M]

Takes the first ``--tokens`` training tokens of a corpus that ``experiments.prepare`` made
(meta.json, train.bin, val.bin, val_docs.npy), keeps its validation split and tokenizer whole,
and writes them xz-compressed with a meta.json that counts what is there, so ``data=bin
data.path=<out dir>`` opens it as it would the whole corpus. For throughput only: a sweep whose
runs want more tokens than it holds repeats them (``sizes.max_epochs: null``, as
conf/sweep/study_bench.yaml sets). 50M tokens of study 2's corpus are 17 MB of xz
(docs/gpu-measurements/2026-12-03-s11: the sweep benchmark's `.bench-data`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from experiments.data.dataset import corpus_meta
from experiments.data.shards import compress
from experiments.files import atomic_write_bytes, atomic_write_json

SPLITS = ("train.bin", "val.bin")


def _count(text: str) -> int:
    scale = {"k": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("kMG")) * scale)


def bench_corpus(src: Path, out: Path, tokens: int) -> dict:
    """Write the cut corpus under ``out``; returns its meta."""
    meta = corpus_meta(src)
    if not meta or not all((src / split).exists() for split in SPLITS):
        print(
            f"error: {src}: not a prepared corpus (meta.json, train.bin and val.bin)",
            file=sys.stderr,
        )
        sys.exit(2)
    train = np.memmap(src / "train.bin", dtype=meta.get("dtype", "uint16"), mode="r")[:tokens]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "train.bin", train.tobytes())
    for name in ("val.bin", "val_docs.npy", "tokenizer.json"):
        if (src / name).exists():
            shutil.copyfile(src / name, out / name)
    compress(out)  # the .xz copies `experiments.prepare --xz` makes; only they travel
    for split in SPLITS:
        (out / split).unlink()
    meta.setdefault("splits", {})["train"] = {"tokens": len(train)}  # documents: not counted
    meta.setdefault("notes", []).append(
        f"the first {len(train):,} training tokens of corpus {meta.get('key', src.name)}, for "
        "throughput benchmarks (experiments/benchmarks/bench_corpus.py): runs repeat them"
    )
    atomic_write_json(out / "meta.json", meta)
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--tokens", default="50M", help="training tokens to keep (k, M, G)")
    a = ap.parse_args()
    meta = bench_corpus(a.src, a.out, _count(a.tokens))
    size = sum(p.stat().st_size for p in a.out.iterdir()) / 2**20
    print(f"{a.out}: {meta['splits']['train']['tokens']:,} training tokens, {size:.1f} MiB")


if __name__ == "__main__":
    main()
