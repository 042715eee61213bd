"""Training-health metrics: gradient norm and clipping, router entropy, the in-context score
(CPU)."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from experiments.distributed.ranks import Dist
from experiments.train import execute
from experiments.trainer.evaluation import evaluate, icl_positions
from tests.experiments.helpers import tiny_config

MOE = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=1e10", "train.eval_every=40"]


def _rows(tmp_path, summary):
    path = tmp_path / "runs" / summary["run_id"] / "metrics.jsonl"
    return [json.loads(x) for x in path.open()]


@pytest.mark.slow
@pytest.mark.parametrize("clip,clipped", [("1e-6", True), ("0", False)])
def test_logged_rows_carry_the_gradient_norm_and_router_entropy(tmp_path, clip, clipped):
    summary = execute(tiny_config(tmp_path, *MOE, f"optim.grad_clip={clip}"))
    rows = _rows(tmp_path, summary)
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in rows)
    assert {r["clipped"] for r in rows} == {clipped}
    for r in rows:  # one entropy per layer, between sure (0) and uniform (log E)
        assert len(r["router_entropy"]) == 1 and 0 <= r["router_entropy"][0] <= math.log(4)
    evals = [r for r in rows if r["icl_score"] is not None]
    assert evals and summary["icl_score"] == pytest.approx(evals[-1]["icl_score"], abs=0.05)


class _ContextModel(torch.nn.Module):
    """Predicts 'the next token repeats this one', more surely the further into the window."""

    def __init__(self, vocab: int, grows: bool):
        super().__init__()
        self.vocab, self.grows = vocab, grows

    def forward(self, idx_BS):
        S = idx_BS.shape[1]
        sure = torch.linspace(0.0, 5.0, S) if self.grows else torch.full((S,), 2.0)
        logits = torch.nn.functional.one_hot(idx_BS, self.vocab).float() * sure[None, :, None]
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("grows,sign", [(True, -1), (False, 0)])
def test_the_icl_score_is_late_minus_early_loss(grows, sign):
    vocab, S = 11, 64
    windows = torch.randint(0, vocab, (12, 1)).repeat(1, S + 1)  # each window repeats a token
    ev = evaluate(
        _ContextModel(vocab, grows), windows, np.arange(12), 4, torch.device("cpu"), Dist()
    )
    assert (ev.icl_score < -0.5) if sign < 0 else ev.icl_score == pytest.approx(0.0, abs=1e-6)
    early, late = icl_positions(S)
    assert (early.start, early.stop, late.start, late.stop) == (4, 8, 56, 64)
