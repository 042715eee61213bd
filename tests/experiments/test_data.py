import hashlib
import time

import numpy as np
import pytest

from experiments.data import DataConfig, DataError, is_validation, prepare


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bpe_preparation_is_cached_and_deterministic(tmp_path):
    cfg = DataConfig(source="sotu", tokenizer="bpe", vocab_size=1024, cache_dir=str(tmp_path / "a"))
    t0 = time.time()
    first = prepare(cfg)
    cold = time.time() - t0
    t0 = time.time()
    second = prepare(cfg)
    warm = time.time() - t0
    assert warm < cold / 5
    assert first.directory == second.directory
    assert np.array_equal(first.train, second.train)
    # a fresh cache elsewhere retrains the tokenizer: identical bytes (deterministic)
    other = prepare(DataConfig(source="sotu", tokenizer="bpe", vocab_size=1024,
                               cache_dir=str(tmp_path / "b")))
    for f in ("train.bin", "val.bin", "tokenizer.json"):
        assert _sha(first.directory / f) == _sha(other.directory / f)
    assert first.vocab_size == 1024 and int(first.train.max()) < 1024
    assert len(first.val) > 50_000 and len(first.train) > 20 * len(first.val) / 2


def test_text_directory_split_by_document(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"d{i}.txt").write_text(f"document {i} " * 200)
    ds = prepare(DataConfig(source="text", path=str(docs), tokenizer="bytes", vocab_size=256,
                            val_fraction=0.2, cache_dir=str(tmp_path / "c")))
    n_val = sum(is_validation(str(docs / f"d{i}.txt"), 0.2) for i in range(40))
    assert 0 < n_val < 40
    assert len(ds.val) == sum(len(f"document {i} " * 200) for i in range(40)
                              if is_validation(str(docs / f"d{i}.txt"), 0.2))
    # changing the corpus changes the cache key
    (docs / "d0.txt").write_text("changed")
    ds2 = prepare(DataConfig(source="text", path=str(docs), tokenizer="bytes", vocab_size=256,
                             val_fraction=0.2, cache_dir=str(tmp_path / "c")))
    assert ds2.key != ds.key


def test_bin_shards(tmp_path):
    (np.arange(5000) % 300).astype(np.uint16).tofile(tmp_path / "train.bin")
    (np.arange(800) % 300).astype(np.uint16).tofile(tmp_path / "val.bin")
    ds = prepare(DataConfig(source="bin", path=str(tmp_path), vocab_size=300,
                            cache_dir=str(tmp_path / "c")))
    assert len(ds.train) == 5000 and ds.vocab_size == 300
    with pytest.raises(DataError, match="vocab_size"):
        prepare(DataConfig(source="bin", path=str(tmp_path), vocab_size=100,
                           cache_dir=str(tmp_path / "d")))


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        DataConfig(source="text", path=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="required"):
        DataConfig(source="text")
