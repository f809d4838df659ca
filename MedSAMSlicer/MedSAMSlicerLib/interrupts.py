"""Ctrl+C and a scheduler's SIGTERM stop every command the same way: once, cleanly.

A cluster scheduler (Slurm, Kubernetes, a CI runner) ends a job with SIGTERM, whose default kills the
process on the spot: no ``finally`` runs, so partial files stay and a cohort's summary is never written.
Under ``signals_as_interrupts`` SIGTERM raises ``Interrupted`` (a ``KeyboardInterrupt``) as Ctrl+C does, and
the command unwinds as for Ctrl+C. The first signal also ignores every later one: a second Ctrl+C a moment
after the first would otherwise land in the middle of that clean-up (a progress bar closing, a partial
file being deleted) and end the process half-way, or abort it from inside a native library.
"""

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

#: the signals that stop a command
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signal_number`` says which (the exit status is 128 + it, as a shell reports)."""

    def __init__(self, signal_number: int = signal.SIGINT):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl+C (or an interrupt raised by code), 143 for SIGTERM: 128 + the signal's number."""
    return 128 + getattr(interrupt, "signal_number", signal.SIGINT)


def interrupt_message(interrupt: KeyboardInterrupt) -> str:
    """"interrupted" for Ctrl+C; the signal's name for another."""
    number = getattr(interrupt, "signal_number", signal.SIGINT)
    return "interrupted" if number == signal.SIGINT else f"stopped by {signal.Signals(number).name}"


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` once; later ones are ignored while the command winds down.

    The handlers before are put back when the block ends, unless a signal arrived: then the process is
    about to exit, and a signal now could only break that. Off the main thread (where Python cannot set
    handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    arrived = []

    def stop(number, frame):
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        arrived.append(number)
        raise Interrupted(number)

    for number in STOP_SIGNALS:
        signal.signal(number, stop)
    try:
        yield
    finally:
        if not arrived:
            for number, handler in before.items():
                signal.signal(number, signal.SIG_DFL if handler is None else handler)
