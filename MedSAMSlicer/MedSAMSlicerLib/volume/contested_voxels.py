"""Voxels that several targets' masks claim go to the target the model finds likelier there.

Each target is segmented from its own boxes, so where two targets touch, or one's box reaches
over the other, both masks can hold the same voxels. Written to a label image, the label written
last would take them whatever the model says; here each contested voxel goes to the target with
the highest foreground probability on it (the lowest label on a tie), and the others lose it.
Voxels claimed by one target only are left as they are.
"""

from typing import Callable, Dict

import numpy as np

from ..prompts.geometry import occupied_slices, slice_indexer

#: a target's foreground probability ``(H, W)`` on one slice, as its mask there was made: (label, slice) -> array
TargetProbability = Callable[[int, int], np.ndarray]


def give_contested_voxels(masks: Dict[int, np.ndarray], axis: int, probability: TargetProbability) -> int:
    """Make the ``[k, j, i]`` ``masks`` (by label, changed in place) disjoint, each contested voxel kept by the
    target of highest ``probability``; returns how many voxels were contested."""
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
        likelihood = np.stack([np.where(masks[label][plane], probability(label, index), -1.0) for label in rivals])
        winner = likelihood.argmax(axis=0)
        for position, label in enumerate(rivals):
            masks[label][plane] &= ~shared | (winner == position)
    return int(contested.sum())
