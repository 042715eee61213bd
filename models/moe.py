"""Feed-forward layers: the dense GLU/MLP and the dropless MoE layer.

Both return ``(y, FFNAux)`` so a block treats them alike. Shapes: B batch, S sequence, T tokens
(B*S flattened), D width, E experts, K experts per token, F expert hidden size, H = 2F (GLU:
gate and up rows) or F (MLP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from models.backends import ExpertWeights, get_backend, resolve_backend
from models.backends.common import expert_mlp
from models.config import ModelConfig
from models.expert_parallel import EPGroup, ep_experts, shard
from models.router import (
    Router,
    Routing,
    count_tokens,
    load_balancing_loss,
    router_z_loss,
    sequence_balance_loss,
)


@dataclass
class FFNAux:
    aux_loss: torch.Tensor  # coefficient-weighted sum, added to the training loss
    load_balance_loss: torch.Tensor  # unweighted (1.0 when perfectly balanced)
    z_loss: torch.Tensor  # unweighted
    tokens_per_expert_E: torch.Tensor | None  # assignment counts, for load statistics
    router_entropy: torch.Tensor | None = None  # mean over tokens of H(router probs), nats


def init_stds(cfg: ModelConfig) -> tuple[float, float]:
    """(std of input-side weights, std of residual-branch outputs). Outputs are scaled down
    with depth (GPT-2) so the residual stream's variance does not grow with n_layers."""
    return cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layers)


class DenseMLP(nn.Module):
    """The dense feed-forward layer: one expert, no router."""

    def __init__(
        self, d_model: int, hidden: int, glu: bool, init_std: float = 0.02, out_std: float = 0.02
    ):
        super().__init__()
        self.glu, self.init_std, self.out_std = glu, init_std, out_std
        self.w_in_HD = nn.Parameter(torch.empty((2 if glu else 1) * hidden, d_model))
        self.w_out_FD = nn.Parameter(torch.empty(hidden, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.w_in_HD, std=self.init_std)
        nn.init.normal_(self.w_out_FD, std=self.out_std)

    def forward(self, x_BSD: torch.Tensor) -> tuple[torch.Tensor, FFNAux]:
        y = expert_mlp(x_BSD, self.w_in_HD, self.w_out_FD, self.glu)
        zero = x_BSD.new_zeros((), dtype=torch.float32)
        return y, FFNAux(zero, zero, zero, None)


def _route(router: Router, x_TD: torch.Tensor) -> Routing:
    return router(x_TD)


def _route_in_its_own_graph(router: Router, x_TD: torch.Tensor) -> Routing:
    """Top-k > 1: the router compiled, then a graph break, so the experts start another graph.

    With the router and the native experts in one compiled graph, inductor's CUDA code gave
    top-2 models gradients 1e3-1e5 times the eager ones, different at every step (torch 2.11,
    H200; both compile modes; the forward was exact): the second study's gate arm could not
    train. Either one left out of the graph matched eager, as does top-1 in one graph, and so
    do the two compiled as separate graphs (relative error 0.023 in both modes, as top-1's;
    experiments/benchmarks/compiled_grads.py, docs/studies/study2/STATUS.md). Separate graphs
    cost one break per layer; the router eager (the first fix) cost its ~15 kernels launched
    from Python and left out of the CUDA graphs as well. Eager, the break does nothing."""
    routing = router(x_TD)
    torch._dynamo.graph_break()
    return routing


class MoE(nn.Module):
    """Dropless token-choice MoE: router, E routed experts, optional always-on shared experts.

    The expert backend is resolved once, here (``auto``: native when CUDA is available)."""

    def __init__(self, cfg: ModelConfig, ep: EPGroup | None = None):
        super().__init__()
        moe = cfg.moe
        E, F, D = moe.experts, cfg.expert_hidden, cfg.d_model
        self.glu = moe.expert_type == "glu"
        self.init_std, self.out_std = init_stds(cfg)
        self.ep, self.num_experts = ep, E
        local = E // ep.size if ep else E  # expert parallel: this rank's block of experts
        self.w_in_EHD = nn.Parameter(torch.empty(local, (2 if self.glu else 1) * F, D))
        self.w_out_EFD = nn.Parameter(torch.empty(local, F, D))
        self.router = Router(
            D,
            E,
            moe.active_experts,
            moe.renormalize,
            cfg.init_std,
            moe.score,
            moe.bias_update_rate if moe.balance in ("aux_free", "both") else 0.0,
        )
        self.shared = (
            DenseMLP(D, moe.num_shared_experts * F, self.glu, self.init_std, self.out_std)
            if moe.num_shared_experts
            else None
        )
        self.backend = resolve_backend(moe.backend)
        self._experts = get_backend(self.backend)
        self._compute = partial(ep_experts, ep=ep) if ep else self._experts
        self.load_balance_coef = moe.load_balance_coef
        self.z_loss_coef = moe.z_loss_coef
        self.seq_aux_coef = moe.seq_aux_coef
        # moe.load_balance_scope=global under several ranks: the trainer sets the group whose
        # expert counts the load-balancing loss sums (None: this rank's tokens alone).
        self.balance_group = None
        self.reset_parameters(children=False)

    def reset_parameters(self, children: bool = True) -> None:
        # Expert parallel ranks draw all E experts and keep their block, so a sharded model
        # starts from the same weights as an unsharded one with the same seed.
        for p, std in ((self.w_in_EHD, self.init_std), (self.w_out_EFD, self.out_std)):
            full = torch.empty((self.num_experts, *p.shape[1:]), dtype=p.dtype, device=p.device)
            nn.init.normal_(full, std=std)
            with torch.no_grad():
                p.copy_(shard(full, self.ep) if self.ep else full)
        if children:
            self.router.reset_parameters()
            if self.shared is not None:
                self.shared.reset_parameters()

    @property
    def weights(self) -> ExpertWeights:
        return ExpertWeights(self.w_in_EHD, self.w_out_EFD, self.glu)

    def forward(self, x_BSD: torch.Tensor) -> tuple[torch.Tensor, FFNAux]:
        x_TD = x_BSD.reshape(-1, x_BSD.shape[-1])
        routing = (_route_in_its_own_graph if self.router.top_k > 1 else _route)(self.router, x_TD)
        tokens_per_expert_E = count_tokens(routing.experts_TK, self.num_experts)
        y_TD = self._compute(
            x_TD, routing.experts_TK, routing.weights_TK, tokens_per_expert_E, self.weights
        )
        if self.shared is not None:
            y_TD = y_TD + self.shared(x_TD)[0]
        counts_E = tokens_per_expert_E
        if self.balance_group is not None:  # the fraction routed to each expert, over all ranks
            counts_E = tokens_per_expert_E.clone()
            torch.distributed.all_reduce(counts_E, group=self.balance_group)
        lb = load_balancing_loss(routing.probs_TE, counts_E)
        z = router_z_loss(routing.logits_TE)
        aux_loss = self.load_balance_coef * lb + self.z_loss_coef * z
        if self.seq_aux_coef:
            B, S, _ = x_BSD.shape
            seq = sequence_balance_loss(
                routing.probs_TE.view(B, S, -1),
                routing.experts_TK.view(B, S, -1),
                self.num_experts,
            )
            aux_loss = aux_loss + self.seq_aux_coef * seq
        aux = FFNAux(
            aux_loss=aux_loss,
            load_balance_loss=lb.detach(),
            z_loss=z.detach(),
            tokens_per_expert_E=tokens_per_expert_E,
            # log E when routing is uniform, 0 when every token is sure of its expert
            router_entropy=torch.special.entr(routing.probs_TE.detach()).sum(-1).mean(),
        )
        return y_TD.view_as(x_BSD), aux

    def experts_forward(
        self, x_TD: torch.Tensor, experts_TK: torch.Tensor, weights_TK: torch.Tensor
    ) -> torch.Tensor:
        """The routed experts for a given assignment (used directly by equivalence tests)."""
        counts_E = count_tokens(experts_TK, self.num_experts)
        return self._compute(x_TD, experts_TK, weights_TK, counts_E, self.weights)
