"""The run directory contract (ARCHITECTURE.md): config.yaml, metrics.jsonl, summary.json,
checkpoint.pt. Every file that must never be half-written is written to a temp file and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_id(identity: dict) -> str:
    """Stable id of a run: hash of its resolved config minus output paths and logistics."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=str) + "\n").encode())


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import numpy
    import torch

    v = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        from importlib.metadata import version

        v["megablocks"] = version("megablocks")
    except Exception:  # not installed: the normal case on CPU
        pass
    return v


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoint = self.path / "checkpoint.pt"
        self.progress = self.path / "progress.json"

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise PermissionError(f"run.dir: cannot write to {self.path}: {e.strerror}") from None

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None

    def write_config(self, resolved: dict) -> None:
        atomic_write_bytes(self.config, yaml.safe_dump(resolved, sort_keys=False).encode())

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary, summary)

    def write_progress(self, progress: dict) -> None:
        atomic_write_json(self.progress, progress | {"time": time.time()})

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only complete rows up to ``last_step`` (the checkpoint we resume from), so a
        resumed run's metrics.jsonl continues exactly like an uninterrupted one."""
        if not self.metrics.exists():
            return
        kept = []
        for line in self.metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                break  # a torn last line from a kill
            if row.get("step", 0) > last_step:
                break
            kept.append(line + "\n")
        atomic_write_bytes(self.metrics, "".join(kept).encode())
