"""Expert backends: one interface, several implementations, chosen by ``moe.backend``.

A backend is a function ``(x_TD, experts_TK, weights_TK, tokens_per_expert_E, ExpertWeights)
-> y_TD`` that computes the weighted sum of each token's chosen experts without dropping any
token. The registry maps names to ``module:function``; heavy backends are imported only when a
layer that uses them is built, so the package imports (and the CPU tests run) without them.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

import torch

from models.backends.common import ExpertWeights

__all__ = ["BackendUnavailable", "ExpertWeights", "get_backend", "resolve_backend"]

REGISTRY = {
    "torch": "models.backends.torch_backend:torch_experts",
    "native": "models.backends.native:native_experts",
    "megablocks": "models.backends.megablocks_backend:megablocks_experts",
}
CUDA_ONLY = ("native", "megablocks")


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here; the message says how to fix it."""


def megablocks_installed() -> bool:
    return importlib.util.find_spec("megablocks") is not None


def resolve_backend(name: str, device: torch.device | str | None = None) -> str:
    """Turn ``auto`` into a concrete backend and check the choice can run on ``device``
    (default: CUDA when available, else CPU).

    ``auto`` picks ``native`` on CUDA (fastest in experiments/benchmarks/moe_layer.py, see
    docs/gpu-performance.md) and ``torch`` elsewhere.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if name == "auto":
        return "native" if device.type == "cuda" and hasattr(torch, "_grouped_mm") else "torch"
    if name not in REGISTRY:
        raise BackendUnavailable(f"unknown moe.backend {name!r}; choose one of {sorted(REGISTRY)}")
    if name in CUDA_ONLY and device.type != "cuda":
        raise BackendUnavailable(
            f"moe.backend={name} needs a CUDA GPU, but the device is {device}; "
            "use moe.backend=torch (or auto) on CPU"
        )
    if name == "megablocks" and not megablocks_installed():
        raise BackendUnavailable(
            "moe.backend=megablocks needs the megablocks package: "
            'pip install -e ".[megablocks]" (on CUDA 13 use the patched wheels, README "GPU")'
        )
    return name


def get_backend(name: str) -> Callable:
    """The expert function registered under a concrete backend name."""
    if name not in REGISTRY:
        raise BackendUnavailable(f"unknown moe.backend {name!r}; choose one of {sorted(REGISTRY)}")
    module, fn = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), fn)
