"""The scaling benchmark's arithmetic: a steady rate recovered from the trainer's cumulative
tokens/s, and the table built from run records (experiments/benchmarks/scaling.py)."""

import pytest

from experiments.benchmarks.scaling import parse_case, steady_rate, table

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws


def _rows(tokens_per_step, warmup_s, step_s, steps, every, losses=None):
    """Logged rows of a run whose first 10 steps take warmup_s in all, then step_s each."""
    rows = []
    for step in range(every, steps + 1, every):
        elapsed = warmup_s * min(step, 10) / 10 + step_s * max(step - 10, 0)
        loss = losses(step) if losses else 3.0
        rows.append(
            {"step": step, "tokens_per_s": step * tokens_per_step / elapsed, "train_loss": loss}
        )
    return rows


def test_steady_rate_excludes_warmup():
    rows = _rows(1000, warmup_s=50.0, step_s=0.5, steps=200, every=10)
    cumulative = rows[-1]["tokens_per_s"]
    assert cumulative < 1500  # the warm-up drags the run's own average down
    assert steady_rate(rows, 1000, skip=20) == pytest.approx(2000.0)
    assert steady_rate(rows[:2], 1000, skip=20) is None  # not enough rows past the skip


def _result(name, world, batch, step_s, losses=None, mfu_at_cumulative=0.1):
    rows = _rows(batch * 8, 5.0, step_s, 100, 10, losses)
    cumulative = rows[-1]["tokens_per_s"]
    summary = {
        "batch_size": batch,
        "seq_len": 8,
        "steps": 100,
        "world_size": world,
        "tokens_per_s": cumulative,
        "flops_per_token": 1e6,
        "mfu": mfu_at_cumulative,
        "peak_memory_gb": None,
        "backend": "torch",
        "time": {},
    }
    return {"case": name, "ranks": world, "summary": summary, "rows": rows}


def test_table_scaling_mfu_and_loss_match():
    one = _result("one", 1, 8, step_s=0.1)
    # two ranks, same global batch, each step 0.08 s: per-rank rate 0.625x of one rank's
    two = _result("two", 2, 8, step_s=0.08, losses=lambda s: 3.0 + (0.01 if s >= 60 else 0.0))
    weak = _result("weak", 2, 16, step_s=0.1)
    rows = table([one, two, weak], skip_fraction=0.3, early_steps=50)
    assert rows[0]["tokens_per_s"] == pytest.approx(640.0)
    assert rows[1]["scaling"] == pytest.approx(0.1 / 0.08 / 2)
    assert rows[2]["scaling"] == pytest.approx(1.0)
    # MFU scales with the steady rate against the peak the trainer divided by
    peak_all = one["summary"]["tokens_per_s"] * 1e6 / 0.1
    assert rows[0]["mfu"] == pytest.approx(640.0 * 1e6 / peak_all)
    assert rows[1]["max_dloss_early"] == 0.0
    assert rows[1]["mean_dloss"] == pytest.approx(0.01 * 5 / 10)
    assert "max_dloss_early" not in rows[2]  # another global batch: no comparison


def test_bad_case_is_one_line():
    with pytest.raises(SystemExit, match="expected name:ranks:override"):
        parse_case("2gpu")
    assert parse_case("ep:2:a=1,b=2") == ("ep", 2, ["a=1", "b=2"])
