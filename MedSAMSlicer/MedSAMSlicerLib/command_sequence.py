"""Long external commands (pip installing PyTorch) run one after another off the GUI thread, watchable and stoppable.

Installing the module's packages means gigabytes of downloads: run on Slicer's main thread it
freezes the application for minutes with nothing to show. ``CommandSequence`` runs the steps on
a thread, keeps the last output lines and the step count for a progress display that polls it,
writes everything to a log file, and can be cancelled (the running command is terminated, the
steps after it never start). It knows nothing of Qt, so it is tested with plain pytest.
"""

import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

#: output lines kept for display (the log file has all of them)
TAIL_LINES = 20
#: seconds a cancelled command gets to stop before it is killed
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Step:
    title: str  # what the user reads, e.g. "PyTorch"
    command: List[str]


class CommandSequence:
    """Runs ``steps`` in order on a thread; stops at the first failure or at ``cancel()``."""

    def __init__(self, steps: Sequence[Step], log_path: Path):
        self.steps, self.log_path = list(steps), Path(log_path)
        self._lines: deque = deque(maxlen=TAIL_LINES)
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen] = None
        self._cancelled = threading.Event()
        self._current = 0  # index of the step running (or that failed)
        self.returncode: Optional[int] = None  # 0 when every step succeeded; set when done
        self._thread = threading.Thread(target=self._run, name="MedSAM install", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def succeeded(self) -> bool:
        return self.done and self.returncode == 0 and not self.cancelled

    @property
    def progress(self) -> tuple:
        """``(steps finished, steps in all, title of the current step)``."""
        index = min(self._current, len(self.steps) - 1)
        finished = len(self.steps) if self.succeeded else self._current
        return finished, len(self.steps), self.steps[index].title

    def tail(self, count: int = TAIL_LINES) -> List[str]:
        """The last ``count`` output lines."""
        with self._lock:
            return list(self._lines)[-count:]

    def cancel(self) -> None:
        """Stop: terminate the running command (kill it if it does not stop) and start no further step."""
        self._cancelled.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()

    def wait(self, timeout: Optional[float] = None) -> bool:
        self._thread.join(timeout)
        return self.done

    def _run(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w", encoding="utf-8") as log:
            for index, step in enumerate(self.steps):
                self._current = index
                if self.cancelled:
                    break
                log.write(f"$ {' '.join(step.command)}\n")
                self.returncode = self._run_step(step, log)
                if self.returncode != 0:
                    break
            else:
                self._current = len(self.steps)

    def _run_step(self, step: Step, log) -> int:
        try:
            process = subprocess.Popen(step.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       encoding="utf-8", errors="replace")
        except OSError as error:
            self._line(f"cannot start {step.command[0]}: {error.strerror or error}", log)
            return 127
        with self._lock:
            self._process = process
        if self.cancelled:  # cancelled between two steps: this one must not run either
            process.terminate()
        for line in process.stdout:
            self._line(line.rstrip(), log)
        return process.wait()

    def _line(self, text: str, log) -> None:
        log.write(text + "\n")
        log.flush()
        with self._lock:
            self._lines.append(text)
