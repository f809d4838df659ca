"""Box and RECIST prompts on slices, and the boxes MedSAM is given for them.

A prompt lives on one slice along the slicing axis and uses in-plane voxel coordinates
``x, y`` (see ``geometry``). RECIST markers become boxes as in the seed study: the rectangle
covering both axes plus a 5 px margin; a long axis alone gives the square centred on its
midpoint with side equal to its length (the MedSAM2 convention). A short axis of zero length (a
click, or a target one voxel wide) is a point: the rectangle covers the long axis and that point.

Work is bounded: a prompt set holds at most ``MAX_PROMPTS`` prompts and a target at most
``MAX_BOXES_PER_SLICE`` boxes on one slice (each box is one decoder pass on every slice it reaches).
"""

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import PromptError
from .geometry import check_axis, plane_shape, slice_count

RECIST_MARGIN_PX = 5.0
#: prompts one image may carry (a cohort's largest RECIST files hold tens)
MAX_PROMPTS = 1000
#: boxes one target may have on one slice (lesions of one label side by side)
MAX_BOXES_PER_SLICE = 100

Point = Tuple[float, float]
Segment = Tuple[Point, Point]


@dataclass(frozen=True)
class BoxPrompt:
    """A box ``(x0, y0, x1, y1)`` in voxel coordinates on slice ``slice``."""

    slice: int
    box: Tuple[float, float, float, float]
    label: int = 1
    name: str = "box prompt"

    def raw_box(self) -> np.ndarray:
        box = np.asarray(self.box, dtype=float)
        if box.shape != (4,) or not np.all(np.isfinite(box)):
            raise PromptError(f"{self.name}: box must be 4 finite numbers [x0, y0, x1, y1], got {list(self.box)}")
        x0, x1 = sorted(box[[0, 2]])
        y0, y1 = sorted(box[[1, 3]])
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            raise PromptError(f"{self.name}: box {list(self.box)} has zero area")
        return np.array([x0, y0, x1, y1])


@dataclass(frozen=True)
class RecistPrompt:
    """RECIST markers on slice ``slice``: a long axis and an optional perpendicular short axis."""

    slice: int
    long_axis: Segment
    short_axis: Optional[Segment] = None
    label: int = 1
    name: str = "RECIST prompt"

    def __post_init__(self):
        if self.short_axis is not None and _is_point(self.short_axis):
            warnings.warn(f"{self.name}: the short axis has zero length; the box covers the long axis and that point",
                          RuntimeWarning, stacklevel=3)

    def raw_box(self, margin: float = RECIST_MARGIN_PX) -> np.ndarray:
        long_axis = _segment(self.long_axis, f"{self.name}: long axis")
        if self.short_axis is None:
            centre = long_axis.mean(axis=0)
            half = np.linalg.norm(long_axis[1] - long_axis[0]) / 2
            return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])
        points = np.vstack([long_axis, _segment(self.short_axis, f"{self.name}: short axis", allow_point=True)])
        return np.concatenate([points.min(axis=0) - margin, points.max(axis=0) + margin])


Prompt = Union[BoxPrompt, RecistPrompt]


@dataclass
class PromptSet:
    """The prompts of one image: all on slices along ``axis``, grouped into targets by ``label``."""

    prompts: List[Prompt] = field(default_factory=list)
    axis: int = 2

    def __post_init__(self):
        self.axis = check_axis(self.axis)
        check_prompt_count(len(self.prompts))

    @property
    def labels(self) -> List[int]:
        return sorted({p.label for p in self.prompts})

    def key_boxes(self, shape_kji: Sequence[int]) -> Dict[int, Dict[int, List[np.ndarray]]]:
        """Boxes per label and slice, clipped to the image; raises naming any bad prompt."""
        height, width = plane_shape(shape_kji, self.axis)
        slices = slice_count(shape_kji, self.axis)
        boxes: Dict[int, Dict[int, List[np.ndarray]]] = {}
        for prompt in self.prompts:
            if not 0 <= prompt.slice < slices:
                raise PromptError(f"{prompt.name}: slice {prompt.slice} is outside 0-{slices - 1} "
                                  f"along axis {self.axis}")
            box = clip_box(prompt.raw_box(), height, width, prompt.name)
            on_slice = boxes.setdefault(prompt.label, {}).setdefault(prompt.slice, [])
            if len(on_slice) == MAX_BOXES_PER_SLICE:
                raise PromptError(f"{prompt.name}: label {prompt.label} has more than {MAX_BOXES_PER_SLICE} boxes on "
                                  f"slice {prompt.slice}; at most {MAX_BOXES_PER_SLICE} are taken per target and slice")
            on_slice.append(box)
        return boxes


def check_prompt_count(count: int, source: str = "prompts") -> None:
    if count > MAX_PROMPTS:
        raise PromptError(f"{source}: {count} prompts; at most {MAX_PROMPTS} are taken per image")


def _segment(points, what: str, allow_point: bool = False) -> np.ndarray:
    segment = np.asarray(points, dtype=float)
    if segment.shape != (2, 2) or not np.all(np.isfinite(segment)):
        raise PromptError(f"{what} must be two points [[x, y], [x, y]], got {points!r}")
    if not allow_point and np.allclose(segment[0], segment[1]):
        raise PromptError(f"{what} has zero length")
    return segment


def _is_point(points) -> bool:
    """True for a well-formed segment whose two ends coincide (a malformed one is refused later, by ``raw_box``)."""
    try:
        segment = _segment(points, "short axis", allow_point=True)
    except (PromptError, TypeError, ValueError):
        return False
    return bool(np.allclose(segment[0], segment[1]))


def clip_box(box: np.ndarray, height: int, width: int, name: str) -> np.ndarray:
    """Clip a box to the ``(height, width)`` slice; a box that lies wholly outside is an error."""
    clipped = np.array([
        np.clip(box[0], 0, width - 1), np.clip(box[1], 0, height - 1),
        np.clip(box[2], 0, width - 1), np.clip(box[3], 0, height - 1),
    ])
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise PromptError(
            f"{name}: box [{', '.join(f'{v:g}' for v in box)}] lies outside the {width}x{height} slice")
    return clipped
