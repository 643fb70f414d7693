"""The stream plan (steps per experience from metadata), clock periods relative to the experience, and the
warning before training when a level would barely tick: checked against real streams and real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nlbench.core.periods import resolve_periods
from nlbench.core.regime import planned_levels, regime_warning
from nlbench.core.spec import resolve_spec
from nlbench.data.plan import TRAIN_PER_CLASS, experience_examples, stream_plan
from nlbench.data.readers import DEBIAN_FMNIST_DIR, DEFAULT_DATA_ROOT
from nlbench.data.suites import configure_suite, get_suite
from nlbench.errors import UserError

FMNIST = pytest.mark.skipif(not DEBIAN_FMNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")


def _built_sizes(suite, scenario):
    from nlbench.data.streams import build_benchmark

    benchmark = build_benchmark(suite, scenario, seed=3, data_root=DEFAULT_DATA_ROOT, download=False)
    return tuple(len(e.dataset) for e in benchmark.train_stream)


@pytest.mark.parametrize(("name", "scenario", "options"), [
    ("split-digits", "class", {}),
    ("split-digits", "task", {}),
    ("bigram-shift", "domain", {}),
    ("bigram-shift", "domain", {"regime": "alternating", "blocks": 3, "steps": 20}),
    ("bigram-shift", "domain", {"regime": "mixture"}),
])
def test_the_plan_counts_the_examples_the_real_stream_has(name, scenario, options):
    suite = configure_suite(get_suite(name), options)
    assert experience_examples(suite) == _built_sizes(suite, scenario)


@FMNIST
@pytest.mark.parametrize(("name", "options"), [("split-fmnist", {}), ("permuted-fmnist", {"n_tasks": 3, "train_per_task": 3200})])
def test_the_plan_counts_real_fashion_mnist_streams(name, options):
    suite = configure_suite(get_suite(name), options)
    assert experience_examples(suite) == _built_sizes(suite, suite.default_scenario)


@FMNIST
def test_the_per_class_training_counts_are_the_real_datasets():
    from nlbench.data.readers import load_arrays

    for dataset in ("digits", "fashion-mnist"):
        _, y = load_arrays(dataset, DEFAULT_DATA_ROOT, train=True, download=False)
        assert tuple(np.bincount(np.asarray(y), minlength=10).tolist()) == TRAIN_PER_CLASS[dataset]


def test_steps_are_epochs_times_batches_with_the_last_partial_batch_and_the_holdout_removed():
    suite = configure_suite(get_suite("permuted-fmnist"), {"n_tasks": 2, "train_per_task": 3200})
    assert stream_plan(suite, 32, 1).steps == (100, 100)
    assert stream_plan(suite, 30, 2).steps == (2 * 107, 2 * 107)  # 3200 / 30 = 106.7: the last batch counts
    assert stream_plan(suite, 32, 1, holdout=0.1).examples == (2880, 2880)


def test_relative_periods_resolve_on_a_100_step_experience():
    spec = resolve_spec("permuted-fmnist", "cms", device="cpu", batch_size=32, hparams={"periods": "1,e/10,e"},
                        suite_options={"n_tasks": 2, "train_per_task": 3200})
    assert dict(spec.hparams)["periods"] == (1, "e/10", "e")  # what was written
    assert spec.hp["periods"] == (1, 10, 100)  # what the clock steps
    assert [(lv.period, lv.updates / lv.n_experiences) for lv in planned_levels(spec)] == [(1, 100), (10, 10), (100, 1)]
    assert spec.identity()["resolved_hparams"] == {"periods": [1, 10, 100]}
    written = resolve_spec("permuted-fmnist", "cms", device="cpu", batch_size=32, hparams={"periods": "1,10,100"},
                           suite_options={"n_tasks": 2, "train_per_task": 3200})
    assert written.hp["periods"] == spec.hp["periods"] and written.run_id != spec.run_id
    assert "resolved_hparams" not in written.identity(), "absolute periods keep the run ids stored before"


def test_the_same_words_on_streams_of_different_lengths_never_share_a_run_id():
    ids, resolved = set(), set()
    for per_task in (3200, 6400):
        spec = resolve_spec("permuted-fmnist", "cms", device="cpu", batch_size=32, hparams={"periods": "1,e/10,e"},
                            suite_options={"n_tasks": 2, "train_per_task": per_task})
        ids.add(spec.run_id)
        resolved.add(spec.hp["periods"])
    assert len(ids) == 2 and resolved == {(1, 10, 100), (1, 20, 200)}


def test_the_spec_round_trips_with_its_resolved_periods():
    from nlbench.core.spec import RunSpec

    spec = resolve_spec("split-digits", "cms-sync", device="cpu", hparams={"periods": "1,e/4,2e"})
    again = RunSpec.from_dict(json.loads(spec.to_json()))
    assert again == spec and again.run_id == spec.run_id and again.hp["periods"] == spec.hp["periods"]


@pytest.mark.parametrize(("text", "message"), [
    ("1,x/8", "is not valid"),
    ("1,e/0", "is not valid"),
    ("1,e/100000", "at least 1 step"),
    ("8,e/8", "strictly increasing"),
])
def test_bad_relative_periods_are_one_line_errors(text, message):
    with pytest.raises(UserError, match=message):
        resolve_spec("split-digits", "cms", device="cpu", hparams={"periods": text})


def test_resolution_rounds_half_up_and_checks_the_order():
    assert resolve_periods("periods", (1, "e/8", "e", "2e"), 20) == (1, 3, 20, 40)  # 2.5 -> 3
    with pytest.raises(UserError, match="strictly increasing"):
        resolve_periods("periods", ("e/2", "e/3"), 6)


def test_the_planned_regime_of_the_reference_setting_that_barely_ticked():
    spec = resolve_spec("permuted-fmnist", "cms", device="cpu", suite_options={"n_tasks": 5, "train_per_task": 3000})
    assert [lv.updates for lv in planned_levels(spec)] == [120, 15, 1]  # 24 steps per experience
    line = regime_warning([spec])
    assert line is not None and "\n" not in line and "level C=64: 1 update in 5 experiences" in line
    assert regime_warning([resolve_spec("split-digits", "adam", device="cpu")]) is None
    frozen = resolve_spec("permuted-fmnist", "cms-frozen", device="cpu", suite_options={"n_tasks": 5, "train_per_task": 3000})
    assert [lv.period for lv in planned_levels(frozen)] == [1], "a frozen control's slow levels never update by design"


def _cli(*args, cwd):
    env = {**os.environ, "NLBENCH_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "nlbench.cli", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def test_a_real_run_ticks_as_resolved_and_a_short_stream_is_warned_before_training(tmp_path):
    """periods=1,e/10,e on 100-step experiences: the stored clock updated 100, 10 and 1 times per experience;
    the default periods on 2 x 4 steps: one warning line, printed before the data loads."""
    out = tmp_path / "results"
    done = _cli("run", "--suite", "bigram-shift", "--suite-option", "steps=100", "--strategy", "clocked-adam",
                "--hp", "periods=1,e/10,e", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning: the planned run gives a clock level fewer than 5 updates" in done.stderr  # C=e: 2 updates in 2
    (result,) = out.rglob("result.json")
    clocks = json.loads(result.read_text())["clocks"]
    assert clocks["periods"] == [1, 10, 100] and clocks["updates"] == [200, 20, 2]
    spec = json.loads((result.parent / "spec.json").read_text())
    assert spec["hparams"]["periods"] == [1, "e/10", "e"] and spec["resolved_hparams"]["periods"] == [1, 10, 100]

    short = _cli("run", "--suite", "bigram-shift", "--suite-option", "steps=4", "--strategy", "clocked-adam",
                 "--out", str(out), cwd=tmp_path)
    assert short.returncode == 0, short.stderr[-2000:]
    warnings = [line for line in short.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "level C=64: 0 updates in 2 experiences" in warnings[0]
    assert short.stderr.index("warning") < short.stderr.index("loaded")


def test_bad_relative_periods_on_the_command_line_exit_2_with_one_line_and_write_nothing(tmp_path):
    for text in ("1,x/8", "1,e/100000"):
        done = _cli("run", "--strategy", "cms", "--hp", f"periods={text}", "--out", str(tmp_path / "r"), cwd=tmp_path)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "r").exists()
    sweep = _cli("sweep", "--strategy", "cms", "--grid", "periods=1,e/8,e:8,e/8", "--dry-run", cwd=tmp_path)
    assert sweep.returncode == 2 and "strictly increasing" in sweep.stderr and len(sweep.stderr.strip().splitlines()) == 1


@FMNIST
def test_a_test_subset_per_task_is_seeded_and_the_same_for_every_run_seed():
    from nlbench.data.streams import build_benchmark

    suite = configure_suite(get_suite("permuted-fmnist"), {"n_tasks": 2, "train_per_task": 100, "test_per_task": 500})
    labels = []
    for seed in (3, 4):
        benchmark = build_benchmark(suite, "domain", seed=seed, data_root=DEFAULT_DATA_ROOT, download=False)
        assert [len(e.dataset) for e in benchmark.test_stream] == [500, 500]
        labels.append([e.nlbench_tensors[1].tolist() for e in benchmark.test_stream])
    assert labels[0] == labels[1], "the run seed changes the permutation, not which test images measure it"
    assert labels[0][0] != labels[0][1], "each task draws its own subset"
