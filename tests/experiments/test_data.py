import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from experiments.data import corpus
from experiments.data import shards as builder
from experiments.data.corpus import CorpusSpec, is_validation
from experiments.data.dataset import DataConfig, DataError, open_dataset, with_corpus

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bpe_preparation_is_cached_and_deterministic(tmp_path, monkeypatch):
    cfg = DataConfig(source="sotu", tokenizer="bpe", vocab_size=1024, cache_dir=str(tmp_path / "a"))
    first = open_dataset(cfg)
    # a cache hit reads the shards and builds nothing
    monkeypatch.setattr(builder, "build", lambda *a, **k: pytest.fail("rebuilt a cached corpus"))
    second = open_dataset(cfg)
    monkeypatch.undo()
    assert first.directory == second.directory
    assert np.array_equal(first.train, second.train)
    # a fresh cache elsewhere retrains the tokenizer: identical bytes (deterministic)
    other = open_dataset(
        DataConfig(source="sotu", tokenizer="bpe", vocab_size=1024, cache_dir=str(tmp_path / "b"))
    )
    for f in ("train.bin", "val.bin", "tokenizer.json", "val_docs.npy"):
        assert _sha(first.directory / f) == _sha(other.directory / f)
    assert first.vocab_size == 1024 and int(first.train.max()) < 1024
    assert len(first.val) > 50_000 and len(first.train) > 10 * len(first.val)
    # every validation document starts right after the previous one's end-of-text token
    eot = first.meta["eot"]
    assert first.val_docs[0] == 0 and all(first.val[i - 1] == eot for i in first.val_docs[1:])


def test_text_directory_split_by_document(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"d{i}.txt").write_text(f"document {i} " * 200)
    cfg = DataConfig(
        source="text",
        path=str(docs),
        tokenizer="bytes",
        vocab_size=256,
        val_fraction=0.2,
        cache_dir=str(tmp_path / "c"),
    )
    ds = open_dataset(cfg)
    names = sorted(f"d{i}.txt" for i in range(40))  # documents are read in path order
    held = [int(n[1:-4]) for n in names if is_validation(n, 0.2)]
    assert 0 < len(held) < 40
    assert len(ds.val) == sum(len(f"document {i} " * 200) for i in held)
    assert list(ds.val_docs) == list(
        np.cumsum([0] + [len(f"document {i} " * 200) for i in held])[:-1]
    )
    # changing the corpus changes the cache key
    (docs / "d0.txt").write_text("changed")
    ds2 = open_dataset(cfg)
    assert ds2.key != ds.key


def _corpus_texts(n=60):
    return [
        f"doc {i}: " + " ".join(f"word{(i * 7 + j) % 50}" for j in range(300)) for i in range(n)
    ]


def _write_formats(root):
    """The same 60 documents as .txt files, JSON lines and a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = _corpus_texts()
    (root / "txt").mkdir(parents=True)
    for i, t in enumerate(texts):
        (root / "txt" / f"{i:03d}.txt").write_text(t)
    (root / "jsonl").mkdir()
    with open(root / "jsonl" / "part.jsonl", "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "meta": 1}) + "\n")
    (root / "parquet").mkdir()
    pq.write_table(pa.table({"text": texts}), root / "parquet" / "part.parquet", row_group_size=16)
    return texts


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "parquet"])
def test_prepare_command_on_each_format(tmp_path, fmt):
    texts = _write_formats(tmp_path / "src")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.prepare",
            str(tmp_path / "src" / fmt),
            "--out",
            str(out),
            "--tokenizer",
            "bytes",
            "--val-fraction",
            "0.2",
            "--xz",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (corpus,) = out.iterdir()
    meta = json.loads((corpus / "meta.json").read_text())
    total = sum(len(t) for t in texts)
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == total
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 60
    assert 0 < meta["splits"]["val"]["documents"] < 60
    assert meta["files_sha256"] and meta["dtype"] == "uint16"
    # the .xz copies are what data=bin reads on another machine
    (tmp_path / "moved").mkdir()
    for f in ("train.bin.xz", "val.bin.xz", "meta.json", "val_docs.npy"):
        (tmp_path / "moved" / f).write_bytes((corpus / f).read_bytes())
    ds = open_dataset(
        DataConfig(
            source="bin",
            path=str(tmp_path / "moved"),
            vocab_size=0,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert np.array_equal(ds.train, np.fromfile(corpus / "train.bin", np.uint16))
    assert ds.vocab_size == 256 and len(ds.val_docs) == meta["splits"]["val"]["documents"]


def test_prepare_resumes_finished_parts(tmp_path, monkeypatch):
    texts = _write_formats(tmp_path / "src")
    monkeypatch.setattr(corpus, "PART_BYTES", 2000)  # many parts
    spec = CorpusSpec(
        str(tmp_path / "src" / "txt"),
        glob="*.txt",
        tokenizer="bytes",
        vocab_size=256,
        val_fraction=0.2,
    )
    out = tmp_path / "out"
    calls = []
    real = builder._encode_part

    def crash_after_three(*args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        real(*args)

    monkeypatch.setattr(builder, "_encode_part", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        builder.build(spec, out, progress=False)
    assert len(list((out / "parts").glob("*.done"))) == 3
    encoded = []
    monkeypatch.setattr(builder, "_encode_part", lambda *a: (encoded.append(1), real(*a)))
    meta = builder.build(spec, out, progress=False)
    n_parts = len(builder._group(corpus.pieces(spec)))
    assert len(encoded) == n_parts - 3  # the finished parts were not encoded again
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == sum(
        len(t) for t in texts
    )


def test_bpe_uses_a_given_tokenizer_file(tmp_path):
    first = open_dataset(DataConfig(source="sotu", vocab_size=1024, cache_dir=str(tmp_path / "a")))
    given = open_dataset(
        DataConfig(
            source="sotu",
            vocab_size=1024,
            cache_dir=str(tmp_path / "b"),
            tokenizer_file=str(first.directory / "tokenizer.json"),
        )
    )
    assert np.array_equal(first.train, given.train)


def test_bin_shards(tmp_path):
    (np.arange(5000) % 300).astype(np.uint16).tofile(tmp_path / "train.bin")
    (np.arange(800) % 300).astype(np.uint16).tofile(tmp_path / "val.bin")
    ds = open_dataset(
        DataConfig(source="bin", path=str(tmp_path), vocab_size=300, cache_dir=str(tmp_path / "c"))
    )
    assert len(ds.train) == 5000 and ds.vocab_size == 300
    with pytest.raises(DataError, match="vocab_size"):
        open_dataset(
            DataConfig(
                source="bin", path=str(tmp_path), vocab_size=100, cache_dir=str(tmp_path / "d")
            )
        )
    with pytest.raises(DataError, match="vocab_size is required"):
        with_corpus(DataConfig(source="bin", path=str(tmp_path), vocab_size=0))


def test_missing_data_is_a_clear_error(tmp_path):
    """The config is a value (no disk read); ``with_corpus`` is the one read, and says what
    is missing in one line."""
    missing = DataConfig(source="text", path=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="does not exist"):
        with_corpus(missing)
    with pytest.raises(DataError, match="required"):
        DataConfig(source="text")
    with pytest.raises(DataError, match=r"no train\.bin"):
        with_corpus(DataConfig(source="bin", path=str(tmp_path), vocab_size=300))


def test_max_train_tokens_keeps_whole_first_documents(tmp_path):
    texts = _write_formats(tmp_path / "src")
    full = builder.build(
        CorpusSpec(
            str(tmp_path / "src" / "jsonl"),
            glob="*.jsonl",
            tokenizer="bytes",
            vocab_size=256,
            val_fraction=0.2,
        ),
        tmp_path / "full",
        progress=False,
    )
    capped = builder.build(
        CorpusSpec(
            str(tmp_path / "src" / "jsonl"),
            glob="*.jsonl",
            tokenizer="bytes",
            vocab_size=256,
            val_fraction=0.2,
            max_train_tokens=5000,
        ),
        tmp_path / "cap",
        progress=False,
    )
    n = capped["splits"]["train"]["tokens"]
    assert 5000 - max(len(t) for t in texts) < n <= 5000
    assert capped["splits"]["val"] == full["splits"]["val"] and capped["key"] != full["key"]
    a = np.fromfile(tmp_path / "full" / "train.bin", np.uint16)
    b = np.fromfile(tmp_path / "cap" / "train.bin", np.uint16)
    assert np.array_equal(a[:n], b)  # the first documents, whole
