"""What a radiologist reads off a segmentation: its volume in mL and its longest in-plane diameter in mm."""

from typing import List, Tuple

import numpy as np

from .geometry import ImageGeometry, occupied_slices, take_slice


def volume_ml(mask_kji: np.ndarray, geometry: ImageGeometry) -> float:
    return float(np.count_nonzero(mask_kji)) * geometry.voxel_volume_ml


def longest_diameter_mm(slice_mask: np.ndarray, spacing_xy: Tuple[float, float]) -> float:
    """Largest boundary-to-boundary distance across a 2D ``(H, W)`` mask, in mm (the RECIST long axis).

    Distances are taken between the outer corners of the foreground pixels, so a run of ``n``
    pixels measures ``n`` pixels; spacing may differ between x and y. Only each row's first and last
    pixel can hold a corner of the convex hull, so only theirs are measured.
    """
    ys, xs = np.nonzero(slice_mask)  # row by row, x rising within a row
    if xs.size == 0:
        return 0.0
    starts = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    rows, first, last = ys[starts], np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts) + 1
    corners = np.concatenate([np.c_[x, rows + dy] for x in (first, last) for dy in (0, 1)]).astype(float)
    corners = convex_hull(corners * np.asarray(spacing_xy, dtype=float))
    differences = corners[:, None, :] - corners[None, :, :]
    return float(np.sqrt((differences ** 2).sum(-1)).max())


def convex_hull(points: np.ndarray) -> np.ndarray:
    """The vertices of the convex hull of ``(N, 2)`` points (Andrew's monotone chain; collinear points dropped).

    Written out rather than taken from scipy.spatial, whose import alone costs a third of a second
    of every ``segment`` run's start-up; the row extremes it gets number a few hundred per slice.
    """
    ordered = sorted(set(map(tuple, points.tolist())))
    if len(ordered) <= 2:
        return np.array(ordered, dtype=float)

    def chain(sequence) -> List[Tuple[float, float]]:
        kept: List[Tuple[float, float]] = []
        for x, y in sequence:
            while len(kept) >= 2 and ((kept[-1][0] - kept[-2][0]) * (y - kept[-2][1])
                                      - (kept[-1][1] - kept[-2][1]) * (x - kept[-2][0])) <= 0:
                kept.pop()
            kept.append((x, y))
        return kept

    return np.array(chain(ordered)[:-1] + chain(reversed(ordered))[:-1], dtype=float)


def longest_diameter_in_volume_mm(mask_kji: np.ndarray, geometry: ImageGeometry, axis: int) -> Tuple[float, int]:
    """The longest in-plane diameter over all slices along ``axis``, and the slice where it lies (-1 if empty)."""
    spacing_xy = geometry.in_plane_spacing(axis)
    best, best_slice = 0.0, -1
    for index in occupied_slices(mask_kji, axis):
        diameter = longest_diameter_mm(take_slice(mask_kji, axis, int(index)), spacing_xy)
        if diameter > best:
            best, best_slice = diameter, int(index)
    return best, best_slice
