"""Issue 17: each class of defect a hostile user found gets a warning or one line (exit 2 for bad input),
never a traceback, a hang, a lost run or a half-written report.

- Damaged stores: every stored run is checked against the declared schema (`nlbench.core.schema`)
  before it is counted; `nlbench report` skips what fails with one warning naming the path and field.
- Bad input that escaped: seeds of 2^32 or more, non-ASCII digits, negative --cpus-per-run and
  --retries, 100,000-character names echoed in full.
- Leftovers after SIGKILL: a stale claim file in a finished run, and the scratch folder of a killed
  sweep driver.
Full disks are in tests/test_full_disk.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlbench.cli import app
from nlbench.cli.common import run_app
from nlbench.core.runner import run_one
from nlbench.core.spec import resolve_spec
from nlbench.core.store import CLAIM, claim_holder, finished_result, read_run, run_dir, write_run

# --------------------------------------------------------------------------------------------------
# Damaged stores


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, digits, one_thread):
    """One real run (adam, 1 epoch on split-digits), stored; each test damages a copy of it."""
    root = tmp_path_factory.mktemp("good")
    spec = resolve_spec("split-digits", "adam", device="cpu", epochs=1)
    return write_run(root, spec, run_one(spec, benchmark=digits))


def _result_edit(key, value):
    return lambda spec, result: (spec, {**result, key: value})


def _spec_edit(key, value):
    return lambda spec, result: ({**spec, key: value}, result)


def _nested(depth):
    return "[" * depth + "]" * depth


# (name, edit of the parsed (spec, result), raw text for result.json or None, what the warning names)
DAMAGE = [
    ("matrix of strings", lambda s, r: (s, {**r, "accuracy_matrix": [["a"] * 5] * 5}), None, "accuracy_matrix[0][0]"),
    ("ragged matrix", lambda s, r: (s, {**r, "accuracy_matrix": [row[: i + 1] for i, row in enumerate(r["accuracy_matrix"])]}),
     None, "ragged"),
    ("metrics as a list", _result_edit("metrics", [0.5, 0.1]), None, "field metrics"),
    ("lists in metrics", lambda s, r: (s, {**r, "metrics": {**r["metrics"], "acc": [0.5]}}), None, "metrics.acc"),
    ("seed 'abc' in spec.json", _spec_edit("seed", "abc"), None, "spec.json: field seed"),
    ("seed 2^32 in spec.json", _spec_edit("seed", 2**32), None, "spec.json: field seed"),
    ("ACC 1e308", lambda s, r: (s, {**r, "metrics": {**r["metrics"], "acc": 1e308}}), None, "acc = 1e+308 is out of range"),
    ("negative time", _result_edit("wall_time_s", -5.0), None, "wall_time_s"),
    ("negative experience time", _result_edit("experience_train_time_s", [1.0, -1.0]), None, "experience_train_time_s"),
    ("NaN matrix, completed", lambda s, r: (s, {**r, "accuracy_matrix": [[math.nan] * 5] * 5}), None, "holds NaN"),
    ("matrix as a dict", _result_edit("accuracy_matrix", {"0": [1.0]}), None, "field accuracy_matrix"),
    ("accuracy as a percentage", lambda s, r: (s, {**r, "accuracy_matrix": [[v * 100 for v in row] for row in r["accuracy_matrix"]]}),
     None, "outside [0, 1]"),
    ("unknown strategy", _spec_edit("strategy", "no-such-method"), None, "field strategy: unknown strategy"),
    ("unknown status", _result_edit("status", "great"), None, "field status"),
    ("completed with 2 of 5 rows", lambda s, r: (s, {**r, "accuracy_matrix": r["accuracy_matrix"][:2]}), None, "not square"),
    ("spec edited to another seed", _spec_edit("seed", 7), None, "field seed: 0 differs"),
    ("run id of another spec", _result_edit("run_id", "0123456789abcdef"), None, "field run_id"),
    ("bool where an int belongs", _spec_edit("epochs", True), None, "field epochs"),
    ("nested 100,000 levels", None, _nested(100_000), "nested too deeply"),
    ("not UTF-8", None, b"\xff\xfe{", "unreadable"),
]


def _damage(good: Path, where: Path, edit, raw) -> Path:
    shutil.copytree(good, where)
    if raw is not None:
        target = where / "result.json"
        target.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        return where
    spec, result = edit(json.loads((good / "spec.json").read_text()), json.loads((good / "result.json").read_text()))
    (where / "spec.json").write_text(json.dumps(spec))
    (where / "result.json").write_text(json.dumps(result, allow_nan=True))
    return where


@pytest.mark.parametrize("name, edit, raw, named", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_run_is_refused_naming_its_file_and_field(good_run, tmp_path, name, edit, raw, named):
    directory = _damage(good_run, tmp_path / "run", edit, raw)
    with pytest.raises(ValueError) as caught:
        read_run(directory)
    message = str(caught.value)
    assert named in message and str(directory) in message, message
    assert len(message) < 600 and "\n" not in message


def test_a_fifo_or_a_device_in_place_of_a_file_is_refused_without_blocking(good_run, tmp_path):
    fifo_run = shutil.copytree(good_run, tmp_path / "fifo")
    (fifo_run / "result.json").unlink()
    os.mkfifo(fifo_run / "result.json")  # opened for reading, a FIFO blocks until a writer comes: never
    device_run = shutil.copytree(good_run, tmp_path / "device")
    (device_run / "result.json").unlink()
    (device_run / "result.json").symlink_to("/dev/zero")  # endless
    folder_run = shutil.copytree(good_run, tmp_path / "folder")
    (folder_run / "spec.json").unlink()
    (folder_run / "spec.json").mkdir()
    signal.alarm(20)  # a regression would hang here: fail instead
    try:
        for directory, name in ((fifo_run, "result.json"), (device_run, "result.json"), (folder_run, "spec.json")):
            with pytest.raises(ValueError, match="unreadable"):
                read_run(directory)
    finally:
        signal.alarm(0)


def test_extra_keys_in_result_json_are_allowed(good_run, tmp_path):
    """The runner adds `clocks` and `diagnostics`; plugins add their own keys: all are kept, unchecked."""
    directory = _damage(good_run, tmp_path / "run", lambda s, r: (s, {**r, "clocks": {"step": 3},
                                                                      "diagnostics": {"clipped": 0.1},
                                                                      "curve": [[0.1, 0.2]], "x-plugin": None}), None)
    spec, result = read_run(directory)
    assert result["clocks"] == {"step": 3} and result["curve"] == [[0.1, 0.2]] and spec.strategy == "adam"


def test_report_on_a_store_with_every_defect_skips_each_with_one_warning(good_run, tmp_path):
    """A real `nlbench report` over the good run and one copy per defect (a FIFO included): exit 0, one
    warning per damaged run naming its path, n=1, the whole report written, no traceback, no hang."""
    results = tmp_path / "results"
    shutil.copytree(good_run, results / "good")
    for i, (name, edit, raw, _) in enumerate(DAMAGE):
        _damage(good_run, results / f"bad{i:02d}", edit, raw)
    fifo = shutil.copytree(good_run, results / "fifo")
    (fifo / "result.json").unlink()
    os.mkfifo(fifo / "result.json")
    out = tmp_path / "report"
    done = subprocess.run(["nlbench", "report", str(results), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: skipping")]
    assert len(warned) == len(DAMAGE) + 1, done.stderr
    for i in range(len(DAMAGE)):
        assert sum(f"/bad{i:02d}" in line for line in warned) == 1, (DAMAGE[i][0], done.stderr)
    assert all(len(line) < 800 for line in warned)
    assert (out / "report.md").is_file() and (out / "tables" / "summary.csv").is_file()
    summary = (out / "tables" / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and ",adam," in summary[1]


_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 10**20), st.floats(allow_nan=True),
                               st.text(max_size=6)),
                     lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                     max_leaves=30)
_KEYS = ["accuracy_matrix", "initial_accuracy", "metrics", "status", "wall_time_s", "experience_train_time_s",
         "peak_memory_mb", "seed", "run_id", "error"]


# Mostly plausible accuracies and matrices of w columns with at most w + 1 rows, some rows of another
# length: the random records are often valid, so the property is checked on many counted runs.
_ACCURACY = st.one_of(*[st.floats(0, 1)] * 6, st.just(math.nan), st.floats(allow_nan=True))


def _matrices(width: int):
    row = st.lists(_ACCURACY, min_size=width, max_size=width)
    other = st.lists(_ACCURACY, min_size=max(0, width - 1), max_size=width + 1)  # often one off: ragged
    return st.lists(st.one_of(row, row, other), max_size=width + 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changes=st.one_of(st.just({}), st.just({}), st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=2)),
       rows=st.one_of(st.none(), st.integers(1, 5).flatmap(_matrices), st.integers(2, 5).flatmap(_matrices)),
       status=st.sampled_from(["completed", "diverged", "failed"]))
def test_whatever_a_result_json_holds_a_counted_run_is_well_formed(good_run, tmp_path, changes, rows, status):
    """Property: a result.json with random values in its fields (and random, often almost right,
    accuracy matrices) is refused with ValueError or, when it is counted, holds what the report relies
    on: an accuracy matrix of equal rows, no more rows than columns, fractions in [0, 1] (finite and
    square when completed), metrics that are numbers."""
    import numpy as np

    result = json.loads((good_run / "result.json").read_text())
    result.update(changes)
    result["status"] = status
    if rows is not None:
        result["accuracy_matrix"], result["initial_accuracy"] = rows, []
    directory = tmp_path / "prop"
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(good_run, directory)
    (directory / "result.json").write_text(json.dumps(result, allow_nan=True))
    try:
        _, counted = read_run(directory)
    except ValueError:
        return
    matrix = counted["accuracy_matrix"]
    assert isinstance(matrix, list) and all(isinstance(row, list) for row in matrix)
    assert len({len(row) for row in matrix}) <= 1, matrix
    R = np.array(matrix, dtype=float).reshape(len(matrix), -1) if matrix else np.zeros((0, 0))
    assert R.shape[0] <= R.shape[1] or R.size == 0
    assert np.all((R[~np.isnan(R)] >= 0) & (R[~np.isnan(R)] <= 1))
    assert all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in counted["metrics"].values())
    if status == "completed":
        assert R.shape[0] == R.shape[1] >= 1 and np.all(np.isfinite(R)) and math.isfinite(counted["metrics"]["acc"])


# --------------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2

LONG = "x" * 100_000


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return str(path)


BAD_INPUT = [
    ("run --seed 2^32", lambda t: ["run", "--strategy", "adam", "--seed", str(2**32)], "--seed must be at most 4294967295"),
    ("run --seed 2^64", lambda t: ["run", "--strategy", "adam", "--seed", str(2**64)], "--seed must be at most"),
    ("run --seed arabic-indic 3", lambda t: ["run", "--strategy", "adam", "--seed", "\u0663"], "not a valid integer"),
    ("run --seed 5000 digits", lambda t: ["run", "--strategy", "adam", "--seed", "9" * 5000], "not a valid integer"),
    ("sweep --seeds 2^32", lambda t: ["sweep", "--strategy", "adam", "--seeds", str(2**32)], "--seeds expects"),
    ("sweep --seeds range past 2^32", lambda t: ["sweep", "--strategy", "adam", "--seeds", f"{2**32 - 2}-{2**32}"],
     "--seeds expects"),
    ("sweep --seeds arabic-indic 3", lambda t: ["sweep", "--strategy", "adam", "--seeds", "\u0663"], "--seeds expects"),
    ("sweep --seeds fullwidth 1", lambda t: ["sweep", "--strategy", "adam", "--seeds", "0,\uff11"], "--seeds expects"),
    ("sweep --seeds 1_000", lambda t: ["sweep", "--strategy", "adam", "--seeds", "1_000"], "--seeds expects"),
    ("sweep file seeds 2^32", lambda t: ["sweep", "--config", _yaml(t, f"strategy: adam\nseeds: [0, {2**32}]\n")],
     "--seeds expects"),
    ("sweep file seeds arabic-indic", lambda t: ["sweep", "--config", _yaml(t, "strategy: adam\nseeds: ['\u0663']\n")],
     "--seeds expects"),
    ("sweep --cpus-per-run -2", lambda t: ["sweep", "--strategy", "adam", "--cpus-per-run", "-2"],
     "--cpus-per-run must be a positive number"),
    ("sweep --cpus-per-run 0", lambda t: ["sweep", "--strategy", "adam", "--cpus-per-run", "0"], "--cpus-per-run must be"),
    ("sweep --retries -5", lambda t: ["sweep", "--strategy", "adam", "--retries", "-5"], "--retries must be >= 0"),
    ("sweep file cpus_per_run -2", lambda t: ["sweep", "--config", _yaml(t, "strategy: adam\ncpus_per_run: -2\n")],
     "--cpus-per-run must be"),
    ("sweep file retries -5", lambda t: ["sweep", "--config", _yaml(t, "strategy: adam\nretries: -5\n")],
     "--retries must be >= 0"),
    ("run --strategy of 100,000 characters", lambda t: ["run", "--strategy", LONG], "unknown strategy 'xxxx"),
    ("sweep --strategy of 100,000 characters", lambda t: ["sweep", "--strategy", LONG], "unknown strategy 'xxxx"),
    ("run --name of 100,000 characters", lambda t: ["run", "--strategy", "adam", "--name", "/" + LONG], "--name"),
    ("run --suite of 100,000 characters", lambda t: ["run", "--suite", LONG], "xxxx"),
    ("sweep --grid key of 100,000 characters", lambda t: ["sweep", "--strategy", "adam", "--grid", LONG + "=1"], "xxxx"),
    ("sweep --seeds of 100,000 characters", lambda t: ["sweep", "--strategy", "adam", "--seeds", LONG], "--seeds expects"),
    ("unknown option of 100,000 characters", lambda t: ["run", "--" + LONG], "No such option"),
]


@pytest.mark.parametrize("name, args, message", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_short_line_and_exit_2(tmp_path, capsys, name, args, message):
    """The real entry point (`run_app`, as the console script runs it), in this process."""
    argv = args(tmp_path) + ["--out", str(tmp_path / "never-written")]
    with pytest.raises(SystemExit) as stop:
        run_app(app, argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert stop.value.code == 2, captured.err[:500]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err[:500]
    assert len(lines[0]) < 2100 and not captured.out
    assert not (tmp_path / "never-written").exists()


# --------------------------------------------------------------------------------------------------
# Leftovers after SIGKILL

_HOLD_CLAIM = """
import json, sys, time
from nlbench.core.spec import RunSpec
from nlbench.core.store import claim_run
claim = claim_run(sys.argv[1], RunSpec.from_dict(json.loads(sys.argv[2])))
print("claimed" if claim else "busy", flush=True)
time.sleep(120)
"""


def test_a_stale_claim_in_a_finished_run_is_removed_by_the_next_run(tmp_path, digits, one_thread):
    """A process claims a run, stores it, and is SIGKILLed before it releases the claim (simulated by a
    real holder process killed after the run is written): the next `nlbench run` of the same command
    reuses the run and removes the claim file; a claim held by a live process is never removed."""
    from typer.testing import CliRunner

    spec = resolve_spec("split-digits", "adam", device="cpu", epochs=1)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CLAIM, str(tmp_path), spec.to_json()],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        write_run(tmp_path, spec, run_one(spec, benchmark=digits))
        assert finished_result(tmp_path, spec) is not None
        assert (run_dir(tmp_path, spec) / CLAIM).exists(), "a live holder's claim must stay"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert claim_holder(tmp_path, spec)["pid"] == holder.pid  # what SIGKILL leaves behind
    result = CliRunner().invoke(app, ["run", "--strategy", "adam", "--epochs", "1", "--device", "cpu",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0 and "(cached)" in result.output, result.output
    assert sorted(p.name for p in run_dir(tmp_path, spec).iterdir()) == ["done", "result.json", "spec.json"]


@pytest.mark.slow  # ~30 s: a real sweep driver starts, is killed, and a second one starts
def test_the_scratch_folder_of_a_killed_sweep_driver_is_removed_by_the_next_sweep(tmp_path):
    """A real sweep driver SIGKILLed mid-sweep leaves $TMPDIR/nlbench-sweep-*; the next sweep removes
    it, and leaves the folder of a live driver and a folder without an owner file alone."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "NLBENCH_OFFLINE": "1"}
    live_code = ("import sys, time; from nlbench.commands.sweep.run import _make_workdir; "
                 "print(_make_workdir()[0], flush=True); time.sleep(120)")
    live = subprocess.Popen([sys.executable, "-c", live_code], stdout=subprocess.PIPE, text=True, env=env)
    live_dir = Path(live.stdout.readline().strip())
    legacy = scratch / "nlbench-sweep-legacy"
    legacy.mkdir()
    killed = subprocess.Popen(["nlbench", "sweep", "--strategy", "adam", "--epochs", "1", "--device", "cpu",
                               "--out", str(tmp_path / "results")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "results").rglob(CLAIM)) and time.monotonic() < deadline:
            time.sleep(0.2)  # the driver has claimed its run: its scratch folder exists
        dead = [p for p in scratch.glob("nlbench-sweep-*") if p not in (live_dir, legacy)]
        assert len(dead) == 1 and (dead[0] / "owner").exists()
        os.killpg(killed.pid, signal.SIGKILL)  # the driver and its run, as an OOM killer would
        killed.wait()
        assert dead[0].exists()
        again = subprocess.run(["nlbench", "sweep", "--strategy", "adam", "--epochs", "1", "--device", "cpu",
                                "--out", str(tmp_path / "results"), "--dry-run"], env=env, capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert not dead[0].exists() and live_dir.exists() and legacy.exists()
        assert sorted(scratch.iterdir()) == sorted([live_dir, legacy])  # the dry run removed its own too
    finally:
        live.kill()
        live.wait()
        with pytest.raises(ProcessLookupError):
            os.killpg(killed.pid, signal.SIGKILL)
