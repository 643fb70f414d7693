"""bench/gpu_protocol.py end to end in its smallest CPU mode: random CIFAR-10 files in the real format,
real `nlbench run` processes (a full run and a packed pair), figures read back from result.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_protocol.py"


@pytest.mark.slow  # ~1 CPU-minute: four nlbench processes (imports, reduced ResNet-18, DER)
def test_cpu_smoke_mode_runs_every_part(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--per-class", "10", "--epochs", "1", "--pack", "2",
         "--pack-epochs", "1", "--variants", "eager", "--keep", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "100 train / 20 test CIFAR-10 images written in the real format" in out
    assert "RANDOM uint8 pixels" in out
    assert "targets apply to a GPU only" in out
    assert "aggregate throughput, wall: 2 x" in out
    summary = out.split("== summary")[1]
    rows = [line.split() for line in summary.splitlines() if line.split()[:1] in (["full"], ["pack"])]
    assert [r[:3] for r in rows] == [["full", "eager", "0"], ["pack", "eager", "0"], ["pack", "eager", "0-1"]], summary
    assert all("completed" in r for r in rows), summary
    assert [r[-1] for r in rows if r[-1] == "(cpu)"] == ["(cpu)", "(cpu)"], summary  # target: n/a (cpu)
    # Every run was stored by nlbench itself, one per process: the full run, the lone run and two packed seeds.
    stored = sorted(p.parent.parent.name for p in (tmp_path / "results").glob("*/*/result.json"))
    assert stored == ["full-eager", "pack-2-s0", "pack-2-s1", "pack-alone"]
    assert (tmp_path / "data" / "cifar-10-batches-py" / "batches.meta").is_file()
