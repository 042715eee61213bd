"""DeepSeek-style options through experiments.train: MLA and the aux-loss-free router train,
record their inference cost, and resume bit-exactly with the router's bias."""

import pytest
import torch

from experiments.train import execute
from tests.experiments.helpers import tiny_config

pytestmark = pytest.mark.slow

DEEPSEEK = [
    "model.attention=mla",
    "model.q_lora_rank=16",
    "moe.num_experts=8",
    "moe.top_k=2",
    "moe.score=sigmoid",
    "moe.renormalize=true",
    "moe.balance=aux_free",
    "moe.load_balance_coef=0",
    "moe.seq_aux_coef=0.0001",
    "budget.flops=5e9",
]


def test_mla_and_the_aux_free_router_resume_bit_exactly_with_the_bias(tmp_path):
    full = execute(tiny_config(tmp_path / "a", *DEEPSEEK, "run.keep_final=checkpoint"))
    assert full["status"] == "done" and full["val_loss"] < 5.0
    # MLA's cache: 2 bytes x 1 layer x (latent 4 x 16 + rotary 8), against MHA's 2 x 32 x 2
    assert full["kv_cache_bytes_per_token"] == 2 * (64 + 8)
    stopped = execute(tiny_config(tmp_path / "b", *DEEPSEEK, "run.stop_after_steps=37"))
    assert stopped["status"] == "interrupted"
    resumed = execute(tiny_config(tmp_path / "b", *DEEPSEEK, "run.keep_final=checkpoint"))
    assert (resumed["final_train_loss"], resumed["val_loss"]) == (
        full["final_train_loss"],
        full["val_loss"],
    )
    states = [
        torch.load(tmp_path / d / "runs" / r["run_id"] / "checkpoint.pt", weights_only=True)
        for d, r in (("a", full), ("b", resumed))
    ]
    bias = {k: v for k, v in states[0]["model"].items() if k.endswith("bias_E")}
    assert bias and any(v.abs().sum() > 0 for v in bias.values())  # it moved, and was saved
    for k, v in bias.items():
        assert torch.equal(v, states[1]["model"][k])
