"""A run's record names the code that ran: git where git knows, and a hash of the source
where it does not (the GPU machine runs a copy of the working tree over an older checkout)."""

import subprocess

import pytest

from experiments import provenance


def test_the_source_hash_changes_with_any_byte_or_path_and_not_with_order():
    files = {"models/a.py": b"x = 1\n", "experiments/b.py": b"y = 2\n"}
    h = provenance.source_sha256_of(files)
    assert h == provenance.source_sha256_of(dict(reversed(list(files.items()))))
    assert h != provenance.source_sha256_of(files | {"models/a.py": b"x = 2\n"})
    assert h != provenance.source_sha256_of(
        {"models/c.py": b"x = 1\n", "experiments/b.py": b"y = 2\n"}
    )
    # a byte moved across the boundary of two files is another tree
    assert provenance.source_sha256_of({"a": b"12", "b": b"3"}) != provenance.source_sha256_of(
        {"a": b"1", "b": b"23"}
    )


def test_a_clean_checkout_hashes_as_its_commit():
    """What a run records (its working tree's hash) is what `python -m experiments.provenance
    REV` gives for the commit it ran: the way to find a device run's commit."""
    changed = subprocess.run(
        [
            "git",
            "-C",
            str(provenance.REPO_ROOT),
            "status",
            "--porcelain",
            "--",
            *provenance.SOURCE_PACKAGES,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if changed.returncode != 0:
        pytest.skip("not a git checkout")
    if changed.stdout.strip():
        pytest.skip("the packages have uncommitted changes here")
    assert provenance.source_sha256() == provenance.source_sha256_at("HEAD")
