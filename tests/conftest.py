import os

import pytest

# Each xdist worker trains on one thread (its subprocesses too: they inherit the variable); the
# workers fill the cores. Set before any test imports torch, which reads it once.
MAX_WORKERS = 8  # each worker holds torch (~0.5 GB) and may start torchrun's 3 processes
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_xdist_auto_num_workers(config):
    if _has_gpu():  # GPU tests share the device and time it: one at a time
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
