"""`nlbench tune`: the validation split (disjoint from the test set, never trained on), the search spaces,
settings validation, and the whole command end to end on split-digits through the sweep's local
executor (real subprocesses), resumed, and read back by the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlbench.commands.tune import build_tune_settings, read_selection, run_tune, search_space
from nlbench.commands.tune.space import load_spaces
from nlbench.core.registry import strategies
from nlbench.core.spec import resolve_spec
from nlbench.errors import UserError


def _rows(tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in tensor.flatten(1)}


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------
# The validation split


def test_holdout_is_hashed_only_when_set():
    plain = resolve_spec("split-digits", "replay", device="cpu", seed=1)
    assert plain.run_id == resolve_spec("split-digits", "replay", device="cpu", seed=1, holdout=0.0).run_id
    assert "holdout" not in plain.identity()
    held = resolve_spec("split-digits", "replay", device="cpu", seed=1, holdout=0.1)
    assert held.run_id != plain.run_id and held.identity()["holdout"] == 0.1
    with pytest.raises(UserError, match="val-fraction"):
        resolve_spec("split-digits", "replay", device="cpu", holdout=1.0)


def test_validation_split_is_seeded_disjoint_from_the_test_set_and_from_training(digits):
    from nlbench.data.streams import hold_out

    split = hold_out(digits, 0.1, seed=0)
    assert len(split.train_stream) == len(split.test_stream) == len(digits.train_stream)
    test_rows = set().union(*(_rows(e.nlbench_tensors[0]) for e in digits.test_stream))
    for full, train, val in zip(digits.train_stream, split.train_stream, split.test_stream):
        n = len(full.dataset)
        assert len(val.dataset) == round(0.1 * n) and len(train.dataset) + len(val.dataset) == n
        train_rows, val_rows = _rows(train.nlbench_tensors[0]), _rows(val.nlbench_tensors[0])
        assert not val_rows & test_rows, "a validation example is in the test set"
        assert not val_rows & train_rows, "a validation example is in the training data"
        assert train_rows | val_rows == _rows(full.nlbench_tensors[0])
        assert val.classes_in_this_experience == full.classes_in_this_experience
        # the Avalanche datasets (the stock data path) hold the same examples as the fast-path tensors
        assert _rows(__import__("torch").stack([val.dataset[i][0] for i in range(len(val.dataset))])) == val_rows
    again, other = hold_out(digits, 0.1, seed=0), hold_out(digits, 0.1, seed=1)
    first = lambda bm: _rows(bm.test_stream[0].nlbench_tensors[0])  # noqa: E731
    assert first(again) == first(split) and first(other) != first(split)


def test_experiences_of_the_same_images_hold_out_the_same_images(digits):
    """Permuted/rotated streams reuse one image set per experience: a held-out image of one experience
    must not be trained on (transformed) in another."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

    from nlbench.data.streams import hold_out
    from nlbench.data.suites import Benchmark

    dataset = digits.train_stream[0].dataset
    twice = benchmark_from_datasets(train=[dataset, dataset], test=[dataset, dataset])
    for experience in twice.train_stream:
        experience.nlbench_tensors = digits.train_stream[0].nlbench_tensors
    split = hold_out(Benchmark(digits.suite, "domain", twice.train_stream, twice.test_stream, [[0, 1], [0, 1]]), 0.2, seed=3)
    first, second = (_rows(e.nlbench_tensors[0]) for e in split.test_stream)
    assert first == second and len(first) == round(0.2 * len(dataset))


def test_a_tuning_run_trains_only_on_its_training_part_and_evaluates_only_on_validation(digits, monkeypatch):
    """The run itself, not just the split: every minibatch trained on and evaluated is recorded."""
    from avalanche.core import SupervisedPlugin

    import nlbench.core.runner as runner
    from nlbench.data.streams import hold_out

    seen: dict[str, set[bytes]] = {"train": set(), "eval": set()}

    class Recorder(SupervisedPlugin):
        def before_forward(self, strategy, **kwargs):
            seen["train"] |= _rows(strategy.mb_x.cpu())

        def before_eval_forward(self, strategy, **kwargs):
            seen["eval"] |= _rows(strategy.mb_x.cpu())

    build = runner.build_strategy

    def build_with_recorder(spec, benchmark, device):
        strategy, evaluator = build(spec, benchmark, device)
        strategy.plugins.append(Recorder())
        return strategy, evaluator

    monkeypatch.setattr(runner, "build_strategy", build_with_recorder)
    spec = resolve_spec("split-digits", "adam", device="cpu", seed=0, epochs=1, holdout=0.1)
    result = runner.run_one(spec, benchmark=digits)
    assert result["status"] == "completed"
    split = hold_out(digits, 0.1, seed=0)
    val = set().union(*(_rows(e.nlbench_tensors[0]) for e in split.test_stream))
    test = set().union(*(_rows(e.nlbench_tensors[0]) for e in digits.test_stream))
    assert seen["train"] and not seen["train"] & val, "a validation example was trained on"
    assert seen["eval"] == val, "the run was not evaluated on exactly the validation examples"
    assert not seen["eval"] & test and not seen["train"] & test
    assert len(result["accuracy_matrix"]) == 5


# --------------------------------------------------------------------------------------------------
# Search spaces and settings


def test_every_registered_strategy_has_a_valid_declared_search_space():
    for name in strategies():
        space = search_space(name)
        for dim in space.values():
            assert dim.choices or (dim.low is not None and dim.high is not None)
    assert set(search_space("replay")) == {"lr"}  # the default optimizer's lr, shared by plugin methods
    assert search_space("replay")["lr"] == search_space("ewc")["lr"] == search_space("cms-sync")["lr"]
    assert set(search_space("cms+replay")) == {"lr"} and set(search_space("ewc+replay")) == {"ewc_lambda", "lr"}
    assert set(search_space("sgd")) == {"lr"} and search_space("sgd")["lr"].high == 0.3


def test_a_search_space_must_be_declared_and_inside_the_hyperparameter_range(tmp_path):
    def space(text: str, strategy: str = "ewc"):
        path = tmp_path / f"s{abs(hash(text))}.toml"
        path.write_text(text)
        return search_space(strategy, path)

    with pytest.raises(UserError, match="no search space"):
        space("[default-optimizer]\nlr = { low = 1e-4, high = 1e-2, log = true }\n")
    with pytest.raises(UserError, match="does not declare"):
        space("[ewc]\nmem_size = { low = 1, high = 5 }\n")
    with pytest.raises(UserError, match="decay_factor"):
        space("[ewc]\ndecay_factor = { low = 0.5, high = 2.0 }\n")  # decay_factor accepts [0, 1]
    with pytest.raises(UserError, match="log range"):
        space("[ewc]\newc_lambda = { low = 0.0, high = 10.0, log = true }\n")
    dims = space("[ewc]\newc_mode = \"choices\"\n[default-optimizer]\n")
    assert dims["ewc_mode"].choices == ("separate", "online") and "lr" not in dims
    assert load_spaces.cache_info().currsize >= 1


def test_a_range_replaces_the_bounds_of_every_strategy_that_tunes_the_key_and_nothing_else():
    from nlbench.commands.tune.run import plan_tune

    settings = build_tune_settings({"strategy": "adam,replay,ewc,lookahead", "ranges": ["lr=1e-7..3e-2"]})
    assert settings.ranges == {"lr": (1e-7, 3e-2)}
    plans = {p.strategy: p.space for p in plan_tune(settings, "cpu")}
    for strategy in ("adam", "replay", "ewc", "lookahead"):
        lr = plans[strategy]["lr"]
        assert (lr.low, lr.high, lr.log) == (1e-7, 3e-2, True), strategy  # the file's log flag is kept
    assert plans["ewc"]["ewc_lambda"] == search_space("ewc")["ewc_lambda"]  # other keys keep the file's range
    assert plans["lookahead"]["k"] == search_space("lookahead")["k"]
    assert search_space("adam")["lr"].low == 1e-5  # the file itself is untouched
    with pytest.raises(UserError, match="no strategy of this tune tunes 'k'"):
        plan_tune(build_tune_settings({"strategy": "adam", "ranges": ["k=2..20"]}), "cpu")
    with pytest.raises(UserError, match="decay_factor"):  # checked against the hyperparameter's own range
        plan_tune(build_tune_settings({"strategy": "ewc", "ranges": ["decay_factor=0.5..2"]}), "cpu")
    with pytest.raises(UserError, match="log range needs low > 0"):
        plan_tune(build_tune_settings({"strategy": "adam", "ranges": ["lr=0..1"]}), "cpu")
    for text, match in (("lr=1e-7", "KEY=LOW..HIGH"), ("lr=a..b", "KEY=LOW..HIGH"), ("=1..2", "KEY=LOW..HIGH"),
                        ("lr=3..1", "LOW must be below HIGH")):
        with pytest.raises(UserError, match=match):
            build_tune_settings({"strategy": "adam", "ranges": [text]})
    with pytest.raises(UserError, match="given twice"):
        build_tune_settings({"strategy": "adam", "ranges": ["lr=1e-7..1e-2", "lr=1e-6..1e-2"]})


def test_settings_reject_bad_input_with_one_line():
    with pytest.raises(UserError, match="--strategy is required"):
        build_tune_settings({})
    with pytest.raises(UserError, match="tuning seed"):
        build_tune_settings({"strategy": "adam", "seeds": "0-2"})
    with pytest.raises(UserError, match="budget"):
        build_tune_settings({"strategy": "adam", "budget": 0})
    with pytest.raises(UserError, match="sampler"):
        build_tune_settings({"strategy": "adam", "sampler": "grid"})
    with pytest.raises(UserError, match="selection metric"):
        build_tune_settings({"strategy": "adam", "metric": "test_acc"})
    settings = build_tune_settings({"strategy": "adam,ewc", "scenario": "task", "head": "multi"})
    assert settings.sweep.seeds == (1, 2, 3, 4, 5) and settings.budget == 8 and settings.name == "split-digits-task-multi-tuned"


# --------------------------------------------------------------------------------------------------
# End to end


class RecordingView:
    def __init__(self):
        self.messages, self.plans, self.selections, self.summaries = [], [], [], []

    def message(self, text):
        self.messages.append(text)

    def live(self, total, labels):
        import contextlib

        class Events:
            def started(self, spec, where): pass
            def finished(self, spec, result): pass

        return contextlib.nullcontext(Events())

    def show_summary(self, title, planned, results):
        self.summaries.append((title, planned, results))

    def show_tune_plan(self, header, rows):
        self.plans.append((header, rows))

    def show_selection(self, title, rows):
        self.selections.append((title, rows))


def _tune(tmp_path: Path, **values):
    settings = build_tune_settings({"suite": "split-digits", "epochs": 1, "out": tmp_path, "jobs": 2, "device": "cpu",
                                    **values})
    view = RecordingView()
    return run_tune(settings, view), view, settings


def _done_stamps(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("done")}


def test_tune_end_to_end_tiny(tmp_path):
    """Two strategies (one a clock control composed with replay), one trial each, two test seeds, run seed by seed."""
    code, view, settings = _tune(tmp_path, strategy="adam,cms-sync+replay", budget=1, seeds="1,2")
    assert code == 0
    entries = {e["strategy"]: e for e in read_selection(tmp_path / settings.name / "selection.json")}
    assert set(entries) == {"adam", "cms-sync+replay"}
    for name, entry in entries.items():
        (trial,) = entry["trials"]
        assert trial["status"] == "completed" and entry["chosen"] == trial["params"] and entry["budget"] == 1
        spec_json = json.loads((tmp_path / f"{settings.name}-trials" / trial["run_id"] / "spec.json").read_text())
        assert spec_json["holdout"] == 0.1 and spec_json["seed"] == 0 and spec_json["strategy"] == name
        first_id, _ = entry["test_run_ids"]
        test_spec = json.loads((tmp_path / settings.name / first_id / "spec.json").read_text())
        assert test_spec["holdout"] == 0.0 and test_spec["seed"] == 1 and test_spec["hparams"]["lr"] == trial["params"]["lr"]
    assert [row["strategy"] for row in view.selections[0][1]] == ["adam", "cms-sync+replay"]
    # the test runs go seed by seed, so a tune stopped among them leaves every strategy with the same seeds
    order = [(run.spec.seed, run.spec.strategy) for run in view.summaries[-1][1]]
    assert order == [(1, "adam"), (1, "cms-sync+replay"), (2, "adam"), (2, "cms-sync+replay")]


@pytest.mark.slow
def test_tune_chooses_the_best_validation_trial_resumes_and_reports(tmp_path):
    code, view, settings = _tune(tmp_path, strategy="adam,replay", budget=3, seeds="1,2", sampler="random")
    assert code == 0
    selection = tmp_path / settings.name / "selection.json"
    for entry in read_selection(selection):
        values = [t["value"] for t in entry["trials"]]
        assert len(values) == 3 and entry["best_value"] == max(values)
        assert entry["chosen"] == entry["trials"][values.index(max(values))]["params"]
        assert len(entry["test_run_ids"]) == 2
    # equal budget, same draws: common random numbers across strategies with the same search space
    lrs = [[t["params"]["lr"] for t in e["trials"]] for e in read_selection(selection)]
    assert lrs[0] == lrs[1]
    stamps = _done_stamps(tmp_path)
    assert len(stamps) == 2 * 3 + 2 * 2
    code, view, _ = _tune(tmp_path, strategy="adam,replay", budget=3, seeds="1,2", sampler="random")
    assert code == 0 and _done_stamps(tmp_path) == stamps, "a resumed tune trained a stored run again"
    from nlbench.commands.report.build import build_report

    report = build_report(tmp_path, tmp_path / "report")
    assert report.n_runs == 4, "validation (tuning) runs must never enter the report's results"
    assert set(report.summary["strategy"]) == {"adam", "replay"}


def test_cli_dry_run_prints_the_plan_and_bad_input_is_one_line(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "nlbench.cli", "tune", "--out", str(tmp_path)]
    plan = subprocess.run([*cmd, "--strategy", "adam,cms-sync+replay", "--budget", "3", "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert "lr [1e-05, 0.03] log" in plan.stdout and "2 strategy(ies) x 3 trial(s)" in " ".join(plan.stdout.split())
    wide = subprocess.run([*cmd, "--strategy", "adam", "--range", "lr=1e-7..3e-2", "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert wide.returncode == 0 and "lr [1e-07, 0.03] log" in wide.stdout, wide.stderr
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"
    bad = subprocess.run([*cmd, "--strategy", "adam", "--seeds", "0,1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ")


@pytest.mark.skipif(not __import__("nlbench.data.readers", fromlist=["x"]).DEBIAN_FMNIST_DIR.is_dir(),
                    reason="apt-get install dataset-fashion-mnist")
def test_tasks_that_draw_different_subsets_never_train_on_another_tasks_validation_images():
    """permuted-fmnist 5 x 3000: each task draws its own 3000 of the 60000 images; held out by position,
    232 of 1500 validation images were trained on in another task (issue 26). By identity: none."""
    import torch

    from nlbench.data.readers import DEFAULT_DATA_ROOT
    from nlbench.data.streams import build_benchmark, hold_out
    from nlbench.data.suites import configure_suite, get_suite

    suite = configure_suite(get_suite("permuted-fmnist"), {"n_tasks": 5, "train_per_task": 3000})
    benchmark = build_benchmark(suite, "domain", seed=2, data_root=DEFAULT_DATA_ROOT, download=False)
    split = hold_out(benchmark, 0.1, seed=4)
    val = {int(i) for e in split.test_stream for i in e.nlbench_source_ids}
    train = {int(i) for e in split.train_stream for i in e.nlbench_source_ids}
    for kept, held in zip(split.train_stream, split.test_stream):
        assert len(kept.dataset) + len(held.dataset) == 3000 and 200 <= len(held.dataset) <= 400
    assert val and not (val & train), f"{len(val & train)} validation images are trained on in another task"
