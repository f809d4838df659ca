"""Boxes decoded against boxes planned, told to the caller after every decode.

The plan can grow while a job runs: propagation finds out slice by slice how far a target goes,
so each propagated slice is added to the plan just before it is decoded, and ``done`` never
exceeds ``total``. The callback is also the way to cancel: the Slicer module raises from it, so
every decode must be followed by a call.
"""

from typing import Callable, Optional

SliceProgress = Callable[[int, int], None]  # (boxes decoded, boxes planned): one box per slice in the usual case


class ProgressCount:
    def __init__(self, total: int = 0, report: Optional[SliceProgress] = None):
        self.done, self.total, self.report = 0, total, report

    def plan(self, count: int) -> None:
        """``count`` more boxes will be decoded."""
        self.total += count

    def decoded(self, count: int) -> None:
        """``count`` planned boxes were decoded: tell the caller (who may raise to stop the job)."""
        self.done += count
        if self.done > self.total:
            raise RuntimeError(f"{self.done} boxes decoded of {self.total} planned: a decode was not planned")
        if self.report is not None:
            self.report(self.done, self.total)
