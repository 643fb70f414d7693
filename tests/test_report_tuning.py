"""The report shows the tuning protocol and flags chosen values at a range's edge; configurations are named
for a reader ("adam, tuned", "adam, defaults, probes"); the clock-regime table says how often levels ticked."""

from __future__ import annotations

import json

import pytest

from nlbench.commands.report.build import build_report
from nlbench.commands.report.tuning import at_edge
from nlbench.core.spec import resolve_spec
from nlbench.core.store import write_run


def _result(seed, acc, clocks=None):
    result = {"status": "completed", "error": None, "seed": seed, "accuracy_matrix": [[acc, acc], [acc, acc]],
              "initial_accuracy": [0.1, 0.1],
              "metrics": {"acc": acc, "forgetting": 0.1, "bwt": -0.1, "learning_acc": acc, "avg_inc_acc": acc, "fwt": 0.0},
              "experience_train_time_s": [1.0, 1.0], "eval_time_s": [0.1], "wall_time_s": 3.0,
              "peak_memory_mb": 900.0, "peak_memory_kind": "rss_peak", "device": "cpu"}
    if clocks:
        result["clocks"] = clocks
    return result


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    tuned = []
    for seed in (1, 2, 3):
        spec = resolve_spec("bigram-shift", "adam", device="cpu", seed=seed, hparams={"lr": 1.02e-4}, name="t")
        write_run(root, spec, _result(seed, 0.5 + 0.01 * seed))
        tuned.append(spec.run_id)
        probe = resolve_spec("bigram-shift", "clocked-adam", device="cpu", seed=seed, probes=True, name="m")
        write_run(root, probe, _result(seed, 0.6, {"global_step": 20, "periods": [1, 8, 64], "updates": [20, 2, 0]}))
    narrow = {"strategy": "adam", "setting": {"suite": "bigram-shift", "scenario": "domain"}, "budget": 16,
              "sampler": "tpe", "val_fraction": 0.1, "tune_seed": 7, "metric": "val_acc",
              "space": {"lr": "[0.0001, 0.0002] log"}, "chosen": {"lr": 1.02e-4},  # a range too narrow on purpose
              "trials": [{"number": 0}] * 16, "test_run_ids": tuned}
    (root / "t" / "selection.json").write_text(json.dumps({"selections": [narrow]}))
    out = tmp_path_factory.mktemp("out")
    return build_report(root, out).report_md.read_text()


def test_the_tuning_protocol_is_stated_and_an_edge_value_is_flagged(report):
    section = report.split("## Tuning")[1].split("\n## ")[0]
    assert "budget 16 trials per strategy, sampler tpe, validation: 0.1" in section and "tuning seed 7" in section
    assert "lr [0.0001, 0.0002] log: 0.000102 **at low edge**" in section
    assert "1 chosen value(s) lie within 5% of an edge" in section


def test_edges_are_read_on_the_log_scale():
    assert at_edge(1.1e-4, "[0.0001, 0.01] log") == "low edge"  # 2% of the log range
    assert at_edge(1e-3, "[0.0001, 0.01] log") == ""
    assert at_edge(9.6e-3, "[0.0001, 0.01] log") == "high edge"
    assert at_edge(0.96, "[0, 1]") == "high edge" and at_edge("1,8,64", "{1,8,64}") == ""


def test_configurations_are_named_for_a_reader(report):
    assert "adam, tuned" in report and "clocked-adam, defaults, probes" in report
    assert "eval_every=0; probes=false" not in report


def test_the_clock_regime_table_shows_each_levels_updates(report):
    section = report.split("## Clock regime")[1].split("\n## ")[0]
    assert "clocked-adam, defaults, probes" in section and "C=1: 20, C=8: 2, C=64: 0" in section
    assert "no: level C=64: 0 updates in 2 experiences" in section


def test_a_periods_x_alpha_grid_reports_its_best_cell_against_the_corner(tmp_path):
    acc = {((1, 2, 4), 1e-4): 0.50, ((1, 2, 4), 1e-3): 0.52, ((1, 8, 64), 1e-4): 0.55, ((1, 8, 64), 1e-3): 0.60}
    for (periods, alpha), mean in acc.items():
        for seed in (1, 2, 3):
            spec = resolve_spec("split-digits", "cms+deep-l2gd", device="cpu", seed=seed, name="grid",
                                hparams={"periods": periods, "alpha": alpha})
            write_run(tmp_path, spec, _result(seed, mean + 0.01 * seed * (periods[-1] == 64)))
    text = build_report(tmp_path, tmp_path / "out").report_md.read_text()
    line = next(line for line in text.splitlines() if "minus corner" in line)
    assert "best cell (periods=(1,8,64), alpha=0.001) minus corner (periods=(1,2,4), alpha=0.0001)" in line
    assert "paired over 3 seeds: ACC +12.0 [" in line and "the best of 4 cells" in line


def test_the_published_cms_study_is_re_examined_from_our_verdicts(tmp_path):
    for strategy, accs in (("clocked-adam", (0.60, 0.62, 0.61)), ("clocked-adam-sync", (0.60, 0.615, 0.612)),
                           ("adam", (0.55, 0.56, 0.555))):
        for seed, acc in zip((1, 2, 3), accs):
            spec = resolve_spec("permuted-fmnist", strategy, device="cpu", seed=seed, name="p")
            clocks = {"global_step": 400, "periods": [1, 8, 64] if strategy == "clocked-adam" else [1, 1, 1],
                      "updates": [400, 50, 6] if strategy == "clocked-adam" else [400] * 3}
            write_run(tmp_path, spec, _result(seed, acc, None if strategy == "adam" else clocks))
    text = build_report(tmp_path, tmp_path / "out").report_md.read_text()
    paragraph = text.split("## Published studies re-examined")[1].split("\n## ")[0]
    assert "tomasosarte/sequential-cms-continual-learning" in paragraph and "75.68" in paragraph
    assert "clocked-adam vs adam (their headline comparison, on our stream): +5.5" in paragraph
    assert "the clock itself shows no significant gain, so a gain over Adam is not the clock's" in paragraph
    assert "cms vs cms-sync (the clock itself, in the CMS network): not run here" in paragraph


def test_the_period_axis_pairs_each_method_with_its_control_at_every_period_setting(tmp_path):
    for periods, gap in (((1, 8, 64), 0.00), ((1, 16, 128), 0.02)):
        for strategy in ("cms", "cms-sync"):
            for seed in (1, 2, 3):
                spec = resolve_spec("split-digits", strategy, device="cpu", seed=seed, name="axis",
                                    hparams={"periods": periods})
                acc = 0.6 + 0.001 * seed + (gap if strategy == "cms" else 0.0)
                clocks = {"global_step": 256, "periods": list(periods) if strategy == "cms" else [1, 1, 1],
                          "updates": [256 // p for p in periods] if strategy == "cms" else [256] * 3}
                write_run(tmp_path, spec, _result(seed, acc, clocks))
    text = build_report(tmp_path, tmp_path / "out").report_md.read_text()
    section = text.split("The clock-period axis")[1].split("\n## ")[0]
    axis = [line for line in section.splitlines() if line.startswith("| split-digits")]
    assert len(axis) == 2
    assert "| cms - cms-sync | (1,8,64) | 0.5 | 4 | 3 | +0.0 [" in axis[0]
    assert "| cms - cms-sync | (1,16,128) | 1 | 2 | 3 | +2.0 [" in axis[1]
    assert (tmp_path / "out" / "figures" / "answer_period_axis.png").stat().st_size > 1000
