"""Evaluate a model on labelled volumes under the published box, point and RECIST prompt protocols.

For each target, prompts are simulated from its ground truth (``prompt_simulation``), the volume is
segmented through a ``SegmentationSession`` (so embeddings are shared between protocols), and
3D DSC, IoU and NSD are measured. For box prompts the boxes themselves, filled, are scored too:
this box-fill baseline shows what the model adds to the prompt. Click prompts of SAM models are
answered with three candidate masks of which an oracle keeps the one closest to the truth, as the
SAM study did; MedSAM models were trained single-mask and give one.
"""

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..models.slice_model import SliceModel
from ..prompts.geometry import array_dim, in_plane_axes, occupied_slices, plane_shape, slice_indexer, take_slice
from ..prompts.interpolation import interpolate_boxes
from ..prompts.prompt_simulation import PointPrompt, next_iterative_point, recist_from_truth, simulate
from ..volume.refinement import Refinement
from ..volume.session import SegmentationSession
from .metrics import dice, iou, normalized_surface_dice
from .prompt_protocols import BOX_PROTOCOLS, POINT_PROTOCOLS, PROTOCOLS


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
    box_fill_dsc: float  # NaN for click protocols, which have no box
    box_fill_nsd: float


@dataclass
class TargetEvaluation:
    """A scored target with what produced the score: the model's mask and the prompts per slice (boxes or clicks)."""

    result: TargetResult
    prediction: np.ndarray
    prompts: Dict[int, list]


def fill_boxes(shape, boxes: Sequence[np.ndarray]) -> np.ndarray:
    """A 2D mask of the pixels inside any of ``boxes`` (``x0, y0, x1, y1``, inclusive)."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[int(np.ceil(y0)):int(np.floor(y1)) + 1, int(np.ceil(x0)):int(np.floor(x1)) + 1] = True
    return mask


def fill_plan(shape_kji: Sequence[int], plan: Dict[int, Sequence[np.ndarray]], axis: int = 2) -> np.ndarray:
    """The ``[k, j, i]`` box-fill baseline: every slice's boxes of ``plan`` filled (``fill_boxes``)."""
    mask = np.zeros(shape_kji, dtype=bool)
    for index, boxes in plan.items():
        mask[slice_indexer(axis, index)] = fill_boxes(plane_shape(shape_kji, axis), boxes)
    return mask


def oracle_mask(model: SliceModel, embedding: np.ndarray, clicks: Sequence[PointPrompt],
                truth: np.ndarray) -> np.ndarray:
    """The mask of one click prompt on a slice; of SAM's three candidates, the one with the best Dice to ``truth``."""
    candidates, _ = model.decode_points(embedding, [(p.x, p.y) for p in clicks], [p.positive for p in clicks],
                                        truth.shape, multimask=model.multimask_oracle)
    return max(candidates, key=lambda candidate: dice(truth, candidate))


def iterative_clicks(model: SliceModel, embedding: np.ndarray, truth: np.ndarray,
                     clicks: int) -> Tuple[List[PointPrompt], np.ndarray]:
    """Up to ``clicks`` corrective clicks on one slice, each at the deepest pixel of the current error region."""
    points: List[PointPrompt] = []
    prediction = np.zeros(truth.shape, dtype=bool)
    for _ in range(clicks):
        point = next_iterative_point(truth, prediction)
        if point is None:
            break
        points.append(point)
        prediction = oracle_mask(model, embedding, points, truth)
    return points, prediction


def evaluate_target(session: SegmentationSession, truth_kji: np.ndarray, spacing_kji: Sequence[float],
                    protocol: str, label: int = 1, axis: int = 2, every: int = 5, jitter: int = 0,
                    clicks: int = 5, tolerance_mm: float = 2.0, rng: Optional[np.random.Generator] = None,
                    refinement: Optional[Refinement] = None) -> TargetEvaluation:
    """Segment one target (``truth_kji`` is its mask) under ``protocol`` and score it against the truth.

    ``refinement`` (the refined mode's levers) applies to the box and RECIST protocols; clicks have no box to refine.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if clicks < 1:
        raise ValueError(f"clicks must be 1 or more, got {clicks}")
    truth = np.asarray(truth_kji, dtype=bool)
    rng = rng if rng is not None else np.random.default_rng(0)
    started = time.perf_counter()
    prediction = np.zeros(truth.shape, dtype=bool)
    if protocol == "recist-sparse":
        spacing_xy = tuple(float(spacing_kji[array_dim(a)]) for a in in_plane_axes(axis))
        prompts = recist_from_truth(truth, every, axis, spacing_xy, label)
        prediction = session.segment(prompts, refinement=refinement)[label].mask if prompts.prompts else prediction
        plans = dict(interpolate_boxes(prompts.key_boxes(truth.shape).get(label, {})))
    elif protocol in BOX_PROTOCOLS:
        plans = {int(index): simulate(take_slice(truth, axis, index), protocol, jitter, rng)
                 for index in occupied_slices(truth, axis)}
        prediction = session.segment_slices(plans, axis, refinement=refinement)
    else:
        occupied = [int(index) for index in occupied_slices(truth, axis)]
        futures = session.prefetch(occupied, axis)
        plans = {}
        for index in occupied:
            truth_slice, embedding = take_slice(truth, axis, index), futures[index].result()
            if protocol == "iterative-points":
                plans[index], mask = iterative_clicks(session.model, embedding, truth_slice, clicks)
            else:
                plans[index] = simulate(truth_slice, protocol, rng=rng)
                mask = oracle_mask(session.model, embedding, plans[index], truth_slice)
            prediction[slice_indexer(axis, index)] = mask
    box_fill_dsc = box_fill_nsd = float("nan")
    if protocol not in POINT_PROTOCOLS:
        box_fill = fill_plan(truth.shape, plans, axis)
        box_fill_dsc = dice(truth, box_fill)
        box_fill_nsd = normalized_surface_dice(truth, box_fill, tolerance_mm, spacing_kji)
    result = TargetResult(label, protocol, dice(truth, prediction), iou(truth, prediction),
                          normalized_surface_dice(truth, prediction, tolerance_mm, spacing_kji), len(plans),
                          time.perf_counter() - started, box_fill_dsc, box_fill_nsd)
    return TargetEvaluation(result, prediction, plans)


def evaluate_case(session: SegmentationSession, labels_kji: np.ndarray, spacing_kji: Sequence[float],
                  protocols: Sequence[str], **options) -> List[TargetEvaluation]:
    """Every non-zero label of a label volume under every protocol."""
    results = []
    for label in (int(v) for v in np.unique(labels_kji) if v != 0):
        for protocol in protocols:
            results.append(evaluate_target(session, labels_kji == label, spacing_kji, protocol, label, **options))
    return results
