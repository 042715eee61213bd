"""The sweep benchmark's carried corpus: the first N training tokens of a prepared corpus, which
a run opens as it would the whole one."""

import json

import numpy as np

from experiments.benchmarks.bench_corpus import _count, bench_corpus
from experiments.data.dataset import DataConfig, open_dataset


def test_the_cut_corpus_opens_with_the_first_tokens_and_the_whole_validation_split(tmp_path):
    src, out = tmp_path / "corpus", tmp_path / "bench"
    src.mkdir()
    train = (np.arange(5000) * 7 % 300).astype(np.uint16)
    val = (np.arange(800) % 300).astype(np.uint16)
    train.tofile(src / "train.bin")
    val.tofile(src / "val.bin")
    np.save(src / "val_docs.npy", np.array([0, 400]))
    splits = {"train": {"documents": 9, "tokens": 5000}, "val": {"documents": 2, "tokens": 800}}
    meta = {"key": "k", "vocab_size": 300, "dtype": "uint16", "eot": 0, "splits": splits}
    (src / "meta.json").write_text(json.dumps(meta))
    bench_corpus(src, out, _count("3k"))
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json", "train.bin.xz", "val.bin.xz", "val_docs.npy"
    ]  # fmt: skip
    ds = open_dataset(
        DataConfig(source="bin", path=str(out), vocab_size=300, cache_dir=str(tmp_path / "c"))
    )
    assert np.array_equal(ds.train, train[:3000]) and np.array_equal(ds.val, val)
    assert list(ds.val_docs) == [0, 400] and ds.vocab_size == 300
