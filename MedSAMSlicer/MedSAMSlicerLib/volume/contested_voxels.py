"""Voxels that several targets' masks claim go to one of them: the inner target, else the likelier one.

Each target is segmented from its own boxes, so where two targets touch, or one's box reaches
over the other, both masks can hold the same voxels. Written to a label image, the label written
last would take them whatever the model says. Here:

* where one target's box lies mostly inside the other's on that slice (``NESTED_SHARE`` of its
  area, and it is the smaller), the shared voxels go to that inner target. The user drew its box
  for that structure; given the outer box, the model segments all it frames, inner structure
  included, and confidently (a lesion in an organ; the pallidum within the putamen's box, which
  the putamen's mask took with the higher probability: docs/multiple_targets.md);
* otherwise each contested voxel goes to the target with the highest foreground probability on it
  (the lowest label on a tie).

Voxels claimed by one target only are left as they are.
"""

from typing import Callable, Dict, List

import numpy as np

from ..prompts.geometry import occupied_slices, slice_indexer

#: a target's foreground probability ``(H, W)`` on one slice, as its mask there was made: (label, slice) -> array
TargetProbability = Callable[[int, int], np.ndarray]
#: a target's boxes ``[x0, y0, x1, y1]`` on one slice: (label, slice) -> boxes
TargetBoxes = Callable[[int, int], List[np.ndarray]]
#: a box is inside another target's when at least this share of its area is: the pallidum's lies 0.67-0.89 inside
#: the putamen's on the real sample, while boxes of structures side by side share at most 0.38
#: (docs/multiple_targets.md)
NESTED_SHARE = 0.5


def _area(boxes: List[np.ndarray]) -> float:
    return float(sum((box[2] - box[0]) * (box[3] - box[1]) for box in boxes))


def _overlap(first: List[np.ndarray], second: List[np.ndarray]) -> float:
    return float(sum(max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
                     for a in first for b in second))


def is_nested(inner: List[np.ndarray], outer: List[np.ndarray]) -> bool:
    """Whether the boxes ``inner`` are the smaller and lie ``NESTED_SHARE`` or more inside ``outer``."""
    area = _area(inner)
    return area < _area(outer) and _overlap(inner, outer) >= NESTED_SHARE * area


def give_contested_voxels(masks: Dict[int, np.ndarray], axis: int, probability: TargetProbability,
                          boxes: TargetBoxes) -> int:
    """Make the ``[k, j, i]`` ``masks`` (by label, changed in place) disjoint: each contested voxel kept by the inner
    target where one's boxes lie inside another's, else by the target of highest ``probability``; returns how many
    voxels were contested."""
    if len(masks) < 2:
        return 0
    claims = np.zeros(next(iter(masks.values())).shape, dtype=np.uint16)
    for mask in masks.values():
        claims += mask
    contested = claims > 1
    for index in occupied_slices(contested, axis):
        plane = slice_indexer(axis, index)
        shared = contested[plane]
        rivals = sorted(label for label, mask in masks.items() if (mask[plane] & shared).any())
        likelihood = np.stack([np.where(masks[label][plane], probability(label, index), -np.inf) for label in rivals])
        for outer, label in enumerate(rivals):
            for inner, other in enumerate(rivals):
                if inner != outer and is_nested(boxes(other, index), boxes(label, index)):
                    likelihood[outer][masks[other][plane]] = -np.inf  # the outer target yields to the inner one
        winner = likelihood.argmax(axis=0)
        for position, label in enumerate(rivals):
            masks[label][plane] &= ~shared | (winner == position)
    return int(contested.sum())
