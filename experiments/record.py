"""The run directory contract: its files, the run summary, the loop state.

One directory per run id:
- ``run.json``: which run the directory belongs to (a directory of another config is refused);
- ``.lock``: held by the one process running it (flock; released by the kernel on a crash);
- ``config.yaml``: the validated config that ran (``experiments.config.as_dict``);
- ``metrics.jsonl``: one row per logged step (written by the ``metrics`` callback);
- ``progress.json``: the latest step, while training;
- ``summary.json``: one row of the runs table (RunSummary), written also on failure;
- ``checkpoint.pt`` while unfinished; ``weights.pt`` if ``run.keep_final=weights``.
Every file that must never be half-written goes through experiments/files.py (a temporary file,
renamed). Analysis reads file names from here (no torch is imported by this module).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO

import yaml

from experiments.files import (
    LocksUnsupported,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    try_flock,
)
from experiments.provenance import git_dirty, git_sha, source_sha256, versions

CONFIG, METRICS, SUMMARY, PROGRESS = "config.yaml", "metrics.jsonl", "summary.json", "progress.json"
CHECKPOINT, WEIGHTS, IDENTITY, LOCK = "checkpoint.pt", "weights.pt", "run.json", ".lock"
STATUSES = ("done", "failed", "interrupted")


def run_id(identity: dict) -> str:
    """Stable id of a run: hash of its resolved config minus logistics."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class TimeBreakdown:
    """Where a run's wall time went (seconds, summed over resumes)."""

    train_s: float = 0.0  # optimiser steps, after warm-up
    warmup_s: float = 0.0  # the first steps: compilation, autotuning, allocator growth
    eval_s: float = 0.0  # validation
    checkpoint_s: float = 0.0  # time the training loop waited on checkpoints
    data_s: float = 0.0  # loading data and building batches on the host
    setup_s: float = 0.0  # building the model, optimiser and data


@dataclass
class LoopState:
    """The training loop's own state, saved in every checkpoint."""

    step: int = 0
    start_step: int = 0  # where this run began: 0, or its trunk's step for a branch
    first_loss: float | None = None
    wall_time_s: float = 0.0
    recent: list = field(default_factory=list)  # last training losses, for final_train_loss
    val_loss: float | None = None
    val_loss_se: float | None = None
    icl_score: float | None = None
    time: TimeBreakdown = field(default_factory=TimeBreakdown)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, d: dict) -> None:
        for f in fields(self):
            if f.name in d:
                value = d[f.name]
                setattr(self, f.name, TimeBreakdown(**value) if f.name == "time" else value)


# The config's columns in the runs table: every identity field of model, moe, optim, train,
# data and budget under its own name, derived from the config (never re-declared here), so a
# new option is a new column by itself. These few take another name, or none.
COLUMN_NAMES = {
    "budget.flops": "budget_flops",
    "data.source": "data",
    "data.vocab_size": None,  # the same as model.vocab_size
    "optim.name": "optimizer",
}


def config_columns(tc) -> dict:
    """The runs-table columns a config determines (see COLUMN_NAMES)."""
    cols: dict = {}
    sections = (
        ("model", tc.model),
        ("moe", tc.model.moe),
        ("optim", tc.optim),
        ("train", tc.train),
        ("data", tc.data),
        ("budget", tc.budget),
    )
    for section, obj in sections:
        for f in fields(obj):
            value = getattr(obj, f.name)
            if not f.metadata.get("identity", True) or hasattr(value, "__dataclass_fields__"):
                continue
            name = COLUMN_NAMES.get(f"{section}.{f.name}", f.name)
            if name is None:
                continue
            if f.name == "betas":
                cols["beta1"], cols["beta2"] = value
            elif isinstance(value, dict):  # one cell: the table stays flat
                cols[name] = json.dumps(value, sort_keys=True)
            else:
                cols[name] = value
    return cols | {"seed": tc.seed, "sweep": tc.sweep_name, "variant": tc.variant}


@dataclass
class RunSummary:
    """summary.json: one row of the runs table. The config's columns (``config``, flattened
    into the row by ``to_dict``) and the accounting are known before the run starts, so a
    run that fails in setup still has them; the rest are filled at the end."""

    run_id: str
    status: str | None = None  # done | failed | interrupted
    reason: str | None = None
    failure_kind: str | None = None  # setup (retried automatically) | training
    config: dict = field(default_factory=dict)  # config_columns(tc)
    flops: float = 0
    tokens: int = 0
    steps: int = 0
    planned_steps: int = 0
    trained_flops: float = 0  # the FLOPs this run computed itself (a branch: from its trunk step)
    branch_of: str | None = None  # the trunk run a branch started from
    trunk_step: int | None = None  # the trunk's step it started from
    epochs: float | None = None  # tokens trained / unique training tokens
    unique_train_tokens: int | None = None
    sparsity: float = 0.0
    params_total: int = 0
    params_active: int = 0
    params_embedding: int = 0
    params_active_non_embedding: int = 0
    flops_per_token: int = 0
    kv_cache_bytes_per_token: int = 0  # inference: bf16 KV cache per token, all layers
    flops_convention: str = ""
    final_train_loss: float | None = None
    val_loss: float | None = None
    val_loss_se: float | None = None  # standard error over validation documents
    icl_score: float | None = (
        None  # validation loss late minus early in windows (< 0: context helps)
    )
    val_tokens: int | None = None
    val_documents: int | None = None
    backend: str = ""  # the expert backend that ran (moe.backend=auto resolved)
    device: str | None = None
    world_size: int = 1
    compile: bool | None = None
    wall_time_s: float = 0.0
    tokens_per_s: float | None = None
    mfu: float | None = None  # active-FLOP rate / (devices x peak bf16 FLOP/s)
    peak_memory_gb: float | None = None  # CUDA: the allocator's peak on this rank
    # CUDA: the most the allocator held from the GPU (its cache included): what packing needs
    peak_reserved_gb: float | None = None
    time: dict = field(default_factory=dict)  # TimeBreakdown
    data_key: str | None = None
    git_sha: str | None = None
    git_dirty: bool | None = None  # uncommitted changes in the checkout that ran
    source_sha256: str | None = None  # the code that ran (experiments/provenance.py)
    versions: dict = field(default_factory=dict)
    hardware: dict = field(default_factory=dict)  # GPU model and count, CUDA, NCCL

    @classmethod
    def planned(cls, tc, rid: str) -> RunSummary:
        """The fields a config determines (accounting included), before anything runs."""
        from models.accounting import account

        acc = account(tc.model)
        return cls(
            run_id=rid,
            config=config_columns(tc),
            planned_steps=tc.steps,
            sparsity=acc.sparsity,
            params_total=acc.params_total,
            params_active=acc.params_active,
            params_embedding=acc.params_embedding,
            params_active_non_embedding=acc.params_active_non_embedding,
            flops_per_token=acc.flops_per_token,
            kv_cache_bytes_per_token=acc.kv_cache_bytes_per_token,
            flops_convention=acc.flops_convention,
            backend=tc.model.moe.backend,
            git_sha=git_sha(),
            git_dirty=git_dirty(),
            source_sha256=source_sha256(),
            versions=versions(),
        )

    def to_dict(self) -> dict:
        row = asdict(self)
        return {"run_id": row.pop("run_id")} | row.pop("config") | row


class RunBusy(RuntimeError):
    """Another process holds the run directory."""


class ForeignRunDir(RuntimeError):
    """The run directory belongs to another run id."""


def read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    """(rows, numbers of unreadable lines). A torn or corrupt line is reported, never used to
    drop the rows after it."""
    rows: list[dict] = []
    bad: list[int] = []
    if not path.exists():
        return rows, bad
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError
        except ValueError:
            bad.append(i)
            continue
        rows.append(row)
    return rows, bad


def is_locked(run_dir: Path) -> bool:
    """Whether some process holds the run's lock (a crashed holder's lock is released by the
    kernel with its file descriptors, so a stale lock cannot block anything)."""
    path = Path(run_dir) / LOCK
    try:  # read-only: a reader of a shared sweep directory may not write its lock files
        f = open(path)  # noqa: SIM115
    except FileNotFoundError:
        return False
    except PermissionError:
        return False  # cannot tell: the run's own files say what state it is in
    with f:
        try:
            taken = try_flock(f, exclusive=False)
        except LocksUnsupported:
            return False
        if taken:
            fcntl.flock(f, fcntl.LOCK_UN)
        return not taken


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = self.path / CONFIG
        self.metrics = self.path / METRICS
        self.summary = self.path / SUMMARY
        self.checkpoint = self.path / CHECKPOINT
        self.weights = self.path / WEIGHTS
        self.progress = self.path / PROGRESS
        self.identity = self.path / IDENTITY
        self._lock: IO | None = None

    def branch_point(self, step: int) -> Path:
        """The training state kept at ``step`` for a run branched from this one."""
        return self.path / f"branch-point-{step}.pt"

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise PermissionError(f"run.dir: cannot write to {self.path}: {e.strerror}") from None

    # -- ownership --
    def owner(self) -> str | None:
        """The run id this directory belongs to (run.json, else an older summary's)."""
        for path in (self.identity, self.summary):
            owner = (read_json(path) or {}).get("run_id")
            if isinstance(owner, str):
                return owner
        return None

    def has_records(self) -> bool:
        return any(p.exists() for p in (self.checkpoint, self.metrics, self.summary))

    def claim(self, rid: str, overwrite: bool, named_by_id: bool) -> None:
        """Make this directory run ``rid``'s, refusing (or with ``overwrite`` discarding)
        another run's records. ``named_by_id``: the directory is <root>/<rid>, so records
        without an owner (written before run.json existed) are this run's."""
        owner = self.owner()
        foreign = owner != rid if owner else (self.has_records() and not named_by_id)
        if foreign and not overwrite:
            raise ForeignRunDir(
                f"{self.path} holds run {owner or '(unknown)'}, not this config's run {rid}; "
                "use another run.dir, or pass run.overwrite=true to discard it"
            )
        if foreign:
            for p in (self.checkpoint, self.metrics, self.summary, self.progress, self.weights):
                p.unlink(missing_ok=True)
        if owner != rid:
            atomic_write_json(self.identity, {"run_id": rid, "created": time.time()})

    # -- the lock --
    def lock(self) -> None:
        """Hold the directory for this process's run; RunBusy if another process holds it."""
        f = open(self.path / LOCK, "a+")  # noqa: SIM115 (held until release())
        try:
            taken = try_flock(f)
        except LocksUnsupported:
            f.close()
            raise
        if not taken:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunBusy(f"{self.path} is being trained by {holder}")
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        self._lock = f

    def clear_torn_writes(self) -> list[str]:
        """Delete the temporaries of atomic writes that never completed (``.<name>.*.tmp``:
        a process killed while writing, e.g. a checkpoint of hundreds of MB). Only the
        holder of the lock writes here, so any such file is an earlier process's leftover."""
        assert self._lock is not None, "only the lock's holder may clear the directory"
        torn = sorted(p for p in self.path.glob(".*.tmp") if p.is_file())
        for p in torn:
            p.unlink(missing_ok=True)
        return [p.name for p in torn]

    def release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- records --
    def read_summary(self) -> dict | None:
        return read_json(self.summary)

    def write_config(self, resolved: dict) -> None:
        atomic_write_bytes(self.config, yaml.safe_dump(resolved, sort_keys=False).encode())

    def write_summary(self, summary: RunSummary | dict) -> None:
        data = summary.to_dict() if isinstance(summary, RunSummary) else summary
        atomic_write_json(self.summary, data)

    def write_progress(self, progress: dict) -> None:
        atomic_write_json(self.progress, progress | {"time": time.time()})

    def append_metrics(self, rows: list[dict]) -> None:
        with open(self.metrics, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
            f.flush()

    def truncate_metrics(self, last_step: int) -> list[int]:
        """Keep the readable rows up to ``last_step`` (the checkpoint we resume from), so a
        resumed run's metrics.jsonl continues exactly like an uninterrupted one. Returns the
        unreadable lines it dropped (a torn last line after a kill, or damage)."""
        rows, bad = read_jsonl(self.metrics)
        kept = [r for r in rows if r.get("step", 0) <= last_step]
        atomic_write_bytes(self.metrics, "".join(json.dumps(r) + "\n" for r in kept).encode())
        return bad
