"""Prompts simulated from ground truth, on shapes whose answers are known."""

import numpy as np
import pytest

from MedSAMSlicerLib.files.sample_data import make_phantom
from MedSAMSlicerLib.prompts.prompt_simulation import (PointPrompt, bounding_box, components, farthest_from_boundary,
                                               next_iterative_point, recist_axes, recist_from_labels, recist_from_truth,
                                               simulate)


def ellipse(shape, centre, radii):
    y, x = np.mgrid[:shape[0], :shape[1]]
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= 1


def two_blobs():
    mask = np.zeros((40, 60), bool)
    mask[5:16, 5:20] = True  # 11 x 15 = 165 px; deepest row 10, columns 10-14 tie: the first, (10, 10)
    mask[25:32, 40:47] = True  # 7 x 7 = 49 px, centre (43, 28)
    return mask


def test_the_farthest_point_is_the_centre_of_a_rectangle_and_a_disk():
    assert farthest_from_boundary(two_blobs()[:20, :25]) == (10, 10)  # ties: first in raster order
    assert farthest_from_boundary(ellipse((41, 51), (30, 20), (12, 12))) == (30, 20)
    edge = np.zeros((10, 10), bool)
    edge[:, :4] = True  # touching the image edge: the edge is boundary too
    assert farthest_from_boundary(edge)[0] in (1, 2)


def test_components_are_eight_connected_largest_first_and_at_most_three():
    mask = two_blobs()
    mask[35, 55] = mask[36, 56] = True  # two diagonal pixels: one component of 2
    mask[0:3, 50:53] = True  # 9 px
    parts = components(mask)
    assert [int(p.sum()) for p in parts] == [165, 49, 9]
    assert len(components(mask, limit=None)) == 4 and int(components(mask, limit=None)[3].sum()) == 2


@pytest.mark.parametrize("mode, expected", [
    ("point-largest", [PointPrompt(10, 10)]),
    ("point-each", [PointPrompt(10, 10), PointPrompt(43, 28)]),
    ("box-largest", [[5, 5, 19, 15]]),
    ("box-each", [[5, 5, 19, 15], [40, 25, 46, 31]]),
    ("box-all", [[5, 5, 46, 31]]),
])
def test_the_five_modes_of_the_sam_study(mode, expected):
    prompts = simulate(two_blobs(), mode)
    if mode.startswith("point"):
        assert prompts == expected
    else:
        np.testing.assert_array_equal(prompts, expected)
    assert simulate(np.zeros((5, 5), bool), mode) == []


def test_box_jitter_stays_within_n_pixels_and_the_image():
    mask = two_blobs()
    exact = bounding_box(mask)
    rng = np.random.default_rng(3)
    moved = [simulate(mask, "box-all", jitter=4, rng=rng)[0] for _ in range(200)]
    deltas = np.abs(np.array(moved) - exact)
    assert deltas.max() == 4 and deltas.min() == 0
    assert all(0 <= b[0] < b[2] <= 59 and 0 <= b[1] < b[3] <= 39 for b in moved)
    with pytest.raises(ValueError, match="not one of"):
        simulate(mask, "lasso")


def test_iterative_points_go_to_the_deepest_error_with_the_right_sign():
    truth = np.zeros((30, 30), bool)
    truth[5:25, 5:25] = True
    missed = truth.copy()
    missed[8:17, 14:23] = False  # a 9 x 9 hole missed: a positive click at its centre
    assert next_iterative_point(truth, missed) == PointPrompt(18, 12, positive=True)
    leaked = truth.copy()
    leaked[10:19, 25:30] = True  # a false region right of the object: negative click inside it
    point = next_iterative_point(truth, leaked)
    assert not point.positive and 25 <= point.x <= 29 and 10 <= point.y <= 18
    assert next_iterative_point(truth, truth) is None


def test_recist_axes_of_an_ellipse_and_with_anisotropic_spacing():
    mask = ellipse((41, 61), (30, 20), (20, 8))
    long_axis, short_axis = recist_axes(mask)
    assert np.linalg.norm(np.subtract(*long_axis)) == pytest.approx(40, abs=0.5)
    assert abs(long_axis[0][1] - long_axis[1][1]) <= 1  # horizontal
    assert np.linalg.norm(np.subtract(*short_axis)) == pytest.approx(16, abs=1.0)
    assert abs(short_axis[0][0] - short_axis[1][0]) <= 1  # vertical, perpendicular to the long axis
    # 30 px wide, 15 px tall, but rows are 3 mm apart: physically taller than wide
    tall = np.zeros((20, 40), bool)
    tall[2:17, 5:35] = True
    long_axis, _ = recist_axes(tall, spacing_xy=(1.0, 3.0))
    assert abs(long_axis[0][1] - long_axis[1][1]) == 14  # spans all rows


def test_recist_every_k_slices_from_a_phantoms_truth():
    phantom = make_phantom(size=(64, 56, 24), spacing=(0.8, 0.9, 2.5), radii_mm=(8.0, 7.5, 20.0))
    prompts = recist_from_truth(phantom.truth, every=5, spacing_xy=(0.8, 0.9))
    occupied = np.flatnonzero(phantom.truth.any(axis=(1, 2)))
    assert [p.slice for p in prompts.prompts] == list(range(occupied[0], occupied[-1] + 1, 5)) + \
        ([occupied[-1]] if (len(occupied) - 1) % 5 else [])
    centre = [p for p in prompts.prompts if p.slice == 9][0]  # near the lesion's widest slice
    long_mm = np.linalg.norm(np.subtract(*centre.long_axis) * [0.8, 0.9])
    assert long_mm == pytest.approx(2 * 8.0, abs=2.0)
    with pytest.raises(ValueError, match="1 or more"):
        recist_from_truth(phantom.truth, every=0)


def test_recist_for_every_label_of_a_label_volume_in_one_prompt_set():
    phantom = make_phantom(size=(64, 56, 24), spacing=(0.8, 0.9, 2.5), radii_mm=(8.0, 7.5, 20.0))
    labels = phantom.truth.astype(np.uint8) * 3
    labels[:9][phantom.truth[:9]] = 7  # the lesion's first slices are a second target
    prompts = recist_from_labels(labels, every=5, spacing_xy=(0.8, 0.9))
    assert prompts.labels == [3, 7] and prompts.axis == 2
    for label in (3, 7):
        alone = recist_from_truth(labels == label, 5, 2, (0.8, 0.9), label).prompts
        assert [p for p in prompts.prompts if p.label == label] == alone
