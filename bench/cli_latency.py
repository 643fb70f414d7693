"""How fast the command line answers: bad input, `nlbench list` and `--help`, each a whole process.

    python bench/cli_latency.py [--repeats 7]

Every case runs as `nlbench ...` in a fresh process (interpreter start and imports included), REPEATS
times interleaved; the table gives the median and the worst wall time, the exit code and whether the
process imported torch (read from `python -X importtime`). Targets (issue 12): every bad input exits 2
with one line in under 1 s; `list` in under 2 s. `--help` is the floor the others are compared with.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES: list[tuple[str, list[str], float]] = [  # (what, arguments, target in seconds)
    ("--help", ["--help"], 1.0),
    ("list", ["list"], 2.0),
    ("run: unknown strategy", ["run", "--strategy", "adma"], 1.0),
    ("run: unknown suite", ["run", "--suite", "split-cifar1000"], 1.0),
    ("run: bad hp value", ["run", "--strategy", "replay", "--hp", "mem_size=abc"], 1.0),
    ("run: unknown hp key", ["run", "--strategy", "adam", "--hp", "nope=1"], 1.0),
    ("run: bad clock periods", ["run", "--strategy", "cms", "--hp", "periods=8,1"], 1.0),
    ("run: epochs 0", ["run", "--strategy", "adam", "--epochs", "0"], 1.0),
    ("run: unknown device", ["run", "--strategy", "adam", "--device", "tpu"], 1.0),
    ("run: unknown protocol", ["run", "--suite", "split-cifar10", "--strategy", "der", "--protocol", "der2021"], 1.0),
    ("run: two optimizers", ["run", "--strategy", "deep-l2gd+muon"], 1.0),
    ("sweep: unknown grid key", ["sweep", "--strategy", "cms", "--grid", "alhpa=1e-4", "--dry-run"], 1.0),
    ("sweep: bad seeds", ["sweep", "--strategy", "adam", "--seeds", "4-1", "--dry-run"], 1.0),
    ("report: missing directory", ["report", "/nonexistent/results"], 1.0),
]


def _one(command: list[str], cwd: Path) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, done.stderr


def _imports_torch(command: list[str], cwd: Path) -> bool:
    done = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], cwd=cwd, capture_output=True, text=True)
    return any(line.rstrip().endswith("| torch") for line in done.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    exe = shutil.which("nlbench")
    if exe is None:
        sys.exit("nlbench is not on PATH: pip install -e . first")
    python_cli = [sys.executable, "-m", "nlbench.cli"]
    with tempfile.TemporaryDirectory() as tmp:  # nothing may be written: run where a write would show
        cwd = Path(tmp)
        times: dict[str, list[float]] = {what: [] for what, _, _ in CASES}
        codes: dict[str, set[int]] = {what: set() for what, _, _ in CASES}
        lines: dict[str, int] = {}
        for _ in range(args.repeats):  # interleaved, so a slow moment of the machine hits every case
            for what, case_args, _ in CASES:
                seconds, code, stderr = _one([exe, *case_args], cwd)
                times[what].append(seconds)
                codes[what].add(code)
                lines[what] = len(stderr.strip().splitlines())
        written = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
        print(f"nlbench command-line latency, whole process, median of {args.repeats} interleaved runs")
        print(f"{'case':<28} {'median s':>9} {'max s':>7} {'target':>7} {'exit':>5} {'stderr lines':>12} {'torch':>6}  ok")
        failures = 0
        for what, case_args, target in CASES:
            median, worst = statistics.median(times[what]), max(times[what])
            torch_loaded = _imports_torch([*python_cli, *case_args], cwd)
            code = ",".join(map(str, sorted(codes[what])))
            expected_code = 0 if what in ("--help", "list") else 2
            ok = median < target and codes[what] == {expected_code} and (expected_code == 0 or lines[what] == 1)
            failures += not ok
            print(f"{what:<28} {median:>9.2f} {worst:>7.2f} {target:>7.1f} {code:>5} {lines[what]:>12} "
                  f"{'yes' if torch_loaded else 'no':>6}  {'yes' if ok else 'NO'}")
        floor = statistics.median(times["--help"])
        slowest_bad = max(statistics.median(times[w]) for w, _, _ in CASES if w not in ("--help", "list"))
        print(f"slowest bad input / --help: {slowest_bad / floor:.2f}x; list / --help: "
              f"{statistics.median(times['list']) / floor:.2f}x")
        print(f"files written by all cases: {written or 'none'}")
        sys.exit(1 if failures or written else 0)


if __name__ == "__main__":
    main()
