"""Whether and how a run is compiled (``train.compile``, ``train.compile_mode``)."""

from __future__ import annotations

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


def compile_plan(tc: TrainConfig, device: torch.device) -> tuple[bool, str]:
    """(compile?, mode): the user's choice, or the measured-faster one for ``auto``."""
    choice, mode = tc.train.compile, tc.train.compile_mode
    if choice != "auto":
        return bool(choice), mode
    if device.type != "cuda" or tc.steps < COMPILE_MIN_STEPS:
        return False, mode
    small = tc.flops_per_token * tc.tokens_per_step < GRAPHS_MAX_FLOPS_PER_STEP
    return True, "reduce-overhead" if small else "default"
