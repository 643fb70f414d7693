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
            result = _result(seed, acc, FORGET[strategy][i], TIME[strategy] * wobble, 900 + 10 * len(strategy) + seed)
            if strategy.startswith("cms"):  # in regime: every level updates at least 15 times
                periods = {"cms": [1, 8, 64], "cms-sync": [1, 1, 1], "cms-frozen": [1]}[strategy]
                result["clocks"] = {"global_step": 1000, "periods": periods, "updates": [1000 // p for p in periods]}
            write_run(root, spec, result)
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
                                               ("lookahead", "two-timescale"), ("ademamix", "two-timescale"), ("adam", "adam"),
                                               ("adam-matched", "param-matched"), ("cls-er", "two-timescale")}
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
        assert row["sd"] == pytest.approx(d.std(ddof=1)), "the sd of the PAIRED differences"
    used = table[table["reference"] == "adam"]["reference_config"].iloc[0]
    assert used == "adam, tuned", "the tuned adam configuration must be the reference, not the one with more runs"
    assert set(table[table["reference"] == "cms-sync"]["reference_config"]) == {"cms-sync, defaults"}


def test_holm_is_statsmodels_within_each_family_and_metric(table):
    assert set(table["family"]) == {"primary", "secondary"}
    primary = table[table["family"] == "primary"]
    assert set(primary["reference"]) == {"cms-sync", "cms-frozen"}, "only a clocked method vs its own controls is primary"
    for (family, metric), block in table.groupby(["family", "metric"]):
        expected = multipletests(block["p"].to_numpy(), alpha=0.05, method="holm")[1]
        assert block["p_holm"].to_numpy() == pytest.approx(expected)
        tost = multipletests(block["tost_p"].to_numpy(), alpha=0.05, method="holm")[1]
        assert block["tost_p_holm"].to_numpy() == pytest.approx(tost)


def test_mde_is_the_80_percent_power_root_of_statsmodels_at_the_family_level(table):
    from statsmodels.stats.power import TTestPower

    row = _row(table, "cms", "cms-sync", "acc")
    m = int(((table["family"] == "primary") & (table["metric"] == "acc")).sum())
    d = 100 * (np.array(ACC["cms"]) - np.array(ACC["cms-sync"]))
    effect = row["mde"] / d.std(ddof=1)
    power = TTestPower().power(effect_size=effect, nobs=5, alpha=0.05 / m / 2, alternative="larger")
    assert power == pytest.approx(0.8, abs=1e-3)
    assert f"MDE {row['mde']:.1f} pt" in row["verdict"]


def test_mde_root_is_checked_where_solve_power_fails():
    from statsmodels.stats.power import TTestPower

    from nlbench.commands.report.power import detectable_effect

    d = detectable_effect(5, 0.05 / 111)
    assert d == pytest.approx(5.84, abs=0.01)  # the noncentral-t root (t critical 10.6 at df 4)
    assert TTestPower().power(effect_size=d, nobs=5, alpha=0.05 / 111 / 2, alternative="larger") == pytest.approx(0.8, abs=1e-3)
    assert detectable_effect(10, 0.05) == pytest.approx(TTestPower().solve_power(nobs=10, alpha=0.05, power=0.8), rel=1e-4)


def test_tost_is_statsmodels_paired(table):
    from statsmodels.stats.weightstats import ttost_paired

    row = _row(table, "cms", "cms-sync", "forgetting")
    a, b = 100 * np.array(FORGET["cms"]), 100 * np.array(FORGET["cms-sync"])
    assert row["tost_p"] == pytest.approx(ttost_paired(a, b, -1.0, 1.0)[0])


def test_verdict_words(table):
    assert _row(table, "cms", "cms-sync", "acc")["verdict"].startswith(NO_DIFFERENCE + " (MDE")  # interval covers 0
    assert _row(table, "cms", "adam", "acc")["verdict"] == "higher ACC"
    assert _row(table, "cms", "adam", "forgetting")["verdict"] == "forgets less"
    assert _row(table, "cms", "cms-frozen", "acc")["verdict"] == "higher ACC"


def test_the_verdict_word_reads_the_holm_p_not_the_raw_p():
    from nlbench.commands.report.verdicts import verdict_word

    row = {"n": 5, "estimate": -0.1, "ci_low": -0.2, "ci_high": -0.01, "p": 0.03, "p_holm": 0.3, "tost_p": 0.2,
           "tost_p_holm": 0.6, "mde": 0.6}
    assert verdict_word(row, +1, "ACC") == "no detectable difference (MDE 0.6 pt)"  # raw p < 0.05, Holm p is not
    assert verdict_word({**row, "p_holm": 0.04}, +1, "ACC") == "lower ACC"
    assert verdict_word({**row, "tost_p_holm": 0.01}, +1, "ACC").startswith("equivalent")


def test_pairing_is_by_seed_whatever_the_storage_order(tmp_path):
    """Seeds written in opposite orders: a pairing by position instead of by seed changes every number."""
    a = {1: 0.50, 2: 0.60, 3: 0.55, 4: 0.70}
    b = {1: 0.49, 2: 0.61, 3: 0.53, 4: 0.69}
    for strategy, values, order in (("cms", a, (1, 2, 3, 4)), ("cms-sync", b, (4, 3, 2, 1))):
        for seed in order:
            spec = resolve_spec("split-digits", strategy, device="cpu", seed=seed, name="p")
            write_run(tmp_path, spec, _result(seed, values[seed], 0.1, 1.0, 900))
    runs, _, _ = load_runs(tmp_path)
    add_labels(runs, key_columns(runs))
    row = _row(compute_verdicts(runs, tmp_path), "cms", "cms-sync", "acc")
    d = 100 * np.array([a[s] - b[s] for s in (1, 2, 3, 4)])
    assert row["estimate"] == pytest.approx(d.mean()) and row["sd"] == pytest.approx(d.std(ddof=1))


def test_runs_on_streams_of_different_lengths_are_never_paired(tmp_path):
    for strategy, n_tasks in (("cms", 5), ("adam", 8)):
        for seed in (1, 2):
            spec = resolve_spec("permuted-fmnist", strategy, device="cpu", seed=seed, name="s",
                                suite_options={"n_tasks": n_tasks})
            write_run(tmp_path, spec, _result(seed, 0.5 + 0.01 * seed, 0.1, 1.0, 900))
    runs, _, _ = load_runs(tmp_path)
    add_labels(runs, key_columns(runs))
    assert compute_verdicts(runs, tmp_path).empty


def test_off_regime_rows_leave_the_primary_family(tmp_path):
    """A stored clock whose level C=64 updated once in the stream: both clock rows become secondary."""
    for strategy in ("cms", "cms-sync"):
        for seed in SEEDS:
            spec = resolve_spec("split-digits", strategy, device="cpu", seed=seed, name="r")
            result = _result(seed, ACC[strategy][seed - 1], FORGET[strategy][seed - 1], 1.0, 900)
            result["accuracy_matrix"], result["initial_accuracy"] = [[0.5] * 5] * 5, [0.1] * 5
            periods = [1, 8, 64] if strategy == "cms" else [1, 1, 1]
            result["clocks"] = {"global_step": 100, "periods": periods, "updates": [100 // p for p in periods]}
            write_run(tmp_path, spec, result)
    runs, _, _ = load_runs(tmp_path)
    add_labels(runs, key_columns(runs))
    table = compute_verdicts(runs, tmp_path)
    row = _row(table, "cms", "cms-sync", "acc")
    assert row["family"] == "secondary"
    assert row["regime"] == "off-regime (method): level C=64: 1 update in 5 experiences"
    assert row["slowest_updates"] == 1 and row["period_over_e"] == pytest.approx(64 / 20)


def test_the_report_opens_with_the_answer_then_the_verdicts(store, tmp_path):
    import subprocess
    import sys

    cost = subprocess.run([sys.executable, "-m", "nlbench.cli", "cost", "--suite", "split-digits", "--strategy",
                           "cms,cms-sync,cms-frozen,adam", "--steps", "3", "--repeats", "2", "--out", str(store),
                           "--name", "cost"], capture_output=True, text=True, timeout=600)
    assert cost.returncode == 0, cost.stderr[-2000:]
    report = build_report(store, tmp_path / "out")
    text = report.report_md.read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Answer", "## Verdicts"]
    assert "**Question.**" in text.split("## Verdicts")[0]
    assert "cms vs cms-frozen (n=5): **helps**" in text  # generated from the primary rows
    answer = text.split("## Verdicts")[0]
    assert "step time x" in answer and "paired rounds), state +" in answer, "the cost comes from nlbench cost"
    assert (tmp_path / "out" / "figures" / "answer_period_axis.png").stat().st_size > 1000
    assert (tmp_path / "out" / "tables" / "verdicts.csv").exists()
    assert list((tmp_path / "out" / "figures").glob("verdicts_split-digits*.png"))
    assert "### Primary comparisons" in text and "### Secondary comparisons (exploratory)" in text
    assert report.n_runs == 5 * 5 + 6 + 1  # the holdout (validation) run is not a result


def test_the_period_axis_pairs_a_frozen_control_at_any_periods_and_a_sync_control_at_the_same(tmp_path):
    """cms at two axis settings; cms-sync stored at both; cms-frozen only at the default clock (its slow levels
    never step, so the periods beyond the fastest do not change its run). The frozen pair must exist at both
    axis points, from the default-clock runs; the sync pair only where the periods match."""
    from nlbench.commands.report.answer import period_rows, swept
    from nlbench.commands.report.clock_regime import add_regime

    axis = {"1,e/8,e": 0.02, "1,e/2,2e": 0.05}  # cms's gain over frozen grows with the slowest period
    for seed in SEEDS:
        for written, gain in axis.items():
            for strategy, acc in (("cms", 0.70 + gain + 0.001 * seed), ("cms-sync", 0.70 + 0.002 * seed)):
                spec = resolve_spec("split-digits", strategy, device="cpu", seed=seed, name="axis",
                                    hparams={"periods": written})
                result = _result(seed, acc, 0.1, 1.0, 900)
                result["accuracy_matrix"], result["initial_accuracy"] = [[acc] * 5] * 5, [0.1] * 5
                periods = list(spec.hp["periods"]) if strategy == "cms" else [1, 1, 1]
                result["clocks"] = {"global_step": 5 * 40, "periods": periods,  # 40 steps per experience
                                    "updates": [200 // p for p in periods]}
                write_run(tmp_path, spec, result)
        frozen = resolve_spec("split-digits", "cms-frozen", device="cpu", seed=seed, name="default")
        result = _result(seed, 0.70, 0.1, 1.0, 900)
        result["accuracy_matrix"], result["initial_accuracy"] = [[0.70] * 5] * 5, [0.1] * 5
        result["clocks"] = {"global_step": 200, "periods": [1], "updates": [200]}
        write_run(tmp_path, frozen, result)
    runs, _, _ = load_runs(tmp_path)
    add_labels(runs, key_columns(runs))
    add_regime(runs)
    rows = period_rows(runs)
    acc = rows[rows["metric"] == "acc"]
    vs_frozen = acc[acc["reference"] == "cms-frozen"].set_index("period_over_e")  # e = 40 steps here
    assert sorted(vs_frozen.index) == [1.0, 2.0], "the frozen control pairs at every axis point"
    for x, gain in zip((1.0, 2.0), axis.values()):
        expected = 100 * (gain + 0.001 * np.mean(SEEDS))
        assert vs_frozen.loc[x, "estimate"] == pytest.approx(expected) and vs_frozen.loc[x, "n"] == 5
    vs_sync = acc[acc["reference"] == "cms-sync"]
    assert len(vs_sync) == 2 and all(vs_sync["n"] == 5)
    assert list(vs_sync.sort_values("period_over_e")["period_over_e"].round(2)) == [1.0, 2.0]
    assert len(swept(rows)) == len(rows), "two periods per pair: an axis, shown whole in the Answer"


def test_the_answer_shows_an_axis_only_where_the_periods_were_swept(tmp_path):
    """Every setting at the default clock alone: its points are the verdict rows, so the Answer's axis is empty."""
    from nlbench.commands.report.answer import period_rows, swept
    from nlbench.commands.report.clock_regime import add_regime

    store = _clock_store(tmp_path, ("split-digits", "split-fmnist"))
    runs, _, _ = load_runs(store)
    add_labels(runs, key_columns(runs))
    add_regime(runs)
    rows = period_rows(runs)
    assert len(rows) == 2 * 2 * 2  # settings x controls x metrics, one period each
    assert swept(rows).empty


def _clock_store(root, suites):
    """cms and its two controls, in regime, in each suite's default setting (cms ahead of both controls)."""
    for suite in suites:
        for strategy, base in (("cms", 0.80), ("cms-sync", 0.78), ("cms-frozen", 0.74)):
            for seed in SEEDS:
                spec = resolve_spec(suite, strategy, device="cpu", seed=seed, name=f"clock-{suite}")
                acc = base + 0.004 * ((seed * 3 + len(strategy) + len(suite)) % 5)
                result = _result(seed, acc, 0.3 - acc / 4, 1.0, 900)
                periods = {"cms": [1, 8, 64], "cms-sync": [1, 1, 1], "cms-frozen": [1]}[strategy]
                result["clocks"] = {"global_step": 1000, "periods": periods, "updates": [1000 // p for p in periods]}
                write_run(root, spec, result)
    return root


def test_only_the_declared_primary_settings_enter_the_primary_holm_family(tmp_path):
    """Two settings, both in regime: undeclared, both are primary; with split-digits declared, split-fmnist's clock
    rows are secondary and the primary Holm adjustment runs over split-digits' rows alone."""
    from nlbench.commands.report.verdicts import parse_primary

    store = _clock_store(tmp_path, ("split-digits", "split-fmnist"))
    runs, _, _ = load_runs(store)
    add_labels(runs, key_columns(runs))
    everywhere = compute_verdicts(runs, store)
    assert set(everywhere[everywhere["family"] == "primary"]["suite"]) == {"split-digits", "split-fmnist"}
    declared = compute_verdicts(runs, store, parse_primary("split-digits"))
    primary = declared[declared["family"] == "primary"]
    assert set(primary["suite"]) == {"split-digits"} and set(primary["reference"]) == {"cms-sync", "cms-frozen"}
    assert set(declared[declared["suite"] == "split-fmnist"]["family"]) == {"secondary"}
    for metric, block in primary.groupby("metric"):
        assert len(block) == 2
        assert block["p_holm"].to_numpy() == pytest.approx(multipletests(block["p"].to_numpy(), method="holm")[1])
    # the scenario narrows it: split-digits has no task-incremental runs here, so nothing is primary
    assert set(compute_verdicts(runs, store, parse_primary("split-digits:task"))["family"]) == {"secondary"}


def test_primary_settings_are_checked_and_shown_in_the_answer(tmp_path):
    from nlbench.commands.report.verdicts import parse_primary
    from nlbench.errors import UserError

    assert parse_primary("permuted-fmnist, split-fmnist:task") == (("permuted-fmnist", None), ("split-fmnist", "task"))
    for bad in ("nope", "split-fmnist:domainish", "split-digits,split-digits", ","):
        with pytest.raises(UserError, match="--primary"):
            parse_primary(bad)
    store = _clock_store(tmp_path / "runs", ("split-digits",))
    text = build_report(store, tmp_path / "out", primary=parse_primary("split-digits,rotated-fmnist")).report_md.read_text()
    answer = text.split("## Verdicts")[0]
    assert "**Primary settings:** split-digits, rotated-fmnist (declared with `nlbench report --primary`)." in answer
    assert "Declared primary setting rotated-fmnist has no clocked method with its controls in regime" in answer
    assert "cms vs cms-sync (n=5)" in answer


def test_one_configuration_stored_twice_pairs_each_seed_once(tmp_path):
    """cms tuned at periods 1,8,40 and again on a period axis written 1,e/5,e (split-digits: e = 40 steps), the
    same experiment under another run id. Joining both on seed paired every seed twice: n 10 instead of 5, and a
    narrower interval than the data hold."""
    from nlbench.commands.report.answer import period_rows
    from nlbench.commands.report.clock_regime import add_regime

    for seed in SEEDS:
        for strategy, written, name in (("cms", "1,8,40", "tuned"), ("cms", "1,e/5,e", "axis"),
                                        ("cms-sync", "1,8,40", "tuned")):
            spec = resolve_spec("split-digits", strategy, device="cpu", seed=seed, name=name, hparams={"periods": written})
            acc = (0.80 if strategy == "cms" else 0.78) + 0.003 * ((seed * 3 + len(strategy)) % 5)
            result = _result(seed, acc, 0.1, 1.0, 900)
            result["accuracy_matrix"], result["initial_accuracy"] = [[acc] * 5] * 5, [0.1] * 5
            periods = list(spec.hp["periods"]) if strategy == "cms" else [1, 1, 1]
            result["clocks"] = {"global_step": 200, "periods": periods, "updates": [200 // p for p in periods]}
            write_run(tmp_path, spec, result)
    runs, _, _ = load_runs(tmp_path)
    assert len(runs) == 3 * len(SEEDS), "two run ids for cms at every seed: the store keeps both"
    add_labels(runs, key_columns(runs))
    add_regime(runs)
    assert _row(compute_verdicts(runs, tmp_path), "cms", "cms-sync", "acc")["n"] == len(SEEDS)
    axis = period_rows(runs)
    assert len(axis) == 2 and set(axis["n"]) == {len(SEEDS)}
