"""Where a run ran: the git commit and whether the checkout was dirty, the package versions its
result can depend on, and the accelerator (every run's summary.json records them)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


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
