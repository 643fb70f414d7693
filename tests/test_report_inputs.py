"""Hostile inputs to `nlbench report`: damaged `selection.json` files (a FIFO, an entry that is not an
object, `test_run_ids` that is not a list, a truncated, list-shaped or binary file), a malformed
`--published` CSV, an unknown `--sweep-axes` name and a bad `--primary` setting.

A damaged selection file is skipped whole with one warning naming the file and the field, the report is
written in full, and the valid selection beside it is still used; the other two are bad input: one
line, exit 2, nothing written. The store is hand-made (results written through the real store, no
training), as in test_verdicts.py.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nlbench.commands.tune.provenance import read_selection, write_selection
from nlbench.core.selection import read_selection_file, selected_run_ids
from nlbench.core.spec import resolve_spec
from nlbench.core.store import write_run

SEEDS = (1, 2, 3)
TUNED_ADAM = (0.50, 0.55, 0.52)  # the tuned adam (lr=0.005): cms beats it by about 30 points
DEFAULT_ADAM = (0.90, 0.91, 0.90, 0.92)  # more runs, not tuned: used only if the selection were lost
CMS = (0.80, 0.84, 0.81)


def _result(seed: int, acc: float) -> dict:
    return {"status": "completed", "error": None, "seed": seed, "accuracy_matrix": [[acc]], "initial_accuracy": [0.1],
            "metrics": {"acc": acc, "forgetting": 0.1, "bwt": -0.1, "learning_acc": acc, "avg_inc_acc": acc, "fwt": 0.0},
            "experience_train_time_s": [1.0], "eval_time_s": [0.1], "wall_time_s": 5.0,
            "peak_memory_mb": 900.0, "peak_memory_kind": "rss_peak", "device": "cpu"}


def _store(root: Path) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {"tuned": [], "default": []}
    for seed, acc in zip(SEEDS, TUNED_ADAM):
        spec = resolve_spec("split-digits", "adam", device="cpu", seed=seed, hparams={"lr": 0.005}, name="tuned")
        write_run(root, spec, _result(seed, acc))
        ids["tuned"].append(spec.run_id)
    for seed, acc in zip(SEEDS, CMS):
        write_run(root, resolve_spec("split-digits", "cms", device="cpu", seed=seed, name="tuned"), _result(seed, acc))
    for seed, acc in enumerate(DEFAULT_ADAM, start=1):
        spec = resolve_spec("split-digits", "adam", device="cpu", seed=seed, name="plain")
        write_run(root, spec, _result(seed, acc))
        ids["default"].append(spec.run_id)
    return ids


def _valid_entry(run_ids: list[str]) -> dict:
    return {"strategy": "adam", "setting": {"suite": "split-digits", "scenario": "class", "head": "single", "backbone": "mlp",
                                            "epochs": 5, "batch_size": 32, "protocol": None},
            "metric": "val_acc", "direction": "maximize", "val_fraction": 0.1, "tune_seed": 0, "sampler": "tpe", "budget": 1,
            "space": {"lr": "[0.0001, 0.01] log"},
            "trials": [{"number": 0, "params": {"lr": 0.005}, "value": 0.6, "status": "completed", "run_id": run_ids[0]}],
            "chosen": {"lr": 0.005}, "best_value": 0.6, "best_trial": 0, "test_seeds": list(SEEDS), "test_run_ids": run_ids}


# name of the damaged file's run-name directory -> (its content, or None for a FIFO; words its warning must hold)
def _damaged(default_ids: list[str]) -> dict[str, tuple[bytes | None, str]]:
    valid = json.dumps({"schema": 1, "kind": "nlbench-selection", "selections": [_valid_entry(default_ids)]})
    return {
        "fifo": (None, "FIFO"),
        "not-an-object": (b'{"selections": [1]}', "field selections[0]"),
        "ids-not-a-list": (json.dumps({"selections": [{"strategy": "adam", "test_run_ids": 5}]}).encode(),
                           "field selections[0].test_run_ids"),
        # a valid first entry that points at the untuned adam runs, then a bad one: the whole file goes
        "one-bad-entry": (json.dumps({"selections": [_valid_entry(default_ids), "x"]}).encode(), "field selections[1]"),
        "truncated": (valid[: len(valid) // 2].encode(), "not valid JSON"),
        "a-list": (b"[1, 2, 3]", "the whole record"),
        "binary": (bytes(range(256)) * 4, "not valid JSON"),
        "bad-run-id": (json.dumps({"selections": [{"strategy": "adam", "test_run_ids": ["../../x"]}]}).encode(),
                       "field selections[0].test_run_ids[0]"),
        "other-schema": (json.dumps({"schema": 2, "selections": []}).encode(), "field schema"),
    }


def _plant(root: Path, damaged: dict[str, tuple[bytes | None, str]]) -> dict[str, Path]:
    paths = {}
    for name, (content, _) in damaged.items():
        path = root / f"bad-{name}" / "selection.json"
        path.parent.mkdir(parents=True)
        if content is None:
            os.mkfifo(path)
        else:
            path.write_bytes(content)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("selections")
    ids = _store(root)
    write_selection(root / "tuned" / "selection.json", _valid_entry(ids["tuned"]))
    damaged = _damaged(ids["default"])
    return {"root": root, "ids": ids, "damaged": damaged, "paths": _plant(root, damaged)}


def test_each_damaged_selection_file_is_skipped_whole_with_one_message_naming_it_and_the_field(store):
    for name, path in store["paths"].items():
        entries, problem = read_selection_file(path)
        assert entries == [], name
        assert problem and str(path) in problem and store["damaged"][name][1] in problem, (name, problem)
        assert "\n" not in problem
    assert read_selection_file(store["root"] / "nowhere" / "selection.json") == ([], None)  # absent: nothing to say
    ids, problems = selected_run_ids(store["root"])
    assert ids == set(store["ids"]["tuned"]), "only the valid file's runs are the tuned ones"
    assert len(problems) == len(store["damaged"])


def test_the_tune_reads_only_a_valid_file_and_warns_once_about_a_damaged_one(store, tmp_path):
    path = store["root"] / "tuned" / "selection.json"
    assert [e["test_run_ids"] for e in read_selection(path)] == [store["ids"]["tuned"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_selection(store["paths"]["ids-not-a-list"]) == []
    assert [str(w.message) for w in caught] == [read_selection_file(store["paths"]["ids-not-a-list"])[1]]
    # a tune writing beside a damaged file replaces it with a valid one (after the warning)
    target = tmp_path / "selection.json"
    target.write_text('{"selections": [1]}')
    with pytest.warns(UserWarning, match="selections\\[0\\]"):
        write_selection(target, _valid_entry(store["ids"]["tuned"]))
    assert read_selection_file(target)[1] is None and len(read_selection(target)) == 1


def test_report_on_damaged_selection_files_warns_once_per_file_and_writes_the_whole_report(store, tmp_path):
    """A real `nlbench report` process: a FIFO that were opened would block it forever (the timeout is
    only a guard; the test synchronises on the process exiting)."""
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "nlbench.cli", "report", str(store["root"]), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warned = [line for line in done.stderr.splitlines() if "selection.json" in line]
    assert len(warned) == len(store["damaged"]), warned
    for name, path in store["paths"].items():
        (line,) = [w for w in warned if f"{path}:" in w]
        assert line.startswith("warning: skipping") and store["damaged"][name][1] in line, line
    report = (out / "report.md").read_text()
    assert "## Verdicts" in report and report.count("selection.json") >= len(store["damaged"])
    with open(out / "tables" / "verdicts.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["reference"] == "adam" and r["metric"] == "acc"]
    (row,) = rows
    # cms - tuned adam, per seed: 30, 29, 29 points; against the untuned adam it would be about -10
    assert float(row["estimate"]) == pytest.approx(100 * (sum(CMS) - sum(TUNED_ADAM)) / 3)


# --------------------------------------------------------------------------------------------------
# --published and --sweep-axes


def _report(args: list[str]):
    from nlbench.cli import app

    return CliRunner().invoke(app, ["report", *args])


def _one_line_exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("content, words", [
    (b"suite,scenario\nsplit-digits,class\na,b,c,d,e\n\"unclosed", "not a readable CSV"),  # pandas ParserError
    (b"", "not a readable CSV"),  # EmptyDataError
    (bytes(range(256)) * 8, "not a readable CSV"),  # not text
    (b"suite,scenario\nsplit-digits,class\n", "lacks the column(s)"),  # parses, but is not a published table
], ids=["parser-error", "empty", "binary", "missing-columns"])
def test_a_malformed_published_csv_is_one_line_exit_2_and_nothing_is_written(store, tmp_path, content, words):
    bad = tmp_path / "published.csv"
    bad.write_bytes(content)
    out = tmp_path / "report"
    line = _one_line_exit_2(_report([str(store["root"]), "--out", str(out), "--published", str(bad)]))
    assert str(bad) in line and words in line, line
    assert not out.exists()


def test_a_published_fifo_is_refused_without_being_opened(store, tmp_path):
    fifo = tmp_path / "published.csv"
    os.mkfifo(fifo)
    line = _one_line_exit_2(_report([str(store["root"]), "--out", str(tmp_path / "r"), "--published", str(fifo)]))
    assert "not a regular file" in line


@pytest.mark.parametrize("axes, words", [
    ("nosuch", "'nosuch' is not a hyperparameter of any strategy; valid: "),
    ("periods,nosuch", "'nosuch'"),
    ("periods,alpha,lr", "two different hyperparameters"),
    ("lr,lr", "two different hyperparameters"),
    (",", "at least one"),
])
def test_unknown_sweep_axes_are_one_line_exit_2_naming_the_valid_ones(store, tmp_path, axes, words):
    out = tmp_path / "report"
    line = _one_line_exit_2(_report([str(store["root"]), "--out", str(out), "--sweep-axes", axes]))
    assert words in line, line
    if "valid:" in line:
        assert {"periods", "alpha", "lr", "mem_size"} <= set(line.split("valid: ")[1].split(", "))
    assert not out.exists()


@pytest.mark.parametrize("primary, words", [
    ("nosuch-suite", "unknown suite 'nosuch-suite'; known: "),
    ("split-fmnist:domain", "suite split-fmnist has no scenario 'domain'; it has class, task"),
    ("split-digits,split-digits", "split-digits is named twice"),
])
def test_a_bad_primary_setting_is_one_line_exit_2(store, tmp_path, primary, words):
    out = tmp_path / "report"
    line = _one_line_exit_2(_report([str(store["root"]), "--out", str(out), "--primary", primary]))
    assert line.startswith("error: --primary: ") and words in line, line
    assert not out.exists()
