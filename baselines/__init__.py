"""Classic continual-learning baselines (installed as nlbench.baselines), one file per method."""
