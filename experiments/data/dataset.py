"""Training data: the configured corpus as tokenized shards, cached on disk.

Sources (``data.source``):
- ``sotu``: the embedded State of the Union corpus (experiments/corpora, public domain);
- ``text``: a user's directory (every file matching ``data.glob``; .jsonl and .parquet files
  are read by their text column) or a single file;
- ``bin``: a tokenized corpus directory: one written by ``python -m experiments.prepare``
  (meta.json, train.bin, val.bin, val_docs.npy, each .bin possibly .xz-compressed) or
  nanoGPT's ``train.bin``/``val.bin`` (uint16).
Tokenizers (``data.tokenizer``): ``bpe`` (byte-level BPE trained locally; deterministic) or
``bytes`` (vocab 256). ``sotu`` and ``text`` are tokenized by experiments/prepare.py into a
cache directory keyed by a hash of the corpus, the tokenizer settings and the split, so a
changed corpus or setting never reuses stale shards. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from experiments.data.bin_shards import ShardError, header_tokens, materialise, split_files
from experiments.files import exclusive_lock, read_json
from models.typed import LOGISTICS, Typed

Source = Literal["sotu", "text", "bin"]
Tokenizer = Literal["bpe", "bytes"]
CACHE_ENV = "MOE_SCALING_CACHE"
DEFAULT_CACHE = "~/.cache/moe-scaling"
SHA_MEMO = "sha256-memo.json"  # in the cache: each source file's hash, by path, size and time


class DataError(ValueError):
    """The data configuration cannot work; the message says why."""


def _shards(directory: Path, split: str) -> list[Path]:
    return split_files(directory, split)


@dataclass
class DataConfig(Typed):
    section: ClassVar[str] = "data"

    source: Source = "sotu"
    """sotu (embedded corpus), text (your files) or bin (a tokenized corpus directory)."""
    path: str | None = field(default=None, metadata=LOGISTICS)
    """text: a directory or one file; bin: the directory holding train.bin and val.bin.
    Where the corpus lies is logistics: a run's identity holds its content's fingerprint."""
    glob: str = "**/*.txt"
    """text: which files under path are documents."""
    text_key: str = "text"
    """text: the field holding a document in .jsonl and .parquet files."""
    tokenizer: Tokenizer = "bpe"
    """bpe (byte-level BPE trained locally on the training split) or bytes (vocab 256)."""
    tokenizer_file: str | None = None
    """A tokenizer.json to use instead of training a BPE (data.vocab_size must match it)."""
    vocab_size: int = 2048
    """Vocabulary size (BPE target, 256 for bytes, the corpus's for bin)."""
    val_fraction: float = 0.05
    """Fraction of documents held out for validation (split by a hash of the document id)."""
    cache_dir: str | None = field(default=None, metadata=LOGISTICS)
    """Where tokenized shards are cached; default $MOE_SCALING_CACHE or ~/.cache/moe-scaling."""

    def __post_init__(self) -> None:
        """Checks of the values alone: the config is a value, and reading the disk is one
        explicit step (``with_corpus``)."""
        super().__post_init__()
        if self.source in ("text", "bin") and not self.path:
            raise DataError(f"data.path is required for data.source={self.source}")
        if self.source == "bin":
            if self.vocab_size < 0:
                raise DataError(
                    f"data.vocab_size must be >= 0 (0: the corpus's), got {self.vocab_size}"
                )
        elif self.tokenizer_file:
            pass  # its vocabulary is checked against data.vocab_size when it is read
        elif self.tokenizer == "bytes" and self.vocab_size != 256:
            raise DataError(
                f"data.vocab_size must be 256 for the bytes tokenizer, got {self.vocab_size}"
            )
        elif self.tokenizer == "bpe" and not 512 <= self.vocab_size <= 65535:
            raise DataError(
                f"data.vocab_size: BPE vocab must be in [512, 65535], got {self.vocab_size}"
            )
        if not 0.0 < self.val_fraction < 0.5:
            raise DataError(f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


@dataclass
class Dataset:
    train: np.ndarray  # token ids (memmap)
    val: np.ndarray
    val_docs: np.ndarray  # int64 start offset of every validation document in ``val``
    vocab_size: int
    key: str
    directory: Path
    meta: dict

    @property
    def unique_train_tokens(self) -> int:
        return len(self.train)


# ---- reading a tokenized directory --------------------------------------------------------


def read_tokenized(
    directory: Path, vocab_size: int | None, source: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(train, val, val_docs, meta) of a tokenized directory; .xz shards must be decompressed
    first (see ``prepare``). ``source``: where the corpus came from, for messages."""
    meta = corpus_meta(directory)
    dtype = meta.get("dtype", "uint16")
    train = np.memmap(directory / "train.bin", dtype=dtype, mode="r")
    val = np.memmap(directory / "val.bin", dtype=dtype, mode="r")
    docs = directory / "val_docs.npy"
    if docs.exists():
        val_docs = np.load(docs)
    else:  # nanoGPT shards have no document boundaries: 64k-token chunks stand in for them
        val_docs = np.arange(0, max(len(val), 1), 65536, dtype=np.int64)
        meta.setdefault("notes", []).append("no document boundaries: 64k-token chunks")
    for name, arr in (("train", train), ("val", val)):
        want = meta.get("splits", {}).get(name, {}).get("tokens")
        if want is not None and len(arr) != want:
            raise DataError(
                f"{source or directory}: {name}.bin holds {len(arr):,} tokens but meta.json "
                f"says {want:,}: truncated or replaced; prepare the corpus again"
            )
    vocab = int(meta.get("vocab_size") or vocab_size or 0)
    if vocab_size is not None and meta.get("vocab_size") and vocab_size != vocab:
        raise DataError(
            f"data.vocab_size={vocab_size} but {directory} was tokenized with a "
            f"vocabulary of {vocab}"
        )
    for name, arr in (("train", train), ("val", val)):
        if arr.size and int(arr.max()) >= vocab:
            raise DataError(f"data.vocab_size={vocab} but {name}.bin holds id {int(arr.max())}")
    return train, val, val_docs, meta


def corpus_meta(directory: Path) -> dict:
    """A tokenized directory's meta.json ({} for nanoGPT shards, which have none)."""
    return read_json(Path(directory) / "meta.json") or {}


def with_corpus(cfg: DataConfig) -> DataConfig:
    """The one read of the disk a config needs before a plan or a run: the corpus is where
    ``data.path`` says, and a prepared corpus's vocabulary (meta.json) fills ``vocab_size: 0``
    or must agree with the one given. Returns the config with its vocabulary settled; a
    DataError of one line otherwise."""
    if cfg.source not in ("text", "bin"):
        return cfg
    root = Path(cfg.path).expanduser()
    if not root.exists():
        raise DataError(f"data.path: {cfg.path} does not exist")
    if cfg.source == "text":
        if cfg.tokenizer_file and not Path(cfg.tokenizer_file).expanduser().is_file():
            raise DataError(f"data.tokenizer_file: {cfg.tokenizer_file} does not exist")
        return cfg
    for split in ("train", "val"):
        if not _shards(root, split):
            raise DataError(
                f"data.path: {root} has no {split}.bin, {split}.bin.xz or *{split}*.bin shards "
                "(make one with python -m experiments.prepare)"
            )
        try:  # an llm.c header that cannot be honoured: say so before anything runs
            for path in _shards(root, split):
                header_tokens(path)
        except ShardError as e:
            raise DataError(str(e)) from None
    known = corpus_meta(root).get("vocab_size")
    if cfg.vocab_size == 0:
        if known is None:
            raise DataError(
                f"data.vocab_size is required: {cfg.path} has no meta.json "
                "saying which vocabulary its tokens use"
            )
        return replace(cfg, vocab_size=int(known))
    if known is not None and known != cfg.vocab_size:
        raise DataError(
            f"data.vocab_size={cfg.vocab_size} but {cfg.path} was tokenized "
            f"with a vocabulary of {known}"
        )
    return cfg


_identities: dict[str, str] = {}  # per process: a corpus does not change under a sweep


def _identity(cfg: DataConfig) -> str:
    if cfg.source == "sotu":
        return "sotu"  # the embedded corpus: part of the code's version
    root = Path(cfg.path).expanduser()
    if cfg.source == "bin":  # the key it was prepared under; nanoGPT shards: their sizes
        sizes = [[p.name, p.stat().st_size] for s in ("train", "val") for p in _shards(root, s)]
        return (
            corpus_meta(root).get("key")
            or hashlib.sha256(json.dumps(sizes).encode()).hexdigest()[:16]
        )
    from experiments.data.corpus import PrepareError, corpus_key, source_fingerprint, spec_for

    spec = spec_for(cfg)
    try:
        files = source_fingerprint(spec, cfg.cache_root / SHA_MEMO)
    except PrepareError as e:  # no usable files yet: the run's setup says so, under this id
        files = {"unreadable": str(e)}
    return corpus_key(spec, files)


def corpus_identity(cfg: DataConfig) -> str:
    """What identifies a corpus, everywhere: in a run's id, as a prepared corpus's key and as
    the cache entry of a text corpus. A text corpus is the key it is (or would be) prepared
    under: its files' names and sha256 with the tokenizer and split settings, so the same
    data copied, moved or touched is the same corpus, and an edited file is another
    (hashes are remembered in the cache: a run start re-reads nothing). A tokenized directory
    is the key in its meta.json; the embedded corpus is "sotu". Remembered per process."""
    key = json.dumps(asdict(cfg), sort_keys=True)
    if key not in _identities:
        _identities[key] = _identity(cfg)
    return _identities[key]


def _bin_cache_entry(cfg: DataConfig) -> str:
    """The cache entry of a tokenized directory: its place and its shards' sizes and times.
    Two directories never share an entry (the entry links to, or unpacks, one of them)."""
    src = Path(cfg.path).expanduser().resolve()
    parts = [str(src)]
    for split in ("train", "val"):
        for path in _shards(src, split):
            st = path.stat()
            parts.append(f"{split}:{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256(json.dumps([*parts, cfg.vocab_size]).encode()).hexdigest()[:16]


def _materialise_bin(cfg: DataConfig, out: Path) -> None:
    """Link (or unpack, or concatenate) a tokenized directory's shards into the cache entry
    ``out``: one flat file a split (experiments/data/bin_shards.py)."""
    src = Path(cfg.path).expanduser().resolve()
    dtype = corpus_meta(src).get("dtype", "uint16")
    for split in ("train", "val"):
        try:
            materialise(_shards(src, split), out / f"{split}.bin", dtype)
        except ShardError as e:
            raise DataError(str(e)) from None
    for name in ("meta.json", "val_docs.npy", "tokenizer.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)


def open_dataset(cfg: DataConfig) -> Dataset:
    """Tokenize (or reuse the cached shards of) the configured corpus."""
    cfg = with_corpus(cfg)  # a no-op for a config that went through from_dict
    from experiments.data import shards
    from experiments.data.corpus import corpus_key, source_fingerprint, spec_for

    root = cfg.cache_root
    root.mkdir(parents=True, exist_ok=True)
    spec = files = None
    if cfg.source == "bin":
        key = _bin_cache_entry(cfg)
    else:
        spec = spec_for(cfg)
        files = source_fingerprint(spec, root / SHA_MEMO)  # as it is now, not as remembered
        key = corpus_key(spec, files)
    final = root / key
    with exclusive_lock(root / f".{key}.lock"):  # concurrent runs of a sweep prepare once
        if not (final / "train.bin").exists():
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}-"))
            try:
                if cfg.source == "bin":
                    _materialise_bin(cfg, tmp)
                else:
                    shards.build(spec, tmp, progress=False, files=files)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    train, val, val_docs, meta = read_tokenized(
        final, cfg.vocab_size, cfg.path if cfg.source == "bin" else None
    )
    return Dataset(
        train, val, val_docs, int(meta.get("vocab_size") or cfg.vocab_size), key, final, meta
    )


def check_lengths(ds: Dataset, seq_len: int) -> None:
    """Both splits must hold at least one training window; say which does not."""
    for name, arr in (("training", ds.train), ("validation", ds.val)):
        if len(arr) < seq_len + 2:
            raise DataError(
                f"the {name} split of {ds.directory} has {len(arr)} tokens, fewer "
                f"than model.seq_len + 2 = {seq_len + 2}; use more text or a "
                "shorter model.seq_len"
            )


__all__ = ["DataConfig", "DataError", "Dataset", "check_lengths", "open_dataset"]
