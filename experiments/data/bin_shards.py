"""Tokenized shards as they come: this project's, nanoGPT's, llm.c's, one file or many a split.

- ``train.bin`` / ``val.bin``: headerless tokens (uint16, or uint32 when meta.json says so),
  possibly ``.bin.xz`` (experiments/prepare.py writes these, nanoGPT writes the plain ones);
- llm.c and modded-nanogpt shards: a header of 256 int32 (magic 20240520, version 1, the token
  count), then uint16 tokens; the header is checked and the token count honoured;
- a directory of many shards a split (``fineweb_train_000001.bin``, ..., ``fineweb_val_*.bin``):
  every file whose name holds the split's name, in name order.
A run reads one flat file a split: one headerless file is linked into the data cache, anything
else (compressed, headered, several shards) is unpacked or concatenated there once.
"""

from __future__ import annotations

import lzma
import os
import shutil
from pathlib import Path

import numpy as np

from experiments.files import atomic_writer

LLMC_MAGIC = 20240520
LLMC_VERSIONS = {1: np.uint16}  # version -> token dtype
HEADER_INTS = 256


class ShardError(ValueError):
    """A shard is not what its header (or its name) says; the message names the file."""


def split_files(directory: Path, split: str) -> list[Path]:
    """The files holding a split: ``<split>.bin`` (or ``.bin.xz``), else every ``*<split>*.bin``
    in name order; [] when there are none."""
    for name in (f"{split}.bin", f"{split}.bin.xz"):
        if (directory / name).exists():
            return [directory / name]
    return sorted(p for p in directory.glob(f"*{split}*.bin") if p.is_file())


def header_tokens(path: Path) -> int | None:
    """The token count an llm.c header declares (checked against the file's size), or None
    for a headerless file. ShardError for a header it cannot honour."""
    if path.suffix == ".xz" or path.stat().st_size < 4 * HEADER_INTS:
        return None
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    if int(header[0]) != LLMC_MAGIC:
        return None
    version, count = int(header[1]), int(header[2])
    if version not in LLMC_VERSIONS:
        raise ShardError(
            f"{path}: llm.c header version {version} is not supported "
            f"(known: {sorted(LLMC_VERSIONS)})"
        )
    itemsize = np.dtype(LLMC_VERSIONS[version]).itemsize
    want = 4 * HEADER_INTS + count * itemsize
    if path.stat().st_size != want:
        raise ShardError(
            f"{path}: its header says {count:,} tokens ({want:,} bytes with the header), the "
            f"file has {path.stat().st_size:,} bytes: truncated or not an llm.c shard"
        )
    return count


def materialise(files: list[Path], dst: Path, dtype: str) -> None:
    """One flat file of the split's tokens at ``dst``: a link to a lone headerless file, else
    the tokens unpacked (.xz) or concatenated (headers dropped), written atomically."""
    if len(files) == 1 and files[0].suffix != ".xz" and header_tokens(files[0]) is None:
        os.symlink(files[0], dst)
        return
    try:
        with atomic_writer(dst) as out:
            for path in files:
                if path.suffix == ".xz":
                    with lzma.open(path, "rb") as f:
                        shutil.copyfileobj(f, out, 16 << 20)
                    continue
                count = header_tokens(path)
                if count is None:
                    with open(path, "rb") as f:
                        shutil.copyfileobj(f, out, 16 << 20)
                    continue
                tokens = np.memmap(path, dtype=np.uint16, mode="r", offset=4 * HEADER_INTS)
                out.write(np.asarray(tokens[:count], dtype=dtype).tobytes())
    except (lzma.LZMAError, EOFError) as e:
        raise ShardError(f"{path}: damaged or truncated .xz file ({e})") from None
