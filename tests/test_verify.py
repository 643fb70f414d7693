"""`nlbench verify`: a stored run retrains to the same bits; a stored run the code no longer gives is found.

Real runs of split-digits (scikit-learn's digits, offline), stored by the real store and retrained through
the real CLI. A stale run is made the way one arises: a result.json that other code wrote, here the stored
accuracy matrix with one entry moved by 1e-12 (a tolerance of any kind would call it reproduced).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nlbench.cli import app
from nlbench.commands.verify import differences, plan_verify, run_verify
from nlbench.core.runner import run_one
from nlbench.core.spec import resolve_spec
from nlbench.core.store import write_run
from nlbench.errors import UserError

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two real runs (adam seed 0, cms seed 1; one epoch) in a results directory."""
    root = tmp_path_factory.mktemp("results")
    for strategy, seed in (("adam", 0), ("cms", 1)):
        spec = resolve_spec("split-digits", strategy, device="cpu", seed=seed, epochs=1, name="digits")
        result = run_one(spec)
        assert result["status"] == "completed", result["error"]
        write_run(root, spec, result)
    return root


def test_a_stored_run_retrains_to_the_same_bits(store, one_thread):
    runs = plan_verify(store, [], ["cms"], None)
    (row,) = run_verify(runs)
    assert row["identical"] and row["id_matches"] and row["differing"] == []
    assert row["strategy"] == "cms" and row["seed"] == 1 and row["cpu_s"] > 0
    assert row["rerun_acc"] == row["stored_acc"]


def test_a_stale_result_is_found_and_the_command_exits_1(store, tmp_path, one_thread):
    import shutil

    stale = tmp_path / "results"
    shutil.copytree(store, stale)
    (path,) = [p for p in stale.rglob("result.json") if json.loads((p.parent / "spec.json").read_text())["strategy"] == "adam"]
    record = json.loads(path.read_text())
    record["accuracy_matrix"][-1][0] += 1e-12
    path.write_text(json.dumps(record))

    out = runner.invoke(app, ["verify", str(stale), "--strategy", "adam"])
    assert out.exit_code == 1, out.output
    assert "DIFFERS in accuracy_matrix" in out.output and "0 of 1 run(s) reproduced bit for bit" in out.output
    fields, gap = differences(record, run_one(plan_verify(stale, [], ["adam"], None)[0][1]))
    assert fields == ["accuracy_matrix"] and 0 < gap < 1e-11

    fine = runner.invoke(app, ["verify", str(store), "--strategy", "adam"])
    assert fine.exit_code == 0, fine.output
    assert "1 of 1 run(s) reproduced bit for bit" in fine.output


def test_the_sample_is_seeded_and_bad_input_is_one_line(store, tmp_path):
    first = [spec.run_id for _, spec, _ in plan_verify(store, [], [], 1, seed=3)]
    assert first == [spec.run_id for _, spec, _ in plan_verify(store, [], [], 1, seed=3)] and len(first) == 1
    assert len(plan_verify(store, ["digits"], [], 5)) == 2  # a sample larger than the runs: every run
    with pytest.raises(UserError, match="no finished run"):
        plan_verify(store, ["nope"], [], None)
    for args in (["verify", str(tmp_path / "missing")], ["verify", str(store), "--sample", "0"],
                 ["verify", str(store), "--strategy", "sgd"]):
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output
