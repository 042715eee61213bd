"""sizes.extend: a group whose lowest loss sits at an edge gains the next size beyond it."""

from __future__ import annotations

import json
import math

import pytest
from hydra import initialize_config_dir

from experiments.sweep.driver import make_plan
from experiments.sweep.edges import extended_plan, group_of
from models import ConfigError
from tests.experiments.helpers import CONF
from tests.experiments.test_sweep import _plan, _spec


def _micro(**sizes):
    base = _spec("micro")
    return _spec("micro", sizes={**base.sizes.__dict__, **sizes})


def _extended(spec, root, max_tokens=None):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        runs, _, note = extended_plan(
            spec, root, lambda ext: make_plan(spec, extensions=ext), lambda _: max_tokens
        )
    return runs, note


def _finish(root, runs, loss):
    for r in runs:
        d = root / r.run_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps({"status": "done", "val_loss": loss(r)}))


def _widths(runs, group):
    return sorted(r.d_model for r in runs if group_of(r) == group)


@pytest.mark.parametrize("spacing", ["consecutive", 2.0])
def test_the_group_lowest_at_its_smallest_size_gains_the_next_smaller(tmp_path, spacing):
    spec = _micro(extend=1, spacing=spacing)
    plain = _plan(spec)
    if spacing == "consecutive":  # (the ratio spacing repeats only what differs: the new size)
        runs, note = _extended(spec, tmp_path)
        assert [r.run_id for r in runs] == [r.run_id for r in plain] and note is None  # none done
    dense = group_of(plain[0])
    first = _widths(plain, dense)
    # dense at the first budget: lowest at its smallest width; every other group: in the middle
    middle = {group_of(r): _widths(plain, group_of(r))[1] for r in plain}  # 3 sizes a group
    _finish(
        tmp_path,
        plain,
        lambda r: r.d_model if group_of(r) == dense else abs(r.d_model - middle[group_of(r)]),
    )
    runs, note = _extended(spec, tmp_path)
    widths = _widths(runs, dense)
    assert len(runs) == len(plain) + 1 and widths[1:] == first and widths[0] < first[0]
    assert all(_widths(runs, group_of(r)) == _widths(plain, group_of(r)) for r in plain[3:])
    assert "1 size(s) added" in note and "1 below, 0 above" in note
    if spacing != "consecutive":
        return
    assert widths[0] == first[0] - spec.family.d_model_step
    # the new size is lower still, but extend=1 allows no second one; the plan is stable
    new = [r for r in runs if r.d_model == widths[0] and group_of(r) == dense]
    _finish(tmp_path, new, lambda r: 0.0)
    again, _ = _extended(spec, tmp_path)
    assert [r.run_id for r in again] == [r.run_id for r in runs]


def test_a_vertex_between_the_smallest_size_and_its_neighbour_gains_a_smaller_size(tmp_path):
    """Lowest observed at the second size, but the parabola's vertex lies below it: one point
    carries the whole low side (study 2's dense group at 6e15). Without extend: nothing."""
    spec = _micro(extend=1, spacing="consecutive", count=5)
    plain = _plan(spec)
    edgy = max({group_of(r) for r in plain}, key=lambda g: _widths(plain, g)[0])  # room below
    n = {r.d_model: r.n_rule for r in plain if group_of(r) == edgy}
    x0, x1 = (math.log(n[d]) for d in sorted(n)[:2])
    vertex = x0 + 0.7 * (x1 - x0)  # the second size is the lowest observed
    middle = {group_of(r): _widths(plain, group_of(r))[2] for r in plain}
    _finish(
        tmp_path,
        plain,
        lambda r: (
            (math.log(r.n_rule) - vertex) ** 2
            if group_of(r) == edgy
            else abs(r.d_model - middle[group_of(r)])
        ),
    )
    runs, note = _extended(spec, tmp_path)
    assert _widths(runs, edgy)[0] == sorted(n)[0] - spec.family.d_model_step
    assert len(runs) == len(plain) + 1 and "1 below, 0 above" in note
    runs, note = _extended(_micro(extend=0, spacing="consecutive", count=5), tmp_path)
    assert len(runs) == len(plain) and note is None


def test_without_extend_finished_edges_change_nothing(tmp_path):
    spec = _micro()
    plain = _plan(spec)
    _finish(tmp_path, plain, lambda r: r.d_model)
    assert spec.sizes.extend == 0 and [r.run_id for r in _plan(spec)] == [r.run_id for r in plain]


def test_a_size_that_would_repeat_the_corpus_is_refused_and_said(tmp_path):
    spec = _micro(extend=2, spacing="consecutive")
    plain = _plan(spec)
    _finish(tmp_path, plain, lambda r: r.d_model)  # every group lowest at its smallest size
    cap = min(r.tokens for r in plain)  # below what any smaller (longer-trained) size needs
    runs, note = _extended(spec, tmp_path, max_tokens=cap)
    assert [r.run_id for r in runs] == [r.run_id for r in plain]
    assert "no member can be added below" in note and "sizes.max_epochs" in note


def test_extend_is_refused_where_sizes_are_not_independent_runs():
    with pytest.raises(ConfigError, match="sweep.sizes.extend"):
        _spec("micro_branches", sizes={**_spec("micro_branches").sizes.__dict__, "extend": 1})
