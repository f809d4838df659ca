"""Segmentation metrics of the MedSAM papers: DSC, IoU, NSD (surface Dice at a tolerance in mm), HD95.

Surfaces are the boundary voxels of each mask (the mask minus its erosion; voxels on the image
border count as boundary), distances are Euclidean in millimetres using the voxel spacing, so
anisotropic volumes are measured correctly. Works for 2D and 3D masks alike.

Edge cases: both masks empty gives perfect agreement (DSC = IoU = NSD = 1, HD95 = 0); exactly one
empty gives DSC = IoU = NSD = 0 and HD95 = inf.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage


def _pair(truth: np.ndarray, prediction: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    truth, prediction = np.asarray(truth, dtype=bool), np.asarray(prediction, dtype=bool)
    if truth.shape != prediction.shape:
        raise ValueError(f"masks differ in shape: {truth.shape} and {prediction.shape}")
    return truth, prediction


def dice(truth: np.ndarray, prediction: np.ndarray) -> float:
    """DSC = 2 |G and S| / (|G| + |S|), G the truth and S the prediction."""
    truth, prediction = _pair(truth, prediction)
    total = truth.sum() + prediction.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(truth, prediction).sum() / total)


def iou(truth: np.ndarray, prediction: np.ndarray) -> float:
    truth, prediction = _pair(truth, prediction)
    union = np.logical_or(truth, prediction).sum()
    return 1.0 if union == 0 else float(np.logical_and(truth, prediction).sum() / union)


def boundary(mask: np.ndarray) -> np.ndarray:
    """The voxels of ``mask`` with a face-neighbour outside it (outside the image counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(truth: np.ndarray, prediction: np.ndarray,
                      spacing: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each prediction boundary voxel to the truth boundary, and the other way round.

    ``spacing`` follows the array's axis order (``[k, j, i]`` arrays take ``(sk, sj, si)``).
    """
    truth, prediction = _pair(truth, prediction)
    spacing = np.ones(truth.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    if len(spacing) != truth.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {truth.ndim}D masks")
    edges_truth, edges_prediction = boundary(truth), boundary(prediction)
    if not edges_truth.any() or not edges_prediction.any():
        return (np.full(int(edges_prediction.sum()), np.inf), np.full(int(edges_truth.sum()), np.inf))
    to_truth = ndimage.distance_transform_edt(~edges_truth, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~edges_prediction, sampling=spacing)
    return to_truth[edges_prediction], to_prediction[edges_truth]


def normalized_surface_dice(truth: np.ndarray, prediction: np.ndarray, tolerance_mm: float,
                            spacing: Optional[Sequence[float]] = None) -> float:
    """NSD: the share of both boundaries lying within ``tolerance_mm`` of the other boundary."""
    truth, prediction = _pair(truth, prediction)
    if not truth.any() and not prediction.any():
        return 1.0
    prediction_to_truth, truth_to_prediction = surface_distances(truth, prediction, spacing)
    within = (prediction_to_truth <= tolerance_mm).sum() + (truth_to_prediction <= tolerance_mm).sum()
    return float(within / (len(prediction_to_truth) + len(truth_to_prediction)))


def hausdorff_95(truth: np.ndarray, prediction: np.ndarray, spacing: Optional[Sequence[float]] = None) -> float:
    """The larger of the two directed 95th-percentile boundary distances, in mm."""
    truth, prediction = _pair(truth, prediction)
    if not truth.any() and not prediction.any():
        return 0.0
    prediction_to_truth, truth_to_prediction = surface_distances(truth, prediction, spacing)
    if not np.isfinite(prediction_to_truth).all() or not np.isfinite(truth_to_prediction).all() \
            or not len(prediction_to_truth) or not len(truth_to_prediction):
        return float("inf")
    return float(max(np.percentile(prediction_to_truth, 95), np.percentile(truth_to_prediction, 95)))
