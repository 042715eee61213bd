"""Where a corpus's documents come from, and what identifies it.

A source is ``sotu`` (the embedded corpus), a directory or one file. In a directory every file
matching the glob is read by its kind: ``.txt`` (and any other text) is one document, ``.jsonl``
one document per line (``text_key``), ``.parquet`` one per row. A single large text file is cut
into ~100 kB documents at line boundaries. Large files are read in pieces of about PART_BYTES
(byte ranges ending at a newline, or Parquet row groups), so nothing is ever whole in memory.
Documents go to train or validation by a hash of their id (file path, byte offset or row).
A corpus is identified by the sha256 of its files, the tokenizer and the split settings.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from experiments.files import atomic_write_json, read_json

CORPORA_DIR = Path(__file__).resolve().parents[1] / "corpora"
FORMAT_VERSION = 2
PART_BYTES = 64 << 20
CHUNK_CHARS = 100_000


@dataclass
class CorpusSpec:
    source: str  # "sotu" or a path
    glob: str = "**/*.txt"
    text_key: str = "text"
    tokenizer: str = "bpe"  # bpe | bytes | path to a tokenizer.json
    vocab_size: int = 2048
    val_fraction: float = 0.05
    bpe_sample_bytes: int = 256 << 20  # text the BPE is trained on (the first training docs)
    max_train_tokens: int | None = None  # keep the first documents up to this many tokens


def spec_for(cfg) -> CorpusSpec:
    """The CorpusSpec of a DataConfig (source sotu or text)."""
    source = "sotu" if cfg.source == "sotu" else str(Path(cfg.path).expanduser().resolve())
    tok = (
        str(Path(cfg.tokenizer_file).expanduser().resolve())
        if cfg.tokenizer_file
        else cfg.tokenizer
    )
    return CorpusSpec(source, cfg.glob, cfg.text_key, tok, cfg.vocab_size, cfg.val_fraction)


class PrepareError(ValueError):
    """The corpus cannot be prepared as asked; the message says why."""


# ---- pieces and documents -----------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    path: str  # "" for the embedded corpus
    kind: str  # sotu | txt | chunks | jsonl | parquet
    start: int  # byte offset (chunks, jsonl) or row group (parquet)
    end: int
    size: int  # bytes, for progress and part sizing


def _kind(p: Path) -> str:
    name = p.name.lower()
    if name.endswith((".jsonl", ".jsonl.xz", ".json.xz", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "txt"


def _line_ranges(path: Path, size: int) -> list[tuple[int, int]]:
    """Byte ranges of about PART_BYTES, each ending at a newline."""
    ranges, start = [], 0
    with open(path, "rb") as f:
        while start < size:
            f.seek(min(start + PART_BYTES, size))
            f.readline()
            end = min(f.tell(), size) if start + PART_BYTES < size else size
            ranges.append((start, end))
            start = end
    return ranges


def is_binary(path: Path) -> bool:
    """A NUL byte in the first 8 kB: an object file, an image, a compressed blob. Text
    documents never hold one (UTF-8 and JSON lines do not); .xz and .parquet are read by kind."""
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


_warned: set[str] = set()


def _skip_binaries(files: list[Path]) -> list[Path]:
    kept = [p for p in files if _kind(p) != "txt" or not is_binary(p)]
    skipped = [str(p) for p in files if p not in kept and str(p) not in _warned]
    if skipped:
        _warned.update(skipped)
        print(
            f"warning: skipped {len(skipped)} binary file(s) in the corpus folder (a NUL byte "
            f"in the first 8 kB), e.g. {skipped[0]}; narrow --glob / data.glob to silence this",
            file=sys.stderr,
            flush=True,
        )
    return kept


def pieces(spec: CorpusSpec) -> list[Piece]:
    if spec.source == "sotu":
        p = CORPORA_DIR / "sotu.jsonl.xz"
        return [Piece("", "sotu", 0, 0, p.stat().st_size * 4)]
    root = Path(spec.source)
    files = [root] if root.is_file() else sorted(p for p in root.glob(spec.glob) if p.is_file())
    files = _skip_binaries(files)
    if not files:
        raise PrepareError(f"no files matching {spec.glob!r} under {root} (binary files skipped)")
    out = []
    for p in files:
        rel, size, kind = (
            str(p.relative_to(root.parent if root.is_file() else root)),
            p.stat().st_size,
            _kind(p),
        )
        if kind == "parquet":
            meta = _parquet(p).metadata
            out += [
                Piece(rel, kind, g, g + 1, meta.row_group(g).total_byte_size)
                for g in range(meta.num_row_groups)
            ]
        elif kind == "jsonl" and not p.name.endswith(".xz"):
            out += [Piece(rel, kind, a, b, b - a) for a, b in _line_ranges(p, size)]
        elif kind == "txt" and root.is_file():
            out += [Piece(rel, "chunks", a, b, b - a) for a, b in _line_ranges(p, size)]
        else:
            out.append(Piece(rel, kind, 0, size, size))
    return out


def _parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise PrepareError(f"{path}: not a readable Parquet file ({e})") from None


def _line_number(path: Path, offset: int) -> int:
    """1-based line number of the byte at ``offset`` (computed only to name a bad line)."""
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def _base(spec: CorpusSpec) -> Path:
    root = Path(spec.source)
    return root.parent if root.is_file() else root


def documents(spec: CorpusSpec, piece: Piece) -> Iterator[tuple[str, str]]:
    """(document id, text) of one piece; the id decides the train/validation split. A file
    that cannot be read is a PrepareError naming the file (and line or row)."""
    try:
        yield from _documents(spec, piece)
    except (lzma.LZMAError, EOFError) as e:
        where = _base(spec) / piece.path if piece.path else CORPORA_DIR / "sotu.jsonl.xz"
        raise PrepareError(f"{where}: damaged or truncated .xz file ({e})") from None


def _documents(spec: CorpusSpec, piece: Piece) -> Iterator[tuple[str, str]]:
    if piece.kind == "sotu":
        with lzma.open(CORPORA_DIR / "sotu.jsonl.xz", "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                yield doc["id"], doc["text"]
        return
    path = _base(spec) / piece.path
    if piece.kind == "txt":
        yield piece.path, path.read_text(encoding="utf-8", errors="replace")
    elif piece.kind == "chunks":
        with open(path, "rb") as f:
            f.seek(piece.start)
            text = f.read(piece.end - piece.start).decode("utf-8", errors="replace")
        start = 0
        while start < len(text):
            end = text.find("\n", start + CHUNK_CHARS)
            end = len(text) if end < 0 else end + 1
            yield f"{piece.path}@{piece.start + start}", text[start:end]
            start = end
    elif piece.kind == "jsonl":
        for number, offset, line in _jsonl_lines(path, piece):
            if not line.strip():
                continue
            where = f"{path}:{number or _line_number(path, offset)}"
            try:
                row = json.loads(line)
            except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
                raise PrepareError(f"{where}: not a JSON line ({e})") from None
            yield f"{piece.path}@{offset}", _text_of(row, spec, where)
    else:  # parquet row group
        import pyarrow as pa

        names = _parquet(path).schema_arrow.names
        if spec.text_key not in names:
            raise PrepareError(
                f"{path}: no column {spec.text_key!r} (columns: {names}); pass --text-key"
            )
        try:
            table = _parquet(path).read_row_group(piece.start, columns=[spec.text_key])
        except (pa.ArrowException, OSError) as e:
            raise PrepareError(f"{path}: row group {piece.start} unreadable ({e})") from None
        for i, text in enumerate(table.column(spec.text_key).to_pylist()):
            if text is not None and not isinstance(text, str):
                raise PrepareError(
                    f"{path}: row {i} of row group {piece.start}: {spec.text_key!r} is "
                    f"{type(text).__name__}, not text"
                )
            yield f"{piece.path}#{piece.start}:{i}", text or ""


def _jsonl_lines(path: Path, piece: Piece) -> Iterator[tuple[int | None, int, bytes]]:
    """(line number or None, byte offset, line) of the piece's lines; an .xz file is one piece
    read from its start (its line numbers are counted; elsewhere found only when needed)."""
    compressed = path.name.endswith(".xz")
    with lzma.open(path, "rb") if compressed else open(path, "rb") as f:
        if not compressed:
            f.seek(piece.start)
        offset = piece.start
        for number, line in enumerate(f, 1):
            if not compressed and offset >= piece.end:
                return
            yield (number if compressed else None), offset, line
            offset += len(line)


def _text_of(row, spec: CorpusSpec, where: str) -> str:
    if not isinstance(row, dict) or spec.text_key not in row:
        fields = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise PrepareError(
            f"{where}: a JSON line has no {spec.text_key!r} field "
            f"(fields: {fields}); pass --text-key"
        )
    text = row[spec.text_key]
    if text is not None and not isinstance(text, str):
        raise PrepareError(
            f"{where}: {spec.text_key!r} is {type(text).__name__}, not text; pass --text-key"
        )
    return text or ""


def is_validation(doc_id: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "little")
    return (h % 1_000_000) < val_fraction * 1_000_000


# ---- keys ---------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def remembered_sha256(paths: list[Path], memo: Path | None) -> list[str]:
    """sha256 of each file, reusing the hash recorded in ``memo`` (a JSON file) for a file
    whose path, size, modification time and inode are unchanged: a run start does not re-read
    a large corpus, and a copied or touched file is hashed again (its content decides)."""
    known = (read_json(memo) or {}) if memo else {}
    out, changed = [], False
    for path in paths:
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = known.get(str(path))
        if entry and entry[:3] == stamp:
            out.append(entry[3])
            continue
        out.append(file_sha256(path))
        known[str(path)] = [*stamp, out[-1]]
        changed = True
    if memo and changed:
        atomic_write_json(memo, known)
    return out


def source_fingerprint(spec: CorpusSpec, memo: Path | None = None) -> dict[str, str]:
    """sha256 of every input file (the record of exactly what was tokenized)."""
    if spec.source == "sotu":
        return {"sotu.jsonl.xz": file_sha256(CORPORA_DIR / "sotu.jsonl.xz")}
    base = _base(spec)
    names = sorted({x.path for x in pieces(spec)})
    return dict(zip(names, remembered_sha256([base / n for n in names], memo)))


def _tokenizer_fingerprint(spec: CorpusSpec) -> str:
    if spec.tokenizer in ("bpe", "bytes"):
        return spec.tokenizer
    return "file:" + file_sha256(Path(spec.tokenizer))


def corpus_key(spec: CorpusSpec, files: dict[str, str] | None = None) -> str:
    settings = asdict(spec) | {
        "format": FORMAT_VERSION,
        "files": files or source_fingerprint(spec),
        "tokenizer": _tokenizer_fingerprint(spec),
    }
    settings.pop("source")  # the content is the identity, not where it lives
    if spec.tokenizer != "bpe":
        settings.pop("bpe_sample_bytes")
    if spec.max_train_tokens is None:
        settings.pop("max_train_tokens")  # keeps the keys of uncapped corpora unchanged
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
