import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.collect import collect
from analysis.compare import compare
from analysis.isoflop import fit_parabola, isoflop_group, isoflop_table
from analysis.laws import CHINCHILLA, Columns
from tests.analysis.synth import isoflop_table as synth_table
from tests.analysis.synth import random_points


def test_parabola_finds_planted_minimum():
    rng = np.random.default_rng(0)
    n0, l0 = 3.3e8, 2.45
    n = n0 * 1.8 ** np.arange(-3, 4)
    loss = l0 + 0.07 * np.log(n / n0) ** 2 + rng.normal(0, 0.002, len(n))
    x, lstar, _ = fit_parabola(np.log(n), loss)
    assert np.exp(x) == pytest.approx(n0, rel=0.05)
    assert lstar == pytest.approx(l0, abs=0.005)
    g = pd.DataFrame({"n": n, "loss": loss, "tokens": 1e20 / (6 * n)})
    r = isoflop_group(g, "n", "loss", "tokens", n_boot=300)
    assert r["n_star_ci"][0] <= n0 <= r["n_star_ci"][1]
    assert r["bracketed"] and r["d_star"] == pytest.approx(1e20 / (6 * r["n_star"]), rel=0.02)


def test_isoflop_table_per_budget_and_sparsity():
    df = synth_table()
    iso = isoflop_table(df, n_boot=100)
    assert len(iso) == 2 * 4 and iso["n_star"].notna().all()
    assert (iso["n_star_active"] < iso["n_star"] * 1.0001).all()


def _run(dirpath, summary):
    dirpath.mkdir(parents=True)
    (dirpath / "summary.json").write_text(summary)


def test_collect_skips_corrupt_and_partial_runs(tmp_path):
    good = synth_table().iloc[0].to_dict() | {"versions": {"torch": "x"}}
    _run(tmp_path / "good", json.dumps(good))
    _run(tmp_path / "corrupt", '{"run_id": "x", "status": "do')
    _run(tmp_path / "partial", json.dumps({"run_id": "p", "status": "done"}))
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "config.yaml").write_text("seed: 0\n")
    df, skipped = collect(tmp_path)
    assert list(df["run_id"]) == ["r0"]
    reasons = {p.split("/")[-1]: r for p, r in skipped}
    assert set(reasons) == {"corrupt", "partial", "running"}
    assert "corrupt summary.json" in reasons["corrupt"]
    assert "lacks" in reasons["partial"] and "no summary.json" in reasons["running"]


def test_report_cli_writes_table_fits_and_every_figure(tmp_path):
    table = tmp_path / "runs.csv"
    df = synth_table()
    # one (budget, sparsity) group whose losses have no minimum (a concave parabola)
    bad = (df["budget_flops"] == 1e18) & (df["sparsity"] == 0.5)
    df.loc[bad, "val_loss"] = 3.0 - 0.01 * (np.log(df.loc[bad, "params_total"]) - 17) ** 2
    df.to_csv(table, index=False)
    out = tmp_path / "rep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.report",
            str(table),
            "--out",
            str(out),
            "--bootstrap",
            "60",
            "--inits",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    figs = [
        "isoflop_curves",
        "isoflop_curves_active",
        "loss_star_vs_sparsity",
        "n_star_vs_sparsity",
        "law_fit_chinchilla",
        "law_fit_apple",
        "bootstrap_chinchilla",
        "bootstrap_apple",
        "s_star_vs_n_apple",
    ]
    for f in figs:
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{f}.{ext}").stat().st_size > 1000, f
    fits = json.loads((out / "fits.json").read_text())
    assert set(fits["laws"]["chinchilla"]["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert set(fits["laws"]["apple"]["params"]) == {
        "a",
        "b",
        "c",
        "d",
        "e",
        "alpha",
        "beta",
        "gamma",
        "delta",
        "lambda",
    }
    assert fits["laws"]["apple"]["holdout"]["held_out"]["n"] == 10
    md = (out / "report.md").read_text()
    assert all(f"figures/{f}.png" in md for f in figs)
    assert (out / "runs.parquet").exists()


def test_report_fits_a_foreign_table_by_column_flags(tmp_path):
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 60))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 60))
    loss = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
    pd.DataFrame({"params": n, "toks": d, "L": loss}).to_csv(tmp_path / "pub.csv", index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.report",
            str(tmp_path / "pub.csv"),
            "--law",
            "chinchilla",
            "--N",
            "params",
            "--D",
            "toks",
            "--loss",
            "L",
            "--bootstrap",
            "50",
            "--inits",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert fits["laws"]["chinchilla"]["params"]["alpha"]["estimate"] == pytest.approx(
        0.34, rel=0.02
    )


def test_compare_flags_differences(tmp_path):
    # two corpora: same exponents, a different irreducible loss E
    for name, e, seed in (("a", 1.69, 1), ("b", 2.1, 2)):
        true = {"A": 406.4, "B": 410.7, "E": e, "alpha": 0.34, "beta": 0.28}
        data, y = random_points(CHINCHILLA, true, 80, noise=0.003, seed=seed)
        pd.DataFrame(
            {"params_active": data["N"], "tokens": data["D"], "val_loss": y, "sparsity": 0.0}
        ).to_csv(tmp_path / f"{name}.csv", index=False)
    text = compare(
        [tmp_path / "a.csv", tmp_path / "b.csv"], ["chinchilla"], Columns(), False, 100, None
    )
    line = next(x for x in text.splitlines() if x.startswith("E "))
    assert "intervals do not overlap" in line
    alpha = next(x for x in text.splitlines() if x.startswith("alpha "))
    assert "do not overlap" not in alpha


def test_analysis_runs_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import analysis.report, analysis.compare, analysis.collect, analysis.figures\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr
