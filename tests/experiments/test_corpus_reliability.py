"""Issue 23, corpora: concurrent builds, truncated shards, identity by content, bad input named
by file and line, arguments checked before any reading (CPU)."""

import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import prepare
from experiments.data import dataset as data
from experiments.data import shards
from experiments.data.corpus import CorpusSpec, PrepareError, documents, pieces
from experiments.data.dataset import DataConfig, DataError, corpus_identity, open_dataset
from tests.experiments.test_data import _corpus_texts, _write_formats

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws


def _prepare_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.prepare", str(src), "--out", str(out), *extra]


def _txt_corpus(root: Path, n: int = 400) -> Path:
    root.mkdir(parents=True)
    for i, t in enumerate(_corpus_texts(n)):
        (root / f"{i:04d}.txt").write_text(t * 3)
    return root


def test_two_prepares_into_one_folder_build_one_intact_corpus(tmp_path):
    src = _txt_corpus(tmp_path / "src")
    args = ["--tokenizer", "bytes", "--val-fraction", "0.1", "--glob", "*.txt"]
    ref = subprocess.run(
        _prepare_cmd(src, tmp_path / "ref", *args), capture_output=True, check=False
    )
    assert ref.returncode == 0
    both = [
        subprocess.Popen(_prepare_cmd(src, tmp_path / "out", *args), stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in both] == [0, 0]
    (expected,) = (tmp_path / "ref").iterdir()
    (got,) = (tmp_path / "out").iterdir()
    for name in ("train.bin", "val.bin", "val_docs.npy"):
        assert (got / name).read_bytes() == (expected / name).read_bytes(), name
    assert not [p.name for p in got.iterdir() if p.name.endswith(".tmp")]


def test_already_prepared_checks_the_shards_against_meta(tmp_path):
    src = _txt_corpus(tmp_path / "src", 60)
    args = ["--tokenizer", "bytes", "--val-fraction", "0.1", "--glob", "*.txt"]
    subprocess.run(_prepare_cmd(src, tmp_path / "out", *args), check=True, capture_output=True)
    (corpus,) = (tmp_path / "out").iterdir()
    full = (corpus / "train.bin").read_bytes()
    (corpus / "train.bin").write_bytes(full[: len(full) // 2])  # truncated (disk full, a copy)
    assert shards.prepared(corpus) is None
    again = subprocess.run(
        _prepare_cmd(src, tmp_path / "out", *args), capture_output=True, check=False
    )
    assert again.returncode == 0 and b"building again" in again.stdout
    assert (corpus / "train.bin").read_bytes() == full


def test_a_truncated_bin_shard_is_refused_not_trained(tmp_path):
    texts = _write_formats(tmp_path / "src")
    out = tmp_path / "out"
    subprocess.run(
        _prepare_cmd(
            tmp_path / "src" / "jsonl", out, "--tokenizer", "bytes", "--val-fraction", "0.2"
        ),
        check=True,
        capture_output=True,
    )
    (corpus,) = out.iterdir()
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    data = (copy / "train.bin").read_bytes()
    (copy / "train.bin").write_bytes(data[:-1000])
    cache = str(tmp_path / "cache")
    good = open_dataset(DataConfig(source="bin", path=str(corpus), vocab_size=0, cache_dir=cache))
    assert len(good.train) + len(good.val) == sum(len(t) for t in texts)
    with pytest.raises(DataError, match=r"train.bin holds .* tokens but meta.json says"):
        open_dataset(DataConfig(source="bin", path=str(copy), vocab_size=0, cache_dir=cache))


def test_text_runs_are_identified_by_content_not_times_or_place(tmp_path):
    src = _txt_corpus(tmp_path / "a", 20)
    cache = str(tmp_path / "cache")

    def key(path):
        data._identities.clear()  # one process remembers a corpus's identity
        return corpus_identity(DataConfig(source="text", path=str(path), cache_dir=cache))

    first = key(src)
    copy = tmp_path / "b"
    shutil.copytree(src, copy, copy_function=shutil.copy)  # new times, new place
    os.utime(copy / "0003.txt", (1, 1))
    assert key(copy) == first
    (copy / "0003.txt").write_text("changed")
    assert key(copy) != first


def _spec(path: Path, **kw) -> CorpusSpec:
    return CorpusSpec(str(path), glob=kw.pop("glob", "*"), **kw)


def _read_all(spec: CorpusSpec) -> list:
    return [d for p in pieces(spec) for d in documents(spec, p)]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.jsonl", b'{"text": "a"}\n{"text": "b"\n', r"bad.jsonl:2: not a JSON line"),
        ("num.jsonl", b'{"text": "a"}\n\n{"text": 7}\n', r"num.jsonl:3: 'text' is int, not text"),
        ("key.jsonl", b'{"body": "a"}\n', r"key.jsonl:1: a JSON line has no 'text' field"),
        ("utf.jsonl", b'{"text": "\xff\xfe"}\n', r"utf.jsonl:1: not a JSON line"),
        ("fake.parquet", b"not parquet at all", r"fake.parquet: not a readable Parquet file"),
    ],
)
def test_bad_input_is_named_by_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(PrepareError, match=message):
        _read_all(_spec(tmp_path))


def test_parquet_without_the_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "p.parquet")
    with pytest.raises(PrepareError, match=r"p.parquet: no column 'text' \(columns: \['body'\]\)"):
        _read_all(_spec(tmp_path))


def test_a_truncated_xz_shard_is_an_error_naming_it(tmp_path):
    blob = lzma.compress(b"".join(json.dumps({"text": t}).encode() + b"\n" for t in "abc" * 500))
    (tmp_path / "part.jsonl.xz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(PrepareError, match=r"part.jsonl.xz: damaged or truncated .xz file"):
        _read_all(_spec(tmp_path))


def test_a_truncated_xz_text_corpus_leaves_a_failure_record(tmp_path):
    from experiments.train import RunError, execute
    from tests.experiments.helpers import tiny_config

    blob = lzma.compress(
        b"".join(json.dumps({"text": f"{i} " * 50}).encode() + b"\n" for i in range(400))
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "part.jsonl.xz").write_bytes(blob[: len(blob) // 2])
    cfg = tiny_config(
        tmp_path,
        "data=text",
        f"data.path={tmp_path}/src",
        "data.glob=*.xz",
        "data.tokenizer=bytes",
        "data.vocab_size=256",
    )
    with pytest.raises(RunError, match="damaged or truncated"):
        execute(cfg)
    (summary,) = (tmp_path / "runs").glob("*/summary.json")
    s = json.loads(summary.read_text())
    assert s["status"] == "failed" and s["failure_kind"] == "setup"  # never "pending" forever


def test_binary_files_in_a_corpus_folder_are_skipped_with_a_warning(tmp_path, capsys):
    _txt_corpus(tmp_path / "src", 5)
    (tmp_path / "src" / "blob.o").write_bytes(bytes(range(256)) * 80)
    docs = _read_all(_spec(tmp_path / "src"))
    assert len(docs) == 5
    assert "skipped 1 binary file(s)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--vocab-size", "10"], "--vocab-size 10: a byte-level BPE needs 512"),
        (["--vocab-size", "0"], "--vocab-size 0"),
        (["--vocab-size", "-5"], "--vocab-size -5"),
        (["--vocab-size", "99999999999"], "--vocab-size 99999999999"),
        (["--tokenizer", "missing.json"], "--tokenizer missing.json: no such tokenizer.json"),
        (["--tokenizer", "{corrupt}"], "not a tokenizer.json"),
        (["--val-fraction", "0.7"], "--val-fraction 0.7: must be in (0, 0.5)"),
    ],
)
def test_prepare_arguments_are_checked_before_reading_anything(tmp_path, capsys, args, message):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    args = [a.replace("{corrupt}", str(corrupt)) for a in args]
    with pytest.raises(SystemExit) as e:
        prepare.main([str(tmp_path / "nowhere-needed"), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert message in err or "does not exist" in err
    if "does not exist" in err:  # the source is checked first: check the rest with a real one
        src = _txt_corpus(tmp_path / "src", 3)
        with pytest.raises(SystemExit) as e:
            prepare.main([str(src), "--out", str(tmp_path / "o"), *args])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing was tokenized


def test_prepare_uses_remembered_hashes(tmp_path, monkeypatch):
    from experiments.data import corpus

    src = _txt_corpus(tmp_path / "src", 10)
    memo = tmp_path / "memo.json"
    spec = _spec(src, glob="*.txt")
    first = corpus.source_fingerprint(spec, memo)
    monkeypatch.setattr(corpus, "file_sha256", lambda p: pytest.fail(f"re-read {p}"))
    assert corpus.source_fingerprint(spec, memo) == first
    assert np.all([len(v) == 64 for v in first.values()])
