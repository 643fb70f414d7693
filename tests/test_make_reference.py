"""reports/make_reference.sh, the reference build: its stage names and its unpack stage, run as a user runs them
(bash, real tar archives). The training stages are what `nlbench tune`/`sweep`/`report` tests cover."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "reports" / "make_reference.sh"


def _build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OUT": str(tmp_path / "out"), "REPORT": str(tmp_path / "report"), **env}
    return subprocess.run(["bash", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("stage", ["bogus", "primary", "bigram_periods"])
def test_an_unknown_stage_is_one_line_and_exit_2_and_writes_nothing(tmp_path, stage):
    done = _build(tmp_path, STAGE=stage)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and f"unknown STAGE '{stage}'" in done.stderr
    assert "bigram-periods" in done.stderr  # it names the stages there are
    assert not (tmp_path / "out").exists() and not (tmp_path / "report").exists()


def _pack(report: Path, members: dict[str, str]) -> None:
    report.mkdir(parents=True)
    staging = report.parent / "staging"
    for name, text in members.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
    with tarfile.open(report / "runs.tar.xz", "w:xz") as archive:
        for name in members:
            archive.add(staging / name, arcname=f"./{name}")


def test_unpack_restores_this_builds_own_pack_and_keeps_what_is_there(tmp_path):
    _pack(tmp_path / "report", {"tune-a/run1/result.json": '{"acc": 0.5}', "tune-a/run2/done": ""})
    (tmp_path / "out" / "tune-a" / "run1").mkdir(parents=True)
    (tmp_path / "out" / "tune-a" / "run1" / "result.json").write_text('{"acc": 0.7}')  # newer, kept
    done = _build(tmp_path, STAGE="unpack")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "tune-a" / "run2" / "done").exists()
    assert (tmp_path / "out" / "tune-a" / "run1" / "result.json").read_text() == '{"acc": 0.7}'
    assert "unpack" in (tmp_path / "report" / "build-times.tsv").read_text()


def test_a_quick_build_does_not_unpack_the_full_reference(tmp_path):
    """QUICK=1 writes to its own OUT and REPORT: the committed full reference must not land in its report."""
    done = _build(tmp_path, STAGE="unpack", QUICK="1")
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "out").iterdir()) == []
