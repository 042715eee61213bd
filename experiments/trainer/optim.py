"""Optimizers by name (a registry: AdamW built in) with per-group learning-rate multipliers,
and the learning-rate schedules (warmup + cosine to min_lr_ratio, WSD, constant)."""

from __future__ import annotations

import math
from collections.abc import Callable

# name -> builder(param_groups, cfg, fused) -> torch.optim.Optimizer. ``cfg`` is the run's
# OptimConfig (experiments/config.py checks optim.name against this registry, so this module
# does not import it back).
OPTIMIZERS: dict[str, Callable] = {}


def register_optimizer(name: str):
    """``@register_optimizer("muon")`` on a builder makes ``optim.name=muon`` train with it."""

    def add(builder: Callable) -> Callable:
        OPTIMIZERS[name] = builder
        return builder

    return add


@register_optimizer("adamw")
def adamw(groups: list[dict], cfg, fused: bool):
    import torch  # here, so that checking a config's optim.name needs no torch

    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)


def param_groups(model, cfg) -> list[dict]:
    """Decay matrices (and embeddings), not norm gains: decaying a gain towards 0 shrinks the
    residual stream instead of regularising. ``optim.lr_multipliers`` ({name part: factor})
    gives the parameters whose name contains a part (the first that matches) their own
    learning rate, lr x factor; the loop scales each group's ``lr_multiplier``. Without
    multipliers the groups are the two they always were (checkpoints resume unchanged)."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        mult = next((f for part, f in cfg.lr_multipliers.items() if part in name), 1.0)
        groups.setdefault((p.dim() >= 2, float(mult)), []).append(p)
    order = sorted(groups, key=lambda k: (not k[0], k[1] != 1.0, k[1]))
    return [
        {
            "params": groups[k],
            "weight_decay": cfg.weight_decay if k[0] else 0.0,
            "lr_multiplier": k[1],
        }
        for k in order
    ]


def build_optimizer(model, cfg, device, fused: bool | None = None):
    fused = device.type == "cuda" if fused is None else fused
    return OPTIMIZERS[cfg.name](param_groups(model, cfg), cfg, fused)


def warmup_steps(total_steps: int, cfg) -> int:
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    return math.ceil(cfg.warmup_fraction * total_steps)


def decay_start(total_steps: int, cfg) -> int:
    """WSD: the first step of the decay (the step a branch starts from)."""
    return total_steps - math.ceil(cfg.decay_fraction * total_steps)


def lr_at(step: int, total_steps: int, cfg) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``."""
    warmup = warmup_steps(total_steps, cfg)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup - 1)
        scale = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.lr * scale
    # WSD: warmup, stable, then decay to min_lr_ratio over the last decay_fraction.
    start = decay_start(total_steps, cfg)
    if step < start:
        return cfg.lr
    progress = (step - start + 1) / max(1, total_steps - start)
    if cfg.decay_shape == "1-sqrt":
        progress = math.sqrt(progress)
    return cfg.lr * (1 - (1 - cfg.min_lr_ratio) * progress)
