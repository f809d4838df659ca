"""Evaluate a model on labelled volumes under the published box and RECIST prompt protocols.

For each target, prompts are simulated from its ground truth (``prompt_simulation``), the volume is
segmented through a ``SegmentationSession`` (so embeddings are shared between protocols), and
3D DSC, IoU and NSD are measured. The prompt boxes themselves, filled, are scored too: this
box-fill baseline shows what the model adds to the prompt.
"""

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from .geometry import array_dim, in_plane_axes, occupied_slices, slice_indexer, take_slice
from .interpolation import interpolate_boxes
from .metrics import dice, iou, normalized_surface_dice
from .prompt_simulation import recist_from_truth, simulate
from .session import SegmentationSession

BOX_PROTOCOLS = ("box-each", "box-largest", "box-all")
PROTOCOLS = BOX_PROTOCOLS + ("recist-sparse",)


@dataclass
class TargetResult:
    """One target of one case under one protocol: the model's scores and the box-fill baseline's."""

    label: int
    protocol: str
    dsc: float
    iou: float
    nsd: float
    slices: int
    seconds: float
    box_fill_dsc: float
    box_fill_nsd: float


@dataclass
class TargetEvaluation:
    """A scored target with what produced the score: the model's mask and the prompt boxes per slice."""

    result: TargetResult
    prediction: np.ndarray
    boxes: Dict[int, List[np.ndarray]]


def fill_boxes(shape, boxes: Sequence[np.ndarray]) -> np.ndarray:
    """A 2D mask of the pixels inside any of ``boxes`` (``x0, y0, x1, y1``, inclusive)."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[int(np.ceil(y0)):int(np.floor(y1)) + 1, int(np.ceil(x0)):int(np.floor(x1)) + 1] = True
    return mask


def evaluate_target(session: SegmentationSession, truth_kji: np.ndarray, spacing_kji: Sequence[float],
                    protocol: str, label: int = 1, axis: int = 2, every: int = 5, jitter: int = 0,
                    tolerance_mm: float = 2.0, rng: Optional[np.random.Generator] = None) -> TargetEvaluation:
    """Segment one target (``truth_kji`` is its mask) under ``protocol`` and score it against the truth."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    truth = np.asarray(truth_kji, dtype=bool)
    rng = rng if rng is not None else np.random.default_rng(0)
    started = time.perf_counter()
    prediction = np.zeros(truth.shape, dtype=bool)
    box_fill = np.zeros(truth.shape, dtype=bool)
    if protocol == "recist-sparse":
        spacing_xy = tuple(float(spacing_kji[array_dim(a)]) for a in in_plane_axes(axis))
        prompts = recist_from_truth(truth, every, axis, spacing_xy, label)
        prediction = session.segment(prompts)[label].mask if prompts.prompts else prediction
        plans = {index: boxes for index, boxes in
                 interpolate_boxes(prompts.key_boxes(truth.shape).get(label, {})).items()}
    else:
        occupied = occupied_slices(truth, axis)
        plans = {int(index): simulate(take_slice(truth, axis, int(index)), protocol, jitter, rng) for index in occupied}
        futures = session.prefetch(sorted(plans), axis)
        for index, boxes in plans.items():
            prediction[slice_indexer(axis, index)] = session.segment_slice(index, boxes, axis, futures[index].result())
    for index, boxes in plans.items():
        box_fill[slice_indexer(axis, index)] = fill_boxes(take_slice(truth, axis, index).shape, boxes)
    result = TargetResult(label, protocol, dice(truth, prediction), iou(truth, prediction),
                          normalized_surface_dice(truth, prediction, tolerance_mm, spacing_kji), len(plans),
                          time.perf_counter() - started, dice(truth, box_fill),
                          normalized_surface_dice(truth, box_fill, tolerance_mm, spacing_kji))
    return TargetEvaluation(result, prediction, plans)


def evaluate_case(session: SegmentationSession, labels_kji: np.ndarray, spacing_kji: Sequence[float],
                  protocols: Sequence[str], **options) -> List[TargetEvaluation]:
    """Every non-zero label of a label volume under every protocol."""
    results = []
    for label in (int(v) for v in np.unique(labels_kji) if v != 0):
        for protocol in protocols:
            results.append(evaluate_target(session, labels_kji == label, spacing_kji, protocol, label, **options))
    return results
