"""Whether and how a run is compiled (``train.compile``, ``train.compile_mode``), and running
its compiled regions eagerly for a while (evaluation)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from experiments.config import TrainConfig

# train.compile=auto on CUDA, measured on an H100 and an H200 (docs/gpu-performance.md):
# regional compilation costs 18-21 s a shape on a cold machine (6 s from a carried cache) and
# pays off after about a hundred steps (model=base e8k1: 311 ms a step eager, 162 ms compiled).
# Steps of under ~1e13 FLOPs are bound by kernel launches (eager: 25-38 ms a step for 4-layer
# d=64-112 models, 3.3 ms as CUDA graphs), so they are replayed as CUDA graphs; larger steps
# compile in the default mode.
COMPILE_MIN_STEPS = 150
GRAPHS_MAX_FLOPS_PER_STEP = 1e13
# torch.compile's modes that replay each step as CUDA graphs: the step must mark its start
# (torch.compiler.cudagraph_mark_step_begin), or a graph's outputs are overwritten under it
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def uses_cuda_graphs(mode: str) -> bool:
    return mode in CUDA_GRAPH_MODES


def compile_plan(tc: TrainConfig, device: torch.device) -> tuple[bool, str]:
    """(compile?, mode): the user's choices, or the measured-faster ones where they are
    ``auto``. A mode the user names is kept also when ``compile=auto`` decides to compile
    (it used to be replaced by the measured one without a word)."""
    choice, mode = tc.train.compile, tc.train.compile_mode
    if mode == "auto":
        small = tc.flops_per_token * tc.tokens_per_step < GRAPHS_MAX_FLOPS_PER_STEP
        mode = "reduce-overhead" if small and device.type == "cuda" else "default"
    if choice != "auto":
        return bool(choice), mode
    if device.type != "cuda" or tc.steps < COMPILE_MIN_STEPS:
        return False, mode
    return True, mode


_eager_lock = threading.Lock()
_eager: dict = {"users": 0, "stance": None}  # the first user's set_stance, undone by the last


@contextlib.contextmanager
def eager_stance() -> Iterator[None]:
    """Compiled code runs eagerly inside (``torch.compiler.set_stance("force_eager")``).

    The stance is one per process and ``set_stance`` restores what it saw on entry, so two
    runs evaluating at once in one process (``execute`` in threads: tests, notebooks) left it
    at force_eager for good when they exited out of order, and every later compile silently
    ran eagerly. Here the first user sets it and the last one, whichever it is, restores the
    stance from before the first."""
    with _eager_lock:
        if _eager["users"] == 0:
            _eager["stance"] = torch.compiler.set_stance("force_eager")
        _eager["users"] += 1
    try:
        yield
    finally:
        with _eager_lock:
            _eager["users"] -= 1
            if _eager["users"] == 0:
                _eager["stance"].__exit__(None, None, None)
                _eager["stance"] = None
