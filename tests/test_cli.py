"""The command line: list, run, the results it leaves, and one clear line with exit code 2 on bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nlbench.cli import app

runner = CliRunner()


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from typer.testing import CliRunner; from nlbench.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'avalanche', 'pandas', 'seaborn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_help():
    out = subprocess.run(["nlbench", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--suite" in out.stdout and "--strategy" in out.stdout


def test_list_shows_suites_and_strategy_defaults():
    result = runner.invoke(app, ["list"], terminal_width=200)
    assert result.exit_code == 0
    for text in ("split-digits", "split-cifar10", "permuted-mnist", "split-cifar", "replay", "mem_size=200", "lr=0.001"):
        assert text in result.output


def test_run_writes_results_and_prints_the_table(tmp_path):
    args = ["run", "--suite", "split-digits", "--strategy", "adam,replay", "--device", "cpu", "--out", str(tmp_path)]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "adam" in result.output and "replay" in result.output and "ACC %" in result.output
    runs = sorted((tmp_path / "split-digits").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert (run / "done").exists()
        spec = json.loads((run / "spec.json").read_text())
        assert spec["suite"] == "split-digits" and spec["device"] == "cpu"
        assert len(json.loads((run / "result.json").read_text())["accuracy_matrix"]) == 5
    # Not a terminal: one time-stamped line per finished experience and per finished run, on stderr.
    assert result.stderr.count("run 1/2 adam: experience") == 5 and "run 2/2 replay: experience 5/5 trained" in result.stderr
    assert "run 2/2 replay: completed in" in result.stderr and result.stderr.startswith("[0:0")
    assert "run time s" in result.stdout and "peak MB on CPU: the run's peak resident memory" in result.stdout
    again = runner.invoke(app, args, terminal_width=200)
    assert again.exit_code == 0 and again.output.count("(cached)") == 2
    assert again.stdout.count("(stored)") == 2 and "its time and memory are the stored run's" in again.stdout
    assert "run 1/2 adam: cached (completed; the stored run took" in again.stderr and "trained" not in again.stderr


def test_hp_override_applies_to_the_strategies_that_declare_it(tmp_path):
    args = ["run", "--strategy", "adam,replay", "--device", "cpu", "--epochs", "1", "--hp", "mem_size=20",
            "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    specs = [json.loads(p.read_text()) for p in tmp_path.rglob("spec.json")]
    assert {s["strategy"]: s["hparams"].get("mem_size") for s in specs} == {"adam": None, "replay": 20}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--suite", "split-imagenet"], "unknown suite 'split-imagenet'"),
        (["--strategy", "adam,nope"], "unknown strategy 'nope'"),
        (["--scenario", "domain"], "scenario 'domain' is not available"),
        (["--backbone", "vgg"], "unknown backbone 'vgg'"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--batch-size", "-1"], "--batch-size must be a positive integer"),
        (["--hp", "bogus=3"], "unknown hyperparameter 'bogus'"),
        (["--hp", "lr=abc", "--strategy", "adam"], "lr='abc' is not valid"),
        (["--hp", "lr"], "--hp expects KEY=VALUE"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--device", "cuda"], "no CUDA GPU is visible"),
        (["--protocol", "mammoth"], "unknown protocol 'mammoth'; valid: der2020"),
        (["--name", "../elsewhere"], "--name '../elsewhere' must be a relative directory name"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    if "cuda" in args and __import__("torch").cuda.is_available():
        pytest.skip("a GPU is visible")
    result = runner.invoke(app, ["run", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(_errors(result.stderr)) == 1 and "Traceback" not in result.output + result.stderr


def _errors(stderr: str) -> list[str]:
    """stderr without the progress line a pipe gets at once (`[0:00:00] starting: loading ...`): what a
    check that needs torch (a device, the data) finds comes after it."""
    lines = stderr.strip().splitlines()
    return lines[1:] if lines and re.match(r"^\[\d+:\d\d:\d\d\] starting: ", lines[0]) else lines


def test_missing_dataset_is_one_clear_line(tmp_path, offline):
    result = runner.invoke(app, ["run", "--suite", "split-mnist", "--strategy", "adam", "--device", "cpu",
                                 "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "results")])
    assert result.exit_code == 2
    assert "train-images-idx3-ubyte" in result.stderr and "--data-root" in result.stderr
    assert len(_errors(result.stderr)) == 1 and "Traceback" not in result.stderr


def test_unwritable_results_directory_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["run", "--strategy", "adam", "--device", "cpu", "--out", str(blocker / "results")])
    assert result.exit_code == 2 and "not writable" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--epochs", "abc"], "error: Invalid value for '--epochs': Input should be a valid integer"),
        (["run", "--batch-size", "1.5"], "error: Invalid value for '--batch-size'"),
        (["run", "--bogus"], "error: No such option: --bogus"),
        (["sweep", "--config"], "error: Option '--config' requires an argument"),
        (["sweep", "--config", "."], "error: Invalid value for '--config'"),  # a directory, not a file
        (["frobnicate"], "error: No such command 'frobnicate'; see 'nlbench --help'"),
    ],
)
def test_parser_errors_of_the_console_script_are_one_line(args, message):
    """Click's own usage errors (bad option values, unknown options or commands), through the real
    `nlbench` entry point: one line and exit code 2, instead of Click's usage box."""
    out = subprocess.run(["nlbench", *args], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(message) and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr and not out.stdout


def test_console_script_keeps_help_and_exit_codes():
    assert subprocess.run(["nlbench", "--help"], capture_output=True, text=True).returncode == 0
    bare = subprocess.run(["nlbench"], capture_output=True, text=True)
    assert bare.returncode == 2 and "Usage" in bare.stdout + bare.stderr  # no command: the help text


def test_speed_options_reach_the_spec(tmp_path):
    args = ["run", "--strategy", "adam", "--device", "cpu", "--epochs", "1", "--amp", "bf16", "--channels-last",
            "--data-path", "avalanche", "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    spec = json.loads(next(tmp_path.rglob("spec.json")).read_text())
    assert (spec["amp"], spec["channels_last"], spec["data_path"], spec["compile"]) == ("bf16", True, "avalanche", False)
    bad = runner.invoke(app, ["run", "--amp", "fp8", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--amp 'fp8' is not valid; valid: none, bf16" in bad.stderr


@pytest.mark.parametrize("command", ["run", "sweep", "report", "list"])
def test_help_is_plain_at_80_columns(command):
    """No type placeholders (<str>, <bool>, <list[str]>), and the --grid example is not cut."""
    import os

    out = subprocess.run(["nlbench", command, "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert out.returncode == 0
    for placeholder in ("<str>", "<bool>", "<int>", "<path>", "<list", "<float>"):
        assert placeholder not in out.stdout, placeholder
    assert max(len(line) for line in out.stdout.splitlines()) <= 80
    if command == "sweep":
        assert "(periods=1,8,64:1,16,128)" in out.stdout


def test_command_help_keeps_sentences_whole():
    from nlbench.cli.common import reflow
    from nlbench.cli.run import run_command

    text = reflow(run_command.__doc__)
    assert text.count("\n\n") == 1 and "\n" not in text.replace("\n\n", "")
    assert "1 when a run failed (its error is stored and printed)" in text


def test_list_is_at_most_100_columns_when_redirected():
    out = subprocess.run(["nlbench", "list"], capture_output=True, text=True, check=True).stdout
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 100
    assert "split-cifar10 (alias split-cifar)" in out and "mem_size=200" in out
