"""A run that is not learning fails a quarter of the way in, saying why; healthy runs do not."""

import math

import numpy as np
import pytest
import torch

from experiments.train import SET_ASIDE_CHECKPOINT, execute
from experiments.trainer import health
from tests.experiments.helpers import tiny_config


def test_unigram_entropy_on_the_host_and_the_device_agree_with_the_formula():
    tokens = np.array([0, 0, 1, 1, 2, 2, 2, 2], dtype=np.uint16)
    want = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert math.isclose(health.unigram_entropy(tokens, 8), want)
    as_tensor = torch.from_numpy(tokens.astype(np.int32))
    assert math.isclose(health.unigram_entropy(as_tensor, 8), want)


def test_the_verdict_needs_half_the_way_from_the_first_loss_to_the_unigram_entropy():
    # first 9.0, H1 6.2: halfway is 7.6
    assert health.not_learning(9.0, [7.5, 7.7], 6.2) is not None  # mean 7.6: not below
    assert health.not_learning(9.0, [7.5, 7.6], 6.2) is None
    assert health.not_learning(5.0, [5.0], 6.2) is None  # started below H1: no ruler
    assert health.check_step(399) is None and health.check_step(400) == 100


def test_a_run_that_does_not_learn_fails_at_a_quarter_saying_why(tmp_path):
    """The H200's broken pilot run, in miniature: an LR so small nothing moves."""
    args = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=1.6e10", "run.log_every=50"]
    stuck = execute(tiny_config(tmp_path, *args, "optim.lr=1e-9"))
    total = stuck["planned_steps"]
    assert total >= 400, total  # long enough to be judged
    assert stuck["status"] == "failed" and stuck["failure_kind"] == "training"
    assert "not learning" in stuck["reason"]
    assert f"at step {total // 4} of {total}" in stuck["reason"]
    # its checkpoints hold the failure too: set aside (kept), so a retry starts from scratch
    run = tmp_path / "runs" / stuck["run_id"]
    assert (run / SET_ASIDE_CHECKPOINT).exists() and not (run / "checkpoint.pt").exists()
    healthy = execute(tiny_config(tmp_path, *args))
    assert healthy["status"] == "done"


def test_the_first_step_repeats_on_a_cpu_and_an_outlier_is_named(tmp_path):
    """experiments.benchmarks.first_step: the probe for the pilot's broken first backward.
    Step 0 updates the weights (its LR is above 0): repeats from unrestored state differ in
    gradient norm by ~3e-3 relative (measured with load_state_dict made a no-op), so
    agreement to 1e-5 means the state was restored each time. Not bit for bit: in a CI run
    of the whole suite the forward repeated exactly and the gradient norm's last bits did not
    (cause not found; float32 sums in another order give such differences)."""
    from experiments.benchmarks import first_step

    overrides = [
        "data=sotu_bytes", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
        "model.d_ff=128", "model.seq_len=32", "train.batch_size=8", "moe.num_experts=4",
        "moe.top_k=2", "moe.granularity=2", "moe.renormalize=true", "budget.flops=1e10",
        f"data.cache_dir={tmp_path}/cache",
    ]  # fmt: skip
    rows, what = first_step.repeat_first_step(overrides, repeats=3, by_param=1000)
    v = first_step.verdict(rows, tolerance=0.05)
    assert v["losses_identical"] and v["max_relative_deviation"] < 1e-5 and not v["outliers"]
    assert what["device"] == "cpu"
    # --by-param: the per-parameter norms are the ones the clipped total was made of, and the
    # one MoE layer routed each of its 8 x 32 tokens to K x G = 4 of its 8 experts.
    for r in rows:
        norms = [norm for _, norm in r["largest"]]
        assert norms == sorted(norms, reverse=True)
        assert sum(n * n for n in norms) ** 0.5 == pytest.approx(r["grad_norm"], rel=1e-5)
        ((fewest, most),) = r["expert_loads"]
        assert 0 <= fewest <= most <= 8 * 32 and most >= 8 * 32 * 4 // 8
    broken = [
        *rows,
        {"repeat": 3, "loss": rows[0]["loss"], "grad_norm": 300 * rows[0]["grad_norm"]},
    ]
    assert first_step.verdict(broken, tolerance=0.05)["outliers"] == [3]
