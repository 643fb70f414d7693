"""Full disks, for real (issue 17): a trained result is never lost, every failure is one line.

The results directory is a small tmpfs mounted for the test (`mount -t tmpfs -o size=256k`; needs root,
otherwise these tests skip), filled with a real file until the kernel answers ENOSPC. The disk fills
either before a command starts (the writability probe and claims refuse at once) or while a run
trains: a test-only strategy, registered in the subprocesses by a sitecustomize module, fills the disk
when training starts, exactly as another job writing to the same disk would. Without a mount, the
file-size limit (RLIMIT_FSIZE) stands in for the refusal before training.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from nlbench.core.spec import resolve_spec
from nlbench.core.store import (
    claim_run, finished_result, read_run, rescue_dirs, run_dir, write_run,
)
from nlbench.errors import ResultNotStored, UserError


def _fill(path: Path, leave: int = 0) -> None:
    """Write zeros to `path` until the disk is full, then give back `leave` bytes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave:
        os.truncate(path, max(0, path.stat().st_size - leave))


@pytest.fixture
def disk(tmp_path):
    """A 256 KiB tmpfs of its own (skips where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def rescue(tmp_path, monkeypatch):
    folder = tmp_path / "rescue"
    monkeypatch.setenv("NLBENCH_RESCUE_DIR", str(folder))
    return folder


def _result(spec):
    R = [[1.0, 0.0], [0.5, 0.5]]
    return {"status": "completed", "error": None, "seed": spec.seed, "accuracy_matrix": R,
            "initial_accuracy": [0.1, 0.1], "metrics": {"acc": 0.5}, "wall_time_s": 1.0, "peak_memory_mb": 1.0}


def test_a_claim_on_a_full_disk_is_one_line(disk):
    spec = resolve_spec("split-digits", "adam", device="cpu")
    _fill(disk / "filler")
    with pytest.raises(UserError, match=r"cannot claim the run in .*No space left on device \(the disk is full\)") as caught:
        claim_run(disk / "results", spec)
    assert "\n" not in str(caught.value)
    assert not (run_dir(disk / "results", spec) / "claim").exists()


def test_run_on_a_nearly_full_disk_is_refused_before_training(disk):
    from typer.testing import CliRunner

    from nlbench.cli import app

    (disk / "results").mkdir()
    _fill(disk / "filler", leave=8192)  # 8 KiB free: an empty probe file would still fit
    result = CliRunner().invoke(app, ["run", "--strategy", "adam", "--device", "cpu", "--out", str(disk / "results")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: results directory {disk / 'results'} is not writable: "
                                     "No space left on device (the disk is full)")


def test_a_file_size_limit_is_found_before_training(tmp_path):
    """No mount needed: RLIMIT_FSIZE (a quota-like limit) makes the probe fail with one line."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

    done = subprocess.run(["nlbench", "run", "--strategy", "adam", "--device", "cpu", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: results directory {tmp_path / 'r'} is not writable: File too large"


def test_write_run_on_a_full_disk_keeps_the_result_and_the_next_reader_restores_it(disk, rescue):
    spec = resolve_spec("split-digits", "adam", device="cpu")
    root = disk / "results"
    claim = claim_run(root, spec)  # before the disk filled, as a real run does
    _fill(disk / "filler")
    with pytest.raises(ResultNotStored) as caught:
        write_run(root, spec, _result(spec))
    claim.release()
    message = str(caught.value)
    kept = next(rescue.iterdir())
    assert ResultNotStored.exit_code == 3 and "\n" not in message
    assert f"to {run_dir(root, spec)}: No space left on device (the disk is full)" in message
    assert f"the result is kept in {kept}" in message
    assert json.loads((kept / "result.json").read_text())["metrics"]["acc"] == 0.5
    assert not run_dir(root, spec).exists()  # no half run left behind
    assert rescue_dirs()[0] == rescue
    with pytest.raises(ResultNotStored):  # still full: the copy stays where it is
        finished_result(root, spec)
    assert (kept / "result.json").exists()
    (disk / "filler").unlink()
    assert finished_result(root, spec)["metrics"]["acc"] == 0.5  # restored into the store
    assert read_run(run_dir(root, spec))[0] == spec and not kept.exists()


_FILL_PLUGIN = '''
from nlbench.core.registry import Parts, register_strategy


@register_strategy("test-fill-disk", description="test only: fills the disk of $NLBENCH_TEST_FILL as training starts")
def build(ctx, hp):
    import os
    from avalanche.core import SupervisedPlugin

    class FillTheDisk(SupervisedPlugin):
        def before_training(self, strategy, **kwargs):
            fd = os.open(os.environ["NLBENCH_TEST_FILL"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                while True:
                    os.write(fd, b"\\0" * 4096)
            except OSError:
                pass
            finally:
                os.close(fd)

    return Parts(plugins=[FillTheDisk()])
'''


def _env(tmp_path: Path, disk: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_FILL_PLUGIN)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "NLBENCH_OFFLINE": "1", "NLBENCH_TEST_FILL": str(disk / "filler"),
            "NLBENCH_RESCUE_DIR": str(tmp_path / "rescue")}


@pytest.mark.slow  # ~35 s: two real `nlbench run` processes
def test_run_whose_disk_fills_while_training_keeps_the_result_and_exits_3(disk, tmp_path):
    env = _env(tmp_path, disk)
    command = ["nlbench", "run", "--strategy", "test-fill-disk", "--epochs", "1", "--device", "cpu",
               "--out", str(disk / "results")]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 3, first.stderr[-2000:]
    (line,) = [l for l in first.stderr.splitlines() if l.startswith("error: ")]
    assert "Traceback" not in first.stderr and "No space left on device (the disk is full)" in line
    kept = next((tmp_path / "rescue").iterdir())
    assert f"the result is kept in {kept}" in line
    trained = json.loads((kept / "result.json").read_text())
    assert trained["status"] == "completed" and len(trained["accuracy_matrix"]) == 5

    (disk / "filler").unlink()
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "(cached)" in again.stdout and not kept.exists()
    stored = json.loads(next((disk / "results").rglob("result.json")).read_text())
    assert stored["pid"] == trained["pid"] and stored["accuracy_matrix"] == trained["accuracy_matrix"]


@pytest.mark.slow  # ~40 s: two real sweeps
def test_sweep_survives_a_full_disk_and_the_next_sweep_restores_every_trained_run(disk, tmp_path):
    env = _env(tmp_path, disk)
    command = ["nlbench", "sweep", "--strategy", "sgd,test-fill-disk,adam", "--epochs", "1",
               "--device", "cpu", "--out", str(disk / "results"), "--name", "full"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 3, first.stdout[-2000:] + first.stderr[-2000:]
    assert "Traceback" not in first.stdout + first.stderr
    not_stored = [l for l in first.stderr.splitlines() if l.startswith("not stored: ")]
    assert len(not_stored) == 2 and all("the disk is full" in l for l in not_stored), first.stderr
    assert any("kept in" in l and "test-fill-disk" in l for l in not_stored)  # the trained run
    # adam: not started (its claim cannot be written), or refused by its own writability probe
    assert any("adam" in l for l in not_stored), not_stored
    kept = {json.loads((p / "spec.json").read_text())["strategy"]: json.loads((p / "result.json").read_text())
            for p in (tmp_path / "rescue").iterdir()}
    assert kept.get("test-fill-disk", {}).get("status") == "completed"

    (disk / "filler").unlink()
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    stored = {}
    for path in (disk / "results").rglob("result.json"):
        spec = json.loads((path.parent / "spec.json").read_text())
        stored[spec["strategy"]] = json.loads(path.read_text())
    assert sorted(stored) == ["adam", "sgd", "test-fill-disk"] and all(r["status"] == "completed" for r in stored.values())
    assert stored["test-fill-disk"]["pid"] == kept["test-fill-disk"]["pid"]  # restored, not trained again
    assert not any((tmp_path / "rescue").iterdir())
