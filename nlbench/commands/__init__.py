"""Commands: `run` (several strategies on one suite), `sweep` (plans, resume, executors) and `report`
(load, statistics, figures, published numbers). They raise `UserError` and report progress through
callbacks or views; they never print, never import typer or rich, and never import each other."""
