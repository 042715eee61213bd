"""The pilot table: groups by what varies, pools the seed noise, times the early plateau and
leaves out runs that never learned."""

import json
import math

from analysis import pilot


def _run(root, rid, variant, E, lr, seed, val, losses, d_model=256):
    d = root / rid
    d.mkdir(parents=True)
    # with the fields every runs table has (analysis.collect.REQUIRED)
    summary = {
        "run_id": rid,
        "status": "done",
        "variant": variant,
        "num_experts": E,
        "granularity": 1,
        "top_k": 1,
        "lr": lr,
        "seed": seed,
        "val_loss": val,
        "icl_score": -0.5,
        "tokens": 1000.0,
        "budget_flops": 1e15,
        "d_model": d_model,
        "sparsity": 1 - 1 / E,
        "params_total": 1e6 * E,
        "params_active": 1e6,
        "flops_per_token": 6e6,
    }
    (d / "summary.json").write_text(json.dumps(summary))
    rows = [
        {"step": i + 1, "tokens": 100.0 * (i + 1), "train_loss": x} for i, x in enumerate(losses)
    ]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_pilot_table_pools_sigma_times_the_plateau_and_sets_stuck_runs_apart(tmp_path, capsys):
    runs = tmp_path / "runs"
    _run(runs, "a0", "hd32", 1, 2e-3, 0, 1.60, [5.0, 3.5, 2.9, 2.0])
    _run(runs, "a1", "hd32", 1, 2e-3, 1, 1.62, [5.0, 2.8, 2.5, 2.0])
    _run(runs, "b0", "hd32", 16, 2e-3, 0, 1.70, [5.0, 4.0, 3.5, 2.8])
    _run(runs, "b1", "hd32", 16, 2e-3, 1, 1.66, [5.0, 4.0, 3.5, 2.5])
    _run(runs, "c0", "hd32", 16, 1e-3, 0, 7.70, [9.0, 9.5, 8.0, 7.5])  # never learned
    df = pilot.read_runs([runs], level=3.0)
    assert len(df) == 5
    assert pilot.plateau_tokens(runs / "a0" / "metrics.jsonl", 3.0) == 300.0
    assert pilot.plateau_tokens(runs / "c0" / "metrics.jsonl", 3.0) is None
    learned = df[df["val_loss"] < 5.0]
    sigma, dof = pilot.pooled_sigma(learned)
    want = math.sqrt((0.01**2 * 2 + 0.02**2 * 2) / 2)  # each pair's variance is diff^2 / 2
    assert dof == 2 and math.isclose(sigma, want, rel_tol=1e-9)
    t = pilot.table(learned).set_index("num_experts")
    assert math.isclose(t.loc[1, "plateau_mtokens"], 250e-6)  # (300 + 200) / 2 tokens
    assert math.isclose(t.loc[16, "plateau_fraction"], 0.4)
    assert pilot.main([str(runs), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "did not learn (left out): c0" in out and "(2 d.o.f.)" in out
    assert json.loads((tmp_path / "out" / "pilot.json").read_text())["stuck"] == ["c0"]


def test_a_grid_of_sizes_is_never_pooled_into_the_seed_noise(tmp_path):
    """On a main grid (study 2's first runs) grouping by E alone made the widths' loss
    differences look like seed noise: sigma 0.029 where the seed pairs give 0.007."""
    runs = tmp_path / "runs"
    for d, base in ((192, 1.44), (256, 1.45), (352, 1.50)):
        _run(runs, f"w{d}s0", "top1", 1, 2e-3, 0, base, [5.0, 2.0], d_model=d)
        _run(runs, f"w{d}s1", "top1", 1, 2e-3, 1, base + 0.01, [5.0, 2.0], d_model=d)
    df = pilot.read_runs([runs], level=3.0)
    sigma, dof = pilot.pooled_sigma(df)
    assert dof == 3 and math.isclose(sigma, 0.01 / math.sqrt(2), rel_tol=1e-6)
    assert sorted(pilot.table(df)["d_model"]) == [192, 256, 352]
