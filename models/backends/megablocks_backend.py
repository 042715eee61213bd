"""MegaBlocks dropless experts (``dMoE``'s expert computation, ``mlp_impl="grouped"``).

Mapping to our layer: routing stays ours (router.py: softmax over all experts, top-k, optional
renormalisation, our load-balancing and z losses, returned by the layer). We hand MegaBlocks'
``ParallelDroplessMLP`` (the expert half of ``megablocks.layers.dmoe.dMoE``) our assignments
and our weights: its GroupedGLU stores w1/v1/w2 as (E*F, D); ours are cast to the compute dtype
and reshaped into that layout at every call (the cast copies anyway), so gradients flow to our
parameters. ``moe_loss_weight=0`` keeps MegaBlocks from stashing a load-balancing loss in its
module globals. Imported lazily: CUDA and the megablocks package are needed only when selected.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from models.backends.common import ExpertWeights, compute_dtype


@functools.cache
def _experts_module(E: int, K: int, D: int, Fh: int, glu: bool, device_index: int):
    from megablocks.layers.arguments import Arguments
    from megablocks.layers.dmoe import ParallelDroplessMLP

    args = Arguments(
        hidden_size=D,
        ffn_hidden_size=Fh,
        moe_num_experts=E,
        moe_top_k=K,
        mlp_type="glu" if glu else "mlp",
        mlp_impl="grouped",
        activation_fn=F.silu if glu else functools.partial(F.gelu, approximate="tanh"),
        bias=False,
        return_bias=False,
        moe_loss_weight=0.0,
        bf16=True,
        fp16=False,
        device=device_index,
    )
    module = ParallelDroplessMLP(args)
    for name in ("w1", "v1", "w2"):  # ours replace them at every call
        if hasattr(module.mlp, name):
            delattr(module.mlp, name)
    return module


def megablocks_experts(
    x_TD: torch.Tensor,
    experts_TK: torch.Tensor,
    weights_TK: torch.Tensor,
    tokens_per_expert_E: torch.Tensor,  # MegaBlocks bins the assignments itself
    w: ExpertWeights,
) -> torch.Tensor:
    E, Fh, D = w.w_out_EFD.shape
    K = experts_TK.shape[1]
    module = _experts_module(E, K, D, Fh, w.glu, x_TD.device.index or 0)
    # MegaBlocks' grouped GEMMs take one dtype for both operands and do not autocast.
    dtype = compute_dtype(x_TD)
    w_in = w.w_in_EHD.to(dtype)
    module.mlp.w1 = w_in[:, :Fh].reshape(E * Fh, D)
    module.mlp.w2 = w.w_out_EFD.to(dtype).view(E * Fh, D)
    if w.glu:
        module.mlp.v1 = w_in[:, Fh:].reshape(E * Fh, D)
    with torch.autocast("cuda", enabled=False):
        out_TD, _ = module.forward_once(x_TD.to(dtype), weights_TK.to(dtype), experts_TK)
    return out_TD.view(x_TD.shape).to(x_TD.dtype)
