"""Boxes for the unannotated slices between annotated ones (seed study, step 2).

Box coordinates are interpolated linearly between the two nearest key slices. (Interpolating
unsigned distance maps instead would collapse the in-between boxes towards the intersection of
the key boxes.) When a key slice holds several boxes (a multi-part target), boxes on neighbouring
key slices are paired by proximity of their centres; an unpaired box applies to its own slice only.
"""

from typing import Dict, List

import numpy as np

SliceBoxes = Dict[int, List[np.ndarray]]


def pair_boxes(first: List[np.ndarray], second: List[np.ndarray]) -> List[tuple]:
    """Index pairs ``(i, j)`` matching ``first[i]`` to ``second[j]`` with least total centre distance."""
    if not first or not second:
        return []
    if len(first) == len(second) == 1:  # the usual case; scipy.optimize takes half a second to import
        return [(0, 0)]
    from scipy.optimize import linear_sum_assignment

    centres_a = np.array([(b[:2] + b[2:]) / 2 for b in first])
    centres_b = np.array([(b[:2] + b[2:]) / 2 for b in second])
    distances = np.linalg.norm(centres_a[:, None, :] - centres_b[None, :, :], axis=-1)
    rows, cols = linear_sum_assignment(distances)
    return list(zip(rows.tolist(), cols.tolist()))


def interpolate_boxes(key_boxes: SliceBoxes) -> SliceBoxes:
    """Boxes for every slice from the first to the last key slice: key boxes as given, the others interpolated."""
    keys = sorted(k for k, boxes in key_boxes.items() if boxes)
    result: SliceBoxes = {k: [np.asarray(b, dtype=float) for b in key_boxes[k]] for k in keys}
    for start, stop in zip(keys, keys[1:]):
        for i, j in pair_boxes(result[start], result[stop]):
            box_a, box_b = result[start][i], result[stop][j]
            for index in range(start + 1, stop):
                weight = (index - start) / (stop - start)
                result.setdefault(index, []).append((1 - weight) * box_a + weight * box_b)
    return dict(sorted(result.items()))
