"""Ctrl-C and SIGTERM, with real signals and real processes, synchronised on pipes and files (no sleeps
stand in for "the child has got there"):

- a signal that arrives while `write_run` writes a run's files ends in the stored run and exit 130;
- a signal that arrives while a claim is being taken leaves no claim file;
- `deferred` puts every handler back and leaves an ignored signal ignored;
- a sweep's run takes the driver's SIGINT even when it inherited SIGINT ignored;
- a SIGKILLed `tune` leaves a scratch folder that the next sweep removes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlbench.core.signals import deferred
from nlbench.core.spec import resolve_spec
from nlbench.core.store import finished_result, run_dir

from processes import with_sigint

ENV = {**os.environ, "NLBENCH_OFFLINE": "1"}

# `nlbench run` in-process, its store's file writer paused on result.json (the second of the three files)
# until the test says go: the test signals the child only once it is inside write_run.
_PAUSED_RUN = """
import os, signal, sys
import nlbench.core.store as store
ready, go = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Ctrl-C, whatever was inherited
real = store.atomic_write_text

def paused(path, text):
    if path.name == "result.json":
        os.write(ready, b"1")
        os.read(go, 1)  # the signal arrives here
    real(path, text)

store.atomic_write_text = paused
from nlbench.cli import main
sys.argv = ["nlbench", "run", "--strategy", "sgd", "--epochs", "1", "--device", "cpu", "--out", sys.argv[3]]
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_write_run_ends_in_a_stored_run_and_exit_130(tmp_path, signum):
    out = tmp_path / "results"
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", _PAUSED_RUN, str(ready_w), str(go_r), str(out)],
                             pass_fds=(ready_w, go_r), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    os.close(ready_w)
    os.close(go_r)
    try:
        assert os.read(ready_r, 1) == b"1", child.communicate()  # inside write_run, spec.json written
        child.send_signal(signum)  # delivered while the child waits on the pipe, inside write_run
        os.write(go_w, b"1")
        stdout, stderr = child.communicate(timeout=120)
    finally:
        os.close(ready_r)
        os.close(go_w)
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in stderr
    spec = resolve_spec("split-digits", "sgd", device="cpu", epochs=1)
    assert sorted(p.name for p in run_dir(out, spec).iterdir()) == ["done", "result.json", "spec.json"]
    assert finished_result(out, spec)["status"] == "completed"


# A claim taken with a SIGINT arriving half-way (after the claim file was created and locked), in a
# process that then exits on the KeyboardInterrupt as `nlbench` does.
_INTERRUPTED_CLAIM = """
import signal, sys
from pathlib import Path
import nlbench.core.claims as claims
signal.signal(signal.SIGINT, signal.default_int_handler)
real = claims.process_identity

def interrupted():
    signal.raise_signal(signal.SIGINT)  # Ctrl-C while the claim file exists but is not handed back yet
    return real()

claims.process_identity = interrupted
try:
    claims.claim(Path(sys.argv[1]))
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("not interrupted", flush=True)
"""


def test_a_ctrl_c_while_a_claim_is_taken_leaves_no_claim_file(tmp_path):
    directory = tmp_path / "results" / "split-digits" / "run"
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_CLAIM, str(directory)], capture_output=True, text=True,
                          timeout=120, env=ENV)
    assert (done.returncode, done.stdout.strip()) == (130, "interrupted"), done.stderr
    assert not directory.exists() or not list(directory.iterdir())


def test_deferred_restores_every_handler_and_hands_the_signal_on():
    inherited = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    seen: list[int] = []

    def mine(signum, frame):
        seen.append(signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, mine)
    reached = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred():
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGTERM)
                with deferred():  # nested: the inner block hands its signal to the outer one
                    signal.raise_signal(signal.SIGTERM)
                reached.append(list(seen))  # the block ran to its end: every signal held
        assert reached == [[]]
        # the first signal (SIGINT) is handed on; the handlers are the ones from before, by identity
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        for sig, handler in inherited.items():
            signal.signal(sig, handler)


def test_deferred_leaves_an_ignored_signal_ignored():
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # not taken over by the hold
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_a_sweep_run_takes_the_drivers_sigint_even_when_started_with_sigint_ignored(tmp_path):
    """The local executor stops its runs with SIGINT; a driver started in the background by a script
    has SIGINT ignored, and so would every run it starts. The run must stop (exit 130, nothing stored)
    rather than train on until it is killed. Synchronised on the run's first logged epoch."""
    spec = resolve_spec("split-digits", "sgd", device="cpu", epochs=500)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.to_json())
    out, logs = tmp_path / "results", tmp_path / "logs"
    tracking = json.dumps({"kinds": ["csv"], "directory": str(logs)})
    command = [sys.executable, "-m", "nlbench.cli", "run-one", str(spec_file), "--out", str(out), "--tracking", tracking]
    child = subprocess.Popen(with_sigint("ignore", command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV)
    try:
        deadline = time.monotonic() + 300
        while not any("train/loss" in p.read_text() for p in logs.glob("csv/*/*/metrics.csv")):
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, (stdout, stderr)
    assert finished_result(out, spec) is None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_the_scratch_folder_of_a_sigkilled_tune_is_removed_by_the_next_sweep(tmp_path):
    """A real `nlbench tune` is SIGKILLed once its scratch folder is owned (the event: `owner` appears);
    the folder stays behind, and the next sweep removes it (its owner is dead)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**ENV, "TMPDIR": str(scratch)}
    command = ["nlbench", "tune", "--strategy", "sgd", "--budget", "1", "--seeds", "1", "--epochs", "200",
               "--device", "cpu", "--out", str(tmp_path / "results")]
    tune = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(scratch.glob("nlbench-tune-*/owner")):
            assert tune.poll() is None and time.monotonic() < deadline, tune.communicate()
            time.sleep(0.05)
        os.killpg(tune.pid, signal.SIGKILL)  # the driver and its run, as an OOM killer would
        tune.wait()
    finally:
        if tune.poll() is None:
            os.killpg(tune.pid, signal.SIGKILL)
            tune.wait()
    left = list(scratch.glob("nlbench-tune-*"))
    assert len(left) == 1 and (left[0] / "owner").exists()
    again = subprocess.run(["nlbench", "sweep", "--strategy", "sgd", "--device", "cpu", "--out",
                            str(tmp_path / "results"), "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert not list(scratch.iterdir())
