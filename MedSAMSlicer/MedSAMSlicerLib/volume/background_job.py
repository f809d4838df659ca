"""Long work (segmenting a volume, training, evaluating) on a thread, polled by the GUI so that it never freezes.

The Slicer widget starts a ``BackgroundJob`` and polls it from a ``qt.QTimer`` on the main
thread: progress for the progress bar, then the result (or the error) once done, which the
widget writes to MRML itself (MRML is not thread-safe). Nothing here knows about Qt.

Cancelling is cooperative: ``cancel()`` makes the work's next ``progress`` call raise ``JobCancelled``,
so a loop that reports each slice stops within one slice.
"""

import threading
from concurrent.futures import CancelledError
from typing import Any, Callable, Optional, Tuple


class JobCancelled(CancelledError):
    """Raised inside the work by its progress callback once the job has been cancelled."""


class BackgroundJob:
    """Runs ``work(progress)`` on a daemon thread; ``progress(done, total[, stage])`` may be called from it."""

    def __init__(self, work: Callable[[Callable[[int, int], None]], Any], name: str = "MedSAM job"):
        self._work = work
        self._lock = threading.Lock()
        self._progress: Tuple[int, int] = (0, 0)
        self._stage = ""
        self._result: Any = None
        self._error: Optional[BaseException] = None
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def progress(self) -> Tuple[int, int]:
        with self._lock:
            return self._progress

    @property
    def stage(self) -> str:
        """What the work is doing now (e.g. 'epoch 2/10'), when it says."""
        with self._lock:
            return self._stage

    @property
    def cancelled(self) -> bool:
        """Whether ``cancel()`` was called (the work may still be finishing its current step)."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the work to stop: its next progress report raises ``JobCancelled``."""
        self._cancel.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)

    def result(self) -> Any:
        """The work's return value; re-raises its exception. Only valid once ``done``."""
        if not self.done:
            raise RuntimeError("the job is still running")
        if self._error is not None:
            raise self._error
        return self._result

    def _report(self, done: int, total: int, stage: str = "") -> None:
        with self._lock:
            self._progress, self._stage = (done, total), stage
        if self._cancel.is_set():
            raise JobCancelled(f"{self._thread.name} was cancelled")

    def _run(self) -> None:
        try:
            self._result = self._work(self._report)
        except BaseException as error:  # handed to the GUI through result(), never lost
            self._error = error
        finally:
            self._done.set()
