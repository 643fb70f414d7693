"""The last hostile inputs (issue 26): each is one `error:` line and exit code 2 before any data loads, and
nothing is written.

- `--log-dir` naming a file, a path under a file, or a directory that cannot be written (run and sweep;
  `tune` has no trackers);
- a nonzero number that becomes 0 or inf as a float (`lr=1e-400`, `1e400`) in `--hp`, `--grid`,
  `--suite-option` and sweep files;
- `--probes` on strategies without clock levels;
- a grid too large to plan.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nlbench.cli import app

runner = CliRunner()


def _one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "loaded" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _unwritable(tmp_path: Path) -> Path:
    """A directory this process cannot create anything in (root writes through file modes: /proc then)."""
    if os.geteuid() == 0:
        return Path("/proc/nlbench-logs")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked / "logs"


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("where", ["file", "under-file", "unwritable"])
def test_a_log_dir_that_cannot_hold_logs_is_one_line_before_any_data_loads(tmp_path, command, where):
    afile = tmp_path / "afile"
    afile.write_text("")
    log_dir = {"file": afile, "under-file": afile / "logs", "unwritable": _unwritable(tmp_path)}[where]
    out = tmp_path / "results"
    result = runner.invoke(app, [command, "--strategy", "adam", "--epochs", "1", "--device", "cpu", "--log", "csv",
                                 "--log-dir", str(log_dir), "--out", str(out)])
    _one_error_line(result, "--log-dir", {"file": "is a file", "under-file": "which is a file",
                                          "unwritable": "is not writable"}[where])
    assert not out.exists() and afile.read_text() == ""
    assert {p.name for p in tmp_path.iterdir()} <= {"afile", "locked"}  # nothing written, no probe left


def test_a_log_dir_in_a_sweep_file_is_checked_too(tmp_path):
    (tmp_path / "afile").write_text("")
    config = tmp_path / "sweep.yaml"
    config.write_text(f"strategy: adam\nlog: csv\nlog_dir: {tmp_path / 'afile'}\n")
    _one_error_line(runner.invoke(app, ["sweep", "--config", str(config), "--dry-run"]), "--log-dir", "is a file")


# --------------------------------------------------------------------------------------------------
# Numbers that a float cannot hold


@pytest.mark.parametrize("literal, how", [("1e-400", "underflows to 0.0"), ("-2.5e-999", "underflows to 0.0"),
                                          ("1e400", "overflows to inf"), ("1_0e400", "overflows to inf")])
@pytest.mark.parametrize("command", [
    ["run", "--strategy", "adam", "--hp", "lr={}"],
    ["sweep", "--strategy", "adam", "--grid", "lr=1e-3,{}", "--dry-run"],
    ["run", "--suite", "bigram-shift", "--strategy", "adam", "--suite-option", "mix={}"],
    ["sweep", "--suite", "bigram-shift", "--strategy", "adam", "--suite-option", "mix={}", "--dry-run"],
], ids=["run-hp", "sweep-grid", "run-suite-option", "sweep-suite-option"])
def test_a_nonzero_literal_that_a_float_rounds_to_0_or_inf_is_one_line(tmp_path, command, literal, how):
    args = [a.format(literal) for a in command] + ["--out", str(tmp_path / "results")]
    _one_error_line(runner.invoke(app, args), f"{literal} is", how)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name, text", [
    ("sweep.yaml", "strategy: adam\ngrid:\n  lr: [1.0e-3, 1.0e-400]\n"),  # a YAML float (PyYAML needs the dot)
    ("sweep.yaml", "strategy: adam\ngrid:\n  lr: [1e-400]\n"),  # PyYAML reads this one as text
    ("sweep.toml", 'strategy = "adam"\n[grid]\nlr = [1e-400]\n'),
    ("sweep.json", '{"strategy": "adam", "grid": {"lr": [1e400]}}'),
    ("sweep.yaml", "strategy: adam\nsuite: bigram-shift\nsuite_options:\n  mix: 1.0e-400\n"),
])
def test_a_float_that_underflows_or_overflows_in_a_sweep_file_is_one_line(tmp_path, name, text):
    config = tmp_path / name
    config.write_text(text)
    line = _one_error_line(runner.invoke(app, ["sweep", "--config", str(config), "--dry-run"]), "as a float")
    assert "e-400" in line or "e400" in line


def test_zero_and_small_representable_values_are_still_accepted():
    from nlbench.core.registry import declared_hparams

    lr = declared_hparams("adam")["lr"]
    assert lr.parse("0") == 0.0 and lr.parse("0e-400") == 0.0 and lr.parse("1e-310") == 1e-310  # subnormal, not 0


# --------------------------------------------------------------------------------------------------
# A grid too large to plan


def test_a_grid_too_large_to_plan_is_one_line_before_it_is_expanded(tmp_path):
    """1000 lr x 1000 weight_decay x seeds 0-999 (10^9 runs) once hung with memory rising. A subprocess
    with a timeout, so a regression fails instead of hanging the test run."""
    import subprocess

    import yaml

    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"strategy": "adam", "seeds": "0-999", "grid": {
        "lr": [1e-5 * (i + 1) for i in range(1000)], "weight_decay": [1e-6 * (i + 1) for i in range(1000)]}}))
    done = subprocess.run(["nlbench", "sweep", "--config", str(config), "--dry-run", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: the sweep plans 1,000,000,000 runs (adam: 1000 lr x 1000 weight_decay x 1000 seeds)")
    assert not (tmp_path / "r").exists()


def test_the_run_count_is_checked_across_strategies_and_an_axis_is_bounded_before_parsing():
    from nlbench.commands.sweep.plan import MAX_RUNS, expand_grid
    from nlbench.errors import UserError

    lrs = ",".join(f"{1e-4 * (i + 1):g}" for i in range(400))
    assert len(expand_grid(["adam", "sgd"], {"lr": lrs}, seeds=MAX_RUNS // 800)) == 800  # exactly at the cap
    with pytest.raises(UserError, match=r"plans 100,\d{3} runs"):
        expand_grid(["adam", "sgd"], {"lr": lrs}, seeds=MAX_RUNS // 800 + 1)
    with pytest.raises(UserError, match="lr has 100,001 values or more"):
        expand_grid(["adam"], {"lr": ["1e-3"] * (MAX_RUNS + 1)})


# --------------------------------------------------------------------------------------------------
# `log:` in a sweep file (found by test_faults' random sweep-file structures; pinned here)


@pytest.mark.parametrize("value", ["false", "[]", "null"])
def test_a_sweep_file_with_log_false_plans_without_trackers(tmp_path, value):
    config = tmp_path / "sweep.yaml"
    config.write_text(f"strategy: adam\nlog: {value}\n")
    result = runner.invoke(app, ["sweep", "--config", str(config), "--dry-run", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "1 runs (1 configuration(s) x 1 seed(s))" in result.output


@pytest.mark.parametrize("value", ["true", "5", "{csv: 1}"])
def test_a_sweep_file_with_log_not_a_tracker_list_is_one_line(tmp_path, value):
    config = tmp_path / "sweep.yaml"
    config.write_text(f"strategy: adam\nlog: {value}\n")
    _one_error_line(runner.invoke(app, ["sweep", "--config", str(config), "--dry-run"]), "--log expects tracker names")
