"""What a new user hit (issue 26, item 8), each answered in one line or shown at once:

- a torch/torchvision pair that does not fit (`operator torchvision::nms does not exist`);
- `--suite split-cifar` with no data and no network: no minute of download retries, and the message names
  NLBENCH_OFFLINE=1;
- the progress shown on a pipe: the loading line at once, and no time-left estimate across strategies of
  very different cost.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "NLBENCH_OFFLINE": "1"}


def test_a_torchvision_that_does_not_fit_torch_is_one_line_naming_the_fix(tmp_path):
    """A real torchvision whose compiled operators cannot load: the installed package copied without
    its ops library (`_C*.so`), first on PYTHONPATH. Importing it raises the very error a torchvision
    of another build raises (checked by hand with torchvision 0.20.1's wheel beside torch 2.14)."""
    installed = Path(importlib.util.find_spec("torchvision").submodule_search_locations[0])
    shutil.copytree(installed, tmp_path / "site" / "torchvision", ignore=shutil.ignore_patterns("_C*.so", "_C*.pyd"))
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    broken = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True, env=env, timeout=120)
    assert "operator torchvision::nms does not exist" in broken.stderr  # the real failure, not a stand-in
    for command in (["run"], ["sweep"]):
        done = subprocess.run(["nlbench", *command, "--strategy", "adam", "--epochs", "1", "--device", "cpu",
                               "--out", str(tmp_path / "results")], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert "Traceback" not in done.stderr and last.startswith("error: torchvision ")
        assert "operator torchvision::nms does not exist" in last and "reinstall both from one index" in last


def test_missing_cifar_with_an_unresolvable_host_fails_at_once_and_names_nlbench_offline(tmp_path, monkeypatch):
    """The download host is one that never resolves (RFC 2606's .invalid), so the test is the same with
    or without a network: no download is attempted, and the one line names NLBENCH_OFFLINE=1."""
    from nlbench.data import readers
    from nlbench.errors import DataUnavailable

    monkeypatch.delenv("NLBENCH_OFFLINE", raising=False)
    monkeypatch.setattr(readers._CIFAR10, "url", "https://nlbench-test.invalid/cifar-10-python.tar.gz")
    for train in (True, False):
        with pytest.raises(DataUnavailable) as caught:
            readers.load_arrays("cifar10", tmp_path / "data", train=train, download=True)
        message = str(caught.value)
        assert "No download was attempted: nlbench-test.invalid cannot be resolved" in message
        assert "set NLBENCH_OFFLINE=1" in message and "\n" not in message
    assert not (tmp_path / "data").exists()  # nothing made, nothing left


def test_a_failed_download_names_nlbench_offline_too():
    from nlbench.data.readers import _SPECS, _try_download

    note = _try_download(_SPECS["cifar10"], __import__("pathlib").Path("/proc/nlbench-no-data"), True)
    assert note.startswith(" The download attempt failed:") and "NLBENCH_OFFLINE=1" in note


def test_the_time_left_is_each_runs_own_and_none_before_its_strategy_finished_an_experience():
    """A cheap strategy's experiences say nothing about a costly one's: the estimate of a run comes
    from its own strategy's finished experiences (`-` until there is one). A hand-driven clock."""
    import io

    from rich.console import Console

    from nlbench.cli.run_progress import RunProgress
    from nlbench.core.spec import resolve_spec

    now = [0.0]
    progress = RunProgress(Console(file=io.StringIO(), force_terminal=False, width=120), clock=lambda: now[0])
    cheap, costly = (resolve_spec("split-digits", name, device="cpu") for name in ("sgd", "cms"))
    progress.event("loading", {"suite": "split-digits", "total": 2, "experiences": 5})
    progress.event("loaded", {"suite": "split-digits"})
    for index, (spec, seconds) in enumerate(((cheap, 1.0), (costly, 100.0))):
        where = {"spec": spec, "index": index, "total": 2}
        progress.event("started", where)
        for k in range(5):
            progress.event("experience", {**where, "experience": k})
            if k == 0:
                assert progress.run_left() is None  # nothing of this strategy has finished yet
            else:
                assert progress.run_left() == pytest.approx(seconds * (5 - k))
            now[0] += seconds
        progress.event("finished", {**where, "result": {"status": "completed", "metrics": {}}, "cached": False})
    progress.__exit__(None, None, None)


def test_on_a_pipe_the_loading_line_comes_at_once(tmp_path):
    """stderr is a pipe: the first line says that PyTorch and the data are loading, before `loaded`."""
    run = subprocess.Popen(["nlbench", "run", "--strategy", "sgd", "--epochs", "1", "--device", "cpu",
                            "--out", str(tmp_path / "results")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, env=ENV)
    try:
        first = run.stderr.readline()  # blocks until the first line is written
        rest = run.communicate(timeout=300)[1]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert "starting: loading PyTorch, Avalanche and the data" in first and "loaded" not in first
    assert "loaded split-digits" in rest and run.returncode == 0
