"""nlbench: a continual-learning benchmark harness for Nested Learning methods and classic baselines."""

__version__ = "0.1.0"

import warnings as _warnings

# avalanche-lib imports qpsolvers for GEM, which nlbench does not offer; its "no QP solver" warning
# would otherwise greet every command.
_warnings.filterwarnings("ignore", message="no QP solver found")
