"""The results store: atomic files, the done marker, and loading into pandas."""

from __future__ import annotations

import json
import os

import pytest

from nlbench.core.spec import resolve_spec
from nlbench.io import atomic_write_text
from nlbench.core.store import finished_result, load_results, read_run, run_dir, write_run


def _result(status="completed", acc=0.5):
    return {
        "status": status, "error": None,
        "accuracy_matrix": [[1.0, 0.0], [0.5, 0.5]], "initial_accuracy": [0.1, 0.2],
        "metrics": {"acc": acc, "forgetting": 0.5, "bwt": -0.5},
        "wall_time_s": 1.0, "peak_memory_mb": 10.0,
    }


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "a" / "file.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_write_then_read_round_trip(tmp_path):
    spec = resolve_spec("split-digits", "replay", device="cpu", name="exp1")
    directory = write_run(tmp_path, spec, _result())
    assert directory == tmp_path / "exp1" / spec.run_id
    assert sorted(p.name for p in directory.iterdir()) == ["done", "result.json", "spec.json"]
    loaded_spec, loaded = read_run(directory)
    assert loaded_spec == spec and loaded["run_id"] == spec.run_id and loaded["status"] == "completed"
    assert finished_result(tmp_path, spec)["metrics"]["acc"] == 0.5


def test_failed_runs_are_not_reused_but_diverged_ones_are(tmp_path):
    failed = resolve_spec("split-digits", "adam", device="cpu")
    diverged = resolve_spec("split-digits", "sgd", device="cpu")
    write_run(tmp_path, failed, _result(status="failed"))
    write_run(tmp_path, diverged, _result(status="diverged"))
    assert finished_result(tmp_path, failed) is None
    assert finished_result(tmp_path, diverged)["status"] == "diverged"


def test_load_results_builds_one_row_per_finished_run(tmp_path):
    specs = [resolve_spec("split-digits", s, device="cpu", seed=seed) for s in ("adam", "replay") for seed in (0, 1)]
    for i, spec in enumerate(specs):
        write_run(tmp_path, spec, _result(acc=i / 10))
    frame = load_results(tmp_path)
    assert len(frame) == 4
    assert set(frame["strategy"]) == {"adam", "replay"}
    assert sorted(frame["acc"]) == [0.0, 0.1, 0.2, 0.3]
    assert frame.loc[frame.strategy == "replay", "hp.mem_size"].tolist() == [200, 200]
    assert frame["matrix"].iloc[0] == [[1.0, 0.0], [0.5, 0.5]]


def test_unfinished_and_corrupt_runs_are_never_counted(tmp_path):
    good, unfinished, corrupt = (resolve_spec("split-digits", "adam", device="cpu", seed=s) for s in (0, 1, 2))
    write_run(tmp_path, good, _result())
    write_run(tmp_path, unfinished, _result())
    (run_dir(tmp_path, unfinished) / "done").unlink()
    write_run(tmp_path, corrupt, _result())
    path = run_dir(tmp_path, corrupt) / "result.json"
    path.write_text(path.read_text()[:40])  # truncated mid-write by something other than nlbench
    with pytest.warns(UserWarning, match=str(path).replace(".", r"\.")):
        frame = load_results(tmp_path)
    assert frame["run_id"].tolist() == [good.run_id]


def test_result_json_is_plain_json(tmp_path):
    spec = resolve_spec("split-digits", "adam", device="cpu")
    directory = write_run(tmp_path, spec, _result())
    data = json.loads((directory / "result.json").read_text())
    assert data["schema"] == 1 and data["accuracy_matrix"] == [[1.0, 0.0], [0.5, 0.5]]
    assert json.loads((directory / "spec.json").read_text())["hparams"]["lr"] == 1e-3


def test_sigint_during_write_run_is_held_until_the_run_is_stored(tmp_path):
    """A real SIGINT sent while the files are being written does not leave a run without `done`."""
    import signal

    import nlbench.core.store as store

    spec = resolve_spec("split-digits", "adam", device="cpu")
    real_write = store.atomic_write_text
    calls = []

    def write_and_interrupt(path, text):
        calls.append(path.name)
        if len(calls) == 1:
            # raise_signal delivers to this (the main) thread before it returns; os.kill may hand the
            # signal to another thread of the process, which under load can run after write_run ended
            signal.raise_signal(signal.SIGINT)  # delivered only once write_run lets go
        real_write(path, text)

    store.atomic_write_text = write_and_interrupt
    # Ctrl-C's own handler, whatever this process inherited: a pytest started in the background by a
    # script has SIGINT ignored, and an ignored signal is (rightly) not turned into an interrupt.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            store.write_run(tmp_path, spec, _result())
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the hold was taken down
    finally:
        store.atomic_write_text = real_write
        signal.signal(signal.SIGINT, inherited)
    assert calls == ["spec.json", "result.json", "done"]
    assert finished_result(tmp_path, spec) is not None


def test_a_result_of_another_schema_is_skipped_with_a_warning_naming_it(tmp_path):
    good, old = (resolve_spec("split-digits", "adam", device="cpu", seed=s) for s in (0, 1))
    write_run(tmp_path, good, _result())
    path = write_run(tmp_path, old, _result()) / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema": 0}))
    with pytest.raises(ValueError, match="has schema 0; this nlbench reads schema 1 only"):
        read_run(path.parent)
    with pytest.warns(UserWarning, match=f"skipping {path.parent}.*schema 0.*not counted"):
        frame = load_results(tmp_path)
    assert frame["run_id"].tolist() == [good.run_id]
    assert finished_result(tmp_path, old) is None  # so a sweep runs it again, in the current schema


_HOLD_CLAIM = """
import json, sys, time
from nlbench.core.spec import RunSpec
from nlbench.core.store import claim_run
claim = claim_run(sys.argv[1], RunSpec.from_dict(json.loads(sys.argv[2])))
print("claimed" if claim else "busy", flush=True)
time.sleep(120)
"""


def test_a_claim_excludes_other_processes_until_its_holder_dies(tmp_path):
    """A real second process holds the claim; once it is SIGKILLed (no chance to clean up) the claim
    is free again and the next claimer takes it over."""
    import signal
    import subprocess
    import sys

    from nlbench.core.store import claim_holder, claim_run

    spec = resolve_spec("split-digits", "adam", device="cpu")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CLAIM, str(tmp_path), spec.to_json()],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        assert claim_run(tmp_path, spec) is None
        assert claim_holder(tmp_path, spec)["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with claim_run(tmp_path, spec) as claim:  # the dead holder's claim file is still there, unlocked
        assert claim is not None and claim_holder(tmp_path, spec)["pid"] == os.getpid()
        write_run(tmp_path, spec, _result())
    assert sorted(p.name for p in run_dir(tmp_path, spec).iterdir()) == ["done", "result.json", "spec.json"]


def test_a_released_claim_that_wrote_nothing_leaves_nothing(tmp_path):
    from nlbench.core.store import claim_run

    spec = resolve_spec("split-digits", "adam", device="cpu")
    first = claim_run(tmp_path, spec)
    assert first is not None and claim_run(tmp_path, spec) is None  # held, even within one process
    first.release()
    assert not run_dir(tmp_path, spec).exists()
    again = claim_run(tmp_path, spec)
    assert again is not None
    again.release()


def test_live_claim_tells_a_held_claim_from_a_stale_one_without_touching_it(tmp_path):
    from nlbench.core.store import CLAIM, claim_run, live_claim

    spec = resolve_spec("split-digits", "adam", device="cpu")
    assert live_claim(tmp_path, spec) is None and not run_dir(tmp_path, spec).exists()
    claim = claim_run(tmp_path, spec)
    assert live_claim(tmp_path, spec)["pid"] == os.getpid()
    claim.release()
    stale = run_dir(tmp_path, spec)
    stale.mkdir(parents=True)
    (stale / CLAIM).write_text('{"pid": 1, "host": "gone"}')  # what a SIGKILLed holder leaves: no lock
    assert live_claim(tmp_path, spec) is None and (stale / CLAIM).exists()
