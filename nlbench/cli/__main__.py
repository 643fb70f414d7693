"""`python -m nlbench.cli ...`: the same program as the `nlbench` script (the sweep's children use it)."""

from nlbench.cli import main

main()
