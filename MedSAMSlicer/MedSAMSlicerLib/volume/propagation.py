"""Propagation beyond the annotated slices: one RECIST marker on a lesion's largest slice becomes a 3D mask.

From each end of a target's annotated range, every next slice is prompted with the previous
slice's mask's bounding box plus ``PROPAGATION_MARGIN_PX``, in the mode of the annotated slices
(in the refined mode with its zoomed crop around that box), and kept unless the stopping rule says
that the target ended there; the first slice refused ends the propagation on that side.

The model answers a box on a slice past the target's end with whatever lies in the box, so
waiting for the mask to vanish (the only stop there was) lets a target run on into its
neighbours. The rule and its thresholds were chosen by measuring candidates on the real cohorts
(``benchmarks/propagation_study.py``, tables in ``docs/propagation.md``): one marker on the largest
slice, propagated both ways, and markers reaching the first and last slices, where any propagated
slice is a false one and the rule must stop at once.
"""

import math
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, Optional

import numpy as np

from ..prompts.geometry import plane_shape, slice_count, slice_indexer
from ..prompts.prompt_types import clip_box
from .refinement import Refinement, refined_probability, zoom_window
from .slice_progress import ProgressCount

#: margin (px) added around the previous slice's mask, as around a RECIST marker
PROPAGATION_MARGIN_PX = 5.0
#: the most slices propagated beyond each end of a target by default (the stopping rule ends most runs well before)
DEFAULT_PROPAGATE_SLICES = 50
#: width (px) of the ring around a mask that its contrast is measured against
RING_PX = 3


@dataclass(frozen=True)
class TargetReference:
    """What the annotated slices say about the target: its largest cross-section and how it stands out."""

    largest_area: int  # pixels in the largest annotated slice's mask
    contrast: float  # mean intensity inside the annotated masks minus in the RING_PX ring around them


@dataclass(frozen=True)
class TracedSlice:
    """A slice the model was asked about: its mask, foreground probability and (normalised) image."""

    index: int
    mask: np.ndarray
    probability: np.ndarray
    image: np.ndarray
    box: np.ndarray  # the box it was prompted with: the slice before's mask's, plus the margin


@dataclass(frozen=True)
class SliceStep:
    """A propagated slice's mask against the slice before it and the annotated slices: what a stopping rule sees."""

    area: int  # pixels in the mask
    previous_area: int  # in the slice before's mask (for the first, the annotated end slice's)
    largest_area: int  # in the target's largest annotated slice's mask
    confidence: float  # the model's mean foreground probability inside the mask (0 when it is empty)
    overlap: float  # IoU with the slice before's mask
    contrast: float  # the mask's contrast against its ring, as a share of the annotated slices' (1: as much)


def _intensity_sums(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[sum inside, pixels inside, sum in the ring, pixels in the ring]`` of one slice's mask."""
    from scipy import ndimage  # here: its import costs a few tenths of a second that only propagation needs

    ring = ndimage.binary_dilation(mask, iterations=RING_PX) & ~mask
    return np.array([image[mask].sum(), mask.sum(), image[ring].sum(), ring.sum()], dtype=float)


def _contrast(sums: np.ndarray) -> float:
    inside, pixels, around, ring = sums
    return float(inside / pixels - around / ring) if pixels and ring else 0.0


def target_reference(volume_u8: np.ndarray, mask: np.ndarray, axis: int, slices) -> TargetReference:
    """The reference of a target from its annotated ``slices`` of ``mask`` (``[k, j, i]``), over all of them."""
    areas, sums = [0], np.zeros(4)
    for index in slices:
        on_slice = mask[slice_indexer(axis, index)]
        areas.append(int(on_slice.sum()))
        sums += _intensity_sums(volume_u8[slice_indexer(axis, index)].astype(float), on_slice)
    return TargetReference(max(areas), _contrast(sums))


def slice_step(previous: np.ndarray, traced: TracedSlice, reference: TargetReference) -> SliceStep:
    """What the rule sees of ``traced`` after the kept slice ``previous`` (a reference without contrast: 1, as much)."""
    mask = traced.mask
    area = int(mask.sum())
    union = int(np.logical_or(previous, mask).sum())
    contrast = _contrast(_intensity_sums(traced.image.astype(float), mask)) if area else 0.0
    return SliceStep(area, int(previous.sum()), reference.largest_area,
                     float(traced.probability[mask].mean()) if area else 0.0,
                     int(np.logical_and(previous, mask).sum()) / union if union else 0.0,
                     contrast / reference.contrast if reference.contrast else 1.0)


@dataclass(frozen=True)
class StoppingRule:
    """Stop at the first slice whose mask is empty or fails any of these tests (their defaults test nothing)."""

    min_previous_share: float = 0.0  # area below this share of the slice before's: the target is ending
    min_largest_share: float = 0.0  # area below this share of the largest annotated slice's: its tip
    max_growth: float = math.inf  # area above this many times the slice before's: a leak into the neighbours
    min_confidence: float = 0.0  # the model unsure of what it found
    min_overlap: float = 0.0  # IoU with the slice before's mask below this: another structure
    min_contrast: float = -math.inf  # standing out from its surroundings less than this share of the target's

    def stops(self, step: SliceStep) -> bool:
        return (step.area == 0 or step.area < self.min_previous_share * step.previous_area
                or step.area < self.min_largest_share * step.largest_area
                or step.area > self.max_growth * step.previous_area
                or step.confidence < self.min_confidence or step.overlap < self.min_overlap
                or step.contrast < self.min_contrast)


#: stop only where the mask vanishes (the rule before the study)
VANISHED = StoppingRule()
#: the measured rule (docs/propagation.md): the mask stands out from its surroundings less than half as much as the
#: annotated target does, overlaps the slice before by less than 30 %, or is under a quarter of the largest annotated
STOPPING_RULE = StoppingRule(min_contrast=0.5, min_overlap=0.3, min_largest_share=0.25)


def traced_slices(session, axis: int, start: int, step: int, start_mask: np.ndarray, limit: int,
                  refinement: Optional[Refinement] = None,
                  progress: Optional[ProgressCount] = None) -> Iterator[TracedSlice]:
    """Up to ``limit`` slices beyond ``start`` (``step`` -1 or +1), each prompted by
    the mask before it, until the volume's edge or an empty mask: the model's answers, before any stopping rule.

    Each slice is added to ``progress``'s plan, decoded, then reported (a raise there ends the trace)."""
    height, width = plane_shape(session.shape, axis)
    count = slice_count(session.shape, axis)
    previous, index = start_mask, start + step
    while 0 <= index < count and abs(index - start) <= limit and previous.any():
        ys, xs = np.nonzero(previous)
        box = clip_box(np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)
                       + PROPAGATION_MARGIN_PX * np.array([-1, -1, 1, 1]), height, width,
                       f"propagated box on slice {index}")
        if 0 <= index + step < count and abs(index + step - start) <= limit:
            session.prefetch([index + step], axis, priority=1)  # encoding the next slice while this one decodes
        if progress is not None:
            progress.plan(1)
        if refinement is None:
            probability = session.slice_probabilities(index, [box], axis)
        else:
            window = zoom_window([box], (height, width), refinement)
            probability = refined_probability(session, index, [box], axis, window, refinement)
        if progress is not None:
            progress.decoded(1)
        previous = probability > 0.5
        yield TracedSlice(index, previous, probability, session.volume_u8[slice_indexer(axis, index)], box)
        index += step


def propagate(session, mask: np.ndarray, axis: int, start: int, step: int, limit: int,
              refinement: Optional[Refinement] = None, rule: StoppingRule = STOPPING_RULE,
              reference: Optional[TargetReference] = None,
              progress: Optional[ProgressCount] = None) -> Dict[int, np.ndarray]:
    """Extend a target's ``[k, j, i]`` ``mask`` from its end slice ``start`` towards ``step`` until ``rule`` stops it
    or ``limit`` slices; returns the slices added, each with the box it was prompted with. ``reference``: of the
    annotated slices (default: ``start`` alone)."""
    previous = mask[slice_indexer(axis, start)]
    if reference is None:
        reference = target_reference(session.volume_u8, mask, axis, [start])
    traced = traced_slices(session, axis, start, step, previous, limit, refinement, progress)
    added = {}
    for kept in kept_slices(traced, previous, rule, reference):
        mask[slice_indexer(axis, kept.index)] |= kept.mask
        added[kept.index] = kept.box
    return added


def kept_slices(traced: Iterable[TracedSlice], start_mask: np.ndarray, rule: StoppingRule,
                reference: TargetReference) -> Iterator[TracedSlice]:
    """The ``traced`` slices that ``rule`` keeps: those before the first it stops at."""
    previous = start_mask
    for found in traced:
        if rule.stops(slice_step(previous, found, reference)):
            return
        yield found
        previous = found.mask
