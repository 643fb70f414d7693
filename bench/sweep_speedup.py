"""Speed-up of the local sweep executor, measured side by side in one invocation.

    python bench/sweep_speedup.py [--runs 8] [--epochs 5] [--pack 4]

1. CPU: the same sweep of RUNS small split-digits runs (sgd, a learning-rate grid x seeds), once with
   `--jobs 1` and once with `--jobs 2`, each into a fresh results directory; prints both wall times
   and the speed-up. Each configuration uses every core: --jobs 1 gives its run cpu_count threads,
   --jobs 2 gives each run cpu_count // 2.
2. GPU (only when torch sees one): the same sweep on CUDA with one run per GPU, then with PACK runs
   per GPU (`--runs-per-gpu PACK`); prints the throughput ratio (runs per minute, packed / unpacked).

Wall time includes everything a user waits for: planning, one subprocess per run (Python, torch and
Avalanche imports included), training and evaluation, writing the store.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sweep(out: Path, runs: int, epochs: int, extra: list[str]) -> tuple[float, float]:
    """Run one sweep in a fresh process; return its wall time and the CPU time of the sweep and all its
    subprocesses (s), after checking that every run completed."""
    seeds = max(1, runs // 2)
    command = [sys.executable, "-m", "nlbench.cli", "sweep", "--strategy", "sgd", "--grid", "lr=0.02,0.05",
               "--seeds", f"0-{seeds - 1}", "--epochs", str(epochs), "--out", str(out), "--name", "bench", *extra]
    cpu_before, started = _cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
    if done.returncode != 0:
        sys.exit(f"sweep failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    from nlbench.core.store import load_results

    frame = load_results(out)
    if len(frame) != 2 * seeds or set(frame["status"]) != {"completed"}:
        sys.exit(f"expected {2 * seeds} completed runs in {out}, found {len(frame)}: {sorted(set(frame['status']))}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="runs per sweep (even, at least 8)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per experience (split-digits default: 5)")
    parser.add_argument("--pack", type=int, default=4, help="GPU: runs packed per GPU against one per GPU")
    args = parser.parse_args()
    if args.runs < 8 or args.runs % 2:
        parser.error("--runs must be an even number >= 8")

    cores = os.cpu_count() or 1
    print(f"machine: {cores} CPU core(s), load average {os.getloadavg()[0]:.1f} at start")
    print(f"sweep: {args.runs} runs of sgd on split-digits ({args.epochs} epoch(s) per experience), one subprocess per run")
    with tempfile.TemporaryDirectory(prefix="nlbench-bench-") as tmp:
        tmp_path = Path(tmp)
        serial, serial_cpu = _sweep(tmp_path / "jobs1", args.runs, args.epochs, ["--device", "cpu", "--jobs", "1"])
        parallel, parallel_cpu = _sweep(tmp_path / "jobs2", args.runs, args.epochs, ["--device", "cpu", "--jobs", "2"])
        print(f"  --jobs 1: {serial:7.1f} s wall, {serial_cpu:6.1f} s CPU  ({60 * args.runs / serial:5.1f} runs/min)")
        print(f"  --jobs 2: {parallel:7.1f} s wall, {parallel_cpu:6.1f} s CPU  ({60 * args.runs / parallel:5.1f} runs/min)")
        print(f"  speed-up of --jobs 2 over --jobs 1: {serial / parallel:.2f}x")

        import torch

        if torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            runs = max(args.runs, 2 * args.pack * gpus)
            runs += runs % 2
            print(f"GPU: {gpus} x {torch.cuda.get_device_name(0)}; {runs} runs, 1 vs {args.pack} run(s) per GPU")
            one, _ = _sweep(tmp_path / "gpu1", runs, args.epochs, ["--device", "cuda", "--runs-per-gpu", "1"])
            packed, _ = _sweep(tmp_path / f"gpu{args.pack}", runs, args.epochs,
                               ["--device", "cuda", "--runs-per-gpu", str(args.pack)])
            print(f"  --runs-per-gpu 1: {one:7.1f} s  ({60 * runs / one:5.1f} runs/min)")
            print(f"  --runs-per-gpu {args.pack}: {packed:7.1f} s  ({60 * runs / packed:5.1f} runs/min)")
            print(f"  throughput ratio, {args.pack} runs per GPU over 1: {one / packed:.2f}x")
        else:
            print("GPU: none visible; the packing ratio (k runs per GPU over 1) is measured only when one is")
    print(f"load average {os.getloadavg()[0]:.1f} at end (other processes on the machine skew wall times)")


if __name__ == "__main__":
    main()
