"""Nested Learning strategies (installed as nlbench.strategies), one file per method."""
