"""Expert backends: one interface, several implementations, chosen by ``moe.backend``.

A backend is a function ``(x_TD, experts_TK, weights_TK, ExpertWeights) -> y_TD`` that computes
the weighted sum of each token's chosen experts without dropping any token. Heavy backends are
imported lazily so the package imports (and the CPU tests run) without them.
"""

from __future__ import annotations

import importlib.util

import torch

from models.backends.common import ExpertWeights
from models.backends.torch_backend import torch_experts

__all__ = ["ExpertWeights", "get_backend", "resolve_backend", "BackendUnavailable"]


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here; the message says how to fix it."""


def megablocks_installed() -> bool:
    return importlib.util.find_spec("megablocks") is not None


def resolve_backend(name: str, device: torch.device | str) -> str:
    """Turn ``auto`` into a concrete backend and check the choice can run on ``device``.

    ``auto`` picks ``native`` on CUDA (fastest in benchmarks/bench_moe_layer.py, see README) and
    ``torch`` elsewhere (and on CUDA builds of torch without ``torch._grouped_mm``).
    """
    device = torch.device(device)
    if name == "auto":
        return "native" if device.type == "cuda" and hasattr(torch, "_grouped_mm") else "torch"
    if name == "torch":
        return name
    if name in ("native", "megablocks") and device.type != "cuda":
        raise BackendUnavailable(
            f"moe.backend={name} needs a CUDA GPU, but the device is {device}; "
            "use moe.backend=torch (or auto) on CPU"
        )
    if name == "megablocks" and not megablocks_installed():
        raise BackendUnavailable(
            "moe.backend=megablocks needs the megablocks package: "
            'pip install -e ".[megablocks]" (on CUDA 13 use the patched wheels, README "GPU")'
        )
    if name not in ("native", "megablocks"):
        raise BackendUnavailable(f"unknown moe.backend {name!r}")
    return name


def get_backend(name: str):
    if name == "torch":
        return torch_experts
    if name == "native":
        from models.backends.native import native_experts

        return native_experts
    if name == "megablocks":
        from models.backends.megablocks_backend import megablocks_experts

        return megablocks_experts
    raise BackendUnavailable(f"unknown moe.backend {name!r}")
