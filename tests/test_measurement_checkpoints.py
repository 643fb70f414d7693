"""`--probes` and `--eval-every` (issue 26): they never cost resumability, and `--probes` asks only the
strategies that have clock levels.

- A run with both measurements, interrupted at the start of experience 2 and resumed, gives the same
  accuracy matrix, probe records and continual-evaluation curve as the run uninterrupted, and is
  checkpointed (no "not checkpointed" warning).
- `--eval-every` beyond the stream's training iterations is said in a warning; the run still checkpoints.
- `has_clock_levels` (declared `periods`) agrees with what each registered strategy really builds.
- `--probes` on strategies without clock levels: one line, exit 2; mixed with clocked ones: a note, and
  the probes only where there are clocks.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from typer.testing import CliRunner

from nlbench.cli import app
from nlbench.core.checkpoint import FILE
from nlbench.core.runner import run_one
from nlbench.core.spec import resolve_spec


class _Stop(BaseException):
    """Stands for the kill: run_one lets BaseExceptions through, as it does KeyboardInterrupt."""


def _stop_at(k: int):
    def progress(kind: str, info: dict) -> None:
        if kind == "experience" and info["experience"] == k:
            raise _Stop

    return progress


def test_a_run_with_probes_and_continual_eval_resumes_to_the_same_records(digits, tmp_path, one_thread):
    spec = resolve_spec("split-digits", "cms", device="cpu", seed=0, epochs=1, probes=True, eval_every=5)
    reference = run_one(spec, benchmark=digits)
    directory = tmp_path / "checkpoint"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not checkpointed.*")
        with pytest.raises(_Stop):
            run_one(spec, benchmark=digits, progress=_stop_at(2), checkpoint_dir=directory)
        assert (directory / FILE).is_file()
        resumed = run_one(spec, benchmark=digits, checkpoint_dir=directory)
    assert resumed["resumed_after"] == [2]
    assert resumed["accuracy_matrix"] == reference["accuracy_matrix"]
    assert len(reference["probes"]["experiences"]) == 5
    assert json.dumps(resumed["probes"], sort_keys=True) == json.dumps(reference["probes"], sort_keys=True)
    curve, expected = resumed["continual_eval"], reference["continual_eval"]
    assert json.dumps(curve, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_an_eval_every_beyond_the_stream_is_warned_and_the_run_still_checkpoints(digits, tmp_path, one_thread):
    spec = resolve_spec("split-digits", "adam", device="cpu", seed=0, epochs=1, eval_every=10**12)
    directory = tmp_path / "checkpoint"
    with pytest.warns(UserWarning, match=r"--eval-every 1000000000000 is more than the \d+ training iterations"):
        result = run_one(spec, benchmark=digits, checkpoint_dir=directory)
    assert result["status"] == "completed"
    assert torch.load(directory / FILE, weights_only=True)["experiences_done"] == 4
    curve = result["continual_eval"]
    assert curve["iteration"] == sorted(curve["boundaries"] + curve["ends"])  # only starts and ends


def test_has_clock_levels_agrees_with_the_optimizer_each_strategy_builds(digits):
    from nlbench.core.probes import clock_levels
    from nlbench.core.registry import has_clock_levels, strategies
    from nlbench.core.runner import build_strategy

    for name in strategies():
        strategy, _ = build_strategy(resolve_spec("split-digits", name, device="cpu"), digits, torch.device("cpu"))
        assert has_clock_levels(name) == (clock_levels(strategy.optimizer) is not None), name
    assert has_clock_levels("cms+replay") and not has_clock_levels("lookahead+replay")


@pytest.mark.parametrize("command", [["run"], ["sweep", "--dry-run"]])
def test_probes_without_any_clocked_strategy_is_one_line(tmp_path, command):
    result = CliRunner().invoke(app, [*command, "--strategy", "adam,lookahead", "--probes", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --probes: adam, lookahead have no clock levels to probe") and "cms" in line
    assert not (tmp_path / "r").exists()


def test_probes_apply_to_the_clocked_strategies_and_a_note_names_the_others(tmp_path):
    from nlbench.commands.run import plan_specs

    specs = plan_specs("split-digits", ["adam", "cms", "cms+replay"], {}, device="cpu", probes=True)
    assert {s.strategy: s.probes for s in specs} == {"adam": False, "cms": True, "cms+replay": True}
    assert specs[0].run_id == plan_specs("split-digits", ["adam"], {}, device="cpu")[0].run_id  # the plain run
    result = CliRunner().invoke(app, ["sweep", "--strategy", "adam,cms", "--probes", "--dry-run",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "note: --probes: adam has no clock levels to probe; run without probes" in result.output
