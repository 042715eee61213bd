"""Measuring a model during training: the validation loss and the experts' load.

The validation sample is ``eval_tokens`` worth of windows spread evenly over the whole
validation split, so every document contributes in proportion to its length; its standard
error is computed over documents (windows of one document are correlated).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

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


def icl_positions(seq_len: int) -> tuple[slice, slice]:
    """(early, late) positions of a window for the in-context-learning score: the first
    eighth after the very start, and the last eighth (Olsson et al. 2022 compare the 50th and
    500th tokens of 512)."""
    early = slice(max(1, seq_len // 16), max(2, seq_len // 8))
    return early, slice(seq_len - max(1, seq_len // 8), seq_len)


@dataclass
class Evaluation:
    loss: float  # mean over windows
    loss_se: float | None  # standard error over documents
    documents: int
    icl_score: float  # mean loss at late positions minus early ones: < 0 when context helps


@torch.no_grad()
def evaluate(
    model,
    windows_NS1: torch.Tensor,
    docs_N: np.ndarray,
    batch: int,
    device: torch.device,
    d: dist_.Dist,
) -> Evaluation:
    """The validation loss and in-context score on the validation windows; each rank
    evaluates every world-th window and the per-window losses are summed over ranks."""
    was_training = model.training
    model.eval()
    n = len(windows_NS1)
    losses_N = torch.zeros(n, device=device)
    by_position_S = torch.zeros(windows_NS1.shape[1] - 1, device=device)
    # Every rank runs the same number of forwards (FSDP gathers weights in each): where n does
    # not divide evenly the last ranks repeat a window, and only first copies count.
    mine = torch.arange(d.rank, -(-n // d.world) * d.world, d.world)
    for idx in mine.split(batch):
        chunk = windows_NS1[idx % n].to(device)
        with autocast(device):
            out = model(chunk[:, :-1])
        assert out.logits is not None  # no targets: the model returns logits
        logits = out.logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), chunk[:, 1:], reduction="none"
        )
        real = (idx < n).to(device)
        losses_N[idx.to(device)[real]] = nll.mean(dim=1)[real]
        by_position_S += nll[real].sum(dim=0)
    dist_.all_reduce_(losses_N, d)
    dist_.all_reduce_(by_position_S, d)
    model.train(was_training)
    mean, se, documents = clustered_mean(losses_N.double().cpu().numpy(), docs_N)
    early, late = icl_positions(len(by_position_S))
    per_position = by_position_S.double().cpu() / n
    icl = float(per_position[late].mean() - per_position[early].mean())
    return Evaluation(mean, se, documents, icl)


def load_stats(aux_list, d: dist_.Dist) -> dict:
    """Per layer: the most loaded expert and the spread of loads (relative to the mean), from
    the last step's assignments summed over every rank, and the router's entropy (nats, mean
    over ranks; log E is uniform routing)."""
    aux = [a for a in (aux_list or []) if a.tokens_per_expert_E is not None]
    if not aux:
        return {}
    total = dist_.all_reduce_(torch.stack([a.tokens_per_expert_E for a in aux]).float(), d)
    loads = (total / total.mean(dim=1, keepdim=True)).cpu()
    entropy = dist_.all_reduce_(torch.stack([a.router_entropy for a in aux]).float(), d)
    return {
        "expert_load_max": [round(x, 4) for x in loads.max(dim=1).values.tolist()],
        "expert_load_cv": [round(x, 4) for x in loads.std(dim=1, unbiased=False).tolist()],
        "router_entropy": [round(x / d.world, 4) for x in entropy.tolist()],
    }
