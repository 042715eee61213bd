import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.collect import TableError, collect, done_runs
from analysis.compare import compare, distinct_labels
from analysis.laws import CHINCHILLA, Columns
from analysis.report import build_report
from analysis.synthetic import random_points
from tests.analysis.synth import sweep_table

pytestmark = pytest.mark.slow  # trains runs, sweeps, prepares corpora or fits laws


def _report(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "analysis.report", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_report_on_a_sweep_table_fits_every_law_and_writes_every_figure(tmp_path):
    table = tmp_path / "runs.csv"
    sweep_table().to_csv(table, index=False)
    out = tmp_path / "rep"
    proc = _report(table, "--out", out, "--bootstrap", "20", "--inits", "8")
    assert proc.returncode == 0, proc.stderr
    fits = json.loads((out / "fits.json").read_text())
    groups = fits["isoflop"]["groups"]
    assert len(groups) == 15 and all(g["bracketed"] for g in groups)
    assert fits["isoflop"]["noise"]["source"] == "residuals"
    # 3 bracketed budgets: C-exponents exist for every sparsity, with intervals
    for s, v in fits["isoflop"]["size_scaling"].items():
        assert len(v["n_star"]["ci"]) == 2, s
    apple = fits["laws"]["apple"]
    assert apple["identifiable"] and apple["holdout"]["held_out"]["n"] == 15
    # optima searched inside the trained sparsity range only
    for o in apple["optima"].values():
        assert 0.0 <= o["joint"]["s"] <= 0.9375
    assert set(fits["laws"]) >= {"chinchilla@S=0.0000", "apple", "joint_moe"}
    for f in (
        "isoflop_curves",
        "isoflop_curves_active",
        "loss_star_vs_sparsity",
        "n_star_vs_sparsity",
        "law_fit_apple",
        "bootstrap_apple",
        "s_star_vs_n_apple",
    ):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{f}.{ext}").stat().st_size > 1000, f
    md = (out / "report.md").read_text()
    assert "Slope of L\\* vs S" in md and "best observed" in md


def test_unbracketed_groups_are_excluded_and_exponents_need_three_budgets(tmp_path):
    df = sweep_table(budgets=(1e18, 1e19), sparsities=(0.0, 0.5, 0.75))
    # make one group's optimum fall below its sizes: the smallest model wins
    g = (df["budget_flops"] == 1e19) & (df["sparsity"] == 0.5)
    df.loc[g, "val_loss"] = df.loc[g, "val_loss"] + 0.05 * np.arange(g.sum())
    df.to_csv(tmp_path / "t.csv", index=False)
    build_report(tmp_path / "t.csv", tmp_path / "rep", laws=("apple",), n_boot=50, max_inits=16)
    fits = json.loads((tmp_path / "rep" / "fits.json").read_text())
    bad = [x for x in fits["isoflop"]["groups"] if not x["bracketed"]]
    assert len(bad) == 1 and "smallest size" in bad[0]["why_not_bracketed"]
    assert fits["isoflop"]["loss_star_vs_sparsity"]["1e+19"]["excluded_sparsities"] == [0.5]
    assert all("needs 3" in v["reason"] for v in fits["isoflop"]["size_scaling"].values())
    assert fits["laws"]["apple"]["identifiable"] is False
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Not identifiable from these runs" in md


def test_a_published_table_with_continuous_budgets(tmp_path):
    """Budgets read off a paper's figure are never equal: they are grouped by tolerance."""
    df = sweep_table(budgets=(1e18, 1e19, 1e20), sparsities=(0.0,))
    rng = np.random.default_rng(0)
    df["budget_flops"] *= np.exp(rng.uniform(-0.02, 0.02, len(df)))
    df[["params_total", "tokens", "val_loss", "budget_flops"]].rename(
        columns={"params_total": "N"}
    ).to_csv(tmp_path / "pub.csv", index=False)
    proc = _report(
        tmp_path / "pub.csv",
        "--N",
        "N",
        "--law",
        "chinchilla",
        "--bootstrap",
        "40",
        "--inits",
        "32",
    )
    assert proc.returncode == 0, proc.stderr
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert len(fits["isoflop"]["groups"]) == 3
    assert any("clustered into 3" in n for n in fits["notes"])
    # and one whose budgets never repeat 3 times: the IsoFLOP part is skipped with a reason
    one = df.iloc[::5][["params_total", "tokens", "val_loss", "budget_flops"]]
    one.to_csv(tmp_path / "few.csv", index=False)
    proc = _report(
        tmp_path / "few.csv",
        "--N",
        "params_total",
        "--law",
        "chinchilla",
        "--bootstrap",
        "20",
        "--inits",
        "16",
    )
    assert proc.returncode == 0, proc.stderr
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert "3 or more sizes" in fits["isoflop"]["skipped"]


def test_report_fits_a_foreign_table_by_column_flags(tmp_path):
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 60))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 60))
    loss = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
    pd.DataFrame({"params": n, "toks": d, "L": loss}).to_csv(tmp_path / "pub.csv", index=False)
    proc = _report(
        tmp_path / "pub.csv",
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
    )
    assert proc.returncode == 0, proc.stderr
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert fits["laws"]["chinchilla"]["params"]["alpha"]["estimate"] == pytest.approx(
        0.34, rel=0.02
    )


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("empty", "not a readable table"),
        ("no_loss", "needs column(s) ['val_loss']"),
        ("inf", "not a finite positive number: r1=inf"),
        ("negative", "not a finite positive number: r2=-1.0"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path, case, message):
    path = tmp_path / "t.csv"
    df = sweep_table(budgets=(1e18,), sparsities=(0.0,))
    if case == "empty":
        path.write_text("")
    elif case == "no_loss":
        df.drop(columns=["val_loss"]).to_csv(path, index=False)
    elif case == "inf":
        df.loc[1, "val_loss"] = np.inf
        df.to_csv(path, index=False)
    elif case == "negative":
        df.loc[2, "val_loss"] = -1.0
        df.to_csv(path, index=False)
    proc = _report(path, "--bootstrap", "10")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_too_few_runs_for_a_law_is_reported_not_fitted(tmp_path):
    df = sweep_table(budgets=(1e18,), sparsities=(0.0,), sizes=3)
    df.to_csv(tmp_path / "t.csv", index=False)
    proc = _report(tmp_path / "t.csv", "--law", "chinchilla", "--bootstrap", "10")
    assert proc.returncode == 0, proc.stderr
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert fits["laws"]["chinchilla"]["identifiable"] is False


def _run(dirpath, summary):
    dirpath.mkdir(parents=True)
    (dirpath / "summary.json").write_text(summary)


def test_collect_skips_corrupt_and_partial_runs(tmp_path):
    good = sweep_table().iloc[0].to_dict() | {"versions": {"torch": "x"}}
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
    # an explicit list reads exactly those directories
    df, _ = collect([tmp_path / "good"])
    assert len(df) == 1


def test_done_runs_lists_every_bad_loss():
    df = pd.DataFrame(
        {"run_id": ["a", "b", "c"], "status": ["done"] * 3, "val_loss": [1.0, 0.0, float("nan")]}
    )
    with pytest.raises(TableError, match=r"b=0\.0"):
        done_runs(df, "val_loss")


def test_compare_flags_differences_and_labels_inputs_apart(tmp_path):
    for name, e, seed in (("a", 1.69, 1), ("b", 2.1, 2)):
        true = {"A": 406.4, "B": 410.7, "E": e, "alpha": 0.34, "beta": 0.28}
        data, y = random_points(CHINCHILLA, true, 80, noise=0.003, seed=seed)
        (tmp_path / name).mkdir()
        pd.DataFrame(
            {"params_active": data["N"], "tokens": data["D"], "val_loss": y, "sparsity": 0.0}
        ).to_csv(tmp_path / name / "runs.csv", index=False)
    sources = [tmp_path / "a" / "runs.csv", tmp_path / "b" / "runs.csv"]
    assert distinct_labels(sources) == ["a/runs.csv", "b/runs.csv"]
    text = compare(sources, ["chinchilla"], Columns(N="params_active"), True, 100, None)
    line = next(x for x in text.splitlines() if x.startswith("E "))
    assert "intervals do not overlap" in line
    alpha = next(x for x in text.splitlines() if x.startswith("alpha "))
    assert "do not overlap" not in alpha
    assert "a/runs.csv" in text and "b/runs.csv" in text


def test_analysis_runs_without_torch():
    # a finder that refuses torch (sys.modules['torch'] = None would trip scipy.stats, which
    # inspects whatever sits under that key)
    code = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError('no torch here')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import analysis.report, analysis.compare, analysis.collect, analysis.figures\n"
        "import analysis.coverage, analysis.effects, analysis.noise, analysis.verdict\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def _replicated(budgets, planted_per_doubling=0.0, seeds=3, offset=0):
    """Independent noise per seed (sweep_table's draw for each), plus a planted sparsity
    effect: planted_per_doubling x log2(E) added to every loss."""
    parts = []
    for k in range(seeds):
        t = sweep_table(budgets=budgets, sparsities=(0.0, 0.75, 0.9375), seed=offset + k)
        t["seed"], t["run_id"] = k, t["run_id"] + f"s{k}"
        t["val_loss"] += planted_per_doubling * np.log2(t["num_experts"])
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def test_compare_aligns_budgets_and_recovers_a_planted_difference(tmp_path):
    """Two studies with different budgets (sharing 1e19): one table, a column each, the
    common budget on one row, and the difference of their sparsity effects with an interval
    that holds the planted difference (+0.02 per doubling of E) and excludes zero."""
    a, b = tmp_path / "a" / "runs.csv", tmp_path / "b" / "runs.csv"
    for path, table in (
        (a, _replicated((1e18, 1e19))),
        (b, _replicated((1e19, 1e20), 0.02, 3, 10)),
    ):
        path.parent.mkdir()
        table.to_csv(path, index=False)
    out = tmp_path / "cmp"
    text = compare([a, b], ["chinchilla"], Columns(), False, 200, None, out=out)
    effect = text[text.index("== effect") :].splitlines()[1]  # the effect table's header
    assert effect.index("a/runs.csv") < effect.index("b/runs.csv − a/runs.csv")
    common = next(x for x in text.splitlines() if x.startswith("C=1e+19 S=0 L*"))
    assert common.count("[") == 2  # both sources' L* on the shared budget's row
    only_a = next(x for x in text.splitlines() if x.startswith("C=1e+18 S=0 L*"))
    assert only_a.count("[") == 1 and "–" in only_a
    rows = pd.read_csv(out / "compare.csv")
    diff = rows[
        (rows["source"] == "b/runs.csv − a/runs.csv") & (rows["row"] == "per doubling of E")
    ]
    assert len(diff) == 1  # only the shared budget has a difference
    lo, hi = diff[["lo", "hi"]].iloc[0]
    assert lo <= 0.02 <= hi and lo > 0, (lo, hi)
    # the per-sparsity Chinchilla fits of the report, per source
    assert {"law chinchilla@S=0.0000", "law chinchilla@S=0.9375"} <= set(rows["section"])
    for name in ("loss_star_vs_e", "n_star_vs_e", "n_star_active_vs_e"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    assert "compare.csv" not in (out / "compare.md").read_text()
    assert json.loads((out / "compare.json").read_text())["rows"]


def test_compare_needs_two_sources(tmp_path, capsys):
    from analysis.compare import main

    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    assert e.value.code == 2 and "two or more" in capsys.readouterr().err


def test_the_report_draws_each_optimum_against_what_serving_it_costs(tmp_path):
    """kv_cache_bytes_per_token at N*: interpolated in log N between the group's sizes, as
    D* is; a table without the column draws memory alone."""
    t = sweep_table(budgets=(1e18, 1e19), sparsities=(0.0, 0.75))
    t["kv_cache_bytes_per_token"] = 8.0 * np.sqrt(t["params_total"])  # grows with width
    t.to_csv(tmp_path / "t.csv", index=False)
    build_report(tmp_path / "t.csv", tmp_path / "rep", laws=(), n_boot=20)
    groups = json.loads((tmp_path / "rep" / "fits.json").read_text())["isoflop"]["groups"]
    for g in groups:
        assert g["kv_cache_star"] == pytest.approx(8.0 * np.sqrt(g["n_star"]), rel=0.05)
    assert (tmp_path / "rep" / "figures" / "loss_star_vs_inference_cost.png").stat().st_size > 1000


def test_variants_are_fitted_apart_and_compared_side_by_side(tmp_path):
    """Two variants at the same points are two models: the report refuses to pool them, fits
    the one it is given, and compare --by-variant sets them in columns."""
    a = sweep_table(budgets=(1e18, 1e19), sparsities=(0.0, 0.75), seed=1)
    b = sweep_table(budgets=(1e18, 1e19), sparsities=(0.0, 0.75), seed=2)
    a["variant"], b["variant"] = "mha", "mla"
    b["run_id"] = b["run_id"] + "b"
    b["val_loss"] += 0.1  # the second variant is worse everywhere
    (tmp_path / "t").mkdir()
    pd.concat([a, b]).to_csv(tmp_path / "t" / "runs.csv", index=False)
    with pytest.raises(TableError, match=r"variants \['mha', 'mla'\]"):
        build_report(tmp_path / "t" / "runs.csv", tmp_path / "r", laws=(), n_boot=20)
    build_report(tmp_path / "t" / "runs.csv", tmp_path / "r", laws=(), n_boot=20, variant="mla")
    fits = json.loads((tmp_path / "r" / "fits.json").read_text())
    assert fits["n_fitted"] == len(b) and "variant mla" in fits["source"]
    text = compare([tmp_path / "t" / "runs.csv"], [], Columns(), False, 50, None, by_variant=True)
    row = next(x for x in text.splitlines() if x.startswith("C=1e+19 S=0 L*"))
    assert row.count("[") == 2 and "intervals do not overlap" in row
    # run against run at the same point: the planted +0.1, with a t interval over the sizes
    out = tmp_path / "cmp"
    compare([tmp_path / "t" / "runs.csv"], [], Columns(), False, 50, None, out=out, by_variant=True)
    rows = pd.read_csv(out / "compare.csv")
    paired = rows[rows["section"] == "paired"]
    assert len(paired) == 4 and set(paired["source"]) == {"runs.csv:mla − runs.csv:mha"}
    for _, r in paired.iterrows():
        assert 0 < r["lo"] < 0.1 < r["hi"], (r["lo"], r["hi"])  # holds it, excludes zero
