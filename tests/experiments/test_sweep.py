import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.sweep.driver import make_plan
from experiments.sweep.spec import SweepSpec
from experiments.sweep.sweep_dir import SweepDir
from models import ConfigError
from tests.experiments.helpers import CONF


def _spec(name="demo", **changes) -> SweepSpec:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("launch", overrides=[f"sweep={name}"])
    d = OmegaConf.to_container(cfg.sweep, resolve=True)
    d.update(changes)
    return SweepSpec.from_dict(d)


def _plan(spec):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return make_plan(spec)[0]


def test_demo_grid_spends_budgets_brackets_optimum_and_sparsity():
    spec = _spec("demo")
    runs = _plan(spec)
    assert len(runs) == len(spec.budgets) * 3 * spec.sizes.count
    for r in runs:
        assert abs(r.flops - r.budget) / r.budget < 0.01
        assert r.sparsity == pytest.approx(1 - r.top_k / r.num_experts)
        assert r.steps >= spec.sizes.min_steps
    for budget in spec.budgets:
        for E, _K in spec.sparsity.expert_pairs():
            group = [r for r in runs if r.budget == budget and r.num_experts == E]
            ns = sorted(r.n_rule for r in group)
            assert ns[0] <= group[0].n_target <= ns[-1]
            assert len({r.d_model for r in group}) == len(group)
    assert len({r.run_id for r in runs}) == len(runs)


def test_sparsity_values_rule():
    spec = _spec("demo", sparsity={"values": [0.0, 0.5, 0.75], "top_k": 2})
    assert spec.sparsity.expert_pairs() == [(2, 2), (4, 2), (8, 2)]
    with pytest.raises(ConfigError, match="not an integer"):
        _spec("demo", sparsity={"values": [0.3], "top_k": 1}).sparsity.expert_pairs()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"budgets": [1e6]}, "fewer than"),
        ({"budgets": [1e9], "family": {"d_model_min": 128, "head_dim": 8}}, "fewer than"),
        ({"sizes": {"count": 3, "min_steps": 5000}}, "only [0-9]+ steps"),
        ({"budgets": [1e19]}, "d_model_max"),
    ],
)
def test_infeasible_specs_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        _plan(_spec("demo", **changes))


def _python(tmp_path, *args, env=None, timeout=600):
    """``python -m <args>`` in tmp_path, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout,
        check=False,
    )


def _sweep(tmp_path, *args, name="micro"):
    env = dict(os.environ, MOE_SCALING_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    sweep = [f"sweep={name}", "report=false", f"hydra.sweep.dir={tmp_path / 'sw'}"]
    return _python(tmp_path, "experiments.sweep", *sweep, *args, env=env)


@pytest.mark.slow
def test_micro_sweep_goes_past_a_failed_run_retries_it_then_trains_nothing(tmp_path):
    """The micro sweep's first budget, dense only (3 runs): a run whose directory holds a
    corrupt checkpoint fails and the sweep goes on; status says so; retry_failed trains it; a
    further invocation trains nothing."""
    now = ("budgets=[1e10]", "sweep.sparsity.pairs=[[1,1]]")
    spec = _spec("micro", sparsity={"pairs": [[1, 1]]})
    plan = [r for r in _plan(spec) if r.budget == 1e10]  # the ids the sweep plans
    victim = plan[2]
    (tmp_path / "sw" / "runs" / victim.run_id).mkdir(parents=True)
    (tmp_path / "sw" / "runs" / victim.run_id / "checkpoint.pt").write_bytes(b"corrupt checkpoint")
    out = _sweep(tmp_path, *now)
    assert out.returncode == 1
    assert "2 done" in out.stdout and "1 failed" in out.stdout
    assert f"FAILED {victim.name} ({victim.run_id})" in out.stdout
    status = _sweep(tmp_path, *now, "action=status")
    assert "1 failed" in status.stdout
    retried = _sweep(tmp_path, *now, "retry_failed=true")
    assert retried.returncode == 0 and "3 runs: 3 done" in retried.stdout
    # each invocation's throughput says what it ran under: one run now, on CPU (no MPS)
    last = SweepDir(tmp_path / "sw").throughput_log()[-1]
    assert (last["runs"], last["runs_at_once"], last["mps"]) == (1, 1, None)
    summaries = [
        json.loads(p.read_text()) for p in (tmp_path / "sw" / "runs").glob("*/summary.json")
    ]
    assert len(summaries) == 3 and {s["sweep"] for s in summaries} == {"micro"}
    assert {s["run_id"] for s in summaries} == {r.run_id for r in plan}
    second = _sweep(tmp_path, *now)
    assert second.returncode == 0
    assert "nothing to train" in second.stdout and "launching" not in second.stdout


@pytest.mark.slow
def test_lr_tuning_budget_plans_the_rest_with_fitted_lrs(tmp_path):
    from experiments.sweep.driver import plan_sweep

    spec = _spec("micro", lrs=[1e-3, 3e-3, 1e-2], lr_tuning_budget=1e10, lr_rule_at_edge="warn")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        runs, _, note = plan_sweep(spec, SweepDir(tmp_path))
        assert note.startswith("LR tuning first") and {r.budget for r in runs} == {1e10}
        assert len(runs) == 2 * 3 * 3  # 2 sparsities x 3 sizes x 3 LRs
        # the tuning runs finish: the best LR falls with size (planted)
        for r in runs:
            best = 3e-3 if r.d_model <= 12 else 1e-3
            (tmp_path / "runs" / r.run_id).mkdir(parents=True)
            (tmp_path / "runs" / r.run_id / "summary.json").write_text(
                json.dumps(
                    {
                        "status": "done",
                        "lr": r.lr,
                        "params_active_non_embedding": r.n_rule,
                        "val_loss": 2.0 + abs(np.log(r.lr / best)),
                    }
                )
            )
        runs, _, note = plan_sweep(spec, SweepDir(tmp_path))
    rest = [r for r in runs if r.budget == 2e10]
    assert "tuned points" in note and len(rest) == 2 * 3
    assert all(1e-3 <= r.lr <= 1e-2 for r in rest)
    small, large = min(rest, key=lambda r: r.d_model), max(rest, key=lambda r: r.d_model)
    assert small.lr > large.lr  # carried up: larger models get the smaller LR
    assert (tmp_path / "lr_rule.json").exists()


@pytest.mark.slow
def test_a_kept_lr_rule_plans_the_same_lrs_on_any_machine(tmp_path, capsys):
    """The LR is part of each run's identity: a refit that differs in the last bits (another
    BLAS or Python) must not rename every finished run, so the kept rule is reused while the
    tuned points are the same, and refitted when they change."""
    from experiments.sweep.driver import plan_sweep

    spec = _spec("micro", lrs=[1e-3, 3e-3, 1e-2], lr_tuning_budget=1e10, lr_rule_at_edge="warn")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        tune, _, _ = plan_sweep(spec, SweepDir(tmp_path))
        for r in tune:
            best = 3e-3 if r.d_model <= 12 else 1e-3
            summary = {
                "status": "done",
                "lr": r.lr,
                "params_active_non_embedding": r.n_rule,
                "val_loss": 2.0 + abs(np.log(r.lr / best)),
            }
            (tmp_path / "runs" / r.run_id).mkdir(parents=True)
            (tmp_path / "runs" / r.run_id / "summary.json").write_text(json.dumps(summary))
        first = {r.name: r.run_id for r in plan_sweep(spec, SweepDir(tmp_path))[0]}
        kept = json.loads((tmp_path / "lr_rule.json").read_text())
        kept["coef"][0] += 1e-12  # another machine's fit, a few bits away
        (tmp_path / "lr_rule.json").write_text(json.dumps(kept))
        again = {r.name: r.run_id for r in plan_sweep(spec, SweepDir(tmp_path))[0]}
        assert again.keys() == first.keys() and again != first  # the kept coefficients rule
        assert json.loads((tmp_path / "lr_rule.json").read_text())["coef"] == kept["coef"]
        # a tuning run is redone with another result: the kept rule no longer applies
        victim = tmp_path / "runs" / tune[0].run_id / "summary.json"
        victim.write_text(json.dumps(json.loads(victim.read_text()) | {"val_loss": 0.5}))
        plan_sweep(spec, SweepDir(tmp_path))
    assert "refitted" in capsys.readouterr().out
    assert json.loads((tmp_path / "lr_rule.json").read_text())["coef"] != kept["coef"]


def test_the_rule_sums_exactly():
    """Python 3.12's sum() of floats compensates and 3.11's does not: the rule must give the
    same LR under both (the LR names the run), so it sums exactly."""
    import math
    from types import SimpleNamespace

    from experiments.sweep.lr_rule import LRRule
    from models.accounting import account
    from models.config import ModelConfig, MoEConfig

    model = ModelConfig(d_model=16, n_heads=2, n_layers=2, d_ff=64, seq_len=32, vocab_size=64)
    model.moe = MoEConfig(num_experts=4, top_k=1)
    x = [1.0, math.log(account(model).params_active_non_embedding), math.log(4)]
    coef = [-5.0, 3e-16 / x[1], 3e-16 / x[2]]  # each term under half an ulp of 5
    terms = [c * v for c, v in zip(coef, x)]
    assert (terms[0] + terms[1]) + terms[2] != math.fsum(terms)  # left to right loses them
    lr = LRRule(coef=coef, grid=[1e-9, 1.0], points=[], at_edge=0)(SimpleNamespace(model=model))
    assert lr == math.exp(math.fsum(terms))


def test_replicate_seeds_at_chosen_groups():
    spec = _spec("micro", replicates={"seeds": [1], "groups": [[1e10, 0.75]]})
    runs = _plan(spec)
    extra = [r for r in runs if r.name.endswith("_s1")]
    assert len(extra) == 3 and all(r.budget == 1e10 and r.sparsity == 0.75 for r in extra)


@pytest.mark.parametrize("group", [[1e10, 0.7], [3e10, 0.75], [1e10]])
def test_replicate_groups_that_match_nothing_are_refused(group):
    with pytest.raises(ConfigError, match=r"sweep.replicates.groups: .*(matches no|is not a)"):
        _spec("micro", replicates={"seeds": [1], "groups": [group]})


@pytest.mark.slow
def test_train_only_some_budgets_now(tmp_path):
    from experiments.sweep.driver import plan_sweep

    spec = _spec("micro")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        runs, _, _ = plan_sweep(spec, SweepDir(tmp_path), only=[2e10])
        assert {r.budget for r in runs} == {2e10}
        with pytest.raises(ConfigError, match="not among the spec's budgets"):
            plan_sweep(spec, SweepDir(tmp_path), only=[3e10])


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in os.listdir("/proc"):
        try:
            with open(f"/proc/{proc}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(proc))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.slow
def test_stopping_the_driver_stops_its_runs(tmp_path):
    """SIGTERM to the sweep driver reaches every run: they save and stop, nothing trains on."""
    import signal
    import time

    sweep_dir = tmp_path / "sw"
    cmd = [
        sys.executable,
        "-m",
        "experiments.sweep",
        "sweep=micro",
        "sweep.budgets=[3e11]",
        "report=false",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", MOE_SCALING_CACHE=str(tmp_path / "cache"))
    driver = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not list(sweep_dir.glob("runs/*/progress.json")):
        time.sleep(0.2)
    assert driver.poll() is None, "the sweep ended before it could be stopped"
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 128 + signal.SIGTERM and "SIGTERM: passed to the runs" in out
    deadline = time.time() + 30
    while time.time() < deadline and _processes_mentioning(str(sweep_dir)):
        time.sleep(0.2)
    assert not _processes_mentioning(str(sweep_dir)), "runs kept training after the driver"
    started = list(sweep_dir.glob("runs/*/progress.json"))
    saved = [p.parent for p in started if (p.parent / "checkpoint.pt").exists()]
    done = [p.parent for p in started if (p.parent / "summary.json").exists()]
    assert saved or done
    assert not list(sweep_dir.glob(".stopping.*")), "the stop marker outlived its driver"


def _finish_tuning(runs_root, runs, best_lr):
    """Write a done summary for every tuning run: loss grows with |log(lr / best)|."""
    for r in runs:
        d = runs_root / r.run_id
        if (d / "summary.json").exists():
            continue
        d.mkdir(parents=True, exist_ok=True)
        loss = 2.0 + abs(np.log(r.lr / best_lr(r)))
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "status": "done",
                    "lr": r.lr,
                    "params_active_non_embedding": r.n_rule,
                    "val_loss": loss,
                }
            )
        )


def test_an_lr_rule_fitted_at_the_edge_of_its_grid_is_refused_with_the_fix(tmp_path):
    from experiments.sweep.driver import plan_sweep

    spec = _spec("micro", lrs=[1e-3, 2e-3, 4e-3], lr_tuning_budget=1e10)
    warned = _spec("micro", lrs=[1e-3, 2e-3, 4e-3], lr_tuning_budget=1e10, lr_rule_at_edge="warn")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        tune, _, _ = plan_sweep(spec, SweepDir(tmp_path))
        _finish_tuning(tmp_path / "runs", tune, lambda r: 2e-2)  # every point wants more
        with pytest.raises(
            ConfigError, match=r"at the edge of its grid at 6 of 6 tuned points"
        ) as e:
            plan_sweep(spec, SweepDir(tmp_path))
        assert "extend sweep.lrs to [0.001, 0.002, 0.004, 0.008]" in str(e.value)
        _, _, note = plan_sweep(warned, SweepDir(tmp_path))
    assert "warning: the LR rule is refused" in note


def test_lr_grid_auto_extends_the_grid_where_the_best_is_at_its_edge(tmp_path):
    from experiments.sweep.driver import plan_sweep

    spec = _spec("micro", lrs=[1e-3, 2e-3, 4e-3], lr_tuning_budget=1e10, lr_grid="auto")
    best = lambda r: 8e-3 if r.d_model <= 12 else 2e-3  # small models want one step more
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        tune, _, _ = plan_sweep(spec, SweepDir(tmp_path))
        assert len(tune) == 18
        _finish_tuning(tmp_path / "runs", tune, best)
        grown, _, note = plan_sweep(spec, SweepDir(tmp_path))
        added = [r for r in grown if r.lr not in (1e-3, 2e-3, 4e-3)]
        assert added and {r.lr for r in added} == {8e-3} and "extended at" in note
        assert all(r.d_model <= 12 for r in added)
        _finish_tuning(tmp_path / "runs", grown, best)  # 8e-3 wins there: one step more
        grown2, _, _ = plan_sweep(spec, SweepDir(tmp_path))
        assert {r.lr for r in grown2} >= {8e-3, 0.016}
        _finish_tuning(tmp_path / "runs", grown2, best)  # 1.6e-2 loses: the best is interior
        runs, _, note = plan_sweep(spec, SweepDir(tmp_path))
    assert {r.budget for r in runs} == {1e10, 2e10} and "tuned points" in note


@pytest.mark.parametrize(
    "sizes", [{"tokens_per_param_exponent": 1.0}, {"tokens_per_param": [40.0, 160.0]}]
)
def test_each_sparsity_is_centred_on_its_own_optimum(sizes):
    """The sparse optimum sits at fewer active parameters trained on more tokens: a prior per
    sparsity centres its sizes there (same-active-sizes would make "N*_active flat" mechanical)."""
    base = _plan(_spec("micro"))
    spec = _spec("micro", sizes=_spec("micro").sizes.__dict__ | sizes)
    runs = _plan(spec)

    def active(rs, e):
        return sorted(r.params_active for r in rs if r.budget == 1e10 and r.num_experts == e)

    def centre(rs, e):
        return float(np.mean(np.log(active(rs, e))))

    assert abs(centre(base, 4) - centre(base, 1)) < 0.05  # the same active sizes before
    assert centre(runs, 4) < centre(runs, 1) - np.log(1.4)  # the sparse group centred lower
    assert active(runs, 1) == active(base, 1)  # dense unchanged


def test_a_plan_past_the_corpus_is_refused(tmp_path):
    out = _sweep(tmp_path, "action=plan", "sweep.budgets=[1e13]", "sweep.family.d_model_max=256")
    assert out.returncode == 2
    assert "sweep.sizes.max_epochs=1: 2 run(s) would train on more than 1 epoch" in out.stderr


def test_a_coarse_ladder_takes_neighbouring_members_with_consecutive_spacing():
    """Widths in steps of a head size (N ~ d^2: 1.3-4x apart) cannot centre sizes spaced a
    fixed ratio apart; ``spacing: consecutive`` takes neighbouring members around the rule."""
    coarse = _spec("micro").family.__dict__ | {"head_dim": 16, "d_model_min": 16}
    coarse |= {"d_model_step": 16}
    sizes = _spec("micro").sizes.__dict__ | {"count": 4, "spacing": 1.5}
    with pytest.raises(ConfigError, match="cannot centre 4 sizes"):
        _plan(_spec("micro", family=coarse, sizes=sizes))
    runs = _plan(_spec("micro", family=coarse, sizes=sizes | {"spacing": "consecutive"}))
    ladder = list(range(16, 129, 16))
    for group in {(r.budget, r.num_experts) for r in runs}:
        widths = sorted(r.d_model for r in runs if (r.budget, r.num_experts) == group)
        first = ladder.index(widths[0])
        assert widths == ladder[first : first + 4], (group, widths)
    with pytest.raises(ConfigError, match="spacing > 1"):
        _spec("micro", sizes=sizes | {"spacing": 0.5})
