"""Whether a run is healthy: a finite loss, not diverging, and learning at all (the last
checked early enough to save most of a broken run).

A language model starts near the uniform loss ln(V) and within its first few hundred steps
falls below the unigram entropy H1 of its training tokens (what predicting token frequencies
alone achieves). A run whose training loss, a quarter of the way in, has not come even halfway
from its first value towards H1 is not learning. Why a check and not trust: on the H200 one of
the 20 runs of the second study's pilot (E16, granularity 2, top-2, LR 1e-3) had a gradient
norm of 2,349 at its very first step where its twin at another LR (same weights, same batch)
had 7.5, stayed near 8 nats for the whole run and was recorded ``done`` at a validation loss of
7.70 (docs/studies/study2/PILOT.md). Failed instead, the record says why, the analysis leaves
it out, its checkpoint is set aside (its weights hold the failure) and ``retry_failed=true``
trains it again from scratch.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class TrainingFailed(RuntimeError):
    """The run cannot go on (non-finite, diverging or not falling loss); the message says why.
    ``restart``: its checkpoints hold the failure too, so a retry starts from scratch."""

    def __init__(self, why: str, restart: bool = False):
        super().__init__(why)
        self.restart = restart


CHECK_FRACTION = 0.25  # of the run's steps: past any warmup, early enough to save the rest
MIN_CHECK_STEP = 100  # shorter runs are not judged: a tiny model may still be near H1 there


def check_step(total_steps: int) -> int | None:
    """The step at which a run of ``total_steps`` is judged (None: too short to judge)."""
    step = int(total_steps * CHECK_FRACTION)
    return step if step >= MIN_CHECK_STEP else None


def unigram_entropy(tokens: np.ndarray | torch.Tensor, vocab_size: int) -> float:
    """H1 in nats: the entropy of the token frequencies of ``tokens`` (a 1-d array)."""
    if isinstance(tokens, torch.Tensor):
        counts = torch.bincount(tokens.reshape(-1), minlength=vocab_size).double().cpu().numpy()
    else:
        counts = np.bincount(np.asarray(tokens).reshape(-1), minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def loss_problem(loss: float, first: float | None, divergence_factor: float) -> str | None:
    """Why a training loss stops the run at once (None: it does not)."""
    if not math.isfinite(loss):
        return f"non-finite training loss ({loss})"
    if first is not None and loss > divergence_factor * first:
        return f"diverged: loss {loss:.3f} > {divergence_factor} x initial {first:.3f}"
    return None


def not_learning(first: float, recent: list[float], floor: float) -> str | None:
    """Why the run is not learning (None: it is, or it cannot be judged). ``first``: its first
    training loss; ``recent``: its latest ones; ``floor``: the unigram entropy."""
    if not recent or first <= floor:  # started at or below H1 (a tiny vocabulary): no ruler
        return None
    now = float(np.mean(recent))
    halfway = first - 0.5 * (first - floor)
    if now < halfway:
        return None
    return (
        f"not learning: training loss {now:.3f}, not halfway from its first {first:.3f} to the "
        f"unigram entropy {floor:.3f} of its training tokens"
    )
