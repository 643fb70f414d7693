"""Errors that the CLI turns into one line on stderr and an exit code (2: bad input or missing data;
3: a trained result could not be stored where it belongs and was kept elsewhere), `echo`, the one
helper every error message uses to quote what the user typed, shortened so a line stays a line, and
`exact_float`, the one way a number the user wrote becomes a float."""

from __future__ import annotations

import decimal
import math
import re
from typing import Any

ECHO_LIMIT = 60  # characters of user text quoted in an error line
_LONG_TOKEN = 256  # a run of non-space characters longer than any real path or name: shorten it
_MESSAGE_LIMIT = 2000  # no error line is longer, whatever it quotes
_TOKEN = re.compile(r"[^\s'\",;]{%d,}" % (_LONG_TOKEN + 1))


def shorten(text: Any, limit: int = ECHO_LIMIT) -> str:
    """`text` with newlines flattened and cut to its first `limit` characters plus '...' when longer."""
    text = " ".join(str(text).splitlines())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """User text as an error line quotes it: `repr` of the value, shortened (see `shorten`)."""
    if not isinstance(value, str):
        return shorten(repr(value), limit)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def bound_message(message: Any) -> str:
    """A message with every overlong token and the whole line bounded: a net under the raise sites
    that quote user input with `!r` rather than `echo`."""
    message = _TOKEN.sub(lambda m: shorten(m.group(0)), str(message))
    return shorten(message, _MESSAGE_LIMIT)


class UserError(Exception):
    """Bad input from the user: the message names what is wrong and what is valid."""

    exit_code = 2

    def __init__(self, message: Any = "", *args: Any) -> None:
        super().__init__(bound_message(message), *args)


class DataUnavailable(UserError):
    """A dataset's files are missing, unreadable or corrupt; the message names the files and where."""


class ResultNotStored(UserError):
    """A run was trained but its files could not be written into the results store (a full disk, a
    quota, a read-only remount); the message names the fallback copy that keeps the result."""

    exit_code = 3


def exact_float(text: str, what: str = "") -> float:
    """`float(text)`, except that a literal which is not zero but rounds to 0.0 (`1e-400`), or is finite
    but overflows to inf (`1e400`), is a UserError naming it: `--hp lr=1e-400` would otherwise train
    with a learning rate of zero without a word. `what` prefixes the literal (`"lr="`). Raises
    ValueError, as float() does, for text that is no number."""
    value = float(text)
    if value == 0.0 or math.isinf(value):
        try:
            exact = decimal.Decimal(str(text).strip().replace("_", ""))
        except decimal.InvalidOperation:
            return value
        if exact.is_finite() and exact != 0:
            how = ("is not zero but underflows to 0.0 as a float (the smallest is about 5e-324)" if value == 0.0
                   else "is finite but overflows to inf as a float (the largest is about 1.8e308)")
            raise UserError(f"{what}{echo(str(text).strip())[1:-1]} {how}; write a number a float can hold")
    return value
