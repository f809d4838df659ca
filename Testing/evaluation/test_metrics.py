"""Metrics against MONAI's independent implementation, and the edge cases with known answers."""

import monai.metrics as monai_metrics  # the independent reference, installed with the test extra only
import numpy as np
import pytest
import torch

from MedSAMSlicerLib.evaluation.metrics import dice, hausdorff_95, iou, normalized_surface_dice


def random_shape(rng, shape):
    """A blobby random mask: thresholded smoothed noise, so shapes have real curved boundaries."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=3)
    return field > np.percentile(field, rng.uniform(60, 90))


def monai_values(truth, prediction, spacing, tolerance):
    as_tensor = lambda m: torch.as_tensor(m[None, None].astype(np.float32))  # noqa: E731
    nsd = monai_metrics.compute_surface_dice(as_tensor(prediction), as_tensor(truth), [tolerance],
                                             include_background=True, spacing=list(spacing)).item()
    hd95 = monai_metrics.compute_hausdorff_distance(as_tensor(prediction), as_tensor(truth), include_background=True,
                                                    percentile=95, spacing=list(spacing)).item()
    return nsd, hd95


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape, spacing", [((24, 40, 36), (2.5, 0.8, 0.7)), ((64, 48), (0.9, 0.6))])
def test_nsd_and_hd95_equal_monai_on_random_shapes_with_real_spacing(seed, shape, spacing):
    rng = np.random.default_rng(seed)
    truth, prediction = random_shape(rng, shape), random_shape(rng, shape)
    for tolerance in (1.0, 2.0):
        nsd, hd95 = monai_values(truth, prediction, spacing, tolerance)
        assert normalized_surface_dice(truth, prediction, tolerance, spacing) == pytest.approx(nsd, abs=1e-6)
        assert hausdorff_95(truth, prediction, spacing) == pytest.approx(hd95, rel=1e-5)


def test_dice_and_iou_equal_their_definitions_and_monai():
    rng = np.random.default_rng(7)
    truth, prediction = random_shape(rng, (20, 30, 30)), random_shape(rng, (20, 30, 30))
    intersection = np.logical_and(truth, prediction).sum()
    assert dice(truth, prediction) == pytest.approx(2 * intersection / (truth.sum() + prediction.sum()))
    assert iou(truth, prediction) == pytest.approx(intersection / np.logical_or(truth, prediction).sum())
    as_tensor = lambda m: torch.as_tensor(m[None, None].astype(np.float32))  # noqa: E731
    assert dice(truth, prediction) == pytest.approx(
        monai_metrics.compute_dice(as_tensor(prediction), as_tensor(truth)).item(), abs=1e-6)


def test_both_empty_is_perfect_and_one_empty_is_worst():
    empty, full = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    full[2:5, 2:5] = True
    assert (dice(empty, empty), iou(empty, empty), normalized_surface_dice(empty, empty, 1.0),
            hausdorff_95(empty, empty)) == (1.0, 1.0, 1.0, 0.0)
    for truth, prediction in ((empty, full), (full, empty)):
        assert dice(truth, prediction) == iou(truth, prediction) == 0.0
        assert normalized_surface_dice(truth, prediction, 5.0) == 0.0
        assert hausdorff_95(truth, prediction) == float("inf")


def test_single_voxel_and_masks_touching_the_border():
    one = np.zeros((5, 5, 5), bool)
    one[2, 2, 2] = True
    shifted = np.zeros_like(one)
    shifted[2, 2, 3] = True  # one voxel over, 0.7 mm along i
    spacing = (2.0, 1.0, 0.7)
    assert dice(one, shifted) == 0.0
    assert hausdorff_95(one, shifted, spacing) == pytest.approx(0.7)
    assert normalized_surface_dice(one, shifted, 0.7, spacing) == 1.0
    assert normalized_surface_dice(one, shifted, 0.69, spacing) == 0.0
    border = np.ones((6, 6), bool)  # the whole image: every border pixel is boundary
    inner = np.zeros((6, 6), bool)
    inner[1:5, 1:5] = True
    assert normalized_surface_dice(border, border, 0.0) == 1.0
    # the outer ring's 4 corners are sqrt(2) from the inner ring, its 16 other pixels 1: the 95th percentile is a corner
    assert hausdorff_95(border, inner) == pytest.approx(np.sqrt(2))
    assert normalized_surface_dice(border, inner, 1.0) == pytest.approx((16 + 12) / (20 + 12))
    nsd, hd95 = monai_values(border, inner, (1.0, 1.0), 1.0)
    assert (normalized_surface_dice(border, inner, 1.0), hausdorff_95(border, inner)) == pytest.approx((nsd, hd95))


def test_shape_or_spacing_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="does not match 2D"):
        normalized_surface_dice(np.ones((3, 3)), np.ones((3, 3)), 1.0, spacing=(1.0, 1.0, 1.0))
