"""Tokenize a text corpus into shards: ``python -m experiments.prepare SOURCE --out DIR``.

SOURCE is ``sotu`` (the embedded corpus), a directory or a single file. In a directory every
file matching ``--glob`` is read by its kind: ``.txt`` (and any other text) is one document,
``.jsonl`` one document per line (``--text-key``), ``.parquet`` one per row (the format
FineWeb ships in). A single large text file is cut into ~100 kB documents at line boundaries.

The corpus is read in parts of about 64 MB, streamed (never whole in memory) and encoded with
the `tokenizers` batch encoder, which runs on every core. Each finished part is written
atomically under ``<out>/<key>/parts/``, so an interrupted preparation resumes where it
stopped. Documents go to train or validation by a hash of their id (file path, byte offset or
row), never split inside. The output directory is keyed by a hash of the source's content, the
tokenizer and the split settings; it holds ``train.bin``/``val.bin`` (uint16, or uint32 for
vocabularies above 65536), ``val_docs.npy`` (each validation document's start offset),
``tokenizer.json`` and ``meta.json``. Train on it with ``data=bin data.path=<that dir>``;
``--xz`` also writes ``.bin.xz`` copies for moving the shards between machines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.data.corpus import CorpusSpec, PrepareError, corpus_key, source_fingerprint
from experiments.data.shards import MAX_VOCAB, MIN_BPE_VOCAB, build, compress, prepared
from experiments.files import exclusive_lock


def check_arguments(a: argparse.Namespace) -> None:
    """Everything that can be checked before reading the corpus (PrepareError)."""
    if a.source != "sotu" and not Path(a.source).expanduser().exists():
        raise PrepareError(f"{a.source} does not exist")
    if a.tokenizer == "bpe" and not MIN_BPE_VOCAB <= a.vocab_size <= MAX_VOCAB:
        raise PrepareError(
            f"--vocab-size {a.vocab_size}: a byte-level BPE needs {MIN_BPE_VOCAB} to "
            f"{MAX_VOCAB:,} tokens (256 bytes, the end-of-text token and merges)"
        )
    if a.tokenizer not in ("bpe", "bytes"):
        path = Path(a.tokenizer).expanduser()
        if not path.is_file():
            raise PrepareError(f"--tokenizer {a.tokenizer}: no such tokenizer.json")
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises its own exception types
            raise PrepareError(f"--tokenizer {a.tokenizer}: not a tokenizer.json ({e})") from None
    if not 0 < a.val_fraction < 0.5:
        raise PrepareError(f"--val-fraction {a.val_fraction}: must be in (0, 0.5)")
    if a.bpe_sample_mb < 1:
        raise PrepareError(f"--bpe-sample-mb {a.bpe_sample_mb}: must be >= 1")
    if a.max_train_tokens is not None and a.max_train_tokens < 1:
        raise PrepareError(f"--max-train-tokens {a.max_train_tokens}: must be >= 1")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("source", help="sotu, a directory, or one file")
    ap.add_argument("--out", required=True, help="output root; the corpus goes to <out>/<key>")
    ap.add_argument("--glob", default="**/*", help="files under a directory (default: all)")
    ap.add_argument("--text-key", default="text", help="text field of .jsonl/.parquet rows")
    ap.add_argument("--tokenizer", default="bpe", help="bpe, bytes, or a tokenizer.json")
    ap.add_argument("--vocab-size", type=int, default=16384, help="BPE vocabulary")
    ap.add_argument("--val-fraction", type=float, default=0.01)
    ap.add_argument("--bpe-sample-mb", type=int, default=256, help="text the BPE is trained on")
    ap.add_argument(
        "--max-train-tokens",
        type=int,
        default=None,
        help="keep the training split's first documents up to this many tokens",
    )
    ap.add_argument("--xz", action="store_true", help="also write .bin.xz copies")
    a = ap.parse_args(argv)
    try:
        check_arguments(a)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    source = a.source if a.source == "sotu" else str(Path(a.source).expanduser().resolve())
    if a.tokenizer not in ("bpe", "bytes"):
        a.tokenizer = str(Path(a.tokenizer).expanduser().resolve())
    spec = CorpusSpec(
        source,
        a.glob,
        a.text_key,
        a.tokenizer,
        256 if a.tokenizer == "bytes" else a.vocab_size,
        a.val_fraction,
        a.bpe_sample_mb << 20,
        a.max_train_tokens,
    )
    try:
        print("hashing the source...", flush=True)
        files = source_fingerprint(spec)
        key = corpus_key(spec, files)
        root = Path(a.out).expanduser()
        out = root / key
        # One builder per corpus: a second prepare of the same corpus waits, then finds it
        # built (two writers into one folder corrupted the shards before this lock).
        with exclusive_lock(out / ".prepare.lock", f"waiting for another prepare of {out}"):
            meta = prepared(out)
            if meta is not None:
                print(f"already prepared: {out}")
            else:
                if (out / "meta.json").exists():
                    print(f"{out}: its shards do not match meta.json; building again")
                    (out / "meta.json").unlink()
                meta = build(spec, out, files=files)
            if a.xz and not (out / "train.bin.xz").exists():
                compress(out)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    s = meta["splits"]
    print(
        f"{out}: vocab {meta['vocab_size']}, train {s['train']['tokens']:,} tokens in "
        f"{s['train']['documents']:,} documents, validation {s['val']['tokens']:,} tokens in "
        f"{s['val']['documents']:,} documents\ntrain on it with: data=bin data.path={out}"
    )


if __name__ == "__main__":
    main()
