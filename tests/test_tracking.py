"""Experiment trackers (`--log`): real TensorBoard event files read back with TensorBoard's reader, a real
W&B run in offline mode, CSV files; logging changes neither a run's numbers nor its run id."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nlbench.cli import app
from nlbench.core.spec import resolve_spec
from nlbench.core.tracking import Tracking, make_tracking, parse_trackers
from nlbench.errors import UserError

runner = CliRunner()


def _spec(strategy: str = "adam", **fields):
    return resolve_spec("split-digits", strategy, device="cpu", epochs=fields.pop("epochs", 2), **fields)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, digits, one_thread):
    """One adam run on split-digits logged to every available tracker, and the same spec untracked."""
    from nlbench.core.runner import run_one

    kinds = ["csv"]
    for kind, module in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
        try:
            __import__(module)
            kinds.append(kind)
        except ImportError:
            pass
    root = tmp_path_factory.mktemp("logs")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_DIR", str(root))
    try:
        spec = _spec()
        logged = run_one(spec, benchmark=digits, tracking=Tracking(kinds=tuple(kinds), directory=str(root)))
        plain = run_one(spec, benchmark=digits)
    finally:
        mp.undo()
    return spec, root, logged, plain


def test_logging_changes_no_number(tracked):
    spec, _, logged, plain = tracked
    assert logged["status"] == "completed"
    assert logged["accuracy_matrix"] == plain["accuracy_matrix"]  # bit for bit
    assert logged["initial_accuracy"] == plain["initial_accuracy"]
    assert set(logged) == set(plain)  # result.json has the same fields: logging is not part of the run


def test_tensorboard_event_files_hold_the_run(tracked):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec, root, result, _ = tracked
    runs = list((root / "tensorboard" / "split-digits").iterdir())
    assert [r.name for r in runs] == [f"adam_s0_{spec.run_id[:8]}"]
    events = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 11))  # 5 experiences x 2 epochs
    assert all(e.value > 0 for e in loss)
    for j in range(5):  # one accuracy-matrix column per test experience; step 0 = the pre-training row
        column = events.Scalars(f"acc/exp_{j}")
        assert [e.step for e in column] == list(range(6))
        assert [e.value for e in column] == pytest.approx([result["initial_accuracy"][j]]
                                                          + [row[j] for row in result["accuracy_matrix"]])
    assert events.Scalars("final/acc")[0].value == pytest.approx(result["metrics"]["acc"])
    assert events.Scalars("final/forgetting")[0].value == pytest.approx(result["metrics"]["forgetting"])
    assert len(events.Scalars("time/train_s")) == 5 and "final/wall_time_s" in scalars
    spec_text = events.Tensors("spec/text_summary")[0].tensor_proto.string_val[0].decode()
    assert spec.run_id in spec_text and '"strategy": "adam"' in spec_text


def test_wandb_offline_run_directory(tracked):
    """An offline W&B run: its directory and its transaction log (`run-<id>.wandb`, protobuf records that
    `wandb sync` uploads), which carries the spec as config, the group, the curves and the summary."""
    pytest.importorskip("wandb")
    spec, root, result, _ = tracked
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logs = list(runs[0].glob("run-*.wandb"))
    assert len(logs) == 1
    data = logs[0].read_bytes()
    assert data.startswith(b":W&B")
    for text in (spec.run_id, f"adam_s0_{spec.run_id[:8]}", "split-digits", "train/loss", "acc/exp_4", "final/acc",
                 "accuracy_matrix", "completed"):
        assert text.encode() in data, text


def test_csv_files(tracked):
    spec, root, result, _ = tracked
    where = root / "csv" / "split-digits" / f"adam_s0_{spec.run_id[:8]}"
    assert json.loads((where / "config.json").read_text())["run_id"] == spec.run_id
    with open(where / "accuracy_matrix.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["after", *(f"exp_{j}" for j in range(5))]
    assert [[float(v) for v in row[1:]] for row in rows[2:]] == result["accuracy_matrix"]
    with open(where / "metrics.csv") as handle:
        metrics = list(csv.DictReader(handle))
    assert sum(m["tag"] == "train/loss" for m in metrics) == 10
    assert float(next(m for m in metrics if m["tag"] == "final/acc")["value"]) == result["metrics"]["acc"]
    assert json.loads((where / "summary.json").read_text())["status"] == "completed"


def test_parse_trackers():
    assert parse_trackers(["tensorboard,csv", "csv"]) == ("tensorboard", "csv")
    assert parse_trackers(None) == () and not make_tracking(None)
    with pytest.raises(UserError, match="unknown tracker 'mlflow' for --log; valid: tensorboard, wandb, csv"):
        parse_trackers(["mlflow"])
    tracking = make_tracking(["csv"], "somewhere", group="g")
    assert Tracking.from_json(tracking.to_json()) == tracking


def test_no_tracker_code_loads_when_logging_is_off():
    """The CLI and the runner load nlbench's tracker plugin only for `--log`. (Avalanche itself imports
    tensorboard and wandb, when installed, as it loads its own loggers: that cost is there either way.)"""
    code = ("import sys; from nlbench.cli import app; import nlbench.cli.run, nlbench.core.tracking; "
            "assert 'torch' not in sys.modules; from nlbench.core.runner import run_one; "
            "print('nlbench.core.trackers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cli_log_does_not_change_the_run_id(tmp_path):
    args = ["run", "--strategy", "adam", "--device", "cpu", "--epochs", "1", "--out", str(tmp_path / "results")]
    first = runner.invoke(app, [*args, "--log", "csv", "--log-dir", str(tmp_path / "logs")])
    assert first.exit_code == 0, first.output
    assert len(list((tmp_path / "logs" / "csv" / "split-digits").iterdir())) == 1
    again = runner.invoke(app, args)  # no --log: the same run, reused
    assert again.exit_code == 0 and "(cached)" in again.output


def test_cli_unknown_tracker_is_one_line(tmp_path):
    result = runner.invoke(app, ["run", "--log", "mlflow", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown tracker 'mlflow' for --log; valid: tensorboard, wandb, csv"


@pytest.mark.slow
def test_sweep_runs_are_grouped_under_the_sweep_name(tmp_path):
    """The local executor's child processes log too, grouped by the sweep's name."""
    result = subprocess.run(
        ["nlbench", "sweep", "--strategy", "adam", "--seeds", "0,1", "--epochs", "1", "--device", "cpu", "--name", "grp",
         "--out", str(tmp_path / "results"), "--log", "csv", "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    runs = sorted(p.name for p in (tmp_path / "logs" / "csv" / "grp").iterdir())
    assert [r.split("_")[:2] for r in runs] == [["adam", "s0"], ["adam", "s1"]]
    assert all((tmp_path / "logs" / "csv" / "grp" / r / "summary.json").exists() for r in runs)
