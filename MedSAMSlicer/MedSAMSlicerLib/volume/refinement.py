"""The refined mode: every slice segmented twice, on the whole slice and zoomed in on its box, probabilities averaged.

The published pipeline shrinks the whole slice to the model's input (256 px for LiteMedSAM), so a
small target reaches the encoder a few pixels wide. The refined mode also runs the model on a
square crop around the slice's boxes (``crop_window``: twice the box side, at least 48 px),
where the target is several times larger, and averages the two foreground probabilities. Neither
view alone wins on every slice: zoomed alone lost on most real targets measured, and the
average beat both (``benchmarks/refinement_levers.py`` measures each variant; docs/real_scans.md
reports them, with the levers that were tried and dropped). A crop that would cover most of the
slice adds nothing and is skipped. The cost is one more encoder pass per slice and target: targets
on a slice share a crop (and its pass) only where one crop no larger than each one's own holds them
all, since a crop around two distant targets would barely zoom in on either.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..prompts.geometry import plane_shape, slice_indexer
from ..prompts.interpolation import SliceBoxes
from .crop_window import MIN_CROP_SIDE, ZOOM_FACTOR, CropWindow, crop_window

#: a crop at least this share of the slice's longer side gains too little scale to be worth its encoder pass
MAX_CROP_SHARE = 0.8
#: targets on a slice share one crop when its side is at most this many times each one's own crop's side: a crop
#: any larger zooms in less, and sharing one 1.25x larger cost the ventricles 0.031 mean DSC (docs/multiple_targets.md)
SHARED_CROP_GROWTH = 1.0
MODES = ("published", "refined")
#: the refined mode is the default because it scored higher on every real cohort measured (docs/real_scans.md)
DEFAULT_MODE = "refined"


@dataclass(frozen=True)
class Refinement:
    """How the zoomed view is taken and weighed (the lever study varies these; the refined mode uses the defaults)."""

    zoom_factor: float = ZOOM_FACTOR
    min_crop_side: int = MIN_CROP_SIDE
    zoom_weight: float = 0.5  # share of the zoomed probability in the average (1: the zoomed view alone)

    def __post_init__(self):
        if self.zoom_factor < 1 or self.min_crop_side < 1 or not 0 <= self.zoom_weight <= 1:
            raise ValueError(f"invalid refinement {self}: zoom factor and crop side 1 or more, weight in [0, 1]")


REFINED = Refinement()


def refinement_for(mode: str) -> Optional[Refinement]:
    """The refinement of a mode by name: None for ``published`` (exactly the published steps)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    return REFINED if mode == "refined" else None


def zoom_windows(plans: Mapping[int, SliceBoxes], shape,
                 options: Refinement = REFINED) -> Dict[int, Dict[int, Optional[CropWindow]]]:
    """Per target (the keys of ``plans``) and slice, the crop it is zoomed in on (None: too large to gain scale).

    Each target gets its own crop, except that targets on a slice whose boxes fit one crop at most
    ``SHARED_CROP_GROWTH`` times the side of each one's own (no larger) share it (one encoder pass for them all).
    """
    windows: Dict[int, Dict[int, Optional[CropWindow]]] = {label: {} for label in plans}
    for index in sorted({index for plan in plans.values() for index in plan}):
        groups: List[List[int]] = []
        for label in (label for label, plan in plans.items() if index in plan):
            group = next((group for group in groups if _fit_one_crop([plans[m][index] for m in group + [label]],
                                                                     shape, options)), None)
            if group is None:
                groups.append([label])
            else:
                group.append(label)
        for group in groups:
            window = zoom_window([box for label in group for box in plans[label][index]], shape, options)
            for label in group:
                windows[label][index] = window
    return windows


def _fit_one_crop(boxes_per_target: Sequence[Sequence[np.ndarray]], shape, options: Refinement) -> bool:
    """Whether these targets' boxes on a slice fit a crop no larger than ``SHARED_CROP_GROWTH`` times each one's own."""
    def side(boxes):
        return crop_window(np.asarray(boxes), shape, options.zoom_factor, options.min_crop_side).side

    together = side([box for boxes in boxes_per_target for box in boxes])
    return together <= SHARED_CROP_GROWTH * min(side(boxes) for boxes in boxes_per_target)


def zoom_window(boxes: Sequence[np.ndarray], shape, options: Refinement = REFINED) -> Optional[CropWindow]:
    """The crop around ``boxes`` on one slice of ``shape``, or None where it would cover most of the slice."""
    window = crop_window(np.asarray(boxes), shape, options.zoom_factor, options.min_crop_side)
    return None if window.side >= MAX_CROP_SHARE * max(shape) else window


def refined_probability(session, index: int, boxes: Sequence[np.ndarray], axis: int,
                        window: Optional[CropWindow], options: Refinement = REFINED) -> np.ndarray:
    """One slice's foreground probability ``(H, W)`` in the refined mode: the whole slice's, averaged with the
    ``window`` crop's (None: the whole slice's alone)."""
    probability = session.slice_probabilities(index, boxes, axis)
    if window is None:
        return probability
    zoomed = session.slice_probabilities(index, boxes, axis, window)
    return (1 - options.zoom_weight) * probability + options.zoom_weight * zoomed


def refine_target(session, plan: SliceBoxes, axis: int, options: Refinement = REFINED,
                  decoded: Optional[Callable[[int], None]] = None,
                  windows: Optional[Dict[int, Optional[CropWindow]]] = None) -> np.ndarray:
    """The ``[k, j, i]`` mask of one target from its boxes per slice, each slice seen whole and zoomed in
    (``windows``: its crops per slice, by default ``zoom_windows`` of this target alone)."""
    if windows is None:
        windows = zoom_windows({0: plan}, plane_shape(session.shape, axis), options)[0]
    for index in plan:  # queue every crop first, so that the encoder never waits for the decoder
        if windows[index] is not None:
            session.prefetch([index], axis, window=windows[index])
    result = np.zeros(session.shape, dtype=bool)
    for index, boxes in plan.items():
        result[slice_indexer(axis, index)] = refined_probability(session, index, boxes, axis, windows[index],
                                                                 options) > 0.5
        if decoded is not None:
            decoded(len(boxes))
    return result
