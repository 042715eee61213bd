import os

import pytest

# Each xdist worker trains on one thread (its subprocesses too: they inherit the variable); the
# workers fill the cores. Set before any test imports torch, which reads it once.
MAX_WORKERS = 8  # each worker holds torch (~0.5 GB) and may start torchrun's 3 processes
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_xdist_auto_num_workers(config):
    try:
        import torch

        if torch.cuda.is_available():  # GPU tests share the device and time it: one at a time
            return 1
    except ImportError:
        pass
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
