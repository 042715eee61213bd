"""Device selection and peak FLOP rates.

With CUDA, each run takes a free GPU *slot* for as long as it runs and gives it back when it
ends: ``run.gpu_slots`` runs may share one GPU (a sweep packing small runs sets it), and the
slots of every GPU are tried before any GPU gets a second run. Slots are lock files, so
concurrent processes of a sweep (joblib's workers) never over-pack a GPU, and a crashed run's
slot is freed by the kernel with its file descriptors.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

DATASHEET_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
WAIT_MESSAGE_EVERY_S = 60


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist here; the message says why."""


def lock_dir() -> Path:
    return Path(os.environ.get("MOE_GPU_LOCK_DIR", tempfile.gettempdir()))


def _try_slot(gpu: int, slot: int):
    f = open(lock_dir() / f"moe-scaling-gpu{gpu}.slot{slot}.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


@contextlib.contextmanager
def gpu_slot(
    spec: str, slots: int = 1, forced: torch.device | None = None
) -> Iterator[torch.device]:
    """The device for one run, held until the block ends. ``forced``: the device a launcher
    assigned (torchrun's local rank), used as is."""
    if forced is not None:
        yield forced
        return
    if spec != "auto":
        device = torch.device(spec)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable(f"run.device={spec} but CUDA is not available here")
        yield device
        return
    if not torch.cuda.is_available():
        yield torch.device("cpu")
        return
    n = torch.cuda.device_count()
    waited = 0.0
    while True:
        for slot in range(slots):  # spread over GPUs before packing any
            for gpu in range(n):
                held = _try_slot(gpu, slot)
                if held is None:
                    continue
                try:
                    yield torch.device(f"cuda:{gpu}")
                finally:
                    fcntl.flock(held, fcntl.LOCK_UN)
                    held.close()
                return
        if waited % WAIT_MESSAGE_EVERY_S == 0:
            print(
                f"all {n} GPU(s) x {slots} slot(s) are taken; waiting for one "
                f"(locks in {lock_dir()})",
                flush=True,
            )
        time.sleep(1.0)
        waited += 1.0


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in DATASHEET_BF16_PEAK.items() if k in name), None)
