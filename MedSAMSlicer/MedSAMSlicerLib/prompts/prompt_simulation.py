"""Prompts simulated from a ground-truth mask, as the MedSAM and SAM evaluation studies made them.

Per slice, the SAM study's five non-iterative modes: a point at the largest component, a point per
component (up to 3), a box around the largest component, a box per component (up to 3), one box
around the whole mask; a point is the pixel farthest from the object's boundary. The iterative
mode's next point is the pixel farthest from the boundary of the current error region (positive
where the object was missed, negative where background was segmented). The annotation study's
RECIST markers (long axis and the longest perpendicular short axis) are drawn every k slices, or once
on the largest slice (a radiologist's measurement, which propagation extends to 3D).
Coordinates are slice pixels ``(x, y)`` = (column, row), as everywhere in the engine.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

from .geometry import array_dim, occupied_slices, take_slice
from .prompt_types import PromptSet, RecistPrompt

MODES = ("point-largest", "point-each", "box-largest", "box-each", "box-all")
MAX_COMPONENTS = 3
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class PointPrompt:
    x: int
    y: int
    positive: bool = True


def components(mask: np.ndarray, limit: Optional[int] = MAX_COMPONENTS) -> List[np.ndarray]:
    """The 8-connected components of a 2D mask, largest first (ties: first found), at most ``limit``."""
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    order = sorted(range(count), key=lambda n: -sizes[n])[:limit]
    return [labels == n + 1 for n in order]


def farthest_from_boundary(mask: np.ndarray) -> Tuple[int, int]:
    """``(x, y)`` of the pixel deepest inside ``mask`` (the image edge counts as boundary)."""
    if not mask.any():
        raise ValueError("an empty mask has no interior point")
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), mask.shape)
    return int(x), int(y)


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """``[x0, y0, x1, y1]``: the first and last occupied column and row."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("an empty mask has no bounding box")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)


def jitter_box(box: np.ndarray, pixels: int, shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Each coordinate moved by a random whole number of pixels in [-pixels, pixels], kept inside the slice."""
    if pixels <= 0:
        return box
    moved = box + rng.integers(-pixels, pixels + 1, size=4)
    height, width = shape
    x0, x1 = sorted(np.clip(moved[[0, 2]], 0, width - 1))
    y0, y1 = sorted(np.clip(moved[[1, 3]], 0, height - 1))
    return np.array([x0, y0, x1, y1], dtype=float)


def loosen_box(box: np.ndarray, pixels: int, shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Each side moved outward by a random whole number of pixels in [0, pixels], kept inside the slice.

    This is how the MedSAM training script perturbed its ground-truth boxes (0-20 px), so the model
    learns to tolerate a box drawn loosely around the target.
    """
    if pixels <= 0:
        return box
    height, width = shape
    shift = rng.integers(0, pixels + 1, size=4) * np.array([-1, -1, 1, 1])
    return np.clip(box + shift, 0, [width - 1, height - 1, width - 1, height - 1]).astype(float)


def simulate(mask: np.ndarray, mode: str, jitter: int = 0, rng: Optional[np.random.Generator] = None) -> list:
    """The prompts of one slice for ``mode``: PointPrompts for point modes, boxes for box modes."""
    if mode not in MODES:
        raise ValueError(f"prompt mode {mode!r} is not one of {', '.join(MODES)}")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    rng = rng if rng is not None else np.random.default_rng(0)
    if mode == "box-all":
        parts = [mask]
    else:
        parts = components(mask, 1 if mode.endswith("largest") else MAX_COMPONENTS)
    if mode.startswith("point"):
        return [PointPrompt(*farthest_from_boundary(part)) for part in parts]
    return [jitter_box(bounding_box(part), jitter, mask.shape, rng) for part in parts]


def next_iterative_point(truth: np.ndarray, prediction: np.ndarray) -> Optional[PointPrompt]:
    """The next corrective click: deepest pixel of the error region; None when the prediction is exact."""
    truth, prediction = np.asarray(truth, dtype=bool), np.asarray(prediction, dtype=bool)
    error = truth ^ prediction
    if not error.any():
        return None
    x, y = farthest_from_boundary(error)
    return PointPrompt(x, y, positive=bool(truth[y, x]))


def recist_axes(mask: np.ndarray, spacing_xy: Tuple[float, float] = (1.0, 1.0)):
    """RECIST markers of a 2D mask: the longest diameter and the longest chord perpendicular to it (mm-aware).

    Returns ``(long_axis, short_axis)`` as pairs of ``(x, y)`` pixel points; the short axis is None when
    the object is one pixel wide.
    """
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("an empty mask has no RECIST axes")
    scale = np.asarray(spacing_xy, dtype=float)
    points = np.c_[xs, ys].astype(float)
    physical = points * scale
    distances = np.linalg.norm(physical[:, None] - physical[None], axis=-1) if len(points) <= 4000 else None
    if distances is None:  # large masks: only boundary pixels can be extreme
        keep = (mask & ~ndimage.binary_erosion(mask))[ys, xs]
        points, physical = points[keep], physical[keep]
        distances = np.linalg.norm(physical[:, None] - physical[None], axis=-1)
    first, second = np.unravel_index(int(np.argmax(distances)), distances.shape)
    long_axis = (tuple(points[first]), tuple(points[second]))
    direction = physical[second] - physical[first]
    if not np.any(direction):
        return long_axis, None
    direction /= np.linalg.norm(direction)
    along = physical @ direction
    across = physical @ np.array([-direction[1], direction[0]])
    best, short_axis = 0.0, None
    for position in np.unique(np.round(along / scale.min())):
        chord = np.flatnonzero(np.round(along / scale.min()) == position)
        low, high = chord[np.argmin(across[chord])], chord[np.argmax(across[chord])]
        if across[high] - across[low] > best:
            best, short_axis = across[high] - across[low], (tuple(points[low]), tuple(points[high]))
    return long_axis, short_axis


def recist_from_truth(truth_kji: np.ndarray, every: int, axis: int = 2,
                      spacing_xy: Tuple[float, float] = (1.0, 1.0), label: int = 1) -> PromptSet:
    """RECIST markers on every ``every``-th occupied slice along ``axis`` (and the last one), as annotators drew
    them."""
    if every < 1:
        raise ValueError(f"every must be 1 or more, got {every}")
    occupied = occupied_slices(truth_kji, axis).tolist()
    if not occupied:
        return PromptSet([], axis)
    keys = occupied[::every] + ([occupied[-1]] if (len(occupied) - 1) % every else [])
    return PromptSet([recist_on_slice(truth_kji, index, axis, spacing_xy, label) for index in keys], axis)


def recist_on_slice(truth_kji: np.ndarray, index: int, axis: int = 2, spacing_xy: Tuple[float, float] = (1.0, 1.0),
                    label: int = 1) -> RecistPrompt:
    """The RECIST marker an annotator draws on slice ``index``: the axes of the truth's largest component there."""
    largest = components(take_slice(truth_kji, axis, index), 1)[0]
    long_axis, short_axis = recist_axes(largest, spacing_xy)
    if long_axis[0] == long_axis[1]:  # a single pixel: a long axis needs length
        x, y = long_axis[0]
        long_axis = ((x - 0.5, y), (x + 0.5, y))
    return RecistPrompt(index, long_axis, short_axis, label, f"RECIST from truth on slice {index}")


def recist_on_largest_slice(truth_kji: np.ndarray, axis: int = 2, spacing_xy: Tuple[float, float] = (1.0, 1.0),
                            label: int = 1) -> PromptSet:
    """One RECIST marker, on the slice where the truth is largest (the first of equals): as a radiologist measures a
    lesion, and all that propagation starts from."""
    areas = np.asarray(truth_kji, dtype=bool).sum(axis=tuple(d for d in range(3) if d != array_dim(axis)))
    if not areas.any():
        return PromptSet([], axis)
    return PromptSet([recist_on_slice(truth_kji, int(np.argmax(areas)), axis, spacing_xy, label)], axis)


def recist_from_labels(labels_kji: np.ndarray, every: int, axis: int = 2,
                       spacing_xy: Tuple[float, float] = (1.0, 1.0)) -> PromptSet:
    """``recist_from_truth`` for every non-zero label of a label volume, in one prompt set as a user's file holds
    them."""
    return PromptSet([prompt for label in (int(v) for v in np.unique(labels_kji) if v != 0)
                      for prompt in recist_from_truth(labels_kji == label, every, axis, spacing_xy, label).prompts],
                     axis)
