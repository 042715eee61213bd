"""Nothing lost, nothing mixed up (issue 12): one test per finding of the probe."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.config import ConfigError, from_dict
from experiments.record import RunDir, read_jsonl
from experiments.sweep.sweep_dir import SweepDir, run_state, to_train
from experiments.train import RunError, execute
from tests.experiments.helpers import TINY, tiny_config

MOE = ["moe.num_experts=4", "moe.top_k=1", "budget.flops=1e10"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def _deterministic(rows):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def _wait_for_step(run_root: Path, step: int, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        progress = list(run_root.glob("*/progress.json"))
        if progress:
            try:
                if json.loads(progress[0].read_text())["step"] >= step:
                    return progress[0].parent
            except (ValueError, KeyError):
                pass
        time.sleep(0.05)
    raise AssertionError("the run finished or stalled before it could be signalled")


# 1. Ctrl-C, SIGTERM and SLURM's USR2 warning save, record "interrupted", exit with one line;
# a rerun matches.
SIGNALLED = [*TINY, *MOE, "budget.flops=1e10", "run.log_every=5", "run.checkpoint_every=1000"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The signalled runs' config trained without a signal, once for all three signals."""
    root = tmp_path_factory.mktemp("uninterrupted")
    cmd = [sys.executable, "-m", "experiments.train", *SIGNALLED, f"run.root={root}/u"]
    subprocess.run([*cmd, f"data.cache_dir={root}/cache"], env=ENV, check=True, capture_output=True)
    return root / "u"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2])
def test_signal_saves_and_resumes_to_the_uninterrupted_result(tmp_path, sig, uninterrupted):
    args = [*SIGNALLED, f"data.cache_dir={tmp_path}/cache"]
    cmd = [sys.executable, "-m", "experiments.train", *args]
    proc = subprocess.Popen(
        [*cmd, f"run.root={tmp_path}/k"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = _wait_for_step(tmp_path / "k", 30, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("stopped: interrupted by " + sig.name)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] >= 30
    assert (run_dir / "checkpoint.pt").exists()
    assert run_state(run_dir)[0] == "interrupted"  # resumable at once, not "running"
    subprocess.run([*cmd, f"run.root={tmp_path}/k"], env=ENV, check=True, capture_output=True)
    k = json.loads((run_dir / "summary.json").read_text())
    u = json.loads(next(uninterrupted.glob("*/summary.json")).read_text())
    assert k["run_id"] == u["run_id"]
    assert (k["final_train_loss"], k["val_loss"]) == (u["final_train_loss"], u["val_loss"])
    assert _deterministic(read_jsonl(run_dir / "metrics.jsonl")[0]) == _deterministic(
        read_jsonl(next(uninterrupted.glob("*/metrics.jsonl")))[0]
    )


# 2. Wrong types are caught before anything runs, with one line naming field, value, type.
@pytest.mark.parametrize(
    "override, message",
    [
        ("moe.top_k=abc", "moe.top_k: expected an integer, got 'abc' (str)"),
        ("moe.num_experts=4.0", "moe.num_experts: expected an integer, got 4.0 (float)"),
        ("model.d_model=64.0", "model.d_model: expected an integer, got 64.0 (float)"),
        ("moe.top_k=1.5", "moe.top_k: expected an integer, got 1.5 (float)"),
        ("moe.renormalize=maybe", "moe.renormalize: expected true or false, got 'maybe' (str)"),
        ("train.batch_size=8.7", "train.batch_size: expected an integer, got 8.7 (float)"),
        (
            "moe.backend=fastest",
            "moe.backend: expected one of 'auto', 'torch', 'native', 'megablocks'",
        ),
    ],
)
def test_wrong_types_fail_with_one_line(tmp_path, override, message):
    with pytest.raises(ConfigError) as e:
        from_dict(tiny_config(tmp_path, *MOE, override))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.slow
def test_cli_type_error_is_one_line_and_trains_nothing(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "moe.num_experts=4.0",
            f"run.root={tmp_path}/runs",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: moe.num_experts: expected an integer, got 4.0 (float)")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_data_problems_are_caught_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"no train\.bin"):
        from_dict(tiny_config(tmp_path, "data=bin", f"data.path={tmp_path}", "data.vocab_size=256"))
    short = tmp_path / "short"
    short.mkdir()
    for i in range(30):
        (short / f"{i}.txt").write_text("ab")  # 60 bytes: shorter than a 32-token window
    with pytest.raises(RunError, match="fewer than model.seq_len"):
        execute(
            tiny_config(
                tmp_path,
                *MOE,
                "data=text",
                f"data.path={short}",
                "data.tokenizer=bytes",
                "data.vocab_size=256",
                "data.val_fraction=0.2",
            )
        )


# 3. "running" comes from the lock, not from a file's age.
@pytest.mark.slow
def test_running_is_decided_by_the_lock(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.create()
    rd.write_progress({"step": 5, "total_steps": 10})  # fresh progress, no one running it
    rd.checkpoint.write_bytes(b"x")
    assert run_state(rd.path)[0] == "interrupted"
    rd.lock()
    try:
        assert run_state(rd.path)[0] == "running"
    finally:
        rd.release()
    assert run_state(rd.path)[0] == "interrupted"


# 4. An explicit run.dir of another config is refused, or taken over on request.
@pytest.mark.slow
def test_run_dir_of_another_config_is_refused(tmp_path):
    shared = f"run.dir={tmp_path}/shared"
    first = execute(tiny_config(tmp_path, *MOE, shared))
    assert first["status"] == "done"
    with pytest.raises(RunError, match="holds run .* not this config's run"):
        execute(tiny_config(tmp_path, *MOE, shared, "seed=1"))
    interrupted = f"run.dir={tmp_path}/half"
    execute(tiny_config(tmp_path, *MOE, interrupted, "run.stop_after_steps=20"))
    with pytest.raises(RunError, match="run.overwrite=true"):
        execute(tiny_config(tmp_path, *MOE, interrupted, "seed=1"))
    taken = execute(tiny_config(tmp_path, *MOE, interrupted, "seed=1", "run.overwrite=true"))
    assert taken["status"] == "done" and taken["seed"] == 1
    rows = read_jsonl(Path(tmp_path) / "half" / "metrics.jsonl")[0]
    assert rows[0]["step"] <= 10 and rows[-1]["step"] == taken["steps"]  # one run's rows


# 6. Setup failures are retried on the next run; training failures need retry_failed.
@pytest.mark.slow
def test_setup_failure_is_retried_automatically(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(RunError, match="CUDA is not available"):
        execute(tiny_config(tmp_path, *MOE, "run.device=cuda"))
    (summary,) = (Path(tmp_path) / "runs").glob("*/summary.json")
    failed = json.loads(summary.read_text())
    assert failed["status"] == "failed" and failed["failure_kind"] == "setup"
    assert to_train({"x": ("failed", "setup", "setup")}, retry_failed=False) == ["x"]
    assert execute(tiny_config(tmp_path, *MOE))["status"] == "done"  # same run id, no flag


@pytest.mark.slow
def test_empty_folder_filled_later_is_retried(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.md").write_text("not a .txt")
    cfg = [
        *MOE,
        "data=text",
        f"data.path={docs}",
        "data.tokenizer=bytes",
        "data.vocab_size=256",
        "data.glob=*.txt",
        "data.val_fraction=0.2",
    ]
    with pytest.raises(RunError, match="no files matching"):
        execute(tiny_config(tmp_path, *cfg))
    for i in range(20):
        (docs / f"{i}.txt").write_text(f"document {i} " * 300)
    assert execute(tiny_config(tmp_path, *cfg))["status"] == "done"


# 8. One process per run directory; metrics stay complete past a garbage line.
@pytest.mark.slow
def test_a_held_run_is_skipped_not_trained_twice(tmp_path):
    cfg = tiny_config(tmp_path, *MOE)
    first = execute(tiny_config(tmp_path, *MOE, "run.stop_after_steps=5"))
    rd = RunDir(Path(tmp_path) / "runs" / first["run_id"])
    before = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
    rd.lock()  # another process is training it
    try:
        again = execute(cfg)
        assert again["status"] == "running" and "is being trained by pid" in again["reason"]
        after = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
        assert {k: v for k, v in after.items() if k != ".lock"} == {
            k: v for k, v in before.items() if k != ".lock"
        }  # nothing touched
    finally:
        rd.release()


@pytest.mark.slow
def test_garbage_metrics_line_is_reported_not_used_to_truncate(tmp_path):
    rd = RunDir(tmp_path)
    rd.append_metrics([{"step": 10}, {"step": 20}])
    with open(rd.metrics, "a") as f:
        f.write("garbage{\n")
    rd.append_metrics([{"step": 30}, {"step": 40}])
    bad = rd.truncate_metrics(30)
    assert bad == [3]
    assert [r["step"] for r in read_jsonl(rd.metrics)[0]] == [10, 20, 30]


# 9. GPU slots are released per run and spread over GPUs (a faked device count).
def test_gpu_slots_are_released_and_spread(tmp_path, monkeypatch):
    from experiments.distributed import devices

    monkeypatch.setenv("MOE_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for _ in range(3):  # the basic launcher: one process, run after run
        with devices.gpu_slot("auto", 1) as d:
            assert d == torch.device("cuda:0")
    with (
        devices.gpu_slot("auto", 2) as a,
        devices.gpu_slot("auto", 2) as b,
        devices.gpu_slot("auto", 2) as c,
        devices.gpu_slot("auto", 2) as d,
    ):
        assert [x.index for x in (a, b, c, d)] == [0, 1, 0, 1]  # both GPUs before packing


# 10. weights_only checkpoints, safe sweep names.
@pytest.mark.slow
def test_checkpoint_loads_with_weights_only(tmp_path):
    first = execute(tiny_config(tmp_path, *MOE, "run.stop_after_steps=5"))
    ckpt = Path(tmp_path) / "runs" / first["run_id"] / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    assert state["run_id"] == first["run_id"] and state["loop"]["step"] == 5


def test_unsafe_sweep_names_are_refused():
    from experiments.sweep.driver import make_plan
    from experiments.sweep.spec import SweepSpec

    spec = SweepSpec.from_dict({"name": "../x", "budgets": [1e10], "sparsity": {"pairs": [[1, 1]]}})
    with pytest.raises(ConfigError, match="sweep.name"):
        make_plan(spec)


# 5. A sweep's report reads the runs of its current plan only.
def test_sweep_report_reads_only_the_planned_runs(tmp_path, monkeypatch):
    import analysis.report
    from experiments.sweep.driver import report

    runs = tmp_path / "runs"
    for rid in ("planned1", "planned2", "old1"):
        (runs / rid).mkdir(parents=True)
    seen = {}

    def fake(source, out, not_in_plan=None, **kw):
        seen.update(source=[Path(p).name for p in source], others=not_in_plan)
        return out / "report.md"

    monkeypatch.setattr(analysis.report, "build_report", fake)
    assert report(SweepDir(tmp_path), ["planned1", "planned2"])
    assert seen == {"source": ["planned1", "planned2"], "others": ["old1"]}


def test_a_report_that_fails_is_said_and_not_a_success(tmp_path, monkeypatch, capsys):
    import analysis.report
    from experiments.sweep.driver import report

    (tmp_path / "runs" / "r1").mkdir(parents=True)
    monkeypatch.setattr(analysis.report, "build_report", lambda *a, **k: 1 / 0)
    assert report(SweepDir(tmp_path), ["r1"]) is False  # the sweep exits 1, not 0
    assert "report not built: ZeroDivisionError" in capsys.readouterr().err


def test_a_schedulers_handler_runs_after_the_run_is_saved():
    """submitit requeues a job from its own USR2 handler: ours saves first, then calls it."""
    from experiments.trainer.interrupts import Interrupted, Interrupts

    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: calls.append(s))
    try:
        with pytest.raises(Interrupted) as e, Interrupts() as interrupts:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert interrupts.requested == signal.SIGUSR2 and calls == []  # ours, not theirs
            raise Interrupted(interrupts.requested, "saved")
        e.value.chain()
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_signal_while_the_record_is_written_acts_once_it_is_written(tmp_path, monkeypatch):
    """torchrun SIGTERMs the ranks left when one is lost, while rank 0 writes that it lost a
    rank: under the default action rank 0 died with no record (CI, 2026-12-02). The signal now
    waits for the record, then does what it would have done (here: a scheduler's handler)."""
    written = []
    seen = []
    record = RunDir.write_summary

    def write_summary(rd, summary):
        os.kill(os.getpid(), signal.SIGTERM)
        record(rd, summary)
        written.append(rd.summary.exists())

    monkeypatch.setattr(RunDir, "write_summary", write_summary)
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(written[:]))
    try:
        s = execute(tiny_config(tmp_path, *MOE, "budget.flops=2e9"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert s["status"] == "done" and written == [True]
    assert seen == [[True]]  # once, and after the record was written


@pytest.mark.slow
def test_retrying_a_failed_run_keeps_what_it_trained(tmp_path, capsys):
    """retry_failed resumes from the failed run's last checkpoint; the failure is kept."""
    args = (*MOE, "budget.flops=2e10", "run.checkpoint_every=10", "train.nan_at_step=45")
    first = execute(tiny_config(tmp_path, *args))
    assert first["status"] == "failed"
    run_dir = tmp_path / "runs" / first["run_id"]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["loop"]["step"] == 40
    capsys.readouterr()
    execute(tiny_config(tmp_path, *args, "run.retry_failed=true"))
    assert "resuming from step 40" in capsys.readouterr().out
    kept = json.loads((run_dir / "previous_failure.json").read_text())
    assert kept["status"] == "failed" and "non-finite" in kept["reason"]


@pytest.mark.slow
def test_a_checkpoint_left_half_written_is_removed_when_the_run_resumes(tmp_path, capsys):
    """A process killed while writing its checkpoint leaves atomic_writer's temporary (on the
    GPU machine: 110-450 MB each, which then filled the records sent back). The next holder of
    the run's lock deletes it and says so; the run resumes from its last whole checkpoint."""
    cfg = tiny_config(tmp_path, *MOE)
    first = execute(tiny_config(tmp_path, *MOE, "run.stop_after_steps=5"))
    rd = RunDir(Path(tmp_path) / "runs" / first["run_id"])
    torn = rd.path / ".checkpoint.pt.k1ll3d.tmp"
    torn.write_bytes(b"\0" * 4096)
    assert execute(cfg)["status"] == "done"
    assert not torn.exists() and not list(rd.path.glob(".*.tmp"))
    assert ".checkpoint.pt.k1ll3d.tmp" in capsys.readouterr().out
