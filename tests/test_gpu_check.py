"""bench/gpu_check.py: its CPU smoke mode runs every step end to end (CI), and without a GPU the full
mode says so in one line and exits 0 with status "no gpu"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.py"


def test_smoke_mode_runs_every_step_and_writes_the_table_as_json(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(out)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "NLBENCH_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["status"] == "smoke", report
    checks = {r["check"]: r for r in report["rows"]}
    assert set(checks) == {
        "gpu tests (pytest -m gpu)", "CUDA OOM recorded as failed", "harness overhead, mlp", "NL optimizer steps, mlp",
        "DER split-cifar10 full run (eager)", "DER 2 runs packed", "bf16 on (eager off)", "compile on (eager off)",
        "clocked step, transformer", "clocked step, mlp", "HOPE vs Transformer",
    }, report["rows"]
    ran = [name for name, r in checks.items() if r["status"] != "skipped"]
    assert all(checks[name]["status"] == "ok" for name in ran), report["rows"]
    assert checks["gpu tests (pytest -m gpu)"]["value"].endswith("skipped")  # no CUDA here: every gpu test skips
    assert checks["harness overhead, mlp"]["value"].endswith("x") and "Avalanche Naive" in checks["harness overhead, mlp"]["detail"]
    assert "deep-l2gd (sgd-fused) / sgd" in checks["NL optimizer steps, mlp"]["detail"]
    assert "throughput" in checks["DER 2 runs packed"]["value"]
    assert "optimizer step alone" in checks["clocked step, mlp"]["detail"]
    assert checks["HOPE vs Transformer"]["value"].endswith("x") and "parameter count" in checks["HOPE vs Transformer"]["detail"]
    assert "== gpu_check summary" in done.stdout


def test_without_a_gpu_the_full_mode_says_so_and_exits_0(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0 and done.stdout.count("\n") == 1 and "no GPU" in done.stdout, done.stdout + done.stderr
    assert json.loads(out.read_text())["status"] == "no gpu"
