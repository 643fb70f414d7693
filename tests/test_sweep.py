"""`nlbench sweep`: grid expansion and validation, resume, the local executor's real subprocesses
(completed, diverged and failed runs; Ctrl-C; SIGKILL of the whole sweep), slots and threads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nlbench.errors import UserError
from nlbench.commands.sweep.executors import LocalExecutor, gpu_slots, plan_local, visible_gpu_ids
from nlbench.core.registry import HParam, declared_hparams, strategies
from nlbench.core.store import load_results
from nlbench.commands.sweep import (
    build_settings,
    expand_grid,
    load_config,
    parse_grid_options,
    parse_grid_values,
    parse_seeds,
    plan_runs,
)
from nlbench.cli.sweep import run_one_command, sweep_command

app = typer.Typer()
app.command("sweep")(sweep_command)
app.command("run-one")(run_one_command)
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["sweep", *args], terminal_width=200)


# --------------------------------------------------------------------------------------------------
# The grid


def test_grid_applies_each_key_to_the_strategies_that_declare_it():
    points = expand_grid(["replay", "sgd", "ewc"], {"mem_size": "100,200", "lr": "0.01,0.1"})
    by_strategy: dict[str, list] = {}
    for name, point in points:
        by_strategy.setdefault(name, []).append(point)
    assert by_strategy["replay"] == [
        {"mem_size": 100, "lr": 0.01}, {"mem_size": 100, "lr": 0.1},
        {"mem_size": 200, "lr": 0.01}, {"mem_size": 200, "lr": 0.1},
    ]
    assert by_strategy["sgd"] == [{"lr": 0.01}, {"lr": 0.1}]  # mem_size does not duplicate sgd's runs
    assert by_strategy["ewc"] == [{"lr": 0.01}, {"lr": 0.1}]


def test_plan_is_the_cartesian_product_seed_major_without_repeats():
    settings = build_settings({}, {"strategy": "replay,sgd", "grid": {"mem_size": "100,200", "lr": "1e-3,0.001"},
                                   "seeds": "0-2", "epochs": 1})
    planned = plan_runs(settings, "cpu")
    assert len(planned) == (2 + 1) * 3  # 1e-3 and 0.001 are one value
    assert [run.spec.seed for run in planned] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len({run.spec.run_id for run in planned}) == len(planned)
    assert planned[0].spec.hp["mem_size"] == 100 and planned[0].label == "mem_size=100, lr=0.001"
    assert all(run.spec.name == "split-digits" and run.spec.epochs == 1 for run in planned)


def test_tuple_valued_keys_are_separated_by_colons():
    periods = HParam("periods", (1, 8), "ints", low=1, increasing=True)
    assert parse_grid_values(periods, "1,8,64:1,16,128") == [(1, 8, 64), (1, 16, 128)]
    assert parse_grid_values(periods, [[1, 8, 64], "1,16,128"]) == [(1, 8, 64), (1, 16, 128)]
    assert parse_grid_values(periods, [1, 8, 64]) == [(1, 8, 64)]  # a flat list in a file is one value
    with pytest.raises(UserError, match="strictly increasing"):
        parse_grid_values(periods, "1,8:16,8")
    alpha = HParam("alpha", 1e-3, "float", low=0.0, high=1.0)
    assert parse_grid_values(alpha, "1e-4,3e-4,1e-3") == [1e-4, 3e-4, 1e-3]
    assert parse_grid_values(alpha, ["1e-4", 0.5]) == [1e-4, 0.5]  # YAML reads 1e-4 as text


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["nope=1,2"], "unknown grid key 'nope' for replay, sgd; valid: lr, mem_batch, mem_size, momentum"),
        (["mem_size=100,abc"], "mem_size='abc' is not valid: expected an integer in [1, 1e+07]"),
        (["lr=0.1,99"], "lr=99.0 is not valid: expected a number in [0, 10]"),
        (["lr=0.1,,0.2"], "has an empty value"),
        (["lr"], "--grid expects KEY=VALUES"),
        (["lr=0.1", "lr=0.2"], "--grid lr is given twice"),
    ],
)
def test_bad_grid_exits_2_with_one_line(grid, message, tmp_path):
    args = ["--strategy", "replay,sgd", "--device", "cpu", "--out", str(tmp_path), "--dry-run"]
    for item in grid:
        args += ["--grid", item]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "periods=(0,) is not valid: expected comma-separated integers in [1, inf]"),
        ("8,1", "periods=8,1 is not valid: values must be strictly increasing"),
        ("1,8,8", "values must be strictly increasing"),
        ("1,x", "periods='1,x' is not valid"),
        ("", "has an empty value"),
        ("1,8:", "has an empty value"),
        ([], "has no values"),
    ],
)
def test_bad_periods_values_are_rejected_by_the_declared_hparam(text, message):
    periods = HParam("periods", (1,), "ints", low=1, increasing=True)
    with pytest.raises(UserError, match=re.escape(message)):
        parse_grid_values(periods, text)


_PERIODS = [name for name in ("cms", "hope", "clocked-adam") if name in strategies() and "periods" in declared_hparams(name)]


@pytest.mark.parametrize(
    ("strategy", "grid", "message"),
    [
        ("deep-l2gd", "alpha=abc", "error: alpha='abc' is not valid: expected a number in [0, 1]"),
        ("deep-l2gd", "alpha=0.5,2", "error: alpha=2.0 is not valid: expected a number in [0, 1]"),
        ("deep-l2gd", "alpha=", "error: --grid expects KEY=VALUES"),
        ("deep-l2gd", "alpha=0.1,,0.2", "has an empty value"),
        ("periods", "periods=0", "periods=(0,) is not valid"),
        ("periods", "periods=8,1", "periods=8,1 is not valid: values must be strictly increasing"),
        ("periods", "periods=1,8:", "has an empty value; separate values with ':'"),
        ("periods", "periods=", "error: --grid expects KEY=VALUES"),
    ],
)
def test_bad_grid_values_exit_2_with_one_line(strategy, grid, message, tmp_path):
    if strategy == "periods":
        if not _PERIODS:
            pytest.skip("no registered strategy declares 'periods' yet (cms lands with the CMS work)")
        strategy = _PERIODS[0]
    result = invoke("--strategy", strategy, "--grid", grid, "--device", "cpu", "--out", str(tmp_path), "--dry-run")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0,x"], "--seeds expects"),
        (["--seeds", "-1"], "--seeds expects"),
        (["--seeds", "0-\u00b2"], "--seeds expects"),  # '²' is a digit to str.isdigit(), not to int()
        (["--seeds", "0-999999999"], "at most 10000 per sweep"),
        (["--suite", "split-imagenet"], "unknown suite 'split-imagenet'; valid: split-digits"),
        (["--scenario", "sideways"], "scenario 'sideways' is not available for split-digits; valid: class, task"),
        (["--backbone", "vgg"], "unknown backbone 'vgg'; valid: mlp"),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--batch-size", "-1"], "--batch-size must be a positive integer, got -1"),
        (["--device", "tpu"], "unknown device 'tpu'; valid in a sweep: auto, cpu, cuda"),
        (["--device", "cuda"], "no CUDA GPU is visible"),
        (["--name", "/abs"], "--name '/abs' must be a relative directory name"),
        (["--executor", "slurm"], "unknown executor 'slurm'; valid: local, ray"),
        (["--device", "cuda:1"], "CUDA_VISIBLE_DEVICES"),
        (["--runs-per-gpu", "2", "--device", "cpu"], "--runs-per-gpu needs GPU runs"),
        (["--jobs", "0"], "--jobs must be a positive integer"),
        (["--strategy", "nope"], "unknown strategy 'nope'"),
    ],
)
def test_bad_options_exit_2(args, message, tmp_path):
    if args == ["--device", "cuda"] and __import__("torch").cuda.is_available():
        pytest.skip("a GPU is visible")
    result = invoke("--strategy", "sgd", "--device", "cpu", "--out", str(tmp_path), "--dry-run", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_parse_helpers():
    assert parse_seeds("0,1,2") == parse_seeds("0-2") == parse_seeds([0, 1, 2]) == (0, 1, 2)
    assert parse_seeds(3) == (3,) and parse_seeds("1,1,0") == (1, 0)
    assert parse_grid_options(["periods=1,8,64:1,16,128", " alpha = 1e-4,3e-4"]) == {
        "periods": "1,8,64:1,16,128", "alpha": "1e-4,3e-4"}


# --------------------------------------------------------------------------------------------------
# Sweep files


def test_yaml_and_toml_files_give_the_same_plan_and_the_command_line_wins(tmp_path):
    yaml_file = tmp_path / "sweep.yaml"
    yaml_file.write_text(
        "suite: split-digits\nstrategy: [replay, sgd]\ngrid:\n  mem_size: [100, 200]\n  lr: 1e-3,1e-2\n"
        "seeds: [0, 1]\nname: from-file\nepochs: 1\njobs: 2\n"
    )
    toml_file = tmp_path / "sweep.toml"
    toml_file.write_text(
        'suite = "split-digits"\nstrategy = "replay,sgd"\nseeds = "0-1"\nname = "from-file"\nepochs = 1\njobs = 2\n'
        '[grid]\nmem_size = "100,200"\nlr = [1e-3, 0.01]\n'
    )
    plans = [plan_runs(build_settings(load_config(path), {}), "cpu") for path in (yaml_file, toml_file)]
    assert [r.spec.run_id for r in plans[0]] == [r.spec.run_id for r in plans[1]]
    assert len(plans[0]) == (4 + 2) * 2 and plans[0][0].spec.name == "from-file"

    settings = build_settings(load_config(yaml_file), {"grid": {"mem_size": "50"}, "seeds": "3", "name": "cli"})
    assert settings.grid == {"mem_size": "50", "lr": "1e-3,1e-2"} and settings.seeds == (3,)
    assert settings.name == "cli" and settings.jobs == 2 and settings.epochs == 1

    result = invoke("--config", str(yaml_file), "--device", "cpu", "--out", str(tmp_path / "r"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "12 runs" in result.output and "0 already done, 12 to run" in result.output


def test_bad_sweep_files_exit_2(tmp_path):
    cases = {"a.yaml": "strategy: sgd\nwat: 1\n", "b.toml": "strategy = [", "c.yaml": "- just\n- a list\n",
             "d.yaml": "strategy: sgd\njobs: two\n", "e.txt": "strategy: sgd\n", "f.yaml": "out: 3\n",
             "g.yaml": "strategy: replay\ngrid:\n  mem_size: []\n", "h.json": '{"seeds": [0, 1}'}
    messages = {"a.yaml": "unknown key 'wat'", "b.toml": "is not valid", "c.yaml": "must hold a mapping",
                "d.yaml": "'jobs' must be an integer", "e.txt": "must end in .yaml", "f.yaml": "'out' must be a directory path",
                "g.yaml": "--grid mem_size has no values", "h.json": "is not valid"}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        result = invoke("--config", str(path), "--device", "cpu", "--dry-run")
        assert result.exit_code == 2 and messages[name] in result.output, (name, result.output)
        assert len(result.output.strip().splitlines()) == 1, (name, result.output)
    (tmp_path / "latin1.yaml").write_bytes("strategy: sgd # caf\xe9\n".encode("latin-1"))
    unreadable = {"missing.yaml": "cannot read sweep file", "latin1.yaml": "is not UTF-8 text"}
    for name, message in unreadable.items():
        result = invoke("--config", str(tmp_path / name), "--device", "cpu", "--dry-run")
        assert result.exit_code == 2 and message in result.output and str(tmp_path / name) in result.output, result.output


def test_the_plan_shows_runs_claimed_by_another_process(tmp_path):
    from nlbench.core.store import claim_run

    (run,) = plan_runs(build_settings({}, {"strategy": "sgd", "epochs": 1}), "cpu")
    with claim_run(tmp_path, run.spec):  # another holder, as far as the sweep can tell (its own lock)
        result = invoke("--strategy", "sgd", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"running elsewhere (pid {os.getpid()} on" in result.output


def test_unwritable_results_directory_fails_before_any_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("--strategy", "sgd", "--epochs", "1", "--device", "cpu", "--out", str(blocker / "results"))
    assert result.exit_code == 2 and "not writable" in result.output, result.output
    assert "local executor" not in result.output  # nothing was started


# --------------------------------------------------------------------------------------------------
# Slots and threads (no GPU needed)


def test_gpu_slots_interleave_gpus_and_pin_to_the_visible_ids():
    assert gpu_slots(["0", "1"], 2) == ["0", "1", "0", "1"]
    assert visible_gpu_ids(2, env={}) == ["0", "1"]
    assert visible_gpu_ids(2, env={"CUDA_VISIBLE_DEVICES": "3, 5"}) == ["3", "5"]
    plan = plan_local(use_gpu=True, gpu_ids=["3", "5"], runs_per_gpu=3, jobs=None, cpu_count=16)
    assert plan.jobs == 6 and plan.slots == ("3", "5", "3", "5", "3", "5") and plan.threads == 2
    plan = plan_local(use_gpu=True, gpu_ids=["0", "1"], runs_per_gpu=2, jobs=3, cpu_count=16)
    assert plan.slots == ("0", "1", "0") and plan.threads == 5
    with pytest.raises(UserError, match="exceeds the 2 GPU slot"):
        plan_local(use_gpu=True, gpu_ids=["0", "1"], runs_per_gpu=None, jobs=3, cpu_count=16)
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        plan_local(use_gpu=True, gpu_ids=[], runs_per_gpu=None, jobs=None, cpu_count=16)
    cpu = plan_local(use_gpu=False, gpu_ids=[], runs_per_gpu=None, jobs=None, cpu_count=8)
    assert cpu.jobs == 1 and cpu.slots == (None,) and cpu.threads == 8
    assert plan_local(use_gpu=False, gpu_ids=[], runs_per_gpu=None, jobs=3, cpu_count=2).threads == 1


def test_each_child_is_pinned_to_its_slot_with_bounded_threads(tmp_path):
    executor = LocalExecutor(plan_local(use_gpu=True, gpu_ids=["2", "7"], runs_per_gpu=2, jobs=None, cpu_count=8),
                             workdir=tmp_path, data_root=tmp_path / "data", download=False)
    env = executor.child_env("7")
    assert env["CUDA_VISIBLE_DEVICES"] == "7" and env["OMP_NUM_THREADS"] == "2"
    assert executor.child_env(None)["CUDA_VISIBLE_DEVICES"] == ""
    command = executor.command(tmp_path / "spec.json", tmp_path / "out")
    assert command[:4] == [sys.executable, "-m", "nlbench.cli", "run-one"]
    assert ["--threads", "2"] == command[command.index("--threads"):command.index("--threads") + 2]
    assert "--watch-parent" in command and "--no-download" in command and "--data-root" in command


# --------------------------------------------------------------------------------------------------
# Real sweeps through real subprocesses


def _statuses(out: Path) -> dict[str, str]:
    frame = load_results(out)
    return dict(zip(frame["strategy"], frame["status"]))


def test_failed_and_diverged_runs_are_recorded_and_the_others_go_on(tmp_path):
    """Two real faults in one sweep, run at once: ewc with SGD at lr=10 and lambda=1e9 blows up (NaN
    loss) after its first experience; der+cumulative resolves but crashes when it is built (two
    training loops). Neither stops the other; the same command then finds them recorded."""
    out = tmp_path / "results"
    args = ["--strategy", "ewc,der+cumulative", "--grid", "lr=10", "--grid", "optimizer=sgd",
            "--grid", "ewc_lambda=1e9", "--epochs", "1", "--jobs", "2", "--device", "cpu", "--out", str(out),
            "--name", "faults"]
    result = invoke(*args)
    assert result.exit_code == 1, result.output  # a failed run makes the exit code 1
    assert _statuses(out) == {"ewc": "diverged", "der+cumulative": "failed"}
    frame = load_results(out).set_index("strategy")
    diverged = json.loads(Path(frame.loc["ewc", "path"], "result.json").read_text())
    assert len(diverged["accuracy_matrix"]) == 1 and "NaN" in diverged["error"]  # the last good rows
    failed = json.loads(Path(frame.loc["der+cumulative", "path"], "result.json").read_text())
    assert "combines two training loops" in failed["error"]
    for text in ("diverged", "failed", "ewc_lambda=1e+09", "1 done (1 diverged), 1 failed", "combines two training loops"):
        assert text in result.output, text

    # Resume: the diverged run is kept; the failed one is run again unless told otherwise.
    plan = invoke(*args, "--dry-run")
    assert plan.exit_code == 0 and "1 already done, 1 to run" in plan.output
    assert "done (diverged)" in plan.output and "failed: will re-run" in plan.output
    again = invoke(*args, "--no-retry-failed")
    assert again.exit_code == 1 and "2 already done, 0 to run" in again.output
    assert sorted(p.name for p in (out / "faults").iterdir()) == sorted(load_results(out)["run_id"])


def _run_one_children(group: int) -> list[int]:
    """The `run-one` subprocesses of a sweep started in its own process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"run-one" in (entry / "cmdline").read_bytes() and os.getpgid(int(entry.name)) == group:
                found.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return found


def _wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _assert_store_consistent(out: Path) -> int:
    """No partial result is visible: every result.json parses, and load_results reads exactly the done runs."""
    done = 0
    for directory in (out / "kill").iterdir():
        if (directory / "result.json").exists():
            json.loads((directory / "result.json").read_text())
        done += (directory / "done").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = load_results(out)
    assert len(frame) == done and frame["run_id"].is_unique
    return done


needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the sweep's subprocesses in /proc")


def _kill_sweep_args(out: Path) -> list[str]:
    return ["--strategy", "sgd", "--seeds", "0-2", "--epochs", "1", "--jobs", "2", "--device", "cpu",
            "--out", str(out), "--name", "kill"]


def _done_runs(out: Path) -> int:
    return len(list(out.glob("kill/*/done")))


@needs_proc
def test_sigkill_mid_run_leaves_no_partial_result_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "results"
    args = _kill_sweep_args(out)
    sweep = subprocess.Popen([sys.executable, "-m", "nlbench.cli", "sweep", *args], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # One run finished, another in the middle of training: SIGKILL the whole process group.
        _wait_for(lambda: _done_runs(out) >= 1 and bool(_run_one_children(sweep.pid)))
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    _wait_for(lambda: not _run_one_children(sweep.pid), timeout=30)
    for directory in (out / "kill").iterdir():
        assert (directory / "done").exists() or not (directory / "result.json").exists(), directory
    kept = _assert_store_consistent(out)
    assert 1 <= kept < 3

    # The same command again finishes the sweep: every run present exactly once, all done.
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"{kept} already done, {3 - kept} to run" in result.output
    runs = sorted((out / "kill").iterdir())
    assert len(runs) == 3 and all((run / "done").exists() for run in runs)
    frame = load_results(out)
    assert sorted(frame["seed"]) == [0, 1, 2] and set(frame["status"]) == {"completed"}
    assert not list(out.rglob("*.tmp"))


@needs_proc
@pytest.mark.slow
def test_ctrl_c_exits_130_keeps_finished_runs_and_stops_the_subprocesses(tmp_path):
    out = tmp_path / "results"
    sweep = subprocess.Popen([sys.executable, "-m", "nlbench.cli", "sweep", *_kill_sweep_args(out)],
                             start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: _done_runs(out) >= 1 and bool(_run_one_children(sweep.pid)))
        sweep.send_signal(signal.SIGINT)
        output = sweep.communicate(timeout=120)[0].decode()
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 130, output
    assert "interrupted" in output and "run the same command again" in output
    assert "ACC %" in output  # the summary of what finished
    assert not _run_one_children(sweep.pid)
    assert 1 <= _assert_store_consistent(out) < 3


@pytest.mark.slow
def test_a_run_whose_process_dies_is_recorded_as_failed(tmp_path):
    """The out-of-memory killer's way: SIGKILL one run's process; the sweep records it and goes on."""
    out = tmp_path / "results"
    command = [sys.executable, "-m", "nlbench.cli", "sweep", "--strategy", "sgd", "--seeds", "0-2", "--epochs", "1",
               "--jobs", "1", "--device", "cpu", "--out", str(out), "--name", "oom"]
    sweep = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: bool(_run_one_children(sweep.pid)))
        victim = _run_one_children(sweep.pid)[0]
        os.kill(victim, signal.SIGKILL)
        output = sweep.communicate(timeout=300)[0].decode()
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 1, output
    frame = load_results(out)
    assert sorted(frame["status"]) == ["completed", "completed", "failed"]
    error = frame.loc[frame["status"] == "failed", "path"].map(lambda p: json.loads(Path(p, "result.json").read_text())["error"])
    assert "killed by SIGKILL" in error.iloc[0]


@pytest.mark.gpu
def test_gpu_runs_are_packed_and_pinned(tmp_path):
    import torch

    result = invoke("--strategy", "sgd", "--seeds", "0-3", "--epochs", "1", "--device", "cuda", "--runs-per-gpu", "2",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    frame = load_results(tmp_path)
    assert len(frame) == 4 and set(frame["device"]) == {"cuda"}
    assert f"{2 * torch.cuda.device_count()} job(s)" in result.output


def test_run_options_flow_from_the_command_line_and_the_file_into_every_spec(tmp_path):
    """The options `nlbench run` takes for speed and for published protocols reach every spec of a
    sweep, from the command line or from a sweep file; they are part of each run's identity."""
    settings = build_settings({}, {"strategy": "adam,replay", "amp": "bf16", "compile": True, "channels_last": True,
                                   "data_path": "avalanche", "seeds": "0,1"})
    planned = plan_runs(settings, "cpu")
    assert len(planned) == 4
    assert {(r.spec.amp, r.spec.compile, r.spec.channels_last, r.spec.data_path) for r in planned} == {
        ("bf16", True, True, "avalanche")}
    plain = plan_runs(build_settings({}, {"strategy": "adam,replay", "seeds": "0,1"}), "cpu")
    assert not {r.spec.run_id for r in planned} & {r.spec.run_id for r in plain}

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("suite: split-cifar10\nstrategy: der\nprotocol: der2020\namp: bf16\n")
    (run,) = plan_runs(build_settings(load_config(sweep_file), {}), "cpu")
    assert (run.spec.protocol, run.spec.backbone, run.spec.epochs, run.spec.amp) == ("der2020", "resnet18", 50, "bf16")
    with pytest.raises(UserError, match="compile"):
        build_settings({"compile": "yes"}, {})


def test_a_sweep_runs_a_generated_sequence_suite_with_its_options(tmp_path):
    """bigram-shift has no files: the data check before the runs must not look for any (it once
    answered "unknown dataset 'bigram'"), and the suite option reaches the run."""
    out = tmp_path / "results"
    result = invoke("--suite", "bigram-shift", "--strategy", "adam", "--suite-option", "regime=mixture",
                    "--suite-option", "steps=8", "--epochs", "1", "--device", "cpu", "--out", str(out), "--name", "seq")
    assert result.exit_code == 0, result.output
    spec = json.loads(next(out.glob("seq/*/spec.json")).read_text())
    assert spec["suite_options"] == {"regime": "mixture", "steps": 8}
