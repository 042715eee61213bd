"""Where a run ran: the git commit and whether the checkout was dirty, the package versions its
result can depend on, and the accelerator (every run's summary.json records them)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The packages whose code decides a run's result. Their hash names the code that ran also where
# git cannot: the GPU machine runs a copy of the working tree over an older checkout, so its
# git_sha is that checkout's and git_dirty is true (the second study's runs of 2026-12-02).
SOURCE_PACKAGES = ("models", "experiments", "analysis")


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty() -> bool | None:
    """Whether the checkout had uncommitted changes (None: not a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def source_sha256_of(files: dict[str, bytes]) -> str:
    """sha256 over (path, length, content) of the packages' .py files, in path order."""
    h = hashlib.sha256()
    for path in sorted(files):
        data = files[path]
        h.update(f"{path}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@functools.cache
def source_sha256() -> str:
    """The hash of the code this process runs (source_sha256_of its packages' .py files)."""
    files = {
        str(f.relative_to(REPO_ROOT)): f.read_bytes()
        for pkg in SOURCE_PACKAGES
        for f in (REPO_ROOT / pkg).rglob("*.py")
    }
    return source_sha256_of(files)


def source_sha256_at(rev: str) -> str:
    """The same hash of a commit's tree: ``python -m experiments.provenance REV`` finds which
    commit a run's code was."""

    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, check=True
        ).stdout

    listed = git("ls-tree", "-r", "--name-only", rev, *SOURCE_PACKAGES).decode().split()
    paths = [p for p in listed if p.endswith(".py")]
    return source_sha256_of({p: git("show", f"{rev}:{p}") for p in paths})


PACKAGES = ("torch", "numpy", "hydra-core", "omegaconf", "tokenizers", "triton", "megablocks")


def versions() -> dict:
    """Python and the packages a run's result can depend on (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    v = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):  # megablocks, triton: not on CPU hosts
            v[pkg] = version(pkg)
    return v


def hardware() -> dict:
    """The accelerator a run used: GPU model and count, CUDA and NCCL versions ({} on CPU)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    nccl = None
    with contextlib.suppress(Exception):  # not every build has NCCL
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    return {
        "gpu": torch.cuda.get_device_name(0),
        "gpu_count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
        "nccl": nccl,
    }


if __name__ == "__main__":
    # python -m experiments.provenance [REV ...]: the source hash here, or of each commit
    for rev in sys.argv[1:] or ["(working tree)"]:
        print(rev, source_sha256() if rev == "(working tree)" else source_sha256_at(rev))
