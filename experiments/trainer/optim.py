"""AdamW and the learning-rate schedules (warmup + cosine to min_lr_ratio, WSD, constant)."""

from __future__ import annotations

import math

import torch

from experiments.config import OptimConfig


def build_optimizer(
    model: torch.nn.Module, cfg: OptimConfig, device: torch.device, fused: bool | None = None
):
    # Decay matrices (and embeddings), not norm gains: decaying a gain towards 0 shrinks the
    # residual stream instead of regularising.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type == "cuda" if fused is None else fused
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``."""
    warmup = math.ceil(cfg.warmup_fraction * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup - 1)
        scale = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.lr * scale
    # WSD: warmup, stable, then linear decay to min_lr_ratio over the last decay_fraction.
    decay_start = total_steps - math.ceil(cfg.decay_fraction * total_steps)
    if step < decay_start:
        return cfg.lr
    progress = (step - decay_start + 1) / max(1, total_steps - decay_start)
    return cfg.lr * (1 - (1 - cfg.min_lr_ratio) * progress)
