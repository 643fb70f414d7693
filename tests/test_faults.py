"""Hostile input and faults (issue 8): random sweep arguments and sweep files never give a traceback,
an out-of-memory error inside a run is recorded as `failed` while the sweep goes on, Ctrl-C during a
run exits 130 leaving nothing partial, and two real `nlbench sweep` processes writing into one results
directory at once store every run exactly once, each trained by exactly one of them.

Covered elsewhere (not repeated here): one-line errors for bad `run`/`sweep` options (test_cli,
test_sweep), bad data files (test_data), NaN/inf -> `diverged` and a crash -> `failed` with the sweep
going on (test_sweep, test_runs), Ctrl-C during a write and SIGKILL + resume (test_store, test_sweep),
bad stored results in the report (test_report), claims (test_store).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch
import typer
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from processes import with_sigint

from nlbench.errors import UserError
from nlbench.core.registry import StrategyInfo, declared_hparams, strategies
from nlbench.core.store import load_results
from nlbench.cli.sweep import sweep_command
from nlbench.commands.sweep import CONFIG_KEYS, build_settings, load_config, plan_runs

app = typer.Typer()
app.callback()(lambda: None)
app.command("sweep")(sweep_command)
runner = CliRunner()

# --------------------------------------------------------------------------------------------------
# Property tests: the grid and sweep-file parsers answer random input with a UserError (exit 2, one
# line) or a plan, never with another exception.

PERIODS = [name for name in strategies() if "+" not in name and "periods" in declared_hparams(name)]
NAMES = ["sgd", "replay", "deep-l2gd", "replay+ewc", *PERIODS[:1]]
KEYS = ["lr", "mem_size", "alpha", "periods", "optimizer", "momentum", "ewc_lambda", "nope"]
VALUE_TEXT = st.text(alphabet="0123456789.,:-+e abcnifE_", max_size=16)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse(file_values: dict, cli_values: dict) -> None:
    """What `nlbench sweep --dry-run` does with its input, short of printing: merge, expand, resolve."""
    try:
        plan_runs(build_settings(file_values, cli_values), "cpu")
    except UserError:
        pass


@PROPERTY
@given(
    strategy=st.one_of(st.sampled_from(NAMES), st.text(max_size=12)),
    grid=st.lists(st.one_of(st.builds("{}={}".format, st.sampled_from(KEYS), VALUE_TEXT), st.text(max_size=20)),
                  max_size=3),
    seeds=st.one_of(st.none(), st.text(alphabet="0123456789-, x²", max_size=5), st.text(max_size=5)),
    name=st.one_of(st.none(), st.text(max_size=8)),
)
def test_random_sweep_arguments_exit_0_or_2_with_one_line(strategy, grid, seeds, name, tmp_path_factory):
    args = ["sweep", "--dry-run", "--device", "cpu", "--out", str(tmp_path_factory.getbasetemp() / "never-written"),
            f"--strategy={strategy}", *(f"--grid={g}" for g in grid)]
    args += [f"--seeds={seeds}"] if seeds is not None else []
    args += [f"--name={name}"] if name is not None else []
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output


@PROPERTY
@given(content=st.one_of(st.binary(max_size=120), st.text(max_size=120).map(str.encode)),
       suffix=st.sampled_from([".yaml", ".yml", ".toml", ".json", ".txt"]))
def test_random_sweep_file_bytes_are_a_plan_or_a_user_error(content, suffix, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / f"random{suffix}"
    path.write_bytes(content)
    try:
        values = load_config(path)
    except UserError:
        return
    _parse(values, {})


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True), st.text(max_size=10),
                     st.sampled_from(NAMES + KEYS + ["1e-3", "0-2", "1,8,64", "split-digits", "cpu", "local"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                       max_leaves=6)


@PROPERTY
@given(config=st.dictionaries(st.sampled_from([*CONFIG_KEYS, "strategies", "wat"]), _VALUES, max_size=5),
       grid=st.one_of(st.none(), _VALUES, st.dictionaries(st.sampled_from(KEYS), _VALUES, max_size=3)),
       form=st.sampled_from(["yaml", "json"]))
def test_random_sweep_file_structures_are_a_plan_or_a_user_error(config, grid, form, tmp_path_factory):
    if grid is not None:
        config = {**config, "grid": grid}
    if isinstance(config.get("seeds"), str):  # seed ranges are covered above; here they could only make plans huge
        del config["seeds"]
    path = tmp_path_factory.getbasetemp() / f"structured.{form}"
    path.write_text(yaml.safe_dump(config) if form == "yaml" else json.dumps(config))
    try:
        values = load_config(path)
    except UserError:
        return
    _parse(values, {})


# --------------------------------------------------------------------------------------------------
# Out of memory inside a run

_OOM_PLUGIN = '''
from nlbench.core.registry import Parts, register_strategy


@register_strategy("test-oom", description="test only: allocates past any memory at the first training step")
def build(ctx, hp):
    import torch
    from avalanche.core import SupervisedPlugin

    class AllocatePastMemory(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kwargs):
            # 4 EiB: more than any GPU or address space holds. CUDA raises torch.OutOfMemoryError;
            # the CPU allocator raises RuntimeError("... can't allocate memory ...").
            torch.empty(2**62, dtype=torch.uint8, device=strategy.device)

    return Parts(plugins=[AllocatePastMemory()])
'''


def _env_with_the_oom_strategy(tmp_path: Path) -> dict[str, str]:
    """Subprocess environment in which the test-only strategy `test-oom` is registered, by a
    sitecustomize module on PYTHONPATH; it is never registered in this process."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_OOM_PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "NLBENCH_OFFLINE": "1"}
    return env


def _sweep_with_an_oom_run(tmp_path: Path, device: str) -> tuple[subprocess.CompletedProcess, dict]:
    """A real sweep (driver and runs in subprocesses) of `test-oom` and `sgd`."""
    env = _env_with_the_oom_strategy(tmp_path)
    out = tmp_path / "results"
    done = subprocess.run(["nlbench", "sweep", "--strategy", "test-oom,sgd", "--epochs", "1", "--jobs", "2",
                           "--device", device, "--out", str(out), "--name", "oom"],
                          capture_output=True, text=True, env=env, timeout=400)
    return done, _stored_by_strategy(out)


def _stored_by_strategy(out: Path) -> dict[str, dict]:
    """result.json of every finished run by strategy, read directly: `test-oom` is registered in the
    subprocesses only, and `load_results` counts runs of registered strategies only."""
    return {json.loads((done.parent / "spec.json").read_text())["strategy"]: json.loads((done.parent / "result.json").read_text())
            for done in out.rglob("done")}


def test_out_of_memory_in_a_run_is_failed_with_the_reason_and_the_sweep_goes_on(tmp_path):
    done, records = _sweep_with_an_oom_run(tmp_path, "cpu")
    assert done.returncode == 1, done.stdout + done.stderr  # a failed run makes the exit code 1
    assert set(records) == {"test-oom", "sgd"}
    assert records["sgd"]["status"] == "completed"
    oom = records["test-oom"]
    assert oom["status"] == "failed" and "can't allocate memory" in oom["error"]
    assert len(oom["initial_accuracy"]) == 5 and oom["accuracy_matrix"] == []
    assert "Traceback" not in done.stderr.split("test-oom")[0]  # the sweep itself reports, it does not crash
    assert "can't allocate memory" in done.stdout + done.stderr  # the summary names the reason


def test_a_failed_run_makes_nlbench_run_exit_1_and_the_others_are_stored(tmp_path):
    env = _env_with_the_oom_strategy(tmp_path)
    out = tmp_path / "results"
    done = subprocess.run(["nlbench", "run", "--strategy", "test-oom,sgd", "--epochs", "1", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "test-oom: failed" in done.stderr and "can't allocate memory" in done.stderr
    assert {k: r["status"] for k, r in _stored_by_strategy(out).items()} == {"test-oom": "failed", "sgd": "completed"}
    with pytest.warns(UserWarning, match="field strategy: unknown strategy 'test-oom'"):
        assert load_results(out)["strategy"].tolist() == ["sgd"]  # not registered here: not counted


@pytest.mark.gpu
def test_cuda_out_of_memory_in_a_run_is_failed_with_the_reason_and_the_sweep_goes_on(tmp_path):
    done, records = _sweep_with_an_oom_run(tmp_path, "cuda")
    assert done.returncode == 1, done.stdout + done.stderr
    assert records["sgd"]["status"] == "completed"
    oom = records["test-oom"]
    assert oom["status"] == "failed" and oom["error"].startswith("OutOfMemoryError: CUDA out of memory")


def test_the_cuda_out_of_memory_exception_is_recorded_as_failed_by_the_runner(monkeypatch):
    """The exception class CUDA raises (torch.cuda.OutOfMemoryError), thrown from inside Avalanche's
    training loop (a GPU is needed to make CUDA throw it itself: see the gpu test above)."""
    from avalanche.core import SupervisedPlugin

    from nlbench.core import registry
    from nlbench.data.readers import DEFAULT_DATA_ROOT
    from nlbench.core.registry import Parts
    from nlbench.core.runner import run_one
    from nlbench.core.spec import resolve_spec
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import get_suite

    class CudaOutOfMemory(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kwargs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB total capacity)")

    info = StrategyInfo("test-cuda-oom", lambda ctx, hp: Parts(plugins=[CudaOutOfMemory()]), "test only", (),
                        "baseline", False, False, None)
    monkeypatch.setitem(registry._REGISTRY, info.name, info)  # removed again after the test
    spec = resolve_spec("split-digits", info.name, device="cpu", epochs=1)
    result = run_one(spec, benchmark=build_benchmark(get_suite("split-digits"), "class", 0, DEFAULT_DATA_ROOT))
    assert result["status"] == "failed"
    assert result["error"].startswith("OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB")
    assert result["accuracy_matrix"] == [] and result["metrics"] == {}


# --------------------------------------------------------------------------------------------------
# Ctrl-C during training, through the console script


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_during_a_run_exits_130_and_leaves_no_partial_run(tmp_path, signum):
    """Ctrl-C (or a scheduler's SIGTERM) while a run trains: exit 130, `interrupted` last, and no claim, spec,
    result or `done` left (a checkpoint of finished experiences may stay: the same command resumes from it).

    The signal is sent once the run's first epoch is logged (the CSV tracker's first `train/loss` row),
    so the child is inside training whatever the machine's load; the run is started with SIGINT at its
    default, whatever this pytest inherited (tests/processes.py)."""
    out, logs = tmp_path / "results", tmp_path / "logs"
    command = ["nlbench", "run", "--strategy", "sgd", "--epochs", "200", "--device", "cpu", "--out", str(out),
               "--log", "csv", "--log-dir", str(logs)]
    run = subprocess.Popen(with_sigint("default", command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, env={**os.environ, "NLBENCH_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 300
        while not any("train/loss" in p.read_text() for p in logs.glob("csv/*/*/metrics.csv")):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        run.send_signal(signum)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in stderr
    left = [p.relative_to(out) for p in out.rglob("*") if p.is_file()]
    assert all(p.parts[2] == "checkpoint" for p in left), left  # no claim, no partial file: the run is simply re-run


# --------------------------------------------------------------------------------------------------
# Two sweeps, one results directory, at the same time


def _concurrent_sweeps(out: Path, n_runs: int, n_sweeps: int, jobs: int) -> list[str]:
    command = ["nlbench", "sweep", "--strategy", "sgd", "--seeds", f"0-{n_runs - 1}", "--epochs", "1",
               "--jobs", str(jobs), "--device", "cpu", "--out", str(out), "--name", "shared"]
    env = {**os.environ, "NLBENCH_OFFLINE": "1"}
    sweeps = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
              for _ in range(n_sweeps)]
    try:
        outputs = [sweep.communicate(timeout=600)[0].decode() for sweep in sweeps]
    finally:
        for sweep in sweeps:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.wait()
    for sweep, output in zip(sweeps, outputs):
        assert sweep.returncode == 0, output
    return outputs


def _assert_every_run_stored_once_and_trained_once(out: Path, outputs: list[str], n_runs: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a corrupt or partial run would warn
        frame = load_results(out)
    assert len(frame) == n_runs and frame["run_id"].is_unique
    assert sorted(frame["seed"]) == list(range(n_runs)) and set(frame["status"]) == {"completed"}
    run_dirs = sorted((out / "shared").iterdir())
    assert len(run_dirs) == n_runs
    for directory in run_dirs:  # no claim, no temporary file, nothing partial left behind
        assert sorted(p.name for p in directory.iterdir()) == ["done", "result.json", "spec.json"], directory
    ids = {run_id[:8] for run_id in frame["run_id"]}

    # Each sweep prints a `completed` line for each run it trained, an `elsewhere` line for each run
    # another sweep stored while it waited, and counts the runs already stored when it started.
    trained = [set(re.findall(r"^completed\s+sgd seed \d+ ([0-9a-f]{8})", o, re.M)) for o in outputs]
    elsewhere = [set(re.findall(r"^elsewhere\s+sgd seed \d+ ([0-9a-f]{8})  completed by pid", o, re.M)) for o in outputs]
    already = [int(re.search(r"(\d+) already done", o).group(1)) for o in outputs]
    assert set().union(*trained) == ids
    assert sum(len(t) for t in trained) == n_runs, trained  # no run trained twice
    for output, mine, theirs, before in zip(outputs, trained, elsewhere, already):
        assert not mine & theirs
        assert len(mine) + len(theirs) + before == n_runs, output
        assert f"{n_runs} done (0 diverged), 0 failed, 0 running, 0 remaining" in output, output
    # result.json names the process that trained the run: one run-one process per run.
    records = [json.loads(Path(p, "result.json").read_text()) for p in frame["path"]]
    assert len({(r["host"], r["pid"]) for r in records}) == n_runs


def test_two_sweeps_into_one_results_directory_store_every_run_once(tmp_path):
    out = tmp_path / "results"
    outputs = _concurrent_sweeps(out, n_runs=4, n_sweeps=2, jobs=1)
    _assert_every_run_stored_once_and_trained_once(out, outputs, 4)
    assert all(re.search(r"^completed ", o, re.M) for o in outputs), outputs  # both took part


@pytest.mark.slow
def test_three_sweeps_with_two_jobs_each_store_every_run_once(tmp_path):
    out = tmp_path / "results"
    outputs = _concurrent_sweeps(out, n_runs=9, n_sweeps=3, jobs=2)
    _assert_every_run_stored_once_and_trained_once(out, outputs, 9)
