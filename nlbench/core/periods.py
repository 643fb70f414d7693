"""Clock periods written relative to the experience length: `--hp periods=1,e/8,e,2e`.

A token is either a positive integer (an absolute period, in optimizer steps) or `[k]e[/m]` with
positive integers k and m: k/m experience lengths, where `e` is the stream's experience length in
steps (`nlbench.data.plan.StreamPlan.experience_length`, the rounded mean over experiences). So `e/8` is
an eighth of an experience, `e` one experience, `2e` two (the slow level then sums gradients across a
task boundary: consolidation across tasks).

Resolution happens once, when the spec is resolved (`nlbench.core.spec.resolve_spec`), from the stream
plan of the run's suite, options, batch size and epochs, never from a tuning run's held-out remainder:
a tuning trial and the test runs it selects for therefore step the same integer periods. A relative
token resolves to round(k * e / m) (half up); a value below 1 step, or resolved periods that are not
strictly increasing, are bad input. The spec keeps the written tokens in `hparams` and the integers in
`resolved_hparams`; both enter the run id, so the same words on two streams of different lengths never
share a run. Standard library only.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from nlbench.errors import UserError

_RELATIVE = re.compile(r"^(?P<k>[1-9][0-9]*)?e(?:/(?P<m>[1-9][0-9]*))?$")


def canonical_token(text: str) -> str | None:
    """The canonical form of a relative token (`1e` -> `e`, `e/1` -> `e`), or None if `text` is not one."""
    match = _RELATIVE.match(str(text).strip().lower())
    if match is None:
        return None
    k, m = int(match["k"] or 1), int(match["m"] or 1)
    return ("e" if k == 1 else f"{k}e") + ("" if m == 1 else f"/{m}")


def is_relative(value: Any) -> bool:
    """Whether a periods value has at least one relative token."""
    return isinstance(value, (tuple, list)) and any(isinstance(v, str) for v in value)


def _fraction(token: str) -> tuple[int, int]:
    match = _RELATIVE.match(token)
    return int(match["k"] or 1), int(match["m"] or 1)


def resolve_periods(name: str, value: tuple[Any, ...], experience_length: int) -> tuple[int, ...]:
    """Integer periods of `value` on a stream whose experiences are `experience_length` steps long."""
    resolved = []
    for token in value:
        if isinstance(token, int):
            resolved.append(token)
            continue
        k, m = _fraction(token)
        exact = k * experience_length / m
        if exact < 1:
            raise UserError(f"{name}: {token} is {exact:.3g} steps on this stream (experience length e = "
                            f"{experience_length} steps); a period must be at least 1 step")
        resolved.append(int(exact + 0.5))
    if any(b <= a for a, b in zip(resolved, resolved[1:])):
        written = ",".join(map(str, value))
        raise UserError(f"{name}={written} resolves to {','.join(map(str, resolved))} on this stream (e = "
                        f"{experience_length} steps): periods must be strictly increasing")
    return tuple(resolved)


def resolve_relative(hparams: Mapping[str, Any], experience_length: int) -> dict[str, tuple[int, ...]]:
    """The integer values of every hyperparameter written with relative tokens (the others are absent)."""
    return {key: resolve_periods(key, tuple(value), experience_length)
            for key, value in hparams.items() if is_relative(value)}
