"""Starting the processes that signal tests signal: with a known SIGINT disposition, whatever pytest's.

A pytest started in the background by a shell script (`pytest &`, as CI wrappers and load tests do) has
SIGINT ignored, and every child inherits that: a SIGINT sent to a child would then be dropped by the
kernel, and a Ctrl-C test would fail (`DID NOT RAISE`, or a child that never stops) for a reason that
has nothing to do with nlbench. An `exec` keeps the disposition set just before it, so the wrapper below
sets it and then becomes the command.
"""

from __future__ import annotations

import sys

_WRAP = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN if sys.argv[1] == 'ignore' "
         "else signal.SIG_DFL); os.execvp(sys.argv[2], sys.argv[2:])")


def with_sigint(disposition: str, command: list[str]) -> list[str]:
    """`command` started with SIGINT at its default (`"default"`: a terminal's Ctrl-C) or ignored (`"ignore"`)."""
    assert disposition in ("default", "ignore")
    return [sys.executable, "-c", _WRAP, disposition, *command]
