"""Tokenized shards as other tools write them: llm.c / modded-nanogpt headers and directories
of many shards (CPU)."""

import numpy as np
import pytest

from experiments.data.bin_shards import HEADER_INTS, LLMC_MAGIC
from experiments.data.dataset import DataConfig, DataError, open_dataset, with_corpus


def _llmc(path, tokens, version=1, count=None):
    header = np.zeros(HEADER_INTS, np.int32)
    header[:3] = LLMC_MAGIC, version, len(tokens) if count is None else count
    path.write_bytes(header.tobytes() + np.asarray(tokens, np.uint16).tobytes())


def _cfg(tmp_path, folder):
    return DataConfig(source="bin", path=str(folder), vocab_size=300, cache_dir=str(tmp_path / "c"))


def test_a_directory_of_headered_shards_reads_as_one_corpus(tmp_path):
    folder = tmp_path / "fineweb"
    folder.mkdir()
    parts = [(np.arange(1000) + 7 * i) % 300 for i in range(3)]
    for i, tokens in enumerate(parts):
        _llmc(folder / f"fineweb_train_{i + 1:06d}.bin", tokens)
    _llmc(folder / "fineweb_val_000000.bin", np.arange(600) % 300)
    ds = open_dataset(_cfg(tmp_path, folder))
    assert np.array_equal(ds.train, np.concatenate(parts))  # headers dropped, order by name
    assert np.array_equal(ds.val, np.arange(600) % 300)


@pytest.mark.parametrize(
    "version,count,message",
    [
        (2, None, r"llm.c header version 2 is not supported"),
        (1, 5000, r"its header says 5,000 tokens .* the file has 3,024 bytes"),
    ],
)
def test_a_header_that_does_not_match_is_one_clear_error(tmp_path, version, count, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    _llmc(folder / "train_000.bin", np.arange(1000) % 300, version, count)
    _llmc(folder / "val_000.bin", np.arange(500) % 300)
    with pytest.raises(DataError, match=rf"train_000.bin: {message}"):
        with_corpus(_cfg(tmp_path, folder))


def test_headerless_nanogpt_shards_still_read_as_they_are(tmp_path):
    (np.arange(5000) % 300).astype(np.uint16).tofile(tmp_path / "train.bin")
    (np.arange(800) % 300).astype(np.uint16).tofile(tmp_path / "val.bin")
    ds = open_dataset(_cfg(tmp_path, tmp_path))
    assert len(ds.train) == 5000 and (ds.directory / "train.bin").is_symlink()
