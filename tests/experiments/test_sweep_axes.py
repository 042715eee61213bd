"""Sweep axes beyond budgets and sparsities: WSD trunks with cooldown branches (and cosine
controls), and variants (attention or router kinds, head sizes, granularity) planned, reported
and compared apart."""

import json

import pytest
from hydra import initialize_config_dir

from experiments.sweep.driver import make_plan
from experiments.sweep.launch import launch_order, of_variants
from experiments.sweep.sweep_dir import SweepDir
from models import ConfigError
from tests.experiments.helpers import CONF
from tests.experiments.test_sweep import _plan, _spec, _sweep


@pytest.mark.slow
def test_wsd_branches_train_three_budgets_for_at_most_three_quarters_of_the_flops(tmp_path):
    """micro_branches: three budgets; every (budget, size, sparsity, seed) gets its record,
    the shorter runs branched from trunks, for at most 75% of what the cosine plan trains."""
    spec = _spec("micro_branches")
    cosine = _plan(_spec("micro_branches", schedule={"kind": "cosine"}))
    plan = _plan(spec)
    points = lambda runs: sorted((r.budget, r.d_model, r.num_experts, r.top_k) for r in runs)
    assert points(plan) == points(cosine)  # the same grid, only trained differently
    out = _sweep(tmp_path, name="micro_branches")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WSD branches:" in out.stdout
    summaries = [
        json.loads(p.read_text()) for p in (tmp_path / "sw" / "runs").glob("*/summary.json")
    ]
    assert len(summaries) == len(plan) and all(s["status"] == "done" for s in summaries)
    assert {s["run_id"] for s in summaries} == {r.run_id for r in plan}
    branches = [s for s in summaries if s["branch_of"]]
    trunks = {r.run_id for r in plan if r.role == "trunk"}
    assert branches and {s["branch_of"] for s in branches} == trunks
    trained = sum(s["trained_flops"] for s in summaries)
    assert trained <= 0.75 * sum(r.flops for r in cosine), trained
    assert not list((tmp_path / "sw" / "runs").glob("*/branch-point-*.pt"))  # all consumed


def test_branch_plans_are_refused_where_they_would_not_be_exact():
    with pytest.raises(ConfigError, match="cosine_controls"):
        _spec("micro", schedule={"kind": "cosine", "cosine_controls": [1e10]})
    with pytest.raises(ConfigError, match="not among sweep.budgets"):
        _spec("micro", schedule={"kind": "wsd_branches", "cosine_controls": [3e10]})
    with pytest.raises(ConfigError, match="optim.schedule"):
        _plan(_spec("micro_branches", train=["data=sotu_bytes", "optim.schedule=cosine"]))


def test_cosine_controls_add_the_cosine_run_of_every_point_at_their_budget():
    spec = _spec("micro_branches", schedule={"kind": "wsd_branches", "cosine_controls": [2e9]})
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        plan, configs = make_plan(spec)
    controls = [r for r in plan if r.role == "control"]
    at = [r for r in plan if r.budget == 2e9 and r.role != "control"]
    assert len(controls) == len(at) and all(r.budget == 2e9 for r in controls)
    schedule = {r.role: tc.optim.schedule for r, tc in zip(plan, configs)}
    assert schedule["control"] == "cosine" and schedule["branch"] == "wsd"
    assert plan.index(next(r for r in plan if r.role == "branch")) > max(
        i for i, r in enumerate(plan) if r.role == "trunk"
    )  # trunks are launched before any branch


def test_launch_order_is_largest_budget_first_then_the_plan_not_rounding_noise():
    """Runs of one budget differ by the FLOPs of rounding to whole steps; sorting on those
    scattered the second study's groups across the sweep, so a sweep stopped halfway held
    no whole group. Now: budgets largest first, each in plan order (seeds side by side)."""
    runs = _plan(_spec("demo"))
    ids = [r.run_id for r in runs]
    by_id = {r.run_id: r for r in runs}
    order = sorted(ids, key=launch_order(runs))
    budgets = [by_id[i].budget for i in order]
    assert budgets == sorted(budgets, reverse=True) and len(set(budgets)) > 1
    top = [i for i in ids if by_id[i].budget == budgets[0]]
    assert order[: len(top)] == top  # the plan's order within the budget
    flops = [by_id[i].flops for i in top]
    assert flops != sorted(flops, reverse=True)  # sorting by FLOPs would have reordered them


V3 = ["moe.score=sigmoid", "moe.balance=aux_free", "moe.load_balance_coef=0"]


def test_variants_can_be_trained_one_at_a_time():
    """``variants=[mha]``: only that variant's runs train now, in their launch order."""
    spec = _spec("micro", variants={"mha": [], "mla_v3": ["model.attention=mla", *V3]})
    runs = _plan(spec)
    ids = [r.run_id for r in runs]
    mha = [r.run_id for r in runs if r.overrides["variant"] == "mha"]
    assert of_variants(ids, runs, ["mha"]) == mha and 0 < len(mha) < len(ids)
    assert of_variants(ids[::-1], runs, ["mha", "mla_v3"]) == ids[::-1]


def test_a_variant_the_spec_lacks_is_refused_before_anything_runs(tmp_path):
    out = _sweep(tmp_path, "variants=[nope]", name="demo")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "variants=['nope']: not among the spec's variants" in out.stderr


def test_variants_plan_the_grid_once_each_and_record_their_name():
    base = _plan(_spec("micro"))
    spec = _spec("micro", variants={"mha": [], "mla_v3": ["model.attention=mla", *V3]})
    runs = _plan(spec)
    assert len(runs) == 2 * len(base) and len({r.run_id for r in runs}) == len(runs)
    mla = [r for r in runs if r.overrides.get("variant") == "mla_v3"]
    assert len(mla) == len(base) and all(r.name.endswith("_mla_v3") for r in mla)
    assert all(r.overrides["model"]["attention"] == "mla" for r in mla)
    assert all(r.overrides["moe"]["balance"] == "aux_free" for r in mla)
    # what the child composes from the planned overrides is the variant's model
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        _, configs = make_plan(spec)
    kinds = {(tc.variant, tc.model.attention) for tc in configs}
    assert kinds == {("mha", "mha"), ("mla_v3", "mla")}


def test_variants_can_reshape_the_family_and_the_granularity():
    """A head_dim axis (the second study's pilot) and a granularity axis (its gate ablation):
    each variant's runs are drawn from its own family or granularity; the unchanged variant
    plans exactly the runs of the spec without variants."""
    base = _plan(_spec("micro", variants={"same": []}))
    spec = _spec(
        "micro",
        variants={
            "same": [],
            "hd2": ["sweep.family.head_dim=2"],
            "g2": ["sweep.granularity=2", "moe.renormalize=true"],
        },
    )
    runs = _plan(spec)
    by = {v: [r for r in runs if r.overrides.get("variant") == v] for v in ("same", "hd2", "g2")}
    assert [r.run_id for r in by["same"]] == [r.run_id for r in base]
    assert all(r.overrides["model"]["n_heads"] == r.d_model // 2 for r in by["hd2"])
    assert {r.overrides["model"]["n_heads"] for r in by["hd2"]} != {
        r.overrides["model"]["n_heads"] for r in by["same"]
    }
    assert all(r.overrides["moe"]["granularity"] == 2 for r in by["g2"])
    assert all(r.overrides["moe"]["renormalize"] is True for r in by["g2"])
    assert all(r.overrides["moe"]["granularity"] == 1 for r in by["same"])


@pytest.mark.parametrize(
    "variants,message",
    [
        ({"a": ["model=small"]}, "not a config group"),
        ({"a": ["model.d_model=64"]}, "set by the planner"),
        ({"a b": []}, "letters, digits"),
        ({"a": ["sweep.budgets=[1e12]"]}, "cannot vary by variant"),
        ({"a": ["sweep.sizes.tokens_per_param.0=5"]}, "cannot vary by variant"),  # one level
        ({"a": ["sweep.family.head_dim=3"]}, "must be even"),
        ({"a": ["sweep.family.width=3"]}, "unknown field"),
    ],
)
def test_variants_that_cannot_be_planned_are_refused(variants, message):
    with pytest.raises(ConfigError, match=message):
        _plan(_spec("micro", variants=variants))


@pytest.mark.slow
def test_a_sweep_of_variants_reports_each_and_compares_them(tmp_path):
    """The driver's report step on a sweep with variants: a report per variant (never one
    pooled fit) and their comparison, from the run directories' summaries."""
    from experiments.sweep.driver import report
    from tests.analysis.synth import sweep_table

    sweep = SweepDir(tmp_path / "sw")
    ids = []
    for variant, shift, seed in (("mha", 0.0, 1), ("mla", 0.05, 2)):
        t = sweep_table(budgets=(1e18, 1e19), sparsities=(0.0, 0.75), seed=seed)
        t["variant"], t["val_loss"] = variant, t["val_loss"] + shift
        for row in t.to_dict("records"):
            rid = f"{variant}{row['run_id']}"
            (sweep.runs / rid).mkdir(parents=True)
            (sweep.runs / rid / "summary.json").write_text(json.dumps(row | {"run_id": rid}))
            ids.append(rid)
    assert report(sweep, ids, ["mha", "mla"])
    for v in ("mha", "mla"):
        fits = json.loads((sweep.report / v / "fits.json").read_text())
        assert fits["n_fitted"] == len(ids) // 2 and f"variant {v}" in fits["source"]
    text = (sweep.report / "compare" / "compare.md").read_text()
    assert "runs:mha" in text and "runs:mla" in text
