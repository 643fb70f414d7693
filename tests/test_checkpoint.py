"""Checkpoints inside a run (nlbench.core.checkpoint): a run killed after experience k resumes after k.

The property: on CPU, a run SIGKILLed after experience k (`nlbench run` in a subprocess, killed when
its k-th checkpoint appears) and resumed by the same command gives a bitwise-identical accuracy matrix,
pre-training row and metrics to the same command run uninterrupted. Real strategies, real split-digits.
Around it: checkpoints are removed once the run is stored, none is written after the last experience,
a checkpoint of another run or a corrupt one is ignored with a warning, and a strategy whose state
cannot be captured runs without checkpoints (with a warning) rather than resuming wrongly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from nlbench.core.checkpoint import FILE, checkpoint_dir
from nlbench.core.runner import run_one
from nlbench.core.spec import resolve_spec
from nlbench.core.store import run_dir

EPOCHS = "1"  # split-digits' 5 epochs make the same point at 5x the time


def _nlbench_run(strategy: str, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "nlbench.cli", "run", "--suite", "split-digits", "--strategy", strategy,
               "--seed", "0", "--epochs", EPOCHS, "--device", "cpu", "--out", str(out), *extra]
    env = {**os.environ, "NLBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # tiny MLP: one thread is fastest
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def _result(out: Path, strategy: str) -> dict:
    [path] = list((out / "split-digits").glob("*/result.json"))
    assert (path.parent / "done").exists()
    return json.loads(path.read_text())


def _kill_after(strategy: str, out: Path, k: int) -> int:
    """Run `nlbench run` and SIGKILL it once its k-th checkpoint is written; return the experiences the
    checkpoint on disk holds (k, unless the next one landed between the poll and the kill)."""
    run = _nlbench_run(strategy, out)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while len(seen) < k:
            assert run.poll() is None, f"the run ended before its checkpoint {k}: {run.stdout.read()}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            for path in (out / "split-digits").glob(f"*/checkpoint/{FILE}"):
                try:
                    seen.add(path.stat().st_ino)  # each atomic write is a new inode
                except FileNotFoundError:
                    pass
            time.sleep(0.005)
        os.killpg(run.pid, signal.SIGKILL)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    [path] = list((out / "split-digits").glob(f"*/checkpoint/{FILE}"))
    assert not list((out / "split-digits").glob("*/done")), "the killed run must not be stored"
    return torch.load(path, weights_only=True)["experiences_done"]


def _killed_and_resumed_equals_uninterrupted(strategy: str, tmp_path: Path, k: int = 2) -> None:
    reference = _nlbench_run(strategy, tmp_path / "reference")
    out = tmp_path / "killed"
    done = _kill_after(strategy, out, k)
    resumed = _nlbench_run(strategy, out)
    assert reference.wait() == 0, reference.stdout.read()
    assert resumed.wait() == 0, resumed.stdout.read()
    expected, got = _result(tmp_path / "reference", strategy), _result(out, strategy)
    assert got["run_id"] == expected["run_id"]
    assert got["accuracy_matrix"] == expected["accuracy_matrix"]  # bitwise: floats compared exactly
    assert got["initial_accuracy"] == expected["initial_accuracy"]
    assert json.dumps(got["metrics"], sort_keys=True) == json.dumps(expected["metrics"], sort_keys=True)  # NaN-safe
    assert got.get("clocks") == expected.get("clocks")
    assert got["resumed_after"] == [done] and "resumed_after" not in expected
    assert len(got["experience_train_time_s"]) == 5 and len(got["eval_time_s"]) == 6
    assert got["started_at"] < got["finished_at"]
    assert not checkpoint_dir(Path(_path_of(out))).exists(), "the checkpoint must go once the run is stored"


def _path_of(out: Path) -> Path:
    [done] = list((out / "split-digits").glob("*/done"))
    return done.parent


@pytest.mark.parametrize("strategy", ["adam", "replay"])
def test_sigkilled_run_resumes_bitwise(strategy, tmp_path):
    _killed_and_resumed_equals_uninterrupted(strategy, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["der", "ewc", "cms", "lwf", "si", "agem"])
def test_sigkilled_run_resumes_bitwise_slow(strategy, tmp_path):
    _killed_and_resumed_equals_uninterrupted(strategy, tmp_path, k=3)


# ------------------------------------------------------------------------------------------------
# In-process: the runner interrupted by an exception at the start of an experience, then resumed


class _Stop(BaseException):
    """Stands for the kill: run_one lets BaseExceptions through, as it does KeyboardInterrupt."""


def _stop_at(k: int):
    def progress(kind: str, info: dict) -> None:
        if kind == "experience" and info["experience"] == k:
            raise _Stop

    return progress


def _interrupted_then_resumed(spec, benchmark, directory: Path, k: int) -> dict:
    with pytest.raises(_Stop):
        run_one(spec, benchmark=benchmark, progress=_stop_at(k), checkpoint_dir=directory)
    return run_one(spec, benchmark=benchmark, checkpoint_dir=directory)


@pytest.fixture
def adam_spec():
    return resolve_spec("split-digits", "adam", device="cpu", seed=0, epochs=1)


def test_no_checkpoint_after_the_last_experience(adam_spec, digits, tmp_path, one_thread):
    directory = tmp_path / "checkpoint"
    result = run_one(adam_spec, benchmark=digits, checkpoint_dir=directory)
    assert result["status"] == "completed" and "resumed_after" not in result
    state = torch.load(directory / FILE, weights_only=True)
    assert state["experiences_done"] == 4  # of 5: the last experience is not followed by a checkpoint
    assert state["run_id"] == adam_spec.run_id
    assert state["progress"]["matrix"] == result["accuracy_matrix"][:4]


def test_checkpoint_of_another_run_is_ignored_with_a_warning(adam_spec, digits, tmp_path, one_thread):
    directory = tmp_path / "checkpoint"
    with pytest.raises(_Stop):
        run_one(adam_spec, benchmark=digits, progress=_stop_at(2), checkpoint_dir=directory)
    other = resolve_spec("split-digits", "adam", device="cpu", seed=1, epochs=1)
    with pytest.warns(UserWarning, match=f"belongs to run '{adam_spec.run_id}'"):
        result = run_one(other, benchmark=digits, checkpoint_dir=directory)
    assert "resumed_after" not in result
    assert result["accuracy_matrix"] == run_one(other, benchmark=digits)["accuracy_matrix"]


def test_corrupt_checkpoint_is_ignored_with_a_warning(adam_spec, digits, tmp_path, one_thread):
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    (directory / FILE).write_bytes(b"\x80\x02 not a checkpoint")
    (directory / f".{FILE}.abc.tmp").write_bytes(b"half a write")
    with pytest.warns(UserWarning, match="cannot be read"):
        result = run_one(adam_spec, benchmark=digits, checkpoint_dir=directory)
    assert result["status"] == "completed" and "resumed_after" not in result
    assert not list(directory.glob(".*.tmp"))


def test_in_process_resume_matches_multi_head_task_scenario(tmp_path, one_thread):
    """Task heads appear as tasks do: the resumed run grows them again before loading the weights."""
    from nlbench.data.readers import DEFAULT_DATA_ROOT
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import get_suite

    spec = resolve_spec("split-digits", "lwf", device="cpu", seed=0, epochs=1, scenario="task", head="multi")
    benchmark = build_benchmark(get_suite("split-digits"), "task", seed=0, data_root=DEFAULT_DATA_ROOT)
    expected = run_one(spec, benchmark=benchmark)
    got = _interrupted_then_resumed(spec, benchmark, tmp_path / "checkpoint", 3)
    assert got["resumed_after"] == [3]
    assert got["accuracy_matrix"] == expected["accuracy_matrix"]


def test_strategy_with_uncapturable_state_runs_without_checkpoints(digits, tmp_path, one_thread):
    """Avalanche's stock ReplayPlugin keeps its buffer as datasets: no checkpoint, one warning, same run."""
    spec = resolve_spec("split-digits", "replay", device="cpu", seed=0, epochs=1, data_path="avalanche")
    directory = tmp_path / "checkpoint"
    with pytest.warns(UserWarning, match="is not checkpointed.*ReplayPlugin|is not checkpointed.*BufferedReplay"):
        result = run_one(spec, benchmark=digits, checkpoint_dir=directory)
    assert result["status"] == "completed"
    assert not (directory / FILE).exists()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [
    "sgd", "cumulative", "clocked-adam", "deep-l2gd", "deep-l2gd-ema", "delta-momentum", "dmgd", "hope", "muon",
    "nested-adam", "nl-memory", "ewc+replay", "si+agem",
])
def test_every_strategy_resumes_bitwise_in_process(strategy, digits, tmp_path, one_thread):
    spec = resolve_spec("split-digits", strategy, device="cpu", seed=0, epochs=1)
    expected = run_one(spec, benchmark=digits)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _interrupted_then_resumed(spec, digits, tmp_path / "checkpoint", 2)
    assert not [w for w in caught if "checkpoint" in str(w.message)]  # none may fall back to running uncheckpointed
    assert got["resumed_after"] == [2]
    assert got["accuracy_matrix"] == expected["accuracy_matrix"]
    assert got.get("clocks") == expected.get("clocks")
