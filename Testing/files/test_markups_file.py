"""Slicer markups files map to the right slices and in-plane voxel coordinates, and bad ones are refused clearly.

Positions are made from known voxel indices through the image geometry (oblique, flipped,
anisotropic), so the tests check the world-to-voxel mapping rather than restate it.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from MedSAMSlicerLib.errors import PromptError
from MedSAMSlicerLib.files.markups_file import read_markups_prompts
from MedSAMSlicerLib.prompts.geometry import ImageGeometry
from MedSAMSlicerLib.prompts.prompt_types import BoxPrompt, RecistPrompt

SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json"
ANGLE = np.radians(30)
FLIPPED = ImageGeometry(size=(64, 48, 20), spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0),
                        direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
OBLIQUE = ImageGeometry(size=(64, 48, 20), spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0),
                        direction=(np.cos(ANGLE), -np.sin(ANGLE), 0.0, np.sin(ANGLE), np.cos(ANGLE), 0.0,
                                   0.0, 0.0, 1.0))
RAS_FLIP = np.array([-1.0, -1.0, 1.0])


def world(geometry: ImageGeometry, ijk, system: str) -> list:
    lps = (geometry.ijk_to_lps @ np.append(np.asarray(ijk, dtype=float), 1.0))[:3]
    return (lps * RAS_FLIP if system == "RAS" else lps).tolist()


def line(geometry: ImageGeometry, name: str, start, end, system: str = "RAS") -> dict:
    return {"type": "Line", "name": name, "coordinateSystem": system,
            "controlPoints": [{"position": world(geometry, start, system)}, {"position": world(geometry, end, system)}]}


def write(tmp_path: Path, markups: list, document: dict = None) -> Path:
    path = tmp_path / "lesion.mrk.json"
    path.write_text(json.dumps({"@schema": SCHEMA, "markups": markups} if document is None else document))
    return path


@pytest.mark.parametrize("geometry", [FLIPPED, OBLIQUE], ids=["flipped", "oblique"])
@pytest.mark.parametrize("system", ["RAS", "LPS"])
def test_two_lines_on_a_slice_are_long_and_short_axis(tmp_path, geometry, system):
    path = write(tmp_path, [
        line(geometry, "short", (18, 22, 7.0), (22, 10, 7.2), system),
        line(geometry, "long", (10, 12, 7.1), (30, 20, 6.9), system),
    ])
    prompts = read_markups_prompts(path, geometry, label=3)
    assert prompts.axis == 2
    [prompt] = prompts.prompts
    assert isinstance(prompt, RecistPrompt)
    assert (prompt.slice, prompt.label) == (7, 3)
    assert prompt.name == "markups file lesion.mrk.json: Line 'long' with short axis Line 'short'"
    np.testing.assert_allclose(prompt.long_axis, [[10, 12], [30, 20]], atol=1e-9)
    np.testing.assert_allclose(prompt.short_axis, [[18, 22], [22, 10]], atol=1e-9)


def test_single_lines_default_to_lps_and_group_by_slice(tmp_path):
    lonely = line(OBLIQUE, "L1", (5, 6, 3), (15, 9, 3), "LPS")
    del lonely["coordinateSystem"]
    path = write(tmp_path, [lonely, line(OBLIQUE, "L2", (40, 30, 12.3), (44, 36, 12.3))])
    first, second = read_markups_prompts(path, OBLIQUE).prompts
    assert (first.slice, first.short_axis, first.name) == (3, None, "markups file lesion.mrk.json: Line 'L1'")
    np.testing.assert_allclose(first.long_axis, [[5, 6], [15, 9]], atol=1e-9)
    assert (second.slice, second.short_axis) == (12, None)
    np.testing.assert_allclose(second.long_axis, [[40, 30], [44, 36]], atol=1e-9)


@pytest.mark.parametrize("axis, start, end, expected_slice, expected", [
    (1, (10, 5.2, 4), (30, 4.9, 9), 5, [[10, 4], [30, 9]]),    # x = i, y = k
    (0, (22.4, 10, 4), (22.2, 30, 9), 22, [[10, 4], [30, 9]]),  # x = j, y = k
])
def test_axis_selects_in_plane_coordinates(tmp_path, axis, start, end, expected_slice, expected):
    path = write(tmp_path, [line(OBLIQUE, "L", start, end)])
    prompts = read_markups_prompts(path, OBLIQUE, axis=axis)
    assert prompts.axis == axis
    [prompt] = prompts.prompts
    assert prompt.slice == expected_slice
    np.testing.assert_allclose(prompt.long_axis, expected, atol=1e-9)


def test_long_axis_is_the_longer_in_millimetres(tmp_path):
    # Along axis 0 the in-plane spacing is 0.8 (j) x 2.5 (k): 10 voxels in j is 8 mm, 4 voxels in k is 10 mm.
    path = write(tmp_path, [line(FLIPPED, "along j", (6, 10, 8), (6, 20, 8)),
                            line(FLIPPED, "along k", (6, 15, 6), (6, 15, 10))])
    [prompt] = read_markups_prompts(path, FLIPPED, axis=0).prompts
    np.testing.assert_allclose(prompt.long_axis, [[15, 6], [15, 10]], atol=1e-9)
    np.testing.assert_allclose(prompt.short_axis, [[10, 8], [20, 8]], atol=1e-9)


@pytest.mark.parametrize("system", ["RAS", "LPS"])
def test_roi_aligned_with_the_image_is_its_box(tmp_path, system):
    direction = np.asarray(OBLIQUE.direction).reshape(3, 3)
    orientation = np.diag(RAS_FLIP) @ direction if system == "RAS" else direction
    half_voxels = np.array([5.0, 4.0, 1.5])
    roi = {"type": "ROI", "name": "R1", "coordinateSystem": system, "center": world(OBLIQUE, (20, 15, 8.2), system),
           "size": (2 * half_voxels * OBLIQUE.spacing).tolist(), "orientation": orientation.ravel().tolist()}
    [prompt] = read_markups_prompts(write(tmp_path, [roi]), OBLIQUE, label=2).prompts
    assert isinstance(prompt, BoxPrompt)
    assert (prompt.slice, prompt.label, prompt.name) == (8, 2, "markups file lesion.mrk.json: ROI 'R1'")
    np.testing.assert_allclose(prompt.box, [15, 11, 25, 19], atol=1e-9)


def test_world_aligned_roi_on_oblique_image_gives_the_bounding_box_of_its_corners(tmp_path):
    half_mm = 6.0
    center_ijk = np.array([30.0, 20.0, 10.0])
    roi = {"type": "ROI", "name": "R", "coordinateSystem": "LPS", "center": world(OBLIQUE, center_ijk, "LPS"),
           "size": [2 * half_mm, 2 * half_mm, 5.0]}  # no orientation: world-aligned
    [prompt] = read_markups_prompts(write(tmp_path, [roi]), OBLIQUE).prompts
    reach = half_mm * (np.cos(ANGLE) + np.sin(ANGLE)) / np.array(OBLIQUE.spacing[:2])
    assert prompt.slice == 10
    np.testing.assert_allclose(prompt.box, np.r_[center_ijk[:2] - reach, center_ijk[:2] + reach], atol=1e-9)


def test_missing_file(tmp_path):
    with pytest.raises(PromptError, match=r"markups file .*absent\.mrk\.json does not exist"):
        read_markups_prompts(tmp_path / "absent.mrk.json", FLIPPED)


def test_not_json(tmp_path):
    path = tmp_path / "lesion.mrk.json"
    path.write_text("{not json")
    with pytest.raises(PromptError, match=r"lesion\.mrk\.json is not valid JSON"):
        read_markups_prompts(path, FLIPPED)


@pytest.mark.parametrize("document", [{"@schema": SCHEMA}, [1, 2], {"markups": {"type": "Line"}}])
def test_no_markups_list(tmp_path, document):
    with pytest.raises(PromptError, match=r"lesion\.mrk\.json: has no \"markups\" list"):
        read_markups_prompts(write(tmp_path, [], document), FLIPPED)


@pytest.mark.parametrize("kind", ["Fiducial", "Curve", "Angle", "Plane"])
def test_other_markup_types_are_refused(tmp_path, kind):
    markup = {"type": kind, "name": "F", "controlPoints": [{"position": [0, 0, 0]}]}
    with pytest.raises(PromptError, match=rf"lesion\.mrk\.json: {kind} 'F': a '{kind}' markup is not a prompt"):
        read_markups_prompts(write(tmp_path, [markup]), FLIPPED)


def test_line_needs_two_control_points(tmp_path):
    markup = line(FLIPPED, "L3", (1, 1, 1), (5, 5, 1))
    markup["controlPoints"].append(markup["controlPoints"][0])
    with pytest.raises(PromptError, match=r"Line 'L3': has 3 control points; a RECIST line needs exactly 2"):
        read_markups_prompts(write(tmp_path, [markup]), FLIPPED)


def test_line_needs_positions(tmp_path):
    markup = line(FLIPPED, "L", (1, 1, 1), (5, 5, 1))
    del markup["controlPoints"][1]["position"]
    with pytest.raises(PromptError, match=r"Line 'L': control point 2 position must be 3 numbers"):
        read_markups_prompts(write(tmp_path, [markup]), FLIPPED)


def test_line_across_slices(tmp_path):
    path = write(tmp_path, [line(OBLIQUE, "tilted", (10, 10, 4), (20, 10, 4.75))])
    with pytest.raises(PromptError,
                       match=r"Line 'tilted': endpoints lie at slice coordinates 4\.00 and 4\.75 along axis 2"):
        read_markups_prompts(path, OBLIQUE)


def test_three_lines_on_a_slice(tmp_path):
    path = write(tmp_path, [line(FLIPPED, f"L{n}", (10, 10 + n, 6), (20, 10 + n, 6)) for n in range(3)])
    with pytest.raises(PromptError, match=r"3 lines \(Line 'L0', Line 'L1', Line 'L2'\) on slice 6 along axis 2"):
        read_markups_prompts(path, FLIPPED)


@pytest.mark.parametrize("missing", ["center", "size"])
def test_roi_needs_center_and_size(tmp_path, missing):
    roi = {"type": "ROI", "name": "R2", "center": [0, 0, 0], "size": [1, 1, 1]}
    del roi[missing]
    with pytest.raises(PromptError, match=rf"ROI 'R2': ROI has no \"{missing}\""):
        read_markups_prompts(write(tmp_path, [roi]), FLIPPED)


def test_unknown_coordinate_system_or_units(tmp_path):
    markup = line(FLIPPED, "L", (1, 1, 1), (5, 5, 1))
    with pytest.raises(PromptError, match=r"Line 'L': coordinate system 'XYZ' is not LPS or RAS"):
        read_markups_prompts(write(tmp_path, [dict(markup, coordinateSystem="XYZ")]), FLIPPED)
    with pytest.raises(PromptError, match=r"Line 'L': coordinate units 'um' are not mm"):
        read_markups_prompts(write(tmp_path, [dict(markup, coordinateUnits="um")]), FLIPPED)
