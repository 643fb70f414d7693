"""Continual evaluation (`--eval-every`), the stability-gap metrics, and the clock-level probes (`--probes`)."""

from __future__ import annotations

import numpy as np
import pytest

from nlbench.core.runner import run_one
from nlbench.core.spec import resolve_spec
from nlbench.core.stability import boundary_gaps, min_acc, relearning, summarize_curve, wc_acc

pytestmark = pytest.mark.usefixtures("one_thread")


def _curve():
    """Two experiences of 4 iterations, evaluated every 2: a dip on experience 0 right after the boundary."""
    return {"iteration": [0, 2, 4, 4, 6, 8], "experience": [0, 0, 0, 1, 1, 1], "boundaries": [0, 4], "ends": [4, 8],
            "accuracy": [[0.1], [0.6], [0.9], [0.9, 0.1], [0.3, 0.7], [0.85, 0.8]]}


def test_stability_gap_metrics_on_a_known_curve():
    (pair,) = boundary_gaps(_curve())
    assert pair["start"] == 0.9 and pair["min"] == 0.3 and pair["gap"] == pytest.approx(0.6)
    assert pair["iterations_to_min"] == 2
    assert pair["iterations_to_recover"] == 4  # 0.85 >= 0.9 - 0.1 * 0.6 at iteration 8
    assert min_acc(_curve()) == 0.3
    assert wc_acc(_curve()) == pytest.approx(0.8 / 2 + 0.5 * 0.3)
    summary = summarize_curve(_curve())
    assert summary["recovered_share"] == 1.0 and summary["gap_previous"] == pytest.approx(0.6)
    flat = _curve()
    flat["accuracy"] = [[0.1], [0.6], [0.9], [0.9, 0.1], [0.9, 0.7], [0.9, 0.8]]
    assert boundary_gaps(flat)[0]["gap"] == 0 and boundary_gaps(flat)[0]["iterations_to_recover"] == 0


def test_relearning_savings():
    curve = {"iteration": [0, 2, 4, 4, 6, 8, 8, 10, 12], "experience": [0, 0, 0, 1, 1, 1, 2, 2, 2],
             "boundaries": [0, 4, 8], "ends": [4, 8, 12],
             "accuracy": [[0.0], [0.5], [1.0], [1.0, 0.0], [0.2, 0.5], [0.1, 1.0], [0.1, 1.0, 0.1], [0.95, 0.9, 0.95],
                          [1.0, 0.8, 1.0]]}
    assert relearning(curve) == {"target": 0.9, "iterations_first": 4, "iterations_again": 2, "savings": 2.0}


def test_eval_every_records_a_curve_and_changes_nothing(digits):
    plain = run_one(resolve_spec("split-digits", "adam", device="cpu", epochs=1), benchmark=digits)
    spec = resolve_spec("split-digits", "adam", device="cpu", epochs=1, eval_every=3)
    assert spec.run_id != resolve_spec("split-digits", "adam", device="cpu", epochs=1).run_id
    watched = run_one(spec, benchmark=digits)
    assert "continual_eval" not in plain
    assert watched["accuracy_matrix"] == plain["accuracy_matrix"]  # measuring does not change the run
    curve = watched["continual_eval"]
    assert curve["every"] == 3 and len(curve["ends"]) == 5 and curve["boundaries"][1:] == curve["ends"][:-1]
    periodic = [n for n in curve["iteration"] if n not in curve["boundaries"] and n not in curve["ends"]]
    assert periodic and all(n % 3 == 0 for n in periodic)
    for n, k, row in zip(curve["iteration"], curve["experience"], curve["accuracy"]):
        assert len(row) == k + 1  # every seen experience, no unseen one
    # split-digits' test experiences are smaller than the subsample: the end points are the matrix rows
    ends = [row for n, k, row in zip(curve["iteration"], curve["experience"], curve["accuracy"]) if n == curve["ends"][k]]
    for k, row in enumerate(ends):
        assert np.allclose(row, watched["accuracy_matrix"][k][:k + 1])
    assert set(curve["summary"]) >= {"min_acc", "wc_acc", "gap", "iterations_to_recover"}


def test_probes_per_clock_level(digits):
    plain = run_one(resolve_spec("split-digits", "cms", device="cpu", epochs=1), benchmark=digits)
    probed = run_one(resolve_spec("split-digits", "cms", device="cpu", epochs=1, probes=True), benchmark=digits)
    assert probed["accuracy_matrix"] == plain["accuracy_matrix"]  # reverting is undone bit for bit
    probes = probed["probes"]
    assert [lv["period"] for lv in probes["levels"]] == [1, 8, 64]
    assert len(probes["experiences"]) == 5
    totals = np.sum([rec["updates"] for rec in probes["experiences"]], axis=0).tolist()
    assert totals == probed["clocks"]["updates"]
    for k, rec in enumerate(probes["experiences"]):
        assert len(rec["accuracy"]) == k + 1 and np.allclose(rec["accuracy"], probed["accuracy_matrix"][k][:k + 1])
        for level, (updates, change, reverted) in enumerate(zip(rec["updates"], rec["change_norm"], rec["reverted_accuracy"])):
            if updates == 0:  # a level that did not move: reverting it changes nothing
                assert change == 0.0 and reverted == rec["accuracy"]
            else:
                assert change > 0
    # The fast level carries the forgetting: reverting it brings back some of an earlier experience.
    assert any(rec["reverted_accuracy"][0][j] > rec["accuracy"][j] + 0.1
               for rec in probes["experiences"][1:] for j in range(rec["experience"]))
    adam = run_one(resolve_spec("split-digits", "adam", device="cpu", epochs=1, probes=True), benchmark=digits)
    assert "probes" not in adam  # no clock levels, nothing recorded


def test_sweep_settings_carry_the_new_options():
    from nlbench.commands.sweep import build_settings
    from nlbench.commands.sweep.plan import plan_runs

    settings = build_settings({"suite_options": {"n_tasks": 3}, "probes": True},
                              {"suite": "permuted-fmnist", "strategy": "cms", "eval_every": 25})
    (run,) = plan_runs(settings, "cpu")
    assert run.spec.eval_every == 25 and run.spec.probes and run.spec.suite_options == (("n_tasks", 3),)
