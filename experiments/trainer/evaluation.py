"""Measuring a model during training: the validation loss and the experts' load.

The validation sample is ``eval_tokens`` worth of windows spread evenly over the whole
validation split, so every document contributes in proportion to its length; its standard
error is computed over documents (windows of one document are correlated).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from experiments.distributed import ranks as dist_


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def validation_windows(
    val: np.ndarray, val_docs: np.ndarray, seq_len: int, eval_tokens: int
) -> tuple[torch.Tensor, np.ndarray]:
    """(windows of seq_len + 1 tokens, the document each starts in), spread evenly over the
    whole validation split."""
    room = len(val) - seq_len - 1
    if room < 0:
        raise ValueError(
            f"model.seq_len={seq_len} is longer than the validation split ({len(val)} tokens)"
        )
    n = max(1, min(eval_tokens // seq_len, room + 1))
    starts = np.unique(np.linspace(0, room, n).round().astype(np.int64))
    rows = np.stack([np.asarray(val[s : s + seq_len + 1], dtype=np.int64) for s in starts])
    docs = np.searchsorted(val_docs, starts, side="right") - 1
    return torch.from_numpy(rows), docs


def clustered_mean(values: np.ndarray, clusters: np.ndarray) -> tuple[float, float | None, int]:
    """(mean, cluster-robust standard error, number of clusters) of equally weighted values.

    Windows of one document are correlated, so the error is computed from per-document sums of
    deviations (the sandwich estimator with the G/(G-1) small-sample factor); None with fewer
    than two documents, where no error can be estimated."""
    mean = float(values.mean())
    ids, inverse = np.unique(clusters, return_inverse=True)
    g = len(ids)
    if g < 2:
        return mean, None, g
    sums = np.bincount(inverse, weights=values - mean)
    var = g / (g - 1) * float((sums**2).sum()) / len(values) ** 2
    return mean, math.sqrt(var), g


@torch.no_grad()
def evaluate(
    model,
    windows_NS1: torch.Tensor,
    docs_N: np.ndarray,
    batch: int,
    device: torch.device,
    d: dist_.Dist,
) -> tuple[float, float | None, int]:
    """(mean loss, standard error over documents, documents) on the validation windows; each
    rank evaluates every world-th window and the per-window losses are summed over ranks."""
    was_training = model.training
    model.eval()
    n = len(windows_NS1)
    losses_N = torch.zeros(n, device=device)
    # Every rank runs the same number of forwards (FSDP gathers weights in each): where n does
    # not divide evenly the last ranks repeat a window, and only first copies count.
    mine = torch.arange(d.rank, -(-n // d.world) * d.world, d.world)
    for idx in mine.split(batch):
        chunk = windows_NS1[idx % n].to(device)
        with autocast(device):
            logits = model(chunk[:, :-1]).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), chunk[:, 1:], reduction="none"
        )
        real = idx < n
        losses_N[idx[real].to(device)] = nll.mean(dim=1)[real.to(device)]
    dist_.all_reduce_(losses_N, d)
    model.train(was_training)
    return clustered_mean(losses_N.double().cpu().numpy(), docs_N)


def load_stats(aux_list, d: dist_.Dist) -> dict:
    """Per layer: the most loaded expert and the spread of loads (relative to the mean), from
    the last step's assignments summed over every rank."""
    counts = [a.tokens_per_expert_E for a in (aux_list or []) if a.tokens_per_expert_E is not None]
    if not counts:
        return {}
    total = dist_.all_reduce_(torch.stack(counts).float(), d)
    loads = (total / total.mean(dim=1, keepdim=True)).cpu()
    return {
        "expert_load_max": [round(x, 4) for x in loads.max(dim=1).values.tolist()],
        "expert_load_cv": [round(x, 4) for x in loads.std(dim=1, unbiased=False).tolist()],
    }
