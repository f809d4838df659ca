"""What a radiologist reads off a segmentation: its volume in mL and its longest in-plane diameter in mm."""

from typing import Tuple

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from .geometry import ImageGeometry, occupied_slices, take_slice


def volume_ml(mask_kji: np.ndarray, geometry: ImageGeometry) -> float:
    return float(np.count_nonzero(mask_kji)) * geometry.voxel_volume_ml


def longest_diameter_mm(slice_mask: np.ndarray, spacing_xy: Tuple[float, float]) -> float:
    """Largest boundary-to-boundary distance across a 2D ``(H, W)`` mask, in mm (the RECIST long axis).

    Distances are taken between the outer corners of the foreground pixels, so a run of ``n``
    pixels measures ``n`` pixels; spacing may differ between x and y.
    """
    ys, xs = np.nonzero(slice_mask)
    if xs.size == 0:
        return 0.0
    corners = np.concatenate([np.c_[xs + dx, ys + dy] for dx in (0, 1) for dy in (0, 1)]).astype(float)
    corners = np.unique(corners, axis=0) * np.asarray(spacing_xy, dtype=float)
    try:
        corners = corners[ConvexHull(corners).vertices]
    except QhullError:  # collinear points (a one-pixel-wide line): all of them are extreme
        pass
    differences = corners[:, None, :] - corners[None, :, :]
    return float(np.sqrt((differences ** 2).sum(-1)).max())


def longest_diameter_in_volume_mm(mask_kji: np.ndarray, geometry: ImageGeometry, axis: int) -> Tuple[float, int]:
    """The longest in-plane diameter over all slices along ``axis``, and the slice where it lies (-1 if empty)."""
    spacing_xy = geometry.in_plane_spacing(axis)
    best, best_slice = 0.0, -1
    for index in occupied_slices(mask_kji, axis):
        diameter = longest_diameter_mm(take_slice(mask_kji, axis, int(index)), spacing_xy)
        if diameter > best:
            best, best_slice = diameter, int(index)
    return best, best_slice
