"""What MedSAM wrote into a segment, slice by slice, so that undo, redo and re-segmenting never lose hand edits.

The module writes whole slices of a segment, and reads and writes only those slices (a volume's
segment is never copied whole for a prompt moved on one slice): every call here takes and returns
``{slice index: (H, W) plane}``. Each write is kept as, for every slice it changed, the slice
before and after (bit-packed). Undo puts a slice back only where it is still exactly as
MedSAM left it; a slice changed since (paint, erase, scissors in the Segment Editor) is kept and
reported, never overwritten. Redo is the same in reverse. The history also knows what the module
last left on every slice it touched, so the next write can tell which slices the user has edited
by hand since (or drew before MedSAM ever wrote there) and keep them unless asked to overwrite.
"""

from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Mapping, Optional, Tuple

import numpy as np

#: write steps kept for undo (a 40-slice 512x512 write takes about 2.6 MB, packed)
MAX_STEPS = 50


@dataclass
class _Plane:
    """One (H, W) bool slice, bit-packed."""

    bits: np.ndarray
    shape: Tuple[int, int]

    @classmethod
    def of(cls, plane: np.ndarray) -> "_Plane":
        return cls(np.packbits(plane, axis=None), plane.shape)

    def array(self) -> np.ndarray:
        return np.unpackbits(self.bits, count=self.shape[0] * self.shape[1]).reshape(self.shape).astype(bool)

    def equals(self, plane: np.ndarray) -> bool:
        return plane.shape == self.shape and np.array_equal(np.packbits(plane, axis=None), self.bits)


@dataclass
class _SliceChange:
    index: int
    before: _Plane
    after: _Plane
    known_before: Optional[_Plane]  # what the module had left on this slice before this write (None: nothing)


@dataclass
class Step:
    """One MedSAM write into one segment: the slices it changed."""

    target: Hashable
    axis: int
    changes: List[_SliceChange]

    @property
    def slices(self) -> List[int]:
        return [change.index for change in self.changes]


Planes = Mapping[int, np.ndarray]  # slice index -> (H, W) bool plane


@dataclass
class Outcome:
    """What a write, undo or redo did: the planes to put into the segment (changed slices only), which slices they
    are, and which slices were kept as they were (edited by hand)."""

    planes: Dict[int, np.ndarray] = field(default_factory=dict)
    kept: List[int] = field(default_factory=list)
    target: Hashable = None

    @property
    def changed(self) -> List[int]:
        return sorted(self.planes)


class SegmentHistory:
    """Undo and redo stacks of MedSAM's writes, and what MedSAM last left on each slice of each segment.

    The Slicer module keeps one per segmentation node; a target is what the caller names it by (segment and
    volume), and ``forget`` drops it when the segment goes.
    """

    def __init__(self, max_steps: int = MAX_STEPS):
        self.max_steps = max_steps
        self._undo: List[Step] = []
        self._redo: List[Step] = []
        self._known: Dict[Tuple[Hashable, int, int], _Plane] = {}  # (target, axis, slice) -> what the module left

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def next_undo(self) -> Optional[Step]:
        """The step ``undo`` would take back (its target, axis and slices: what to read before calling it)."""
        return self._undo[-1] if self._undo else None

    @property
    def next_redo(self) -> Optional[Step]:
        return self._redo[-1] if self._redo else None

    def edited_slices(self, target: Hashable, axis: int, current: Planes) -> List[int]:
        """Slices of ``current`` that hold something MedSAM did not leave there: edited by hand since, or drawn
        before MedSAM ever wrote on them."""
        edited = []
        for index, plane in sorted(current.items()):
            known = self._known.get((target, axis, index))
            if (known is None and plane.any()) or (known is not None and not known.equals(plane)):
                edited.append(index)
        return edited

    def write(self, target: Hashable, axis: int, current: Planes, new: Planes,
              overwrite_edited: bool = False) -> Outcome:
        """MedSAM's ``new`` planes where they may go: ``current`` holds the segment's planes on the same slices now.
        Slices edited by hand are kept unless ``overwrite_edited``.

        Recorded as one undo step; any redo is dropped, as after any new edit.
        """
        if set(current) != set(new):
            raise ValueError(f"current and new planes cover different slices: {sorted(current)} vs {sorted(new)}")
        kept = [] if overwrite_edited else self.edited_slices(target, axis, current)
        planes, changes = {}, []
        for index in sorted(set(new) - set(kept)):
            before, after = current[index], new[index]
            if not np.array_equal(before, after):
                changes.append(_SliceChange(index, _Plane.of(before), _Plane.of(after),
                                            self._known.get((target, axis, index))))
                planes[index] = np.asarray(after, dtype=bool)
            self._known[(target, axis, index)] = _Plane.of(after)
        if changes:
            self._undo.append(Step(target, axis, changes))
            del self._undo[:-self.max_steps]
            self._redo.clear()
        return Outcome(planes, kept, target)

    def undo(self, current: Planes) -> Outcome:
        """Take back the last write where its slices are still as MedSAM left them; ``current`` holds the segment's
        planes on ``next_undo.slices``."""
        return self._move(self._undo, self._redo, current, undo=True)

    def redo(self, current: Planes) -> Outcome:
        """Write again what the last undo took back, where those slices are still as the undo left them."""
        return self._move(self._redo, self._undo, current, undo=False)

    def forget(self, target: Hashable) -> None:
        """Drop everything about ``target`` (its segment or volume was removed)."""
        self._undo = [s for s in self._undo if s.target != target]
        self._redo = [s for s in self._redo if s.target != target]
        self._known = {k: v for k, v in self._known.items() if k[0] != target}

    @property
    def targets(self) -> List[Hashable]:
        """Every target the history knows something of."""
        return sorted({key[0] for key in self._known} | {s.target for s in self._undo + self._redo}, key=repr)

    def _move(self, source: List[Step], destination: List[Step], current: Planes, undo: bool) -> Outcome:
        if not source:
            return Outcome()
        unread = [index for index in source[-1].slices if index not in current]
        if unread:
            raise ValueError(f"slice {unread[0]} of the step was not read")
        step = source.pop()
        planes, moved, kept = {}, [], []
        for change in step.changes:
            expected, restored = (change.after, change.before) if undo else (change.before, change.after)
            if not expected.equals(current[change.index]):
                kept.append(change.index)  # edited since: the user's, not ours to change
                continue
            planes[change.index] = restored.array()
            moved.append(change)
            key = (step.target, step.axis, change.index)
            known = change.known_before if undo else change.after
            if known is None:
                self._known.pop(key, None)
            else:
                self._known[key] = known
        if moved:
            destination.append(Step(step.target, step.axis, moved))
        return Outcome(planes, kept, step.target)
