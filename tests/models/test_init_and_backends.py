"""Each module initialises itself; the backend is chosen once, at construction (issue 14)."""

import math
from dataclasses import replace

import pytest
import torch

from models import ModelConfig, MoEConfig, MoETransformer
from models.backends import BackendUnavailable
from models.moe import DenseMLP, MoE
from models.router import Router, count_tokens

CFG = ModelConfig(
    d_model=64, n_heads=4, n_layers=8, d_ff=256, moe=MoEConfig(num_experts=8, top_k=2)
)


def test_modules_initialise_themselves():
    torch.manual_seed(0)
    out_std = 0.02 / math.sqrt(2 * CFG.n_layers)
    moe = MoE(CFG)
    assert moe.w_in_EHD.std().item() == pytest.approx(0.02, rel=0.05)
    assert moe.w_out_EFD.std().item() == pytest.approx(out_std, rel=0.05)
    assert Router(64, 8, 2, False, 0.02).weight_ED.std().item() == pytest.approx(0.02, rel=0.2)
    dense = DenseMLP(64, 256, True, 0.02, out_std)
    assert dense.w_out_FD.std().item() == pytest.approx(out_std, rel=0.1)
    model = MoETransformer(CFG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_parameters()  # re-draws everything, with the same distributions
    for k, v in model.state_dict().items():
        if v.dim() >= 2:
            assert not torch.equal(v, before[k]), k
            assert v.std().item() == pytest.approx(before[k].std().item(), rel=0.2), k


def test_tied_embeddings_stay_tied_after_reset():
    model = MoETransformer(replace(CFG, tie_embeddings=True))
    model.reset_parameters()
    assert model.lm_head.weight is model.tok_emb.weight


def test_backend_is_resolved_at_construction():
    moe = MoE(CFG)
    assert moe.backend == ("native" if torch.cuda.is_available() else "torch")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="needs a CUDA GPU"):
            MoE(replace(CFG, moe=replace(CFG.moe, backend="native")))


def test_renormalize_makes_weights_sum_to_one():
    router = Router(16, 8, 3, renormalize=True)
    r = router(torch.randn(40, 16))
    torch.testing.assert_close(r.weights_TK.sum(-1), torch.ones(40))
    plain = Router(16, 8, 3, renormalize=False)
    plain.load_state_dict(router.state_dict())
    assert (plain(torch.randn(40, 16)).weights_TK.sum(-1) < 1).all()


def test_tokens_per_expert_is_a_sync_free_count():
    experts = torch.tensor([[0, 2], [2, 3], [2, 0]])
    assert count_tokens(experts, 5).tolist() == [2, 0, 3, 1, 0]
