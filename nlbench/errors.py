"""Errors that the CLI turns into one line on stderr and an exit code (2: bad input or missing data;
3: a trained result could not be stored where it belongs and was kept elsewhere), and `echo`, the one
helper every error message uses to quote what the user typed, shortened so a line stays a line."""

from __future__ import annotations

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
