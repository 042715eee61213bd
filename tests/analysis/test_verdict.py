"""The preregistered reading, evaluated on study-shaped tables whose truth is planted."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.verdict import Reading, evaluate, main

READING = Reading(n_boot=200)
WIDTHS = [96, 128, 160, 192, 224, 256]


def _run(rows, tmp_path, **r):
    """One run's row, with a metrics.jsonl whose training loss falls below 3.0 at
    ``r['plateau']`` of its tokens."""
    run_dir = tmp_path / "runs" / f"r{len(rows)}"
    run_dir.mkdir(parents=True)
    plateau = r.pop("plateau")
    with open(run_dir / "metrics.jsonl", "w") as f:
        for k in range(1, 21):
            tokens = r["tokens"] * k / 20
            f.write(json.dumps({"tokens": tokens, "train_loss": 2.5 if k / 20 >= plateau else 4.0}))
            f.write("\n")
    rows.append({"run_id": f"r{len(rows)}", "status": "done", "run_dir": str(run_dir), **r})


def study_table(
    tmp_path,
    delta=-0.05,
    gate_delta=-0.07,
    lr_gain=-0.02,
    lr_gain_secondary=None,
    plateau=0.05,
    epochs=0.7,
    noise=0.004,
    seed=0,
):
    """Dense and E16 (top-1) at 3e15 and 6e15, 6 widths x 2 seeds, each group's minimum inside
    its widths; E16's L* is dense's + ``delta``; a gate arm at E16 (+ ``gate_delta``); the LR
    check's x0.5 / x2 runs at 6e15, ``lr_gain`` better than their planned run (< 0: worse), and
    at 3e15 ``lr_gain_secondary`` better where it is given."""
    gains = {6e15: lr_gain} | ({} if lr_gain_secondary is None else {3e15: lr_gain_secondary})
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for c in (3e15, 6e15):
        for variant, s, shift in (
            ("top1", 0.0, 0.0),
            ("top1", 0.9375, delta),
            ("g2renorm", 0.9375, gate_delta),
        ):
            n_opt = 2.0e6 * (c / 3e15) ** 0.5 * (0.8 if s else 1.0)
            for d in WIDTHS:
                n_active = 2.0e6 * (d / 160) ** 2
                for sd in (0, 1):
                    x = np.log(n_active / n_opt)
                    loss = 1.5 - 0.1 * np.log(c / 3e15) + shift + 0.05 * x * x
                    common = dict(
                        budget_flops=c,
                        sparsity=s,
                        variant=variant,
                        d_model=d,
                        seed=sd,
                        params_total=n_active / (1 - s) if s else n_active,
                        params_active=n_active,
                        params_embedding=0.0,
                        params_active_non_embedding=n_active,
                        tokens=c / (6 * n_active),
                        flops_per_token=6 * n_active,
                        epochs=epochs,
                        plateau=plateau,
                    )
                    _run(
                        rows,
                        tmp_path,
                        **common,
                        sweep="study2",
                        lr=2e-3,
                        val_loss=loss + rng.normal(0, noise),
                    )
                    if c in gains and d == 192 and sd == 0 and variant == "top1":
                        for lr in (1e-3, 4e-3):
                            _run(
                                rows,
                                tmp_path,
                                **common,
                                sweep="study2_lr",
                                lr=lr,
                                val_loss=loss - gains[c],
                            )
    return pd.DataFrame(rows)


def _verdict(tmp_path, **planted):
    table = study_table(tmp_path, **planted)
    table.to_csv(tmp_path / "runs.csv", index=False)
    return evaluate(tmp_path / "runs.csv", READING)


def _states(v):
    return {c["condition"]: c["state"] for c in v["conditions"]}


def test_a_planted_sparse_advantage_with_every_condition_met_is_supported(tmp_path):
    v = _verdict(tmp_path)
    assert v["verdict"] == "supported", v["why"]
    assert set(_states(v).values()) == {"met"}
    lo, hi = v["primary"]["ci"]
    assert lo < -0.05 < hi < 0 and not v["primary"]["censored"]


def test_no_effect_is_rejected(tmp_path):
    v = _verdict(tmp_path, delta=0.0, gate_delta=0.0)
    assert v["verdict"] == "rejected", v["why"]
    assert v["primary"]["ci"][0] > -0.02


@pytest.mark.parametrize(
    "planted, condition",
    [
        ({"lr_gain": 0.03}, "LR check"),  # a check LR 0.03 better: > 2 sigma of 0.004
        ({"gate_delta": 0.03}, "gate"),  # the gate arm worse than dense: the sign flips
        ({"plateau": 0.2}, "early phase"),
        ({"epochs": 0.95}, "epochs"),
    ],
)
def test_each_condition_that_fails_makes_it_inconclusive_and_is_named(tmp_path, planted, condition):
    v = _verdict(tmp_path, **planted)
    assert v["verdict"] == "inconclusive"
    states = _states(v)
    assert states.pop(condition) == "failed"
    assert set(states.values()) == {"met"}
    assert f"{condition} failed" in v["why"]


def test_a_group_lowest_at_its_edge_is_censored_and_not_bracketed(tmp_path):
    table = study_table(tmp_path)
    # E16 at 6e15 without its three smallest widths: lowest at its (new) smallest size
    drop = (table["budget_flops"] == 6e15) & (table["sparsity"] > 0) & (table["d_model"] < 192)
    drop &= table["variant"] == "top1"
    table[~drop].to_csv(tmp_path / "runs.csv", index=False)
    v = evaluate(tmp_path / "runs.csv", READING)
    assert v["primary"]["censored"] and v["primary"]["ci"][1] < 0
    assert _states(v)["bracketed"] == "failed" and v["verdict"] == "inconclusive"


def test_check_runs_may_come_from_a_folder_of_their_own(tmp_path):
    table = study_table(tmp_path, lr_gain=0.03)
    checks = table["sweep"] == "study2_lr"
    table[~checks].to_csv(tmp_path / "grid.csv", index=False)
    table[checks].to_csv(tmp_path / "lr.csv", index=False)
    v = evaluate([tmp_path / "grid.csv", tmp_path / "lr.csv"], READING)
    assert _states(v)["LR check"] == "failed" and "4 pairs" in v["conditions"][5]["detail"]
    assert _states(evaluate(tmp_path / "grid.csv", READING))["LR check"] == "missing"


def test_a_check_lr_winning_at_the_secondary_budget_fails_the_check(tmp_path):
    # the plan re-tunes the LR if a check wins anywhere, not only at the primary budget
    v = _verdict(tmp_path, lr_gain_secondary=0.03)
    lr = next(c for c in v["conditions"] if c["condition"] == "LR check")
    assert lr["state"] == "failed" and lr["pairs"] == 8
    assert "C=6e+15: 4 pairs" in lr["detail"] and "C=3e+15: 4 pairs" in lr["detail"]
    assert _states(_verdict(tmp_path / "fine", lr_gain_secondary=-0.01))["LR check"] == "met"


def test_check_runs_at_the_secondary_budget_alone_are_not_the_check(tmp_path):
    table = study_table(tmp_path, lr_gain_secondary=-0.01)
    table = table[~((table["sweep"] == "study2_lr") & (table["budget_flops"] == 6e15))]
    table.to_csv(tmp_path / "runs.csv", index=False)
    assert _states(evaluate(tmp_path / "runs.csv", READING))["LR check"] == "missing"


def test_missing_check_runs_are_said_missing(tmp_path, capsys):
    table = study_table(tmp_path)
    table[table["sweep"] == "study2"].to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "reading.json").write_text(json.dumps({"n_boot": 100}))
    out = tmp_path / "verdict"
    assert (
        main(
            [
                str(tmp_path / "runs.csv"),
                "--reading",
                str(tmp_path / "reading.json"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    v = json.loads((out / "verdict.json").read_text())
    assert v["verdict"] == "inconclusive" and _states(v)["LR check"] == "missing"
    assert "| LR check | missing |" in capsys.readouterr().out


def test_an_unknown_reading_key_is_refused_with_one_line(tmp_path, capsys):
    (tmp_path / "reading.json").write_text(json.dumps({"primary": 6e15}))
    study_table(tmp_path).to_csv(tmp_path / "runs.csv", index=False)
    assert main([str(tmp_path / "runs.csv"), "--reading", str(tmp_path / "reading.json")]) == 2
    assert "unknown reading keys ['primary']" in capsys.readouterr().err


def test_a_reading_value_of_the_wrong_type_is_refused_with_one_line(tmp_path, capsys):
    (tmp_path / "reading.json").write_text(json.dumps({"primary_budget": "6e15"}))
    study_table(tmp_path).to_csv(tmp_path / "runs.csv", index=False)
    assert main([str(tmp_path / "runs.csv"), "--reading", str(tmp_path / "reading.json")]) == 2
    assert "primary_budget='6e15' is not a float" in capsys.readouterr().err
