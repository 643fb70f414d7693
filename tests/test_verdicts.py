"""The report's Verdicts: paired statistics recomputed here with scipy and statsmodels on a small hand-made
store (results written through the real store, numbers chosen so each verdict is known in advance)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from nlbench.commands.report.build import build_report
from nlbench.commands.report.load import add_labels, key_columns, load_runs
from nlbench.commands.report.verdicts import NO_DIFFERENCE, compute_verdicts, references
from nlbench.core.spec import resolve_spec
from nlbench.core.store import write_run

SEEDS = (1, 2, 3, 4, 5)
# strategy -> ACC per seed (fractions); cms vs adam: clearly higher; cms vs cms-sync: straddles 0
ACC = {
    "cms": [0.80, 0.82, 0.79, 0.84, 0.81],
    "cms-sync": [0.81, 0.80, 0.80, 0.83, 0.82],
    "cms-frozen": [0.70, 0.71, 0.69, 0.73, 0.70],
    "lookahead": [0.60, 0.66, 0.58, 0.61, 0.65],
    "adam": [0.50, 0.55, 0.49, 0.56, 0.52],  # the tuned configuration (lr=0.005)
}
ADAM_DEFAULT = [0.90, 0.90, 0.90, 0.90, 0.90, 0.90]  # more runs, but not the tuned one: must not be used
FORGET = {"cms": [0.10, 0.12, 0.11, 0.09, 0.10], "cms-sync": [0.10, 0.13, 0.10, 0.09, 0.11],
          "cms-frozen": [0.2, 0.2, 0.21, 0.19, 0.2], "lookahead": [0.3, 0.31, 0.3, 0.33, 0.29], "adam": [0.4, 0.42, 0.41, 0.4, 0.43]}
TIME = {"cms": 2.0, "cms-sync": 2.1, "cms-frozen": 1.5, "lookahead": 1.05, "adam": 1.0}


def _result(seed, acc, forgetting, time_s, memory):
    return {"status": "completed", "error": None, "seed": seed, "accuracy_matrix": [[acc]], "initial_accuracy": [0.1],
            "metrics": {"acc": acc, "forgetting": forgetting, "bwt": -forgetting, "learning_acc": acc + forgetting,
                        "avg_inc_acc": acc, "fwt": 0.0},
            "experience_train_time_s": [time_s], "eval_time_s": [0.1], "wall_time_s": 5 * time_s,
            "peak_memory_mb": memory, "peak_memory_kind": "rss_peak", "device": "cpu"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdicts")
    tuned = []
    for strategy, accs in ACC.items():
        hp = {"lr": 0.005} if strategy == "adam" else {}
        for i, (seed, acc) in enumerate(zip(SEEDS, accs)):
            spec = resolve_spec("split-digits", strategy, device="cpu", seed=seed, hparams=hp, name="tuned")
            wobble = 1 + 0.01 * ((seed * 7 + len(strategy)) % 5)
            write_run(root, spec, _result(seed, acc, FORGET[strategy][i], TIME[strategy] * wobble, 900 + 10 * len(strategy) + seed))
            if strategy == "adam":
                tuned.append(spec.run_id)
    for seed, acc in enumerate(ADAM_DEFAULT, start=1):
        spec = resolve_spec("split-digits", "adam", device="cpu", seed=seed, name="plain")
        write_run(root, spec, _result(seed, acc, 0.0, 1.0, 900))
    extra = resolve_spec("split-digits", "cms", device="cpu", seed=9, name="tuned")  # no adam partner: not paired
    write_run(root, extra, _result(9, 0.99, 0.0, 2.0, 900))
    trial = resolve_spec("split-digits", "cms", device="cpu", seed=0, name="tuned-trials", holdout=0.1)
    write_run(root, trial, _result(0, 0.01, 0.9, 2.0, 900))  # a validation run: never a result
    (root / "tuned" / "selection.json").write_text(json.dumps({"selections": [{"strategy": "adam", "test_run_ids": tuned}]}))
    return root


@pytest.fixture(scope="module")
def table(store):
    runs, _, _ = load_runs(store)
    add_labels(runs, key_columns(runs))
    return compute_verdicts(runs, store)


def _row(table, method, reference, metric):
    row = table[(table["method"] == method) & (table["reference"] == reference) & (table["metric"] == metric)]
    assert len(row) == 1, (method, reference, metric)
    return row.iloc[0]


def test_each_nl_method_is_paired_with_its_controls_the_two_timescale_optimizers_and_adam(table):
    from nlbench.core.registry import strategies

    families = {n: i.family for n, i in strategies().items()}
    assert set(references("cms", families)) == {("cms-sync", "control"), ("cms-frozen", "control"),
                                               ("lookahead", "two-timescale"), ("ademamix", "two-timescale"), ("adam", "adam")}
    assert ("cms-sync+replay", "control") in references("cms+replay", families)
    assert ("replay", "adam") in references("cms+replay", families)
    assert set(table["method"]) == {"cms"}  # controls and adam are references, never methods
    assert set(table["reference"]) == {"cms-sync", "cms-frozen", "lookahead", "adam"}  # ademamix has no runs


def test_paired_differences_intervals_and_tests_match_scipy(table):
    for reference in ("cms-sync", "cms-frozen", "lookahead", "adam"):
        a, b = 100 * np.array(ACC["cms"]), 100 * np.array(ACC[reference])
        row = _row(table, "cms", reference, "acc")
        d = a - b
        low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        assert row["n"] == 5, "the unpaired seed 9 must be left out"
        assert row["estimate"] == pytest.approx(d.mean()) and row["ci_low"] == pytest.approx(low) and row["ci_high"] == pytest.approx(high)
        assert row["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    used = table[table["reference"] == "adam"]["reference_config"].iloc[0]
    assert "0.005" in used, "the tuned adam configuration must be the reference, not the one with more runs"


def test_holm_correction_is_statsmodels_over_each_metric_family(table):
    for metric in ("acc", "forgetting", "learning_acc", "time_per_exp_s"):
        family = table[table["metric"] == metric]
        expected = multipletests(family["p"].to_numpy(), alpha=0.05, method="holm")[1]
        assert family["p_holm"].to_numpy() == pytest.approx(expected)


def test_ratios_are_geometric_means_of_paired_ratios(table):
    row = _row(table, "cms", "adam", "time_per_exp_s")
    runs = {s: [TIME[s] * (1 + 0.01 * ((seed * 7 + len(s)) % 5)) for seed in SEEDS] for s in ("cms", "adam")}
    logs = np.log(np.array(runs["cms"]) / np.array(runs["adam"]))
    assert row["estimate"] == pytest.approx(math.exp(logs.mean()))
    low, high = stats.t.interval(0.95, 4, loc=logs.mean(), scale=stats.sem(logs))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((math.exp(low), math.exp(high)))
    assert row["verdict"].startswith("costlier")


def test_verdict_words(table):
    assert _row(table, "cms", "cms-sync", "acc")["verdict"] == NO_DIFFERENCE  # interval covers 0
    assert _row(table, "cms", "adam", "acc")["verdict"] == "higher ACC"
    assert _row(table, "cms", "adam", "forgetting")["verdict"] == "forgets less"
    assert _row(table, "cms", "cms-frozen", "acc")["verdict"] == "higher ACC"


def test_the_report_opens_with_verdicts_and_never_counts_validation_runs(store, tmp_path):
    report = build_report(store, tmp_path / "out")
    text = report.report_md.read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Verdicts"
    assert (tmp_path / "out" / "figures" / "verdicts_forest.png").stat().st_size > 1000
    assert (tmp_path / "out" / "tables" / "verdicts.csv").exists()
    assert "| split-digits | class" in text and NO_DIFFERENCE in text
    assert report.n_runs == 5 * 5 + 6 + 1  # the holdout (validation) run is not a result
