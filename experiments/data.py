"""Corpora -> tokenized memmap shards (train/validation split by document), cached on disk.

Sources (``data.source``):
- ``sotu``: the embedded State of the Union corpus (experiments/corpora, public domain);
- ``text``: a user's directory (every file matching ``data.glob``) or single text file
  (cut into ~100 kB documents at line boundaries);
- ``bin``: pre-tokenized nanoGPT shards, ``<path>/train.bin`` and ``<path>/val.bin``.
Tokenizers (``data.tokenizer``): ``bpe`` (byte-level BPE trained locally on the train split
with the `tokenizers` package; deterministic) or ``bytes`` (vocab 256).

The cache key hashes the corpus content, the tokenizer settings and the split, so a changed
corpus or setting never reuses stale shards. Nothing is downloaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import lzma
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

CORPORA_DIR = Path(__file__).parent / "corpora"
SOURCES = ("sotu", "text", "bin")
TOKENIZERS = ("bpe", "bytes")
EOT = "<|endoftext|>"
FORMAT_VERSION = 1
_CHUNK_BYTES = 100_000


class DataError(ValueError):
    """The data configuration cannot work; the message says why."""


@dataclass
class DataConfig:
    source: str = "sotu"
    path: str | None = None
    glob: str = "**/*.txt"
    tokenizer: str = "bpe"
    vocab_size: int = 2048
    val_fraction: float = 0.05
    cache_dir: str = "~/.cache/moe-scaling"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise DataError(f"data.source: unknown corpus {self.source!r}; choose one of {SOURCES}")
        if self.source != "bin" and self.tokenizer not in TOKENIZERS:
            raise DataError(f"data.tokenizer: unknown {self.tokenizer!r}; choose one of {TOKENIZERS}")
        if self.source in ("text", "bin"):
            if not self.path:
                raise DataError(f"data.path is required for data.source={self.source}")
            if not Path(self.path).expanduser().exists():
                raise DataError(f"data.path: {self.path} does not exist")
        if self.tokenizer == "bytes" and self.source != "bin" and self.vocab_size != 256:
            raise DataError(f"data.vocab_size must be 256 for the bytes tokenizer, got {self.vocab_size}")
        if self.tokenizer == "bpe" and self.source != "bin" and not 512 <= self.vocab_size <= 65535:
            raise DataError(f"data.vocab_size: BPE vocab must be in [512, 65535], got {self.vocab_size}")
        if not 0.0 < self.val_fraction < 0.5:
            raise DataError(f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")


@dataclass
class Dataset:
    train: np.ndarray  # memmap of token ids
    val: np.ndarray
    vocab_size: int
    key: str
    directory: Path


# ---- documents ---------------------------------------------------------------------------


def _sotu_documents() -> Iterator[tuple[str, str]]:
    with lzma.open(CORPORA_DIR / "sotu.jsonl.xz", "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            yield doc["id"], doc["text"]


def _text_files(cfg: DataConfig) -> list[Path]:
    root = Path(cfg.path).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.glob(cfg.glob) if p.is_file())
    if not files:
        raise DataError(f"data.path: no files matching {cfg.glob!r} under {root}")
    return files


def _text_documents(cfg: DataConfig) -> Iterator[tuple[str, str]]:
    files = _text_files(cfg)
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        if len(files) > 1:
            yield str(p), text
            continue
        # One file: cut it into documents at line boundaries so the split is by document.
        start, i = 0, 0
        while start < len(text):
            end = text.find("\n", start + _CHUNK_BYTES)
            end = len(text) if end < 0 else end + 1
            yield f"{p}:{i}", text[start:end]
            start, i = end, i + 1


def documents(cfg: DataConfig) -> Iterator[tuple[str, str]]:
    return _sotu_documents() if cfg.source == "sotu" else _text_documents(cfg)


def is_validation(doc_id: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "little")
    return (h % 1_000_000) < val_fraction * 1_000_000


# ---- cache key ----------------------------------------------------------------------------


def _corpus_fingerprint(cfg: DataConfig) -> str:
    h = hashlib.sha256()
    if cfg.source == "sotu":
        h.update((CORPORA_DIR / "sotu.jsonl.xz").read_bytes())
    elif cfg.source == "text":
        for p in _text_files(cfg):
            h.update(str(p).encode())
            h.update(p.read_bytes())
    else:
        for name in ("train.bin", "val.bin"):
            st = (Path(cfg.path).expanduser() / name).stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_key(cfg: DataConfig) -> str:
    settings = asdict(cfg) | {"format": FORMAT_VERSION, "corpus": _corpus_fingerprint(cfg)}
    settings.pop("cache_dir")
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# ---- tokenization -------------------------------------------------------------------------


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


def _encode_split(docs: list[str], encode, eot: int | None, dtype) -> np.ndarray:
    parts = []
    for text in docs:
        ids = encode(text)
        parts.append(np.asarray(ids, dtype=dtype))
        if eot is not None:
            parts.append(np.asarray([eot], dtype=dtype))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _build(cfg: DataConfig, out: Path) -> dict:
    train_docs, val_docs = [], []
    for doc_id, text in documents(cfg):
        (val_docs if is_validation(doc_id, cfg.val_fraction) else train_docs).append(text)
    if not val_docs:  # tiny corpora: hold out the last document rather than none
        val_docs.append(train_docs.pop())
    if not train_docs:
        raise DataError("data: the corpus has too few documents for a train/validation split")
    dtype = np.uint16 if cfg.vocab_size <= 65536 else np.uint32
    if cfg.tokenizer == "bytes":
        encode, eot, vocab = (lambda t: np.frombuffer(t.encode("utf-8"), np.uint8)), None, 256
    else:
        tok = train_bpe(iter(train_docs), cfg.vocab_size)
        tok.save(str(out / "tokenizer.json"))
        eot, vocab = tok.token_to_id(EOT), tok.get_vocab_size()
        encode = lambda t: tok.encode(t).ids  # noqa: E731
    for name, docs in (("train", train_docs), ("val", val_docs)):
        _encode_split(docs, encode, eot, dtype).tofile(out / f"{name}.bin")
    return {"vocab_size": vocab, "dtype": np.dtype(dtype).name,
            "documents": {"train": len(train_docs), "val": len(val_docs)}}


def _link_bin(cfg: DataConfig, out: Path) -> dict:
    src = Path(cfg.path).expanduser()
    for name in ("train", "val"):
        if not (src / f"{name}.bin").exists():
            raise DataError(f"data.path: {src} has no {name}.bin (nanoGPT uint16 shards)")
        arr = np.memmap(src / f"{name}.bin", dtype=np.uint16, mode="r")
        if arr.size and int(arr.max()) >= cfg.vocab_size:
            raise DataError(f"data.vocab_size={cfg.vocab_size} but {name}.bin holds id {int(arr.max())}")
        os.symlink(src.resolve() / f"{name}.bin", out / f"{name}.bin")
    return {"vocab_size": cfg.vocab_size, "dtype": "uint16"}


def prepare(cfg: DataConfig) -> Dataset:
    """Tokenize (or reuse the cached shards of) the configured corpus."""
    key = cache_key(cfg)
    root = Path(cfg.cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    with open(root / f".{key}.lock", "w") as lock:  # concurrent runs of a sweep prepare once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "meta.json").exists():
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}-"))
            try:
                meta = _link_bin(cfg, tmp) if cfg.source == "bin" else _build(cfg, tmp)
                meta |= {"key": key, "config": asdict(cfg)}
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((final / "meta.json").read_text())
    train = np.memmap(final / "train.bin", dtype=meta["dtype"], mode="r")
    val = np.memmap(final / "val.bin", dtype=meta["dtype"], mode="r")
    return Dataset(train, val, meta["vocab_size"], key, final)
