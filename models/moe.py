"""Feed-forward layers: the dense GLU/MLP and the dropless MoE layer.

Both return ``(y, FFNAux)`` so a block treats them alike. Shapes: B batch, T tokens (B*S
flattened), D width, E experts, K experts per token, F expert hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.backends import ExpertWeights, get_backend, resolve_backend
from models.backends.common import expert_mlp
from models.config import ModelConfig
from models.router import Router, load_balancing_loss, router_z_loss


@dataclass
class FFNAux:
    aux_loss: torch.Tensor  # coefficient-weighted sum, added to the training loss
    load_balance_loss: torch.Tensor  # unweighted (1.0 when perfectly balanced)
    z_loss: torch.Tensor  # unweighted
    tokens_per_expert_E: torch.Tensor | None  # detached counts, for load statistics


class DenseMLP(nn.Module):
    """The dense feed-forward layer: one expert, no router."""

    def __init__(self, d_model: int, hidden: int, glu: bool):
        super().__init__()
        self.w1_FD = nn.Parameter(torch.empty(hidden, d_model))
        self.v1_FD = nn.Parameter(torch.empty(hidden, d_model)) if glu else None
        self.w2_FD = nn.Parameter(torch.empty(hidden, d_model))

    def forward(self, x_BSD: torch.Tensor) -> tuple[torch.Tensor, FFNAux]:
        y = expert_mlp(x_BSD, self.w1_FD, self.v1_FD, self.w2_FD)
        zero = x_BSD.new_zeros((), dtype=torch.float32)
        return y, FFNAux(zero, zero, zero, None)


class MoE(nn.Module):
    """Dropless token-choice MoE: router, E routed experts, optional always-on shared experts."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        moe = cfg.moe
        E, F, D = moe.experts, cfg.expert_hidden, cfg.d_model
        glu = moe.expert_type == "glu"
        self.router = Router(D, E, moe.active_experts, moe.renormalize)
        self.w1_EFD = nn.Parameter(torch.empty(E, F, D))
        self.v1_EFD = nn.Parameter(torch.empty(E, F, D)) if glu else None
        self.w2_EFD = nn.Parameter(torch.empty(E, F, D))
        self.shared = (
            DenseMLP(D, moe.num_shared_experts * F, glu) if moe.num_shared_experts else None
        )
        self.backend = moe.backend
        self.load_balance_coef = moe.load_balance_coef
        self.z_loss_coef = moe.z_loss_coef

    @property
    def weights(self) -> ExpertWeights:
        return ExpertWeights(self.w1_EFD, self.v1_EFD, self.w2_EFD)

    def forward(self, x_BSD: torch.Tensor) -> tuple[torch.Tensor, FFNAux]:
        x_TD = x_BSD.reshape(-1, x_BSD.shape[-1])
        routing = self.router(x_TD)
        y_TD = self.experts_forward(x_TD, routing.experts_TK, routing.weights_TK)
        if self.shared is not None:
            y_TD = y_TD + self.shared(x_TD)[0]
        lb = load_balancing_loss(routing.probs_TE, routing.experts_TK)
        z = router_z_loss(routing.logits_TE)
        aux = FFNAux(
            aux_loss=self.load_balance_coef * lb + self.z_loss_coef * z,
            load_balance_loss=lb.detach(),
            z_loss=z.detach(),
            tokens_per_expert_E=torch.bincount(
                routing.experts_TK.reshape(-1), minlength=self.w1_EFD.shape[0]
            ),
        )
        return y_TD.view_as(x_BSD), aux

    def experts_forward(
        self, x_TD: torch.Tensor, experts_TK: torch.Tensor, weights_TK: torch.Tensor
    ) -> torch.Tensor:
        """The routed experts for a given assignment (used directly by equivalence tests)."""
        backend = get_backend(resolve_backend(self.backend, x_TD.device))
        return backend(x_TD, experts_TK, weights_TK, self.weights)
