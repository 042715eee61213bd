import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.config import ConfigError, from_dict
from experiments.record import RunDir
from experiments.train import execute
from tests.experiments.helpers import TINY, kill_resume_and_compare, tiny_config

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws

SUMMARY_FIELDS = [
    "run_id",
    "status",
    "reason",
    "sweep",
    "budget_flops",
    "flops",
    "tokens",
    "sparsity",
    "num_experts",
    "top_k",
    "granularity",
    "d_model",
    "n_layers",
    "params_total",
    "params_active",
    "params_embedding",
    "flops_per_token",
    "flops_convention",
    "final_train_loss",
    "val_loss",
    "seed",
    "backend",
    "device",
    "wall_time_s",
    "tokens_per_s",
    "mfu",
    "git_sha",
    "source_sha256",
    "versions",
]

MOE = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=1e10"]


def test_tiny_moe_run_writes_record_and_spends_budget(tmp_path, capsys):
    summary = execute(tiny_config(tmp_path, *MOE))
    rd = RunDir(Path(tmp_path) / "runs" / summary["run_id"])
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "run.json"):
        assert (rd.path / f).exists(), f
    assert not rd.checkpoint.exists()  # a finished run keeps no optimiser state by default
    on_disk = json.loads(rd.summary.read_text())
    assert set(SUMMARY_FIELDS) <= set(on_disk)
    assert on_disk["status"] == "done" and on_disk["sparsity"] == 0.75
    step_flops = on_disk["flops_per_token"] * 8 * 32
    assert abs(on_disk["flops"] - 1e10) <= step_flops
    assert on_disk["val_loss"] < 5.0  # learned something below ln(256) = 5.55
    rows = [json.loads(x) for x in rd.metrics.read_text().splitlines()]
    assert rows[-1]["step"] == on_disk["steps"]
    assert {
        "step",
        "tokens",
        "flops",
        "lr",
        "train_loss",
        "aux_loss",
        "tokens_per_s",
        "expert_load_max",
    } <= set(rows[0])
    assert "tok/s" in capsys.readouterr().out


def _deterministic(rows):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


# 47: the resumed run's warm-up read (3 steps in) lands on a log step (log_every 10);
# accumulating micro-batches resumes bit-exactly too
@pytest.mark.parametrize("stop,more", [(50, []), (47, []), (50, ["train.micro_batch_size=2"])])
def test_resume_after_step_limit_is_bit_exact(tmp_path, stop, more):
    full = execute(tiny_config(tmp_path / "a", *MOE, *more))
    first = execute(tiny_config(tmp_path / "b", *MOE, *more, f"run.stop_after_steps={stop}"))
    assert first["status"] == "interrupted" and first["steps"] == stop
    resumed = execute(tiny_config(tmp_path / "b", *MOE, *more))
    assert resumed["status"] == "done"
    assert resumed["final_train_loss"] == full["final_train_loss"]
    assert resumed["val_loss"] == full["val_loss"]
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines()]
    a = read(tmp_path / "a" / "runs" / full["run_id"] / "metrics.jsonl")
    b = read(tmp_path / "b" / "runs" / resumed["run_id"] / "metrics.jsonl")
    assert _deterministic(a) == _deterministic(b)


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    args = [*TINY, *MOE, "budget.flops=2e10", "run.checkpoint_every=20"]
    args.append(f"data.cache_dir={tmp_path}/cache")

    def ready(root):
        progress = list(root.glob("*/progress.json"))
        return (
            list(root.glob("*/checkpoint.pt"))
            and progress
            and (json.loads(progress[0].read_text()) or {}).get("step", 0) >= 50
        )

    k, u, run_dir = kill_resume_and_compare(tmp_path, args, ready)
    assert k["run_id"] == u["run_id"]
    assert (k["final_train_loss"], k["val_loss"]) == (u["final_train_loss"], u["val_loss"])
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines()]
    assert _deterministic(read(run_dir / "metrics.jsonl")) == _deterministic(
        read(next((tmp_path / "u").glob("*/metrics.jsonl")))
    )


def test_rerunning_a_finished_run_does_not_train(tmp_path, capsys):
    first = execute(tiny_config(tmp_path, *MOE))
    metrics = Path(tmp_path) / "runs" / first["run_id"] / "metrics.jsonl"
    before = metrics.stat().st_mtime_ns
    again = execute(tiny_config(tmp_path, *MOE))
    assert again == json.loads((metrics.parent / "summary.json").read_text())
    assert metrics.stat().st_mtime_ns == before
    assert "already done" in capsys.readouterr().out


def test_nan_loss_fails_the_run_with_reason(tmp_path):
    summary = execute(tiny_config(tmp_path, *MOE, "train.nan_at_step=5"))
    assert summary["status"] == "failed"
    assert "non-finite" in summary["reason"] and "step 5" in summary["reason"]
    on_disk = json.loads((Path(tmp_path) / "runs" / summary["run_id"] / "summary.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["reason"] == summary["reason"]
    # a failed run is not retried unless asked
    assert execute(tiny_config(tmp_path, *MOE, "train.nan_at_step=5"))["status"] == "failed"


def test_run_id_ignores_logistics_but_not_science(tmp_path):
    base = from_dict(tiny_config(tmp_path, *MOE)).identity()
    logistics = from_dict(tiny_config(tmp_path, *MOE, "run.log_every=3", "run.dir=/tmp/x"))
    science = from_dict(tiny_config(tmp_path, *MOE, "seed=1"))
    assert logistics.identity() == base
    assert science.identity() != base


@pytest.mark.parametrize(
    "override, message",
    [
        ("budget.flops=1e6", "budget.flops"),
        ("moe.top_k=9", "moe.top_k"),
        ("moe.backend=fastest", "moe.backend"),
        ("data.source=wikipedia", "data.source"),
        ("optim.schedule=linear", "optim.schedule"),
        ("+train.unknown_knob=1", "unknown field"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path, override, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        from_dict(tiny_config(tmp_path, *MOE, override))


def test_cli_bad_config_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "experiments.train", "moe.num_experts=2", "moe.top_k=3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "error: moe.top_k: top_k=3 exceeds num_experts=2"
