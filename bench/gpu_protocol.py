"""Split CIFAR-10 under the DER protocol on a GPU: one full run, and runs packed onto one GPU.

    python bench/gpu_protocol.py                     # GPU: variant all, then packing; fits a 10-minute command
    python bench/gpu_protocol.py --variants eager --skip-pack --run-timeout 560      # the defaults, alone
    python bench/gpu_protocol.py --device cpu --per-class 20 --epochs 1 --pack 2 --pack-epochs 1 --variants eager

What it measures:
1. Full run (part 1): one `nlbench run --suite split-cifar10 --strategy der` per variant, at the suite's
   defaults, which are the DER protocol's sizes: 5 experiences x 2 classes, 50 epochs per experience,
   batch 32, reduced ResNet-18 (nf=20). Variants: `eager` (the defaults), `bf16` (--amp bf16),
   `compile` (--compile), `cl` (--channels-last), and `all` (all three); join them with `+`
   (e.g. `compile+cl`). Printed per run: the wall time of the `nlbench run` process (what a user waits
   for: Python, torch and Avalanche imports, reading the CIFAR files, CUDA start-up, torch.compile and
   the run itself), the run's own time (result.json `wall_time_s`) split into training (the sum of
   `experience_train_time_s`) and evaluation (the sum of `eval_time_s`), peak GPU memory, final ACC.
   Target: at most 180 s of process wall time on one H100/H200.
2. Packing (part 2): short runs (--pack-epochs) of one variant (default `eager`): one run alone, then
   PACK runs (seeds 0..PACK-1) started at the same moment, as PACK separate `nlbench run` processes on
   the same GPU (CUDA_VISIBLE_DEVICES left as it is). Aggregate throughput ratio =
   PACK x t_alone / t_packed, where t_packed runs from the start of the first process to the end of
   the last. Target: at least 3x with PACK=4. Direct processes measure the GPU sharing itself: there is
   no sweep driver and no slot queue. `--pack-via sweep` measures the user's path instead:
   `nlbench sweep --seeds 0-(PACK-1) --runs-per-gpu PACK` against `--runs-per-gpu 1` with one seed,
   with the same variant flags. As in the sweep executor, each of k concurrent runs gets cpu_count // k torch threads
   (OMP_NUM_THREADS).
   Each process pays a fixed start-up (imports, data, CUDA context, compilation) that runs on the CPU
   and overlaps perfectly across processes, so with few epochs the wall-time ratio flatters packing;
   the "training only" ratio (PACK x training time alone / mean training time packed) leaves that out.

Data: the GPU machines have no internet and no CIFAR files, so the script writes CIFAR-10 files in the
real on-disk format (cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta; pickled dicts
with "data" uint8 rows of 3072 bytes and "labels") into a temporary folder, filled with random uint8
pixels and balanced random labels: 50,000 train and 10,000 test images at full size (--per-class 5000).
nlbench reads them through its real reader (torchvision's CIFAR10), exactly as it reads the real set.
Timing does not depend on pixel values; ACC does, and on random pixels it is near chance (printed only
as a sanity check that the run trained and evaluated).

Time limits: a full run still going after --run-timeout seconds is killed and reported as missing the
target; no run goes past --budget seconds from the start of the script (default 570 s, so the whole
script fits a 10-minute command), and parts that no longer fit are skipped and said so. Every
torch.compile run starts from an empty Inductor/Triton cache (cold compile, as on a fresh machine).

Exit status: 0 when every run completed (whether or not it met the targets), 1 when a run failed
(its error from result.json, or the tail of its log, is printed), 3 when runs were only cut by
--run-timeout/--budget, 2 on bad options. On a CPU it runs end to end with tiny sizes, as a smoke
test; the targets apply to a GPU only.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SUITE = "split-cifar10"
SUITE_EPOCHS = 50  # the suite's default (DER protocol)
N_EXPERIENCES = 5
TARGET_FULL_S = 180.0
TARGET_PACK_RATIO = 3.0
CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
VARIANT_FLAGS = {
    "eager": [],
    "bf16": ["--amp", "bf16"],
    "compile": ["--compile"],
    "cl": ["--channels-last"],
    "all": ["--amp", "bf16", "--compile", "--channels-last"],
}
MIN_START_S = 20.0  # do not start a part with less budget left than this


def say(*parts: Any) -> None:
    print(*parts, flush=True)


# --------------------------------------------------------------------------------------------------
# Data: CIFAR-10 files in the real format, random pixels


def write_random_cifar10(root: Path, per_class: int, seed: int = 0) -> tuple[int, int]:
    """Write cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} under `root`.

    `per_class` train images per class (5000 = the real 50,000), a fifth of that per class in the test
    batch (1000 = the real 10,000); random uint8 pixels, labels balanced and shuffled. Keys are str, as
    torchvision's latin1 unpickling reads the real files' Python 2 str keys ("data", "labels").
    Returns (train images, test images).
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_train, n_test = 10 * per_class, 10 * max(1, per_class // 5)

    def dump(name: str, batch_label: str, labels: np.ndarray) -> None:
        batch = {
            "batch_label": batch_label,
            "labels": labels.tolist(),
            "data": rng.integers(0, 256, size=(len(labels), 3 * 32 * 32), dtype=np.uint8),
            "filenames": [f"{name}_{j:05d}.png" for j in range(len(labels))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)

    train_labels = rng.permutation(np.arange(n_train) % 10)
    for i, chunk in enumerate(np.array_split(train_labels, 5), start=1):
        dump(f"data_batch_{i}", f"training batch {i} of 5", chunk)
    dump("test_batch", "testing batch 1 of 1", rng.permutation(np.arange(n_test) % 10))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": -(-n_train // 5), "label_names": CIFAR10_LABEL_NAMES,
                     "num_vis": 3 * 32 * 32}, f, protocol=2)
    return n_train, n_test


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    """One `nlbench` process: the command, its log, its times, and the run results it stored."""

    label: str
    command: list[str]
    results_dir: Path  # OUT/NAME: every run this process stores lands in a sub-folder
    log: Path
    threads: Optional[int] = None
    popen: Any = None
    started: float = 0.0
    ended: float = 0.0
    deadline: float = 0.0
    returncode: Optional[int] = None
    killed: str = ""  # why it was stopped, if it was
    results: list[dict] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return self.ended - self.started


def child_env(threads: Optional[int], cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["NLBENCH_OFFLINE"] = "1"
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "inductor")  # a cold torch.compile for every process
    env["TRITON_CACHE_DIR"] = str(cache / "triton")
    env["TORCH_LOGS"] = "recompiles"  # torch.compile: log each recompilation and its reason (counted below)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def start(procs: list[Proc], deadline: float, work: Path) -> None:
    """Start every process at once (each in its own session, so a kill takes its compile workers too)."""
    for proc in procs:
        proc.log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(proc.log, "wb")
        proc.deadline = deadline
        proc.started = time.perf_counter()
        proc.popen = subprocess.Popen(proc.command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                      env=child_env(proc.threads, work / "cache" / proc.log.stem),
                                      start_new_session=True)
        handle.close()


def wait(procs: list[Proc], reason: str) -> None:
    """Wait for every process; kill one (and its process group) that passes its deadline."""
    pending = list(procs)
    while pending:
        now = time.perf_counter()
        for proc in list(pending):
            code = proc.popen.poll()
            if code is None and now > proc.deadline:
                try:
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                code = proc.popen.wait()
                proc.killed = f"killed after {now - proc.started:.0f} s ({reason})"
            if code is not None:
                proc.ended = time.perf_counter() if not proc.killed else now
                proc.returncode = code
                pending.remove(proc)
        if pending:
            time.sleep(0.05)
    for proc in procs:
        proc.results = load_results(proc.results_dir)


def load_results(results_dir: Path) -> list[dict]:
    found = []
    for path in sorted(results_dir.glob("*/result.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            found.append({"status": "unreadable", "error": f"{path}: {err}"})
    return found


def recompiles(path: Path) -> str:
    """torch.compile recompilations logged by the process (TORCH_LOGS=recompiles), and whether Dynamo
    hit its recompile limit (after which the function runs eagerly)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    count = text.count("Recompiling function")
    limit = "; recompile LIMIT HIT (falls back to eager)" if "limit reached" in text or "limit_reached" in text else ""
    return f"{count} recompilation(s){limit}" if count or limit else ""


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return "(no log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("      " + line for line in kept)


def run_command(args: argparse.Namespace, data: Path, out: Path, name: str, seed: int, epochs: int,
                variant: str) -> list[str]:
    return [sys.executable, "-m", "nlbench.cli", "run", "--suite", SUITE, "--strategy", args.strategy,
            "--seed", str(seed), "--epochs", str(epochs), "--device", args.device, "--data-root", str(data),
            "--no-download", "--out", str(out), "--name", name, "--force", *variant_flags(variant)]


def sweep_command(args: argparse.Namespace, data: Path, out: Path, name: str, seeds: int, epochs: int) -> list[str]:
    per_gpu = ["--runs-per-gpu", str(seeds)] if args.device.startswith("cuda") else ["--jobs", str(seeds)]
    return [sys.executable, "-m", "nlbench.cli", "sweep", "--suite", SUITE, "--strategy", args.strategy,
            "--seeds", f"0-{seeds - 1}", "--epochs", str(epochs), "--device", "cuda" if args.device.startswith("cuda")
            else args.device, "--data-root", str(data), "--no-download", "--out", str(out), "--name", name, *per_gpu,
            *variant_flags(args.pack_variant)]


def variant_flags(variant: str) -> list[str]:
    """The `nlbench run` flags of a variant such as `all` or `compile+cl`, each once."""
    flags: list[str] = []
    for part in variant.split("+"):
        for flag in VARIANT_FLAGS[part]:
            if flag not in flags:
                flags.append(flag)
    return flags


# --------------------------------------------------------------------------------------------------
# Figures


@dataclass
class Row:
    """One line of the summary table: one run, or one group of runs."""

    part: str
    variant: str
    seeds: str
    epochs: int
    status: str
    wall: Optional[float] = None  # process wall time (or packed wall time)
    run: Optional[float] = None  # result.json wall_time_s (mean over a group)
    train: Optional[float] = None
    eval: Optional[float] = None
    peak: Optional[float] = None
    acc: Optional[float] = None
    target: str = ""


def run_figures(result: dict) -> dict[str, Optional[float]]:
    acc = (result.get("metrics") or {}).get("acc")
    return {
        "run": result.get("wall_time_s"),
        "train": sum(result.get("experience_train_time_s") or []) if result.get("experience_train_time_s") else None,
        "eval": sum(result.get("eval_time_s") or []) if result.get("eval_time_s") else None,
        "peak": result.get("peak_memory_mb"),
        "acc": None if acc is None or acc != acc else acc,
    }


def status_of(proc: Proc, expected: int = 1) -> str:
    if proc.killed:
        return "timeout"
    statuses = [r.get("status", "?") for r in proc.results]
    if len(statuses) < expected:
        return "failed" if proc.returncode else "no result"
    if all(s == "completed" for s in statuses):
        return "completed" if proc.returncode == 0 else f"exit {proc.returncode}"
    return next(s for s in statuses if s != "completed")


def report_problems(proc: Proc) -> None:
    """Print why a process or one of its runs did not complete."""
    if proc.killed:
        say(f"    {proc.label}: {proc.killed}")
        return
    bad = [r for r in proc.results if r.get("status") != "completed"]
    for result in bad:
        error = str(result.get("error") or "").strip()
        say(f"    {proc.label}: run {result.get('status')} (seed {result.get('seed')}): "
            + (error.splitlines()[0] if error else "no error recorded"))
        if error and "\n" in error:
            say("\n".join("      " + line for line in error.splitlines()[-12:]))
    if not bad:
        say(f"    {proc.label}: process exit {proc.returncode}, {len(proc.results)} result(s) stored; its log ends:")
        say(log_tail(proc.log))


def fmt(value: Optional[float], spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_table(rows: list[Row]) -> None:
    header = ("part", "variant", "seeds", "epochs", "status", "wall s", "run s", "train s", "eval s", "peak MB",
              "ACC %", "target")
    cells = [header] + [
        (r.part, r.variant, r.seeds, str(r.epochs), r.status, fmt(r.wall), fmt(r.run), fmt(r.train), fmt(r.eval),
         fmt(r.peak, ".0f"), pct(r.acc), r.target)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        say("  " + "  ".join(c.ljust(w) if i in (0, 1, 2, 4, 11) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            say("  " + "  ".join("-" * w for w in widths))


# --------------------------------------------------------------------------------------------------
# Parts


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, data: Path, started: float):
        self.args = args
        self.work = work
        self.data = data
        self.deadline = started + args.budget
        self.gpu = args.device.startswith("cuda")
        self.rows: list[Row] = []
        self.failed = False
        self.cut = False
        self.device_name = ""
        self.pack_ratio: Optional[float] = None
        self.pack_train_ratio: Optional[float] = None

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def note_device(self, procs: list[Proc]) -> None:
        for proc in procs:
            for result in proc.results:
                if result.get("device_name") and not self.device_name:
                    self.device_name = f"{result.get('device')} ({result['device_name']})"

    def settle(self, procs: list[Proc], expected: int = 1) -> list[str]:
        statuses = [status_of(p, expected) for p in procs]
        for proc, status in zip(procs, statuses):
            if status == "timeout":
                self.cut = True
                report_problems(proc)
            elif status != "completed":
                self.failed = True
                report_problems(proc)
        self.note_device(procs)
        return statuses

    def target_full(self, wall: float) -> str:
        if not self.gpu:
            return "n/a (cpu)"
        if self.args.epochs != SUITE_EPOCHS:
            return f"n/a ({self.args.epochs} ep)"
        return f"<=180 s: {'yes' if wall <= TARGET_FULL_S else 'NO'}"

    # ---- part 1

    def full_runs(self) -> None:
        args = self.args
        say(f"\n== part 1: full run, {args.strategy} on {SUITE}, {args.epochs} epoch(s) per experience, "
            f"{N_EXPERIENCES} experiences, batch 32, reduced ResNet-18 (nf=20), device {args.device} ==")
        for variant in args.variant_list:
            left = self.left()
            if left < MIN_START_S:
                say(f"  {variant}: skipped, {left:.0f} s of --budget left")
                self.rows.append(Row("full", variant, "0", args.epochs, "skipped (budget)"))
                self.cut = True
                continue
            timeout = min(args.run_timeout, left)
            name = f"full-{variant.replace('+', '-')}"
            proc = Proc(f"full {variant}", run_command(args, self.data, self.work / "results", name, 0, args.epochs, variant),
                        self.work / "results" / name, self.work / "logs" / f"{name}.log")
            say(f"  {variant} ({' '.join(variant_flags(variant)) or 'no flags'}): running, stopped after {timeout:.0f} s ...")
            start([proc], time.perf_counter() + timeout, self.work)
            wait([proc], "--run-timeout" if timeout == args.run_timeout else "--budget")
            status = self.settle([proc])[0]
            if status == "timeout":
                target = f"<=180 s: NO (> {proc.wall:.0f} s)" if self.gpu and args.epochs == SUITE_EPOCHS else "n/a"
                self.rows.append(Row("full", variant, "0", args.epochs, "timeout", wall=proc.wall, target=target))
                continue
            figures = run_figures(proc.results[0]) if proc.results else {}
            row = Row("full", variant, "0", args.epochs, status, wall=proc.wall, **figures,
                      target=self.target_full(proc.wall) if status == "completed" else "")
            self.rows.append(row)
            if status != "completed":
                continue
            setup = proc.wall - (row.run or 0.0)
            per_epoch = (row.train or 0.0) / (N_EXPERIENCES * args.epochs)
            exp_times = " ".join(f"{t:.1f}" for t in proc.results[0].get("experience_train_time_s", []))
            say(f"    wall {proc.wall:.1f} s = start-up/exit {setup:.1f} s (imports, data, CUDA, writing) + run {row.run:.1f} s "
                f"(train {row.train:.1f} s, eval {row.eval:.1f} s, other {row.run - row.train - row.eval:.1f} s)")
            say(f"    train per experience [s]: {exp_times}; {per_epoch:.2f} s per epoch; peak memory "
                f"{fmt(row.peak, '.0f')} MB ({proc.results[0].get('peak_memory_kind')}); ACC {pct(row.acc)} %"
                f"; target: {row.target}")
            if "--compile" in variant_flags(variant):
                say(f"    torch.compile: {recompiles(proc.log) or 'no recompilation logged'}")
            if args.epochs != SUITE_EPOCHS:
                # Steady state: the last experience's time per epoch (replay on, compilation done); what the
                # experiences took beyond it (compilation, warm-up) is paid once.
                times = proc.results[0].get("experience_train_time_s", [])
                steady = times[-1] / args.epochs
                once = sum(max(0.0, t - steady * args.epochs) for t in times)
                estimate = proc.wall - row.train + once + steady * SUITE_EPOCHS * N_EXPERIENCES
                say(f"    rough estimate at {SUITE_EPOCHS} epochs: {estimate:.0f} s (start-up, eval and one-off "
                    f"{once:.1f} s kept, {steady:.2f} s per epoch from the last experience)")

    # ---- part 2

    def packing(self) -> None:
        args = self.args
        k, epochs, variant = args.pack, args.pack_epochs, args.pack_variant
        how = (f"{k} `nlbench run` processes started together" if args.pack_via == "run"
               else f"`nlbench sweep --seeds 0-{k - 1} {'--runs-per-gpu' if self.gpu else '--jobs'} {k}`")
        say(f"\n== part 2: packing, {args.strategy}, {epochs} epoch(s) per experience, variant {variant}: "
            f"1 run alone, then {how} on the same {'GPU' if self.gpu else 'CPU'} ==")
        cores = os.cpu_count() or 1
        if self.left() < 2 * MIN_START_S:
            say(f"  skipped: {self.left():.0f} s of --budget left")
            self.rows.append(Row("pack", variant, "-", epochs, "skipped (budget)"))
            self.cut = True
            return

        results = self.work / "results"
        if args.pack_via == "run":
            alone = [Proc("alone", run_command(args, self.data, results, "pack-alone", 0, epochs, variant),
                          results / "pack-alone", self.work / "logs" / "pack-alone.log", threads=cores)]
            packed = [Proc(f"packed seed {s}", run_command(args, self.data, results, f"pack-{k}-s{s}", s, epochs, variant),
                           results / f"pack-{k}-s{s}", self.work / "logs" / f"pack-{k}-s{s}.log",
                           threads=max(1, cores // k)) for s in range(k)]
            per_proc = 1
        else:  # the sweep sets the threads of its runs itself
            alone = [Proc("alone (sweep)", sweep_command(args, self.data, results, "pack-alone", 1, epochs),
                          results / "pack-alone", self.work / "logs" / "pack-alone.log")]
            packed = [Proc(f"packed sweep x{k}", sweep_command(args, self.data, results, f"pack-{k}", k, epochs),
                           results / f"pack-{k}", self.work / "logs" / f"pack-{k}.log")]
            per_proc = k

        say(f"  alone: running (stopped after {self.left():.0f} s, the --budget left) ...")
        start(alone, self.deadline, self.work)
        wait(alone, "--budget")
        if self.settle(alone)[0] != "completed":
            self.rows.append(Row("pack", variant, "0", epochs, status_of(alone[0]), wall=alone[0].wall))
            return
        t_alone = alone[0].wall
        one = run_figures(alone[0].results[0])
        say(f"    wall {t_alone:.1f} s (run {fmt(one['run'])} s, train {fmt(one['train'])} s, eval {fmt(one['eval'])} s), "
            f"peak {fmt(one['peak'], '.0f')} MB")
        self.rows.append(Row("pack", variant, "0 alone", epochs, "completed", wall=t_alone, **one))

        if self.left() < MIN_START_S:
            say(f"  packed: skipped, {self.left():.0f} s of --budget left")
            self.rows.append(Row("pack", variant, f"0-{k - 1}", epochs, "skipped (budget)"))
            self.cut = True
            return
        say(f"  {k} packed: running (stopped after {self.left():.0f} s, the --budget left) ...")
        first = time.perf_counter()
        start(packed, self.deadline, self.work)
        wait(packed, "--budget")
        t_packed = max(p.ended for p in packed) - first
        statuses = self.settle(packed, per_proc)
        runs = [(p, r) for p in packed for r in p.results]
        for proc, result in runs:
            f = run_figures(result)
            wall = f" process wall {proc.wall:.1f} s," if args.pack_via == "run" else ""
            say(f"    seed {result.get('seed')}:{wall} run {fmt(f['run'])} s, train {fmt(f['train'])} s, "
                f"eval {fmt(f['eval'])} s, peak {fmt(f['peak'], '.0f')} MB, {result.get('status')}")
        ok = all(s == "completed" for s in statuses) and len(runs) == k
        figures = [run_figures(r) for _, r in runs]

        def mean(key: str) -> Optional[float]:
            values = [f[key] for f in figures if f[key] is not None]
            return sum(values) / len(values) if values else None

        ratio = k * t_alone / t_packed if ok else None
        target = ("n/a (cpu)" if not self.gpu else f">=3x: {'yes' if ratio >= TARGET_PACK_RATIO else 'NO'}") if ok else ""
        self.rows.append(Row("pack", variant, f"0-{k - 1} packed", epochs, "completed" if ok else "/".join(sorted(set(statuses))),
                             wall=t_packed, run=mean("run"), train=mean("train"), eval=mean("eval"),
                             peak=mean("peak"), acc=mean("acc"), target=target))
        if not ok:
            return
        say(f"    packed wall (first start to last end): {t_packed:.1f} s")
        say(f"    aggregate throughput, wall: {k} x {t_alone:.1f} / {t_packed:.1f} = {ratio:.2f}x  (target >= "
            f"{TARGET_PACK_RATIO:.0f}x: {target})")
        self.pack_ratio = ratio
        if one["train"] and mean("train"):
            train_ratio = k * one["train"] / mean("train")
            say(f"    training only: {k} x {one['train']:.1f} / {mean('train'):.1f} (mean packed) = {train_ratio:.2f}x "
                f"(each packed run trains {mean('train') / one['train']:.2f}x slower than alone)")
            self.pack_train_ratio = train_ratio


# --------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Targets (GPU only): full run <= 180 s; PACK=4 packed throughput >= 3x.")
    parser.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (cuda when torch sees a GPU)")
    parser.add_argument("--strategy", default="der")
    parser.add_argument("--epochs", type=int, default=SUITE_EPOCHS, help="epochs per experience in part 1 (DER: 50)")
    parser.add_argument("--per-class", type=int, default=5000,
                        help="train images per class (5000 = the real 50,000; test gets a fifth of it)")
    parser.add_argument("--variants", default="all",
                        help="part 1 variants, comma-separated: eager, bf16, compile, cl, all, or a '+' join (compile+cl)")
    parser.add_argument("--skip-full", action="store_true", help="skip part 1")
    parser.add_argument("--run-timeout", type=float, default=300.0, help="part 1: kill a run after this many seconds")
    parser.add_argument("--pack", type=int, default=4, help="part 2: runs packed together")
    parser.add_argument("--pack-epochs", type=int, default=5, help="part 2: epochs per experience")
    parser.add_argument("--pack-variant", default="eager", help="part 2: the variant of every run (as in --variants)")
    parser.add_argument("--pack-via", choices=("run", "sweep"), default="run",
                        help="part 2: PACK `nlbench run` processes, or one `nlbench sweep --runs-per-gpu PACK`")
    parser.add_argument("--skip-pack", action="store_true", help="skip part 2")
    parser.add_argument("--budget", type=float, default=570.0, help="stop every run this many seconds after the start")
    parser.add_argument("--keep", type=Path, default=None, help="write data, results and logs here and keep them")
    args = parser.parse_args(argv)

    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in args.variant_list + [args.pack_variant]:
        unknown = [p for p in variant.split("+") if p not in VARIANT_FLAGS]
        if unknown:
            parser.error(f"unknown variant part {unknown[0]!r} in {variant!r}; valid: {', '.join(VARIANT_FLAGS)}")
    if not 1 <= args.per_class <= 5000:
        parser.error("--per-class must be in 1..5000")
    for flag in ("epochs", "pack", "pack_epochs"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be a positive integer")
    if args.device == "auto":
        import torch  # only to pick the device; the runs themselves are separate processes

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.pack_via == "sweep" and args.device.startswith("cuda:"):
        parser.error("--pack-via sweep takes --device cuda (choose the GPU with CUDA_VISIBLE_DEVICES)")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    gpu = args.device.startswith("cuda")
    say(f"gpu_protocol: {args.strategy} on {SUITE}, device {args.device}, {os.cpu_count()} CPU core(s), "
        f"python {sys.version.split()[0]}, budget {args.budget:.0f} s")
    if not gpu:
        say("NOTE: no GPU: the targets (full run <= 180 s, 4 packed runs >= 3x throughput) apply to an "
            "H100/H200 only; on a CPU this only shows the script working end to end.")

    with tempfile.TemporaryDirectory(prefix="nlbench-gpu-protocol-") as tmp:
        work = args.keep.resolve() if args.keep else Path(tmp)
        data = work / "data"
        tick = time.perf_counter()
        n_train, n_test = write_random_cifar10(data, args.per_class)
        say(f"data: {n_train:,} train / {n_test:,} test CIFAR-10 images written in the real format "
            f"({data / 'cifar-10-batches-py'}) in {time.perf_counter() - tick:.1f} s. RANDOM uint8 pixels, not "
            "CIFAR-10 (no CIFAR files on this machine): timing does not depend on pixel values, ACC is near chance.")
        bench = Bench(args, work, data, started)
        if not args.skip_full:
            bench.full_runs()
        if not args.skip_pack:
            bench.packing()

        say(f"\n== summary: {args.strategy} on {SUITE} ({n_train:,} train / {n_test:,} test random CIFAR-shaped "
            f"images), {bench.device_name or args.device}, total {time.perf_counter() - started:.0f} s ==")
        print_table(bench.rows)
        say("  wall s: process wall time (full: imports + data + CUDA + run; pack packed: first start to last end);"
            " run s: result.json wall_time_s; train/eval s: sums over experiences (pack packed: means over runs)")
        if bench.pack_ratio is not None:
            extra = f", training only {bench.pack_train_ratio:.2f}x" if bench.pack_train_ratio else ""
            say(f"  packing: {args.pack} runs at once give {bench.pack_ratio:.2f}x the throughput of one{extra}"
                + ("" if gpu else " (CPU: no target)"))
        if not gpu:
            say("  CPU run: the targets apply to a GPU only.")
        if args.keep:
            say(f"  data, results and logs kept in {work}")
        if bench.failed:
            say("FAILED: at least one run failed (see above)")
            return 1
        if bench.cut:
            say("INCOMPLETE: runs were stopped or skipped by --run-timeout/--budget (see above)")
            return 3
        return 0


if __name__ == "__main__":
    sys.exit(main())
