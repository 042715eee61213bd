"""Device selection. With several GPUs on a host (joblib launcher, n_jobs = GPUs), each run
takes the first GPU whose lock file it can hold, so concurrent runs never share a GPU."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

import torch

_held_locks = []  # keep lock files open for the life of the process

DATASHEET_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def select_device(spec: str) -> torch.device:
    if spec != "auto":
        device = torch.device(spec)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"run.device={spec} but CUDA is not available here")
        return device
    if not torch.cuda.is_available():
        return torch.device("cpu")
    n = torch.cuda.device_count()
    if n == 1:
        return torch.device("cuda:0")
    lock_dir = Path(os.environ.get("MOE_GPU_LOCK_DIR", tempfile.gettempdir()))
    while True:
        for i in range(n):
            f = open(lock_dir / f"moe-scaling-gpu{i}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            _held_locks.append(f)
            return torch.device(f"cuda:{i}")
        time.sleep(5)


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in DATASHEET_BF16_PEAK.items() if k in name), None)
