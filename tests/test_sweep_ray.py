"""`nlbench sweep --executor ray` on a real local Ray cluster (ray.init(num_cpus=2)).

Run with: pip install -e ".[ray]" && pytest -m ray tests/test_sweep_ray.py
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from nlbench.core.store import load_results  # noqa: E402
from nlbench.cli.sweep import run_one_command, sweep_command  # noqa: E402

pytestmark = pytest.mark.ray

app = typer.Typer()
app.command("sweep")(sweep_command)
app.command("run-one")(run_one_command)
runner = CliRunner()


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.cluster_resources()
    ray.shutdown()


def invoke(*args: str):
    return runner.invoke(app, ["sweep", *args], terminal_width=200)


def test_a_real_sweep_through_ray_tasks_lands_in_the_local_store(cluster, tmp_path):
    out = tmp_path / "results"
    args = ["--executor", "ray", "--strategy", "sgd,ewc,der+cumulative", "--grid", "lr=0.05,10",
            "--grid", "optimizer=sgd", "--grid", "ewc_lambda=1e9", "--epochs", "1", "--device", "cpu",
            "--out", str(out), "--name", "via-ray"]
    result = invoke(*args)
    assert result.exit_code == 1, result.output  # der+cumulative fails; the others go on
    assert "ray executor, cluster of 2 CPU(s) and 0 GPU(s)" in result.output
    frame = load_results(out)
    assert len(frame) == 6 and frame["run_id"].is_unique
    status = {(s, lr): st for s, lr, st in zip(frame["strategy"], frame["hp.lr"], frame["status"])}
    assert status[("sgd", 0.05)] == status[("sgd", 10.0)] == "completed"
    assert status[("ewc", 10.0)] == "diverged"  # NaN loss: recorded with its last good rows
    assert {status[("der+cumulative", 0.05)], status[("der+cumulative", 10.0)]} == {"failed"}
    failed = frame[frame["status"] == "failed"]["path"].iloc[0]
    assert "combines two training loops" in json.loads(Path(failed, "result.json").read_text())["error"]

    # The driver wrote the same store the local executor uses: the local plan sees every run done,
    # and a second ray sweep only re-runs the failed ones.
    local_args = args[2:]  # the same sweep without "--executor ray"
    local_plan = invoke(*local_args, "--no-retry-failed", "--dry-run")
    assert local_plan.exit_code == 0 and "6 already done, 0 to run" in local_plan.output, local_plan.output
    again = invoke(*args, "--no-retry-failed")
    assert again.exit_code == 1 and "0 to run" in again.output
    assert len(load_results(out)) == 6
    assert ray.is_initialized()  # the sweep joined the test's cluster and left it running


def test_gpus_asked_for_on_a_cluster_without_gpus_fail_fast(cluster, tmp_path):
    assert cluster.get("GPU", 0) == 0
    for extra in (["--device", "cuda"], ["--runs-per-gpu", "2"]):
        result = invoke("--executor", "ray", "--strategy", "sgd", "--epochs", "1", "--out", str(tmp_path), *extra)
        assert result.exit_code == 2, result.output
        line = result.output.strip().splitlines()[-1]
        assert line.startswith("error: ") and "the Ray cluster has none" in line and "--device cpu" in line
    assert not any(tmp_path.iterdir())


def test_auto_device_on_a_cpu_cluster_runs_on_cpu(cluster, tmp_path):
    result = invoke("--executor", "ray", "--strategy", "sgd", "--epochs", "1", "--jobs", "1", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    frame = load_results(tmp_path)
    assert list(frame["device"]) == ["cpu"] and list(frame["status"]) == ["completed"]


def _kill_ray_task_worker_once(killed: list, timeout: float = 120.0) -> None:
    """SIGKILL the first Ray worker seen executing a run (Ray titles it `ray::_ray_task`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::_ray_task"):
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
                    return
            except (OSError, ProcessLookupError):
                continue
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's workers in /proc")
@pytest.mark.parametrize(("retries", "status"), [(1, "completed"), (0, "failed")])
def test_a_run_whose_worker_dies_is_retried_by_ray(cluster, tmp_path, retries, status):
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_ray_task_worker_once, args=(killed,), daemon=True)
    watcher.start()
    result = invoke("--executor", "ray", "--strategy", "sgd", "--seeds", str(retries), "--device", "cpu",
                    "--retries", str(retries), "--out", str(tmp_path))
    watcher.join(timeout=5)
    assert killed, "no Ray worker was seen running the task"
    assert result.exit_code == (0 if status == "completed" else 1), result.output
    frame = load_results(tmp_path)
    assert list(frame["status"]) == [status]
    if status == "failed":
        error = json.loads(Path(frame["path"].iloc[0], "result.json").read_text())["error"]
        assert "WorkerCrashedError" in error or "died" in error


def test_workers_are_replaced_after_max_calls_runs(cluster, tmp_path, monkeypatch):
    """A long sweep must not train every run in one ever-growing worker process: with max_calls=1
    each run gets its own process (the pid each result records)."""
    from nlbench.commands.sweep.executors import RayExecutor

    monkeypatch.setattr(RayExecutor, "max_calls", 1)
    out = tmp_path / "results"
    result = invoke("--executor", "ray", "--jobs", "1", "--strategy", "sgd", "--seeds", "0-3", "--epochs", "1",
                    "--device", "cpu", "--out", str(out), "--name", "recycled")
    assert result.exit_code == 0, result.output
    pids = [json.loads(Path(path, "result.json").read_text())["pid"] for path in load_results(out)["path"]]
    assert len(pids) == 4 and len(set(pids)) == 4, pids
