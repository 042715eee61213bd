"""The MoE language model, its configuration and its parameter/FLOP accounting.

``models.config`` and ``models.accounting`` import without torch (the analysis uses them to
turn a model shape into exact FLOPs); the torch modules load on first use.
"""

from models.accounting import FLOPS_CONVENTION, Accounting, account, flops_per_token
from models.config import ConfigError, ModelConfig, MoEConfig

__all__ = [
    "FLOPS_CONVENTION",
    "Accounting",
    "ConfigError",
    "MoEConfig",
    "MoETransformer",
    "ModelConfig",
    "account",
    "flops_per_token",
]


def __getattr__(name: str):
    if name == "MoETransformer":
        from models.transformer import MoETransformer

        return MoETransformer
    raise AttributeError(f"module 'models' has no attribute {name!r}")
