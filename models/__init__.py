"""The MoE language model, its configuration and its parameter/FLOP accounting."""

from models.accounting import FLOPS_CONVENTION, Accounting, account, flops_per_token
from models.config import ConfigError, FamilyRule, ModelConfig, MoEConfig, size_model
from models.transformer import MoETransformer

__all__ = [
    "FLOPS_CONVENTION",
    "Accounting",
    "ConfigError",
    "FamilyRule",
    "ModelConfig",
    "MoEConfig",
    "MoETransformer",
    "account",
    "flops_per_token",
    "size_model",
]
