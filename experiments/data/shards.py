"""The shard builder: a corpus's documents -> tokenized ``train.bin``/``val.bin`` shards.

Parts of about 64 MB are encoded with the `tokenizers` batch encoder (every core) and written
atomically under ``<out>/parts/``, so an interrupted build resumes where it stopped; then the
parts are concatenated (whole documents; the training split optionally capped) and
``meta.json`` is written last. ``prepared`` says whether a folder holds a finished corpus whose
shards match its meta.json. The command line is experiments/prepare.py.
"""

from __future__ import annotations

import json
import lzma
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from experiments.data import corpus
from experiments.data.corpus import (
    FORMAT_VERSION,
    CorpusSpec,
    Piece,
    PrepareError,
    corpus_key,
    documents,
    is_validation,
    pieces,
    source_fingerprint,
)
from experiments.files import atomic_write_bytes, atomic_writer, read_json

EOT = "<|endoftext|>"
MIN_BPE_VOCAB = 512  # as data.vocab_size accepts; 257 is the bare minimum of a byte-level BPE
MAX_VOCAB = 1 << 20


# ---- tokenizers ---------------------------------------------------------------------------


def train_bpe(texts: Iterator[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _training_sample(spec: CorpusSpec, parts: list[Piece]) -> Iterator[str]:
    budget = spec.bpe_sample_bytes
    for piece in parts:
        for doc_id, text in documents(spec, piece):
            if not is_validation(doc_id, spec.val_fraction):
                yield text
                budget -= len(text)
                if budget <= 0:
                    return


class Encoder:
    """Batch encoding to token ids; BPE documents end with the end-of-text token."""

    def __init__(self, spec: CorpusSpec, out: Path, parts: list[Piece]):
        self.tok = None
        if spec.tokenizer == "bytes":
            self.vocab, self.eot = 256, None
            return
        from tokenizers import Tokenizer

        if (out / "tokenizer.json").exists():  # resuming: the tokenizer trained before
            self.tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        elif spec.tokenizer == "bpe":
            self.tok = train_bpe(_training_sample(spec, parts), spec.vocab_size)
            atomic_write_bytes(out / "tokenizer.json", self.tok.to_str().encode())
        else:
            self.tok = Tokenizer.from_file(spec.tokenizer)
            atomic_write_bytes(out / "tokenizer.json", self.tok.to_str().encode())
        self.vocab, self.eot = self.tok.get_vocab_size(), self.tok.token_to_id(EOT)

    @property
    def dtype(self):
        return np.uint16 if self.vocab <= 65536 else np.uint32

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if self.tok is None:
            return [np.frombuffer(t.encode("utf-8"), np.uint8).astype(self.dtype) for t in texts]
        tail = [] if self.eot is None else [self.eot]
        return [np.asarray(e.ids + tail, dtype=self.dtype) for e in self.tok.encode_batch(texts)]


# ---- building -----------------------------------------------------------------------------


def _group(all_pieces: list[Piece]) -> list[list[Piece]]:
    parts, current, size = [], [], 0
    for p in all_pieces:
        if current and size + p.size > corpus.PART_BYTES:
            parts.append(current)
            current, size = [], 0
        current.append(p)
        size += p.size
    return parts + ([current] if current else [])


def _encode_part(spec: CorpusSpec, enc: Encoder, part: list[Piece], stem: Path) -> None:
    tokens = {"train": [], "val": []}
    lens = {"train": [], "val": []}
    batch: list[tuple[str, str]] = []

    def flush():
        for (_, split), ids in zip(batch, enc.encode([t for t, _ in batch])):
            tokens[split].append(ids)
            lens[split].append(len(ids))
        batch.clear()

    for piece in part:
        for doc_id, text in documents(spec, piece):
            batch.append((text, "val" if is_validation(doc_id, spec.val_fraction) else "train"))
            if len(batch) >= 256:
                flush()
    flush()
    for split in ("train", "val"):
        arr = np.concatenate(tokens[split]) if tokens[split] else np.zeros(0, enc.dtype)
        atomic_write_bytes(stem.with_suffix(f".{split}.bin"), arr.tobytes())
        atomic_write_bytes(
            stem.with_suffix(f".{split}.lens"), np.asarray(lens[split], np.int64).tobytes()
        )
    atomic_write_bytes(stem.with_suffix(".done"), b"ok")


def _concat(
    parts_dir: Path, n: int, split: str, out: Path, dtype, cap: int | None = None
) -> np.ndarray:
    """Concatenate the parts' shards into ``out`` (whole documents, at most ``cap`` tokens);
    returns the kept documents' token lengths."""
    lens, total = [], 0
    itemsize = np.dtype(dtype).itemsize
    with atomic_writer(out) as f:
        for i in range(n):
            stem = parts_dir / f"{i:05d}"
            part = np.frombuffer(stem.with_suffix(f".{split}.lens").read_bytes(), np.int64)
            data = stem.with_suffix(f".{split}.bin").read_bytes()
            if cap is not None:
                keep = int(np.searchsorted(np.cumsum(part), cap - total, side="right"))
                part, data = part[:keep], data[: int(part[:keep].sum()) * itemsize]
            f.write(data)
            lens.append(part)
            total += int(part.sum())
    return np.concatenate(lens) if lens else np.zeros(0, np.int64)


def build(spec: CorpusSpec, out: Path, progress: bool = True, files: dict | None = None) -> dict:
    """Tokenize the corpus into ``out`` (resuming finished parts); returns meta.json's content."""
    out.mkdir(parents=True, exist_ok=True)
    parts = _group(pieces(spec))
    parts_dir = out / "parts"
    parts_dir.mkdir(exist_ok=True)
    enc = Encoder(spec, out, [p for part in parts for p in part])
    total = sum(p.size for part in parts for p in part)
    bar = _progress(total, progress)
    try:
        for i, part in enumerate(parts):
            stem = parts_dir / f"{i:05d}"
            if not stem.with_suffix(".done").exists():
                _encode_part(spec, enc, part, stem)
            bar.update(sum(p.size for p in part))
    finally:  # an error then starts on a line of its own
        bar.close()
    counts = {}
    for split in ("train", "val"):
        cap = spec.max_train_tokens if split == "train" else None
        lens = _concat(parts_dir, len(parts), split, out / f"{split}.bin", enc.dtype, cap)
        counts[split] = {"documents": len(lens), "tokens": int(lens.sum())}
        if split == "val":
            np.save(
                out / "val_docs.npy", np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
            )
    if counts["train"]["documents"] == 0 or counts["val"]["documents"] == 0:
        raise PrepareError(
            f"the corpus gives {counts['train']['documents']} training and "
            f"{counts['val']['documents']} validation documents; it needs more "
            "documents or another data.val_fraction"
        )
    files = files or source_fingerprint(spec)
    meta = {
        "key": corpus_key(spec, files),
        "format": FORMAT_VERSION,
        "spec": asdict(spec),
        "vocab_size": enc.vocab,
        "dtype": np.dtype(enc.dtype).name,
        "eot": enc.eot,
        "splits": counts,
        "files_sha256": files,
    }
    atomic_write_bytes(out / "meta.json", json.dumps(meta, indent=1).encode())
    for f in parts_dir.iterdir():
        f.unlink()
    parts_dir.rmdir()
    return meta


class _progress:
    """tqdm when asked for and installed; silent otherwise."""

    def __init__(self, total: int, show: bool):
        self.bar = None
        if show:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing")
            except ImportError:
                pass

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def compress(directory: Path) -> None:
    """train.bin.xz and val.bin.xz beside the shards, for moving them between machines."""
    for split in ("train", "val"):
        src = directory / f"{split}.bin"
        with (
            open(src, "rb") as f,
            atomic_writer(directory / f"{split}.bin.xz") as raw,
            lzma.open(raw, "wb", preset=6) as out,
        ):
            for block in iter(lambda: f.read(1 << 24), b""):
                out.write(block)


def prepared(out: Path) -> dict | None:
    """meta.json of a finished corpus whose shards hold what it says; None otherwise (not
    built, interrupted before meta.json, or a shard truncated or replaced since)."""
    meta = read_json(out / "meta.json")
    if meta is None:
        return None
    itemsize = np.dtype(meta.get("dtype", "uint16")).itemsize
    for split in ("train", "val"):
        shard = out / f"{split}.bin"
        want = meta.get("splits", {}).get(split, {}).get("tokens")
        if want is None or not shard.exists() or shard.stat().st_size != want * itemsize:
            return None
    return meta
