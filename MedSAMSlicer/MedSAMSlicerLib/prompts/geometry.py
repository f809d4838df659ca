"""Image geometry and the slicing-axis convention shared by every part of the engine.

Voxel indices are IJK as ITK and Slicer define them (i = column, j = row, k = slice); numpy
arrays from SimpleITK are indexed ``[k, j, i]``. Slicing along IJK axis ``a`` takes array
dimension ``2 - a``; in-plane ``x, y`` are the two other IJK axes in increasing order, so a
slice is an ``(H, W)`` array whose rows are ``y`` and whose columns are ``x``.
"""

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from ..errors import ImageError, SettingsError

AXES = (0, 1, 2)
#: the voxel spacing an image may have, mm: a nanometre to a kilometre (far beyond, volumes overflow to infinity)
SPACING_RANGE_MM = (1e-6, 1e6)
#: how far from the origin of patient coordinates an image may lie, mm
MAX_ORIGIN_MM = 1e9


def check_axis(axis) -> int:
    """Return ``axis`` as an int, or raise naming the bad value."""
    if isinstance(axis, bool) or axis not in AXES:
        raise SettingsError(f"slicing axis {axis!r} is not 0 (I), 1 (J) or 2 (K)")
    return int(axis)


def in_plane_axes(axis: int) -> Tuple[int, int]:
    """IJK indices of the in-plane ``(x, y)`` axes when slicing along ``axis``."""
    x_axis, y_axis = (a for a in AXES if a != check_axis(axis))
    return x_axis, y_axis


def array_dim(axis: int) -> int:
    """The dimension of a ``[k, j, i]`` array that IJK axis ``axis`` indexes."""
    return 2 - check_axis(axis)


def slice_count(shape_kji: Sequence[int], axis: int) -> int:
    return int(shape_kji[array_dim(axis)])


def plane_shape(shape_kji: Sequence[int], axis: int) -> Tuple[int, int]:
    """``(H, W)`` of one slice along ``axis`` of a ``[k, j, i]`` volume."""
    dims = [d for n, d in enumerate(shape_kji) if n != array_dim(axis)]
    return int(dims[0]), int(dims[1])


def take_slice(volume_kji: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The ``(H, W)`` slice ``index`` along IJK ``axis`` (a view when possible)."""
    return np.take(volume_kji, index, axis=array_dim(axis)) if axis != 2 else volume_kji[index]


def occupied_slices(mask_kji: np.ndarray, axis: int) -> np.ndarray:
    """Indices of the slices along ``axis`` that hold any foreground of a ``[k, j, i]`` mask."""
    dim = array_dim(axis)
    return np.flatnonzero(np.asarray(mask_kji).any(axis=tuple(d for d in range(3) if d != dim)))


def slice_indexer(axis: int, index: int) -> tuple:
    """A numpy index that selects slice ``index`` along ``axis`` of a ``[k, j, i]`` array, for assignment."""
    indexer = [slice(None)] * 3
    indexer[array_dim(axis)] = index
    return tuple(indexer)


@dataclass(frozen=True)
class ImageGeometry:
    """Where the voxels of an image lie in physical (LPS, mm) space, as SimpleITK describes it."""

    size: Tuple[int, int, int]  # voxels along i, j, k
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # row-major 3x3

    @property
    def shape_kji(self) -> Tuple[int, int, int]:
        return self.size[2], self.size[1], self.size[0]

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix from voxel index (i, j, k, 1) to physical LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction, dtype=float).reshape(3, 3) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def lps_to_ijk(self, points_lps) -> np.ndarray:
        """Continuous voxel indices of LPS points, shape ``(N, 3)``."""
        points = np.atleast_2d(np.asarray(points_lps, dtype=float))
        homogeneous = np.c_[points, np.ones(len(points))]
        return (np.linalg.inv(self.ijk_to_lps) @ homogeneous.T).T[:, :3]

    def ras_to_ijk(self, points_ras) -> np.ndarray:
        """Continuous voxel indices of RAS points (Slicer's world coordinates), shape ``(N, 3)``."""
        points = np.atleast_2d(np.asarray(points_ras, dtype=float)) * np.array([-1.0, -1.0, 1.0])
        return self.lps_to_ijk(points)

    def in_plane_spacing(self, axis: int) -> Tuple[float, float]:
        """Spacing in mm of the in-plane ``(x, y)`` axes when slicing along ``axis``."""
        x_axis, y_axis = in_plane_axes(axis)
        return float(self.spacing[x_axis]), float(self.spacing[y_axis])

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


def check_geometry(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float], what: str) -> None:
    """Refuse (``ImageError`` naming ``what``) a geometry no scan has: a spacing outside ``SPACING_RANGE_MM``, an
    origin beyond ``MAX_ORIGIN_MM`` or not finite, a direction matrix that is not finite or not invertible."""
    low, high = SPACING_RANGE_MM
    if not all(math.isfinite(value) and low <= value <= high for value in spacing):
        raise ImageError(f"{what} has a voxel spacing of {' x '.join(f'{v:g}' for v in spacing)} mm; a scan's spacing "
                         f"lies between {low:g} and {high:g} mm")
    if not all(math.isfinite(value) and abs(value) <= MAX_ORIGIN_MM for value in origin):
        raise ImageError(f"{what} has its origin at ({', '.join(f'{v:g}' for v in origin)}) mm; a scan lies within "
                         f"{MAX_ORIGIN_MM:g} mm of the patient's origin")
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-6:
        raise ImageError(f"{what} has a direction matrix that is not a rotation "
                         f"({', '.join(f'{v:g}' for v in direction)})")


def geometry_from_ijk_to_ras(ijk_to_ras, size: Sequence[int]) -> ImageGeometry:
    """The geometry of a Slicer volume node from its IJK-to-RAS matrix and its dimensions (i, j, k)."""
    ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(ijk_to_ras, dtype=float).reshape(4, 4)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    direction = ijk_to_lps[:3, :3] / spacing
    return ImageGeometry(size=tuple(int(v) for v in size), spacing=tuple(spacing.tolist()),
                         origin=tuple(ijk_to_lps[:3, 3].tolist()), direction=tuple(direction.ravel().tolist()))


#: a slice view within about 8 degrees of a volume axis counts as aligned with it
ALIGNED_COSINE = 0.99


def slicing_axis_for_normal(geometry: ImageGeometry, normal_ras) -> int:
    """The IJK axis a slice view with RAS normal ``normal_ras`` cuts across, for any direction matrix.

    Works for flipped and rotated volumes (the view is matched to the axis whose physical direction is
    parallel to its normal); a view oblique to every axis is refused, as MedSAM segments voxel slices.
    """
    normal = np.asarray(normal_ras, dtype=float) * np.array([-1.0, -1.0, 1.0])  # to LPS
    normal = normal / np.linalg.norm(normal)
    cosines = np.abs(np.asarray(geometry.direction, dtype=float).reshape(3, 3).T @ normal)
    axis = int(np.argmax(cosines))
    if cosines[axis] < ALIGNED_COSINE:
        raise SettingsError(f"the slice view is oblique to the volume (best match: IJK axis {axis} at "
                            f"{np.degrees(np.arccos(min(1.0, cosines[axis]))):.0f} degrees); "
                            "use a view aligned with the volume")
    return axis
