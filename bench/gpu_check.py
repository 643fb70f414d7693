"""One prepared GPU check: every GPU figure nlbench needs, in one command, one table and one JSON file.

    python bench/gpu_check.py [--json gpu_check.json] [--budget 470]      # on one H100/H200, <= 8 minutes
    python bench/gpu_check.py --smoke                                       # every step, tiny, on the CPU

Steps, in order of priority (a step that no longer fits the budget is recorded as skipped):
1. gpu tests: `pytest -m gpu tests/` (the `gpu`-marked tests), with the count of passed/failed/skipped.
   Among them a real CUDA out-of-memory inside a sweep run, which must be recorded as `failed` with
   its reason while the sweep goes on (tests/test_faults.py); its outcome is its own row.
2. harness overhead: bench/overhead.py's `measure` (nlbench's epoch against a hand-written loop and
   Avalanche's stock Naive, interleaved) on cuda. Target: nlbench <= 1.10x the hand-written loop.
3. NL optimizer steps: bench/optimizers.py's `measure` on cuda: every NL optimizer's training step
   as a ratio to Adam (and the fused DeepL2GD+SGD to SGD).
4. clocks and HOPE: bench/clocks.py on cuda: the clocked step with every period at 1 against the plain
   step (target <= 1.05x, whole step) on the bigram Transformer and the split-fmnist MLP, and HOPE's
   fwd+bwd against a Transformer of the same width/depth/heads (target <= 2x).
5. DER protocol: bench/gpu_protocol.py, one full split-cifar10 DER run at the protocol's 50 epochs
   (target <= 180 s of process wall time), then 4 runs packed on the GPU (target >= 3x the throughput
   of one), then short runs with bf16 autocast and with --compile, whose training time per epoch is
   compared with the eager run's (on/off).
The figures are printed as one table and written to --json: {"status", "device", "torch", "rows":
[{"check", "status", "value", "target", "met", "seconds", "detail"}], "total_s"}. status is "ok" (every
step ran and none failed), "failed", "incomplete" (steps skipped by the budget), "no gpu" (full mode
on a machine without CUDA: nothing is run, one line says so, exit 0) or "smoke".

Exit status: 0 unless a step failed (1); missed targets are reported, not failures. The --smoke mode
runs every step at toy sizes on the CPU (tests/test_gpu_check.py runs it in CI); its figures mean
nothing, it shows the script works end to end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))
# The bench modules (Avalanche, nlbench) are imported by the steps that use them, so the no-GPU
# answer comes at once.

OOM_TEST = "test_cuda_out_of_memory_in_a_run_is_failed_with_the_reason_and_the_sweep_goes_on"
TARGET_OVERHEAD = 1.10


class Check:
    """The rows of the summary, the budget, and the JSON."""

    def __init__(self, budget: float, smoke: bool, device: str):
        self.started = time.perf_counter()
        self.deadline = self.started + budget
        self.smoke = smoke
        self.device = device
        self.rows: list[dict[str, Any]] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def row(self, check: str, status: str, value: str = "", target: str = "", met: Optional[bool] = None,
            seconds: Optional[float] = None, detail: str = "") -> None:
        self.rows.append({"check": check, "status": status, "value": value, "target": target, "met": met,
                          "seconds": None if seconds is None else round(seconds, 1), "detail": detail})

    def step(self, name: str, need: float, run: Callable[[], None]) -> None:
        """Run one step if `need` seconds are left; a crash is a failed row, not the end of the check."""
        if self.left() < need:
            self.row(name, "skipped", detail=f"budget: {self.left():.0f} s left, the step needs ~{need:.0f} s")
            return
        print(f"-- {name} ({self.left():.0f} s of budget left)", flush=True)
        tick = time.perf_counter()
        try:
            run()
        except Exception as err:  # a broken step is a result; the other steps still run
            self.row(name, "failed", seconds=time.perf_counter() - tick, detail=f"{type(err).__name__}: {err}"[:300])


# --------------------------------------------------------------------------------------------------
# steps


def gpu_tests(check: Check) -> None:
    tick = time.perf_counter()
    targets = ["tests/test_gpu_fastpath.py"] if check.smoke else ["tests/"]
    timeout = max(30.0, min(240.0, check.left() - 200.0)) if not check.smoke else 120.0
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", *targets],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - tick
    out = done.stdout + done.stderr
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", out.splitlines()[-1] if out.strip() else "")}
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    status = "failed" if failed or done.returncode not in (0, 5) else "ok"
    value = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "skipped", "error", "errors") if k in counts)
    detail = "" if status == "ok" else "\n".join(line for line in out.splitlines() if line.startswith(("FAILED", "ERROR")))[:500]
    met = None if "passed" not in counts and not failed else not failed
    check.row("gpu tests (pytest -m gpu)", status, value or "no tests ran", "all pass", met, seconds, detail)
    if check.smoke:
        check.row("CUDA OOM recorded as failed", "skipped", detail="smoke: needs CUDA (the CPU variant runs in the default suite)")
        return
    oom = re.search(rf"(PASSED|FAILED|SKIPPED|ERROR)\S*\s+\S*{OOM_TEST}|{OOM_TEST}\S*\s+(PASSED|FAILED|SKIPPED|ERROR)", out)
    outcome = (oom.group(1) or oom.group(2)) if oom else "not run"
    check.row("CUDA OOM recorded as failed", "ok" if outcome == "PASSED" else "failed", outcome.lower(),
              "run status failed, sweep goes on", outcome == "PASSED", detail="tests/test_faults.py::" + OOM_TEST)


def harness_overhead(check: Check) -> None:
    import overhead

    device = torch.device(check.device)
    workloads = ["mlp"] if check.smoke else ["mlp", "resnet"]
    original = overhead.workload
    if check.smoke:  # toy sizes: the first 256 samples of the workload
        def small(name, dev):
            spec, x, y, source = original(name, dev)
            return spec, x[:256], y[:256], source + ", first 256 samples (smoke)"
        overhead.workload = small
    try:
        for name in workloads:
            tick = time.perf_counter()
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                overhead.measure(name, device, 1 if check.smoke else 3)
            print(text.getvalue(), flush=True)
            line = next(line for line in text.getvalue().splitlines() if line.strip().startswith("nlbench "))
            ratio = float(line.split()[-1].rstrip("x"))
            stock = next(line for line in text.getvalue().splitlines() if "Avalanche Naive" in line)
            check.row(f"harness overhead, {name}", "ok", f"{ratio:.2f}x", f"<= {TARGET_OVERHEAD:.2f}x",
                      ratio <= TARGET_OVERHEAD, time.perf_counter() - tick,
                      f"nlbench epoch / hand-written epoch (medians); Avalanche Naive {stock.split()[-1]}")
    finally:
        overhead.workload = original


def nl_optimizers(check: Check) -> None:
    import optimizers as optimizer_bench

    device = torch.device(check.device)
    for workload in ["mlp"] if check.smoke else ["mlp", "resnet"]:
        tick = time.perf_counter()
        ratios = optimizer_bench.measure(workload, device, 2 if check.smoke else 30, 1 if check.smoke else 3)
        fused = ratios.get("deep-l2gd (sgd-fused)", {}).get("sgd")
        check.row(f"NL optimizer steps, {workload}", "ok",
                  " ".join(f"{k}={v['adam']:.2f}" for k, v in ratios.items() if k not in ("adam", "sgd")),
                  "x Adam (median step)", None, time.perf_counter() - tick,
                  f"deep-l2gd (sgd-fused) / sgd = {fused:.3f}x (target <= 1.05x)" if fused else "")


def clocks_and_hope(check: Check) -> None:
    import clocks

    device = torch.device(check.device)
    rounds, steps = (1, 2) if check.smoke else (5, 20)
    tick = time.perf_counter()
    ratios = clocks.bench_all_clocks(device, rounds, steps)
    seconds = time.perf_counter() - tick
    for name, r in ratios.items():
        check.row(f"clocked step, {name}", "ok", f"{r['whole']:.3f}x", "<= 1.05x", r["whole"] <= 1.05, None,
                  f"optimizer step alone {r['optimizer']:.3f}x; both models timed in {seconds:.0f} s")
    tick = time.perf_counter()
    hope = clocks.bench_hope(device, rounds, max(1, steps // 2), 8 if check.smoke else 64, 64, 2, 4)
    check.row("HOPE vs Transformer", "ok", f"{hope['hope']:.2f}x", "<= 2x", hope["hope"] <= 2.0, time.perf_counter() - tick,
              f"vs a Transformer of HOPE's parameter count {hope['hope_vs_param_matched']:.2f}x; "
              f"memories {100 * hope['memory_share']:.0f}% of HOPE's time")


def _protocol(check: Check, argv: list[str]) -> tuple[int, list[list[str]], str]:
    """Run bench/gpu_protocol.py with argv; returns (exit code, summary rows as cells, its output)."""
    cmd = [sys.executable, str(BENCH / "gpu_protocol.py"), "--device", check.device, *argv]
    print("   $", " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(60.0, check.left() + 30.0))
    out = done.stdout + done.stderr
    print("\n".join("   | " + line for line in out.splitlines()[-14:]), flush=True)
    rows = []
    if "== summary" in out:
        for line in out.split("== summary", 1)[1].splitlines():
            cells = re.split(r"\s{2,}", line.strip())
            if cells and cells[0] in ("full", "pack"):
                rows.append(cells)
    return done.returncode, rows, out


def _figure(cells: list[str], index: int) -> Optional[float]:
    try:
        return float(cells[index])
    except (IndexError, ValueError):
        return None


def der_protocol(check: Check) -> None:
    """Full run (eager), packing, then bf16 / compile short runs compared per training epoch."""
    import gpu_protocol

    smoke = check.smoke
    size = ["--per-class", "2", "--epochs", "1"] if smoke else []
    budget = lambda reserve: ["--budget", f"{max(30.0, check.left() - reserve):.0f}"]  # noqa: E731
    # 1. the DER protocol's full run
    tick = time.perf_counter()
    code, rows, out = _protocol(check, [*size, "--variants", "eager", "--skip-pack", "--run-timeout",
                                        "300" if smoke else "240", *budget(150 if not smoke else 0)])
    eager_per_epoch = None
    for cells in rows:
        wall, train = _figure(cells, 5), _figure(cells, 7)
        epochs = int(cells[3])
        met = None if smoke or wall is None else wall <= gpu_protocol.TARGET_FULL_S
        eager_per_epoch = train / (epochs * gpu_protocol.N_EXPERIENCES) if train else None
        check.row("DER split-cifar10 full run (eager)", "ok" if cells[4] == "completed" else cells[4],
                  f"{cells[5]} s wall, train {cells[7]} s, eval {cells[8]} s, peak {cells[9]} MB", "<= 180 s wall", met,
                  time.perf_counter() - tick, f"{epochs} epoch(s) per experience")
    if not rows:
        check.row("DER split-cifar10 full run (eager)", "failed", seconds=time.perf_counter() - tick, detail=out[-300:])
    # 2. four runs packed on one GPU (two on the CPU in smoke mode)
    if check.left() < 40:
        check.row("DER 4 runs packed", "skipped", detail="budget")
    else:
        tick = time.perf_counter()
        pack = ["--pack", "2", "--pack-epochs", "1"] if smoke else ["--pack", "4", "--pack-epochs", "2"]
        code, rows, out = _protocol(check, [*size, "--skip-full", *pack, *budget(90 if not smoke else 0)])
        ratio = re.search(r"aggregate throughput, wall: .* = ([0-9.]+)x", out)
        train = re.search(r"training only: .* = ([0-9.]+)x", out)
        status = "ok" if code == 0 and ratio else ("incomplete" if code == 3 else "failed")
        value = f"{ratio.group(1)}x throughput" + (f" (training only {train.group(1)}x)" if train else "") if ratio else ""
        check.row(f"DER {pack[1]} runs packed", status, value, ">= 3x", None if smoke or not ratio else float(ratio.group(1)) >= 3.0,
                  time.perf_counter() - tick, "" if ratio else out[-300:])
    # 3. bf16 autocast and torch.compile, on against off (the eager run above)
    variants = "bf16" if smoke else "bf16,compile"
    if check.left() < 40:
        check.row("bf16 / compile on vs off", "skipped", detail="budget")
        return
    tick = time.perf_counter()
    short = size if smoke else ["--epochs", "3"]
    code, rows, out = _protocol(check, [*short, "--variants", variants, "--skip-pack", "--run-timeout", "300" if smoke else "200",
                                        *budget(0)])
    for cells in rows:
        train, epochs = _figure(cells, 7), int(cells[3])
        per_epoch = train / (epochs * gpu_protocol.N_EXPERIENCES) if train else None
        speed = f", {eager_per_epoch / per_epoch:.2f}x eager's training speed" if per_epoch and eager_per_epoch else ""
        check.row(f"{cells[1]} on (eager off)", "ok" if cells[4] == "completed" else cells[4],
                  f"{cells[5]} s wall, train {cells[7]} s" + speed, "faster than eager per epoch",
                  None if smoke or not speed else eager_per_epoch > per_epoch, time.perf_counter() - tick,
                  f"{epochs} epoch(s) per experience; wall includes cold compilation" if "compile" in cells[1] else f"{epochs} epoch(s)")
    if not rows:
        check.row(f"{variants} on vs off", "failed", seconds=time.perf_counter() - tick, detail=out[-300:])
    if smoke:
        check.row("compile on (eager off)", "skipped", detail="smoke: a cold Inductor build on the CPU takes minutes")


# --------------------------------------------------------------------------------------------------


def print_table(check: Check, header: str) -> None:
    print(f"\n== gpu_check summary: {header} ==")
    cols = ("check", "status", "value", "target", "met", "seconds")
    cells = [cols] + [tuple("-" if r[c] is None else ("yes" if r[c] is True else "NO" if r[c] is False else str(r[c]))
                            for c in cols) for r in check.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    for r in check.rows:
        if r["detail"] and r["status"] != "ok":
            print(f"  {r['check']}: {r['detail']}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every step at toy sizes on the CPU (CI)")
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="where to write the summary")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for all steps (8 minutes with margin)")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no GPU here (torch.cuda.is_available() is False): nothing was run; "
              "run it on a CUDA machine, or pass --smoke for the CPU smoke mode.")
        args.json.write_text(json.dumps({"status": "no gpu", "device": "cpu", "torch": torch.__version__, "rows": []}, indent=1))
        return 0
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    check = Check(args.budget, args.smoke, device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)"
    print(f"gpu_check: {name}, torch {torch.__version__}, budget {args.budget:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="nlbench-gpu-check-"):
        check.step("gpu tests", 60 if not args.smoke else 0, lambda: gpu_tests(check))
        check.step("harness overhead", 40 if not args.smoke else 0, lambda: harness_overhead(check))
        check.step("NL optimizer steps", 20 if not args.smoke else 0, lambda: nl_optimizers(check))
        check.step("DER protocol", 120 if not args.smoke else 0, lambda: der_protocol(check))
        check.step("clocks and HOPE", 30 if not args.smoke else 0, lambda: clocks_and_hope(check))
    total = time.perf_counter() - check.started
    failed = any(r["status"] == "failed" for r in check.rows)
    cut = any(r["status"] in ("skipped", "incomplete", "timeout") for r in check.rows if "smoke" not in r["detail"])
    status = "smoke" if args.smoke and not failed else ("failed" if failed else "incomplete" if cut else "ok")
    print_table(check, f"{name}, status {status}, {total:.0f} s")
    args.json.write_text(json.dumps({"status": status, "device": name, "torch": torch.__version__, "rows": check.rows,
                                     "total_s": round(total, 1)}, indent=1))
    print(f"  written: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
