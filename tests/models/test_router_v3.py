"""The DeepSeek-V3 router options: sigmoid scores, the auxiliary-loss-free bias (selection
only, moved toward balanced load after each step) and the sequence-wise balance loss."""

import pytest
import torch

from models import ConfigError, ModelConfig, MoEConfig, MoETransformer
from models.router import Router, sequence_balance_loss


def _skewed_router(score="sigmoid", rate=0.01, E=8, K=2):
    torch.manual_seed(0)
    router = Router(16, E, K, renormalize=True, score=score, bias_rate=rate).double()
    with torch.no_grad():
        router.weight_ED.normal_(0, 0.3)
        router.weight_ED[0] += 0.4  # experts 0 and 1 win every token at first
        router.weight_ED[1] += 0.2
    return router


def _load(router, x):
    return torch.bincount(router(x).experts_TK.reshape(-1), minlength=8).double()


@pytest.mark.parametrize("score,bound", [("sigmoid", 1.25), ("softmax", 2.0)])
def test_the_bias_moves_load_toward_uniform(score, bound):
    """A sign-step controller oscillates around balance (a bang-bang control), so the load is
    read over the last 100 steps, as training sees it. With softmax scores the bias competes
    with probabilities that sum to one: it balances less tightly than with sigmoid (V3's)."""
    router = _skewed_router(score)
    x = torch.randn(4096, 16, dtype=torch.float64).abs()  # positive inputs: the skew bites
    first = _load(router, x)
    late = torch.zeros(8, dtype=torch.float64)
    for step in range(400):  # the trainer's cycle: forward, counts, optimiser step, update
        counts = _load(router, x)
        late += counts if step >= 300 else 0
        router.observe(counts)
        router.post_optimizer_step()
    assert float(first.max() / first.mean()) == 4.0  # two experts take everything
    assert float(late.max() / late.mean()) < bound
    assert router.bias_E[0] < router.bias_E[2:].min()  # the overloaded expert was pushed down


def test_the_bias_chooses_but_never_enters_the_weights_or_the_gradient():
    router = _skewed_router()
    with torch.no_grad():
        router.bias_E.copy_(torch.linspace(-0.5, 0.5, 8, dtype=torch.float64))
    x = torch.randn(64, 16, dtype=torch.float64)
    r = router(x)
    scores = torch.sigmoid(x @ router.weight_ED.T)
    chosen = scores.gather(-1, r.experts_TK)
    assert torch.equal(r.weights_TK, chosen / chosen.sum(-1, keepdim=True))  # renormalised
    assert torch.equal(r.experts_TK, torch.topk(scores + router.bias_E, 2).indices)
    assert "bias_E" not in dict(router.named_parameters())
    assert "bias_E" in router.state_dict()  # checkpointed with the weights
    (grad,) = torch.autograd.grad(r.weights_TK.sum(), [router.weight_ED])
    # the same gradient as weights gathered without any bias at those choices
    (ref,) = torch.autograd.grad(
        (lambda c: (c / c.sum(-1, keepdim=True)).sum())(
            torch.sigmoid(x @ router.weight_ED.T).gather(-1, r.experts_TK)
        ),
        [router.weight_ED],
    )
    assert torch.equal(grad, ref)


def test_sequence_balance_loss_is_one_when_balanced_and_more_when_not():
    E, S = 4, 8
    probs = torch.full((2, S, E), 1 / E)
    balanced = torch.arange(S).remainder(E).view(1, S, 1).expand(2, S, 1)
    assert float(sequence_balance_loss(probs, balanced, E)) == pytest.approx(1.0)
    skew_probs = torch.tensor([0.7, 0.1, 0.1, 0.1]).expand(2, S, E)
    assert float(sequence_balance_loss(skew_probs, torch.zeros(2, S, 1, dtype=torch.long), E)) == (
        pytest.approx(4 * 0.7)
    )


def test_defaults_keep_todays_router_and_configs_refuse_contradictions():
    model = MoETransformer(ModelConfig(moe=MoEConfig(num_experts=4)))
    assert model.bias_routers == [] and "bias_E" not in str(model.state_dict().keys())
    with pytest.raises(ConfigError, match="load_balance_coef=0"):
        MoEConfig(num_experts=4, balance="aux_free")
    with pytest.raises(ConfigError, match="aux_free"):
        MoEConfig(num_experts=4, balance="both", load_balance_coef=0)


def test_only_bias_balanced_routers_are_called_after_the_optimiser_step():
    from models.transformer import post_optimizer_step_hooks

    def model(**moe):
        cfg = ModelConfig(
            d_model=16, n_layers=2, n_heads=2, d_ff=32, seq_len=8, vocab_size=32,
            moe=MoEConfig(num_experts=4, top_k=1, **moe),
        )  # fmt: skip
        return MoETransformer(cfg)

    assert post_optimizer_step_hooks(model()) == []  # today's router: nothing to update
    v3 = model(score="sigmoid", balance="aux_free", load_balance_coef=0.0)
    assert len(post_optimizer_step_hooks(v3)) == 2  # one bias per MoE layer
