"""Boxes on unannotated slices are interpolated linearly between key slices (DESIGN.md section 4),
multi-part targets are paired by proximity, and the measurements read off a mask are exact."""

import itertools
import math

import numpy as np
import pytest

from MedSAMSlicerLib.prompts.geometry import ImageGeometry
from MedSAMSlicerLib.prompts.interpolation import interpolate_boxes, pair_boxes
from MedSAMSlicerLib.prompts.measurements import (convex_hull, longest_diameter_in_volume_mm, longest_diameter_mm,
                                                  volume_ml)


def box(*values):
    return np.array(values, dtype=float)


def area(b):
    return (b[2] - b[0]) * (b[3] - b[1])


# --- interpolation -----------------------------------------------------------------------------

def test_two_key_slices_interpolate_coordinates_linearly():
    result = interpolate_boxes({10: [box(10, 10, 20, 20)], 20: [box(0, 0, 40, 40)]})
    assert sorted(result) == list(range(10, 21))
    assert all(len(result[k]) == 1 for k in result)
    np.testing.assert_array_equal(result[10][0], [10, 10, 20, 20])
    np.testing.assert_array_equal(result[20][0], [0, 0, 40, 40])
    np.testing.assert_allclose(result[15][0], [5, 5, 30, 30])
    np.testing.assert_allclose(result[12][0], [8, 8, 24, 24])
    np.testing.assert_allclose(result[19][0], [1, 1, 38, 38])
    # not collapsed towards the intersection (the distance-map failure mode gives ~10x10 here)
    assert area(result[15][0]) == pytest.approx(625)
    assert area(result[15][0]) > 5 * 100
    areas = [area(result[k][0]) for k in range(10, 21)]
    assert all(a < b for a, b in zip(areas, areas[1:]))


def test_key_slices_given_in_any_order_and_lists():
    result = interpolate_boxes({20: [[0, 0, 40, 40]], 10: [(10, 10, 20, 20)]})
    assert list(result) == list(range(10, 21))
    np.testing.assert_allclose(result[15][0], [5, 5, 30, 30])


def test_three_key_slices_interpolate_piecewise():
    result = interpolate_boxes({0: [box(0, 0, 10, 10)], 4: [box(8, 8, 20, 20)], 8: [box(0, 0, 10, 10)]})
    assert sorted(result) == list(range(9))
    assert all(len(result[k]) == 1 for k in result)
    np.testing.assert_allclose(result[2][0], [4, 4, 15, 15])
    np.testing.assert_allclose(result[6][0], [4, 4, 15, 15])
    np.testing.assert_allclose(result[1][0], [2, 2, 12.5, 12.5])
    np.testing.assert_allclose(result[7][0], [2, 2, 12.5, 12.5])
    np.testing.assert_array_equal(result[4][0], [8, 8, 20, 20])  # the middle key box itself, not a blend


def test_multi_part_boxes_are_paired_by_proximity():
    left0, right0 = box(0, 0, 10, 10), box(100, 0, 110, 10)
    right4, left4 = box(104, 4, 114, 14), box(4, 4, 14, 14)
    result = interpolate_boxes({0: [left0, right0], 4: [right4, left4]})
    assert sorted(result) == [0, 1, 2, 3, 4]
    for k in range(5):
        assert len(result[k]) == 2
        left, right = sorted(result[k], key=lambda b: b[0])
        np.testing.assert_allclose(left, [k, k, 10 + k, 10 + k])
        np.testing.assert_allclose(right, [100 + k, k, 110 + k, 10 + k])
        assert left[2] < 50 < right[0]  # the left track stays left; no box spans both parts


def test_unpaired_box_applies_to_its_own_slice_only():
    result = interpolate_boxes({0: [box(0, 0, 10, 10), box(100, 0, 110, 10)], 4: [box(104, 4, 114, 14)]})
    assert sorted(result) == [0, 1, 2, 3, 4]
    assert len(result[0]) == 2
    for k in (1, 2, 3):
        assert len(result[k]) == 1
        np.testing.assert_allclose(result[k][0], [100 + k, k, 110 + k, 10 + k])
    assert len(result[4]) == 1


def test_single_key_slice_returns_just_that_slice():
    result = interpolate_boxes({7: [box(1, 2, 3, 4)]})
    assert list(result) == [7]
    assert len(result[7]) == 1
    np.testing.assert_array_equal(result[7][0], [1, 2, 3, 4])
    assert interpolate_boxes({}) == {}


def test_empty_key_slices_are_ignored():
    result = interpolate_boxes({0: [box(0, 0, 10, 10)], 2: [], 4: [box(4, 4, 14, 14)]})
    assert sorted(result) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(result[2][0], [2, 2, 12, 12])


def total_cost(first, second, pairs):
    centre = lambda b: (b[:2] + b[2:]) / 2  # noqa: E731
    return sum(np.linalg.norm(centre(first[i]) - centre(second[j])) for i, j in pairs)


def best_cost(first, second):
    n = min(len(first), len(second))
    best = math.inf
    for rows in itertools.permutations(range(len(first)), n):
        for cols in itertools.permutations(range(len(second)), n):
            best = min(best, total_cost(first, second, list(zip(rows, cols))))
    return best


def test_pair_boxes_is_the_optimal_assignment():
    # greedy nearest-first would pair a with c (distance 1.9) and leave b with d (distance 5)
    a, b = box(-1, -1, 1, 1), box(2, -1, 4, 1)  # centres x = 0, 3
    c, d = box(0.9, -1, 2.9, 1), box(-3, -1, -1, 1)  # centres x = 1.9, -2
    pairs = pair_boxes([a, b], [c, d])
    assert sorted(pairs) == [(0, 1), (1, 0)]
    assert pair_boxes([], [a]) == [] and pair_boxes([a], []) == []

    rng = np.random.default_rng(0)
    for n, m in [(3, 3), (4, 2), (2, 4), (4, 4)]:
        for _ in range(5):
            corners = rng.random((n + m, 2)) * 100
            boxes = [np.r_[p, p + rng.random(2) * 20 + 1] for p in corners]
            first, second = boxes[:n], boxes[n:]
            pairs = pair_boxes(first, second)
            assert len(pairs) == min(n, m)
            assert len({i for i, _ in pairs}) == len(pairs) and len({j for _, j in pairs}) == len(pairs)
            assert all(0 <= i < n and 0 <= j < m for i, j in pairs)
            assert total_cost(first, second, pairs) == pytest.approx(best_cost(first, second))


# --- measurements ------------------------------------------------------------------------------

def test_longest_diameter_of_a_rectangle_with_anisotropic_spacing():
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:25, 7:17] = True  # 20 rows (y) x 10 columns (x)
    assert longest_diameter_mm(mask, (0.5, 1.0)) == pytest.approx(math.hypot(10 * 0.5, 20 * 1.0))
    # spacing is (x, y): the transposed rectangle measures differently
    assert longest_diameter_mm(mask.T, (0.5, 1.0)) == pytest.approx(math.hypot(20 * 0.5, 10 * 1.0))


def test_longest_diameter_of_small_shapes():
    pixel = np.zeros((5, 5), dtype=np.uint8)
    pixel[2, 3] = 1
    assert longest_diameter_mm(pixel, (1.0, 1.0)) == pytest.approx(math.sqrt(2))
    for n in (1, 2, 7, 30):
        line = np.zeros((4, 40), dtype=bool)
        line[1, 3:3 + n] = True
        assert longest_diameter_mm(line, (1.0, 1.0)) == pytest.approx(math.hypot(n, 1))
        assert longest_diameter_mm(line.T, (1.0, 1.0)) == pytest.approx(math.hypot(n, 1))
        assert longest_diameter_mm(line, (0.5, 2.0)) == pytest.approx(math.hypot(n * 0.5, 2.0))
    diagonal = np.eye(9, dtype=bool)
    assert longest_diameter_mm(diagonal, (1.0, 1.0)) == pytest.approx(9 * math.sqrt(2))
    # two far-apart pixels: corner to corner across both
    pair = np.zeros((10, 10), dtype=bool)
    pair[0, 0] = pair[9, 5] = True
    assert longest_diameter_mm(pair, (1.0, 1.0)) == pytest.approx(math.hypot(6, 10))


def brute_force_diameter(mask, spacing_xy):
    ys, xs = np.nonzero(mask)
    corners = np.array([(x + dx, y + dy) for x, y in zip(xs, ys) for dx in (0, 1) for dy in (0, 1)], dtype=float)
    corners *= spacing_xy
    return max(math.dist(p, q) for p in corners for q in corners)


def test_longest_diameter_matches_brute_force_on_random_blobs():
    rng = np.random.default_rng(3)
    for _ in range(6):
        mask = rng.random((9, 11)) < rng.uniform(0.05, 0.4)
        mask[rng.integers(9), rng.integers(11)] = True
        spacing = (float(rng.uniform(0.3, 2)), float(rng.uniform(0.3, 2)))
        assert longest_diameter_mm(mask, spacing) == pytest.approx(brute_force_diameter(mask, spacing))


def test_longest_diameter_of_a_disc():
    yy, xx = np.mgrid[:101, :101]
    disc = (yy - 50) ** 2 + (xx - 50) ** 2 <= 40 ** 2  # 81 pixels across
    diameter = longest_diameter_mm(disc, (0.5, 0.5))
    assert 81 * 0.5 < diameter < 81 * 0.5 * 1.1


def test_empty_mask_measures_zero():
    assert longest_diameter_mm(np.zeros((8, 8), dtype=bool), (1.0, 1.0)) == 0.0
    geometry = ImageGeometry(size=(8, 7, 6), spacing=(0.5, 0.7, 2.0))
    empty = np.zeros(geometry.shape_kji, dtype=bool)
    assert volume_ml(empty, geometry) == 0.0
    for axis in (0, 1, 2):
        assert longest_diameter_in_volume_mm(empty, geometry, axis) == (0.0, -1)


def test_volume_ml():
    geometry = ImageGeometry(size=(20, 18, 16), spacing=(0.5, 0.7, 2.0))
    mask = np.zeros(geometry.shape_kji, dtype=np.uint8)
    mask[2:5, 3:9, 4:14] = 1  # 3 * 6 * 10 = 180 voxels
    mask[10, 0, 0] = 7  # any non-zero counts
    assert volume_ml(mask, geometry) == pytest.approx(181 * 0.5 * 0.7 * 2.0 / 1000)
    assert volume_ml(mask.astype(bool), geometry) == pytest.approx(181 * 0.7 / 1000)


GEOMETRY = ImageGeometry(size=(30, 26, 22), spacing=(0.5, 0.8, 2.0))  # i, j, k; array [k, j, i] = (22, 26, 30)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_longest_diameter_in_volume_picks_the_largest_cross_section(axis):
    mask = np.zeros(GEOMETRY.shape_kji, dtype=bool)
    dim = 2 - axis  # array dimension of the slicing axis
    sx, sy = GEOMETRY.in_plane_spacing(axis)
    # a small plate on slice 3, a large one on slice 12, a medium one on slice 15 (plates: (rows y, columns x))
    plates = {3: (4, 5), 12: (14, 17), 15: (10, 9)}
    for index, (rows, columns) in plates.items():
        indexer = [slice(2, 2 + rows), slice(3, 3 + columns)]
        indexer.insert(dim, index)
        mask[tuple(indexer)] = True
    diameter, where = longest_diameter_in_volume_mm(mask, GEOMETRY, axis)
    assert where == 12
    assert diameter == pytest.approx(math.hypot(17 * sx, 14 * sy))
    expected_spacing = {0: (0.8, 2.0), 1: (0.5, 2.0), 2: (0.5, 0.8)}[axis]
    assert (sx, sy) == expected_spacing


def test_convex_hull_keeps_exactly_the_extreme_points():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2], [1, 1], [1, 0], [0, 0]], dtype=float)  # inner, edge, repeat
    assert sorted(map(tuple, convex_hull(square).tolist())) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    line = np.array([[0, 0], [1, 1], [3, 3], [2, 2]], dtype=float)
    assert sorted(map(tuple, convex_hull(line).tolist())) == [(0, 0), (3, 3)]
    assert convex_hull(np.array([[1.5, 2.5]])).tolist() == [[1.5, 2.5]]
    rng = np.random.default_rng(5)
    points = rng.normal(size=(300, 2))
    hull = convex_hull(points)
    for index in range(len(hull)):  # every point lies on the inner side of every hull edge (counter-clockwise)
        edge = hull[(index + 1) % len(hull)] - hull[index]
        offsets = points - hull[index]
        assert (edge[0] * offsets[:, 1] - edge[1] * offsets[:, 0] >= -1e-12).all()
