"""analysis/flops.py rebuilds the table's model family from its columns: its FLOPs and
parameter counts at a trained width and sparsity are the accounting of the model trained
there, for MHA and for MLA (whose options a table may leave at their defaults)."""

import numpy as np
import pandas as pd
import pytest

from analysis.flops import Family
from models import ModelConfig, MoEConfig, account


def _row(cfg: ModelConfig) -> dict:
    acc = account(cfg)
    row = {
        f: getattr(cfg, f)
        for f in ("d_model", "n_layers", "n_heads", "d_ff", "seq_len", "vocab_size", "attention")
    }
    row |= {f: getattr(cfg, f) for f in ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim")}
    row |= {"num_experts": cfg.moe.num_experts, "top_k": cfg.moe.top_k, "granularity": 1}
    row |= {"expert_type": "glu", "flops_per_token": acc.flops_per_token}
    row |= {"params_total": acc.params_total, "sparsity": acc.sparsity}
    return row


@pytest.mark.parametrize(
    "attention", [{}, {"attention": "mla"}, {"attention": "mla", "q_lora_rank": 24}]
)
def test_the_family_reproduces_the_accounting_of_each_trained_model(attention):
    cfgs = [
        ModelConfig(
            vocab_size=512,
            d_model=d,
            n_layers=4,
            n_heads=d // 16,
            d_ff=4 * d,
            seq_len=128,
            moe=MoEConfig(num_experts=4),
            **attention,
        )
        for d in (64, 96, 128, 192)
    ]
    df = pd.DataFrame([_row(c) for c in cfgs])
    fam = Family(df, non_embedding=True, convention="ours")
    got = fam.counts(np.array([64.0, 96.0, 128.0, 192.0]), sparsity=0.75)
    assert got["flops_per_token"] == pytest.approx(df["flops_per_token"].to_numpy(float))
    assert got["params_total"] == pytest.approx(df["params_total"].to_numpy(float))
    assert got["kv_cache_bytes_per_token"] == pytest.approx(
        [account(c).kv_cache_bytes_per_token for c in cfgs]
    )
