"""A GPU-scale corpus with no network but Debian's mirror: the Linux kernel's source code.

    python -m experiments.corpora.debian_kernel --out corpora/linux-6.12    # documents (JSONL)
    python -m experiments.prepare corpora/linux-6.12 --out corpora/tokenized \\
        --vocab-size 8192 --val-fraction 0.005 --xz                           # tokens

Step one downloads ``linux-source-6.12`` with ``apt-get download`` (or takes the .deb given
with ``--deb``), extracts it with ``dpkg-deb``, and streams the source tarball (never
unpacked to disk) into JSON-lines shards of ``{"path", "text"}`` documents: one per source
file of the kinds below, skipping files over 300 kB and generated headers (over 200 lines,
more than half ``#define``). ``recipe.json`` records the package version, the .deb's sha256,
every shard's sha256, what was kept and skipped; the prepare step records the sha256 of what
it tokenized. The Debian security archive replaces this package with newer builds: the
version and hashes say exactly which one a study used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from experiments.data.corpus import file_sha256

PACKAGE = "linux-source-6.12"
KEEP_SUFFIXES = (".c", ".h", ".S", ".rs", ".py", ".sh")
KEEP_NAMES = ("Kconfig", "Makefile")
MAX_BYTES = 300_000
SHARD_BYTES = 64 << 20


def generated_header(text: str) -> bool:
    lines = text.splitlines()
    defines = sum(line.lstrip().startswith("#define") for line in lines)
    return len(lines) > 200 and defines > len(lines) / 2


def wanted(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith(KEEP_SUFFIXES) or base.startswith(KEEP_NAMES)


def download(workdir: Path) -> Path:
    subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, check=True)
    return next(workdir.glob(f"{PACKAGE}_*.deb"))


def documents(deb: Path, workdir: Path):
    """(path inside the tree, text) of every kept file; counts of what was skipped."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "pkg")], check=True)
    tarball = next((workdir / "pkg" / "usr" / "src").glob("linux-source-*.tar.xz"))
    skipped = {"kind": 0, "size": 0, "generated": 0, "binary": 0}
    with tarfile.open(tarball, mode="r|xz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            if not wanted(member.name):
                skipped["kind"] += 1
                continue
            if member.size > MAX_BYTES:
                skipped["size"] += 1
                continue
            raw = tar.extractfile(member).read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                skipped["binary"] += 1
                continue
            if member.name.endswith(".h") and generated_header(text):
                skipped["generated"] += 1
                continue
            yield member.name.split("/", 1)[-1], text
    yield None, skipped


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the JSONL shards and recipe.json")
    ap.add_argument("--deb", help="a downloaded linux-source-6.12 .deb (default: apt-get it)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        deb = Path(a.deb).resolve() if a.deb else download(work)
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        deb_sha256 = file_sha256(deb)  # now: a downloaded .deb goes with the temporary folder
        shard, size, n_docs, n_bytes, files = None, 0, 0, 0, {}
        for path, text in documents(deb, work):
            if path is None:
                skipped = text
                break
            if shard is None or size > SHARD_BYTES:
                if shard:
                    shard.close()
                name = f"kernel-{len(files):03d}.jsonl"
                shard, size = open(out / name, "w"), 0  # noqa: SIM115 (closed on rollover)
                files[name] = None
            line = json.dumps({"path": path, "text": text}) + "\n"
            shard.write(line)
            size += len(line)
            n_docs, n_bytes = n_docs + 1, n_bytes + len(text.encode())
        shard.close()
    files = {name: file_sha256(out / name) for name in files}
    recipe = {
        "package": PACKAGE,
        "version": version,
        "deb_sha256": deb_sha256,
        "kept": {
            "suffixes": KEEP_SUFFIXES,
            "names": KEEP_NAMES,
            "max_bytes": MAX_BYTES,
            "generated_headers": "dropped (>200 lines, >50% #define)",
        },
        "documents": n_docs,
        "text_bytes": n_bytes,
        "skipped_files": skipped,
        "shards_sha256": files,
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1))
    print(
        f"{n_docs:,} documents, {n_bytes / 1e6:.0f} MB of text from {PACKAGE} {version} "
        f"in {len(files)} shards: {out}"
    )


if __name__ == "__main__":
    main()
