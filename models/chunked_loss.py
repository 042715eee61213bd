"""Unembedding and cross-entropy over chunks of tokens, the (tokens x vocab) logits never held
whole (``model.loss_chunk_tokens``).

The whole head writes a step's logits (T x V: 537 MB in bf16 at 32,768 tokens and a vocabulary of
8,192), reads them back for the loss, writes their gradient and reads it twice more for the two
gradient GEMMs, and keeps the logits for the backward. Here each chunk of C tokens makes its
logits, its share of the loss and its gradient in one pass, and at once its tokens' input
gradient and its share of the weight gradient (as Liger-Kernel's fused linear cross-entropy
does, in PyTorch ops): a chunk's logits are C x V (small enough to stay in the GPU's L2 cache
when C x V x 4 bytes is a few tens of MB), and what the backward keeps is the two gradients
(T x D and V x D), not the logits. The backward only scales them by the loss's gradient, so the
head must be the last thing the loss depends on (it is: models/transformer.py).

Shapes: T tokens, D width, V vocabulary, C tokens a chunk. The loss is the mean over tokens in
float32 (float64 stays float64), as ``F.cross_entropy`` on float logits gives; matmuls run in
the autocast dtype where autocast is on, as the whole head's ``F.linear`` does.
"""

from __future__ import annotations

import torch


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_TD, w_VD, targets_T, chunk: int):  # type: ignore[override]
        T = x_TD.shape[0]
        mm = _matmul_dtype(x_TD)
        acc = torch.promote_types(x_TD.dtype, torch.float32)  # float64 stays float64
        # Autocast is off in here: each cast is explicit, and the gradients are not autograd's.
        with torch.autocast(x_TD.device.type, enabled=False):
            x_mm, w_mm = x_TD.to(mm), w_VD.to(mm)
            loss = torch.zeros((), dtype=acc, device=x_TD.device)
            grad_x_TD = torch.empty_like(x_TD)
            grad_w_VD = torch.zeros(w_VD.shape, dtype=acc, device=w_VD.device)
            for start in range(0, T, chunk):
                x_CD, t_C = x_mm[start : start + chunk], targets_T[start : start + chunk]
                logits_CV = (x_CD @ w_mm.t()).to(acc)
                lse_C = torch.logsumexp(logits_CV, dim=-1)
                loss += (lse_C - logits_CV.gather(1, t_C[:, None]).squeeze(1)).sum()
                # d(mean loss)/d logits = (softmax - one-hot) / T, made in place
                g_CV = logits_CV.sub_(lse_C[:, None]).exp_()
                g_CV[torch.arange(len(t_C), device=t_C.device), t_C] -= 1
                g_CV = g_CV.div_(T).to(mm)
                grad_x_TD[start : start + chunk] = (g_CV @ w_mm).to(x_TD.dtype)
                grad_w_VD += (g_CV.t() @ x_CD).to(acc)
        ctx.save_for_backward(grad_x_TD, grad_w_VD.to(w_VD.dtype))
        return loss / T

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        grad_x_TD, grad_w_VD = ctx.saved_tensors
        return grad_x_TD * grad_loss, grad_w_VD * grad_loss, None, None


def chunked_cross_entropy(
    x_TD: torch.Tensor, w_VD: torch.Tensor, targets_T: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Mean cross-entropy of ``x_TD @ w_VD.T`` against ``targets_T``, ``chunk`` tokens at a
    time (the same value and gradients as the whole computation, up to rounding)."""
    return ChunkedLinearCrossEntropy.apply(x_TD, w_VD, targets_T, chunk)
