"""Mean cross-entropy of a step's logits with its backward written out (the whole head's loss).

Shapes: T tokens, V vocabulary. The loss is in float32 from bf16 logits (float64 stays float64),
as ``F.cross_entropy`` on the logits cast to float32 gives. What differs is what the backward
reads. Through ``F.cross_entropy``, torch.compile kept the bf16 logits for the backward and
recomputed the softmax there: a reduction kernel over the (T x V) logits (on the H200, 32,768 x
8,192: 537 MB, 318 us) where a pointwise pass suffices. Here the forward keeps each token's
log-sum-exp (T floats), and the gradient, (softmax - one-hot) / T, is one pointwise pass that
reads the logits once and writes their gradient (docs/gpu-performance.md, twelfth session).
"""

from __future__ import annotations

import torch


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_TV, targets_T):  # type: ignore[override]
        acc = torch.promote_types(logits_TV.dtype, torch.float32)
        x_TV = logits_TV.to(acc)
        lse_T = torch.logsumexp(x_TV, dim=-1)
        target_logit_T = x_TV.gather(1, targets_T[:, None]).squeeze(1)
        ctx.save_for_backward(logits_TV, targets_T, lse_T)
        return (lse_T - target_logit_T).mean()

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        logits_TV, targets_T, lse_T = ctx.saved_tensors
        T, V = logits_TV.shape
        acc = lse_T.dtype
        one_hot_TV = torch.arange(V, device=logits_TV.device)[None, :] == targets_T[:, None]
        p_TV = torch.exp(logits_TV.to(acc) - lse_T[:, None])
        grad_TV = (p_TV - one_hot_TV.to(acc)) * (grad_loss / T)
        return grad_TV.to(logits_TV.dtype), None


def cross_entropy(logits_TV: torch.Tensor, targets_T: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats a token) of ``logits_TV`` against ``targets_T``, in float32 or
    wider; the same value and gradient as ``F.cross_entropy(logits_TV.float(), targets_T)``."""
    return _CrossEntropy.apply(logits_TV, targets_T)
