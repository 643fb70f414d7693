"""`nlbench sweep`: resumable grid sweeps over hyperparameters, seeds and strategies.

A sweep is the Cartesian product of strategies x grid points x seeds, each point resolved into one
`RunSpec` and handed to an executor (`executors`: local subprocesses, or Ray tasks). Every run lands in
the results store under OUT/NAME/RUN_ID, so the same command run again resumes the sweep.

Modules, in the order a sweep uses them:
- `settings`: a sweep file (YAML, TOML or JSON) and the command line, merged into `SweepSettings`;
- `plan`: the grid, expanded per strategy and resolved into `PlannedRun`s; the summary rows;
- `resume`: what the store already holds for a planned run, and whether it is kept;
- `run`: `run_sweep`, which plans, skips, runs and reports to a `SweepView`;
- `executors`: the local and Ray executors and the claims they share;
- `child`: one run of the local executor, in its own process (the hidden `nlbench run-one`).

Decisions (documented in `nlbench sweep --help` too):
- A grid key applies to the strategies that declare it: `--strategy replay,sgd --grid mem_size=100,200`
  gives two replay runs and one sgd run per seed (sgd is not duplicated). A key that no listed
  strategy declares is an error naming the valid keys; a value is parsed and range-checked by each
  strategy's declared `HParam`.
- Values of a tuple-valued key (kind "ints", e.g. clock periods) are separated by ':'
  (`periods=1,8,64:1,16,128`); values of every other key by ',' (`alpha=1e-4,3e-4`).
- Resume: runs whose `done` marker holds `completed` or `diverged` are skipped (both are outcomes of
  the spec). Runs recorded as `failed` (a crash, a kill) are run again by default, as `nlbench run`
  does; `--no-retry-failed` skips them too.
- Runs are ordered seed-major (every configuration with seed 0 first), so a sweep stopped early has
  whole seeds rather than whole strategies.
- The exit code is 0 when every planned run is completed or diverged, 1 when any is failed,
  2 on bad input, 130 on Ctrl-C (or SIGTERM); finished runs are kept in every case. `run_sweep`
  returns 0 or 1 and raises UserError or KeyboardInterrupt; the CLI turns those into 2 and 130.
- Several sweeps may write into one results directory at once: each run is claimed before it starts
  (`nlbench.core.store.claim_run`), a run claimed by another live process is waited for and its stored
  result taken (printed as `elsewhere`), and a run whose claimer died is run here. Every run is then
  stored once and trained once; result.json records the `pid` and `host` of the process that trained it.

This package is light at import (stdlib and `nlbench.errors` only; no typer, no rich): the CLI imports
it at startup, and torch, Avalanche and Ray load inside the functions that need them. The local
executor runs each child as `python -m nlbench.cli run-one SPEC --out DIR`, a thin wrapper around
`child.run_child`.
"""

from nlbench.commands.sweep.child import run_child
from nlbench.commands.sweep.plan import PlannedRun, expand_grid, parse_grid_values, plan_runs, summary_rows
from nlbench.commands.sweep.resume import done_stamp, is_reusable, stored_result
from nlbench.commands.sweep.run import SweepView, run_sweep
from nlbench.commands.sweep.settings import (
    CONFIG_KEYS, EXECUTORS, MAX_SEEDS, SweepSettings, build_settings, load_config, parse_grid_options, parse_seeds,
)

__all__ = [
    "CONFIG_KEYS", "EXECUTORS", "MAX_SEEDS", "SweepSettings", "build_settings", "load_config", "parse_grid_options",
    "parse_seeds",
    "PlannedRun", "expand_grid", "parse_grid_values", "plan_runs", "summary_rows",
    "done_stamp", "is_reusable", "stored_result",
    "SweepView", "run_sweep",
    "run_child",
]
