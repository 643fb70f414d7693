"""SIGINT (Ctrl-C) and SIGTERM (a scheduler's stop): how a command stops, and the blocks they wait for.

- `deferred()` holds both signals until a block ends: the three files of a run (`store.write_run`) and
  the taking of a claim (`claims.claim`) are then whole or absent, never half. The held signal is handed
  on to the handler that was there before once the block ends.
- `terminate_as_interrupt()`: SIGTERM raises KeyboardInterrupt, so `run`, `sweep` and `tune` stop under a
  scheduler exactly as under Ctrl-C (exit code 130).
- `accept_interrupts()`: a process whose parent stops it with SIGINT (a sweep's run) takes SIGINT as
  Ctrl-C even when it inherited SIGINT ignored (a driver started in the background by a shell script:
  without this the driver's SIGINT would be lost and the run would go on until it is killed).

Why a handler and not a signal mask: torch's worker threads leave the signals unblocked and would take
them, and Python runs its handlers in the main thread whichever thread took the signal. Python handles
signals in the main thread only, so off the main thread `deferred` changes nothing (the atomic writes
alone still keep every file whole).

A signal whose disposition is SIG_IGN (the parent asked for it to be ignored) or a handler installed
outside Python (which Python cannot reinstall) is left alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

HELD = (signal.SIGINT, signal.SIGTERM)


def _forward(previous: Any, signum: int, frame: Any) -> None:
    """Do what `previous` (the handler before ours) does with `signum`."""
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:  # e.g. SIGTERM's default: end the process, as it would have
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


class _Hold:
    """A handler that records signals while `holding`, and afterwards behaves as the one it replaced.

    So a hold left installed (an interrupt between restoring one signal's handler and the next) still
    does what the old handler did: no signal is ever swallowed by a block that has ended.
    """

    def __init__(self, previous: Any, received: list[int]) -> None:
        self.previous = previous
        self.holding = True
        self.received = received  # shared by the holds of one block, in the order the signals came

    def __call__(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.received.append(signum)
        else:
            _forward(self.previous, signum, frame)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then hand the first one received to its handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    holds: dict[int, _Hold] = {}
    received: list[int] = []
    try:
        for sig in HELD:
            current = signal.getsignal(sig)
            if current is None or current == signal.SIG_IGN:
                continue
            holds[sig] = _Hold(current, received)  # recorded before it is installed, so it is always restored
            signal.signal(sig, holds[sig])
        yield
    finally:
        for hold in holds.values():
            hold.holding = False
        for sig, hold in holds.items():
            signal.signal(sig, hold.previous)
        if received:
            _forward(holds[received[0]].previous, received[0], None)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt for the duration of the block (off the main thread: nothing)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def accept_interrupts() -> None:
    """SIGINT raises KeyboardInterrupt in this process, whatever disposition it inherited."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
