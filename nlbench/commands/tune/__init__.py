"""`nlbench tune`: continual-learning-legal hyperparameter selection with an equal budget per strategy.

Every strategy gets the same number of trials (`--budget`), drawn by Optuna (TPE or random, seeded) from
its declared search space (`nlbench/core/presets/search_spaces.toml`). A trial trains on each
experience's training data minus a seeded held-out fraction and is scored on that held-out part
(`RunSpec.holdout`; the test set is never read during selection, and the held-out examples are never
trained on). The selection metric is declared (default: final average validation accuracy). The best
trial's values then run on the test seeds, which must differ from the tuning seed, through the sweep's
executors, into the same results store; `selection.json` beside the test runs records the trials, the
budget, the chosen values and the validation scores.

Modules: `settings` (TuneSettings over a SweepSettings), `space` (search spaces), `study` (Optuna,
lock-step rounds), `execute` (the sweep's executors, resumable batches), `provenance` (selection.json),
`run` (`run_tune`). Light at import: Optuna, torch and Ray load inside the functions. This command
depends on `nlbench.commands.sweep` (its executors, claims and resume rule), never the other way round.
"""

from nlbench.commands.tune.provenance import SELECTION_FILE, read_selection
from nlbench.commands.tune.run import TuneView, plan_tune, run_tune
from nlbench.commands.tune.settings import SAMPLERS, SELECTION_METRICS, TuneSettings, build_tune_settings
from nlbench.commands.tune.space import Dimension, load_spaces, search_space

__all__ = [
    "SELECTION_FILE", "read_selection",
    "TuneView", "plan_tune", "run_tune",
    "SAMPLERS", "SELECTION_METRICS", "TuneSettings", "build_tune_settings",
    "Dimension", "load_spaces", "search_space",
]
