"""Prompts become the right boxes on the right slices, the slicing-axis convention holds, and the
prompt file is read and written with messages that name the problem (DESIGN.md sections 3 and 4)."""

import json
import math
import warnings

import numpy as np
import pytest

from MedSAMSlicerLib.errors import MedSAMError, PromptError
from MedSAMSlicerLib.files.prompt_file import read_prompt_file, write_prompt_file
from MedSAMSlicerLib.prompts.geometry import (ImageGeometry, array_dim, in_plane_axes, plane_shape, slice_count,
                                      slice_indexer, take_slice)
from MedSAMSlicerLib.prompts.prompt_types import BoxPrompt, PromptSet, RecistPrompt, clip_box

SHAPE = (12, 40, 64)  # [k, j, i]: 12 slices of 40 rows x 64 columns along K


# --- RECIST and boxes --------------------------------------------------------------------------

def test_recist_with_both_axes_is_covering_rectangle_plus_5px():
    prompt = RecistPrompt(3, ((10, 20), (30, 22)), ((21, 14), (19, 27)))
    np.testing.assert_array_equal(prompt.raw_box(), [5, 9, 35, 32])
    # the short axis may stick out past the long axis on either side
    prompt = RecistPrompt(3, ((12.5, 30), (40, 30)), ((26, 25), (26, 44.5)))
    np.testing.assert_array_equal(prompt.raw_box(), [7.5, 20, 45, 49.5])


def test_recist_long_axis_only_is_square_on_midpoint():
    np.testing.assert_allclose(RecistPrompt(0, ((10, 20), (30, 20))).raw_box(), [10, 10, 30, 30])
    # a diagonal long axis: side = its length (10), centred on (13, 14)
    np.testing.assert_allclose(RecistPrompt(0, ((10, 10), (16, 18))).raw_box(), [8, 9, 18, 19])


def test_box_prompt_corners_are_ordered():
    np.testing.assert_array_equal(BoxPrompt(0, (20, 30, 5, 10)).raw_box(), [5, 10, 20, 30])


def test_key_boxes_of_recist_and_box():
    prompts = PromptSet([RecistPrompt(4, ((10, 20), (30, 20)), ((20, 15), (20, 26))),
                         BoxPrompt(6, (1, 2, 3, 4))])
    boxes = prompts.key_boxes(SHAPE)
    assert list(boxes) == [1] and sorted(boxes[1]) == [4, 6]
    np.testing.assert_array_equal(boxes[1][4][0], [5, 10, 35, 31])
    np.testing.assert_array_equal(boxes[1][6][0], [1, 2, 3, 4])


def test_partly_outside_box_is_clipped_to_the_slice():
    height, width = SHAPE[1], SHAPE[2]
    boxes = PromptSet([BoxPrompt(0, (-5, -7, 20, 100)), BoxPrompt(1, (50, 10, 70, 30)),
                       RecistPrompt(2, ((55, 35), (70, 35)))]).key_boxes(SHAPE)
    np.testing.assert_array_equal(boxes[1][0][0], [0, 0, 20, height - 1])
    np.testing.assert_array_equal(boxes[1][1][0], [50, 10, width - 1, 30])
    np.testing.assert_allclose(boxes[1][2][0], [55, 27.5, width - 1, height - 1])
    np.testing.assert_array_equal(clip_box(np.array([-1.0, 2, 5, 50]), 10, 8, "x"), [0, 2, 5, 9])


@pytest.mark.parametrize("box", [(70, 5, 90, 10), (-30, -30, -10, -10), (5, 45, 10, 60), (-20, 5, 0, 10)])
def test_wholly_outside_box_is_refused(box):
    with pytest.raises(PromptError, match="lies outside") as caught:
        PromptSet([BoxPrompt(2, box, name="tumour box")]).key_boxes(SHAPE)
    assert "tumour box" in str(caught.value) and "64x40" in str(caught.value)


def test_degenerate_prompts_are_refused_naming_the_prompt():
    with pytest.raises(PromptError, match="zero length") as caught:
        PromptSet([RecistPrompt(1, ((5, 5), (5, 5)), name="lesion A")]).key_boxes(SHAPE)
    assert "lesion A" in str(caught.value) and "long axis" in str(caught.value)
    for box in [(5, 5, 5, 10), (5, 5, 10, 5), (3, 3, 3, 3)]:
        with pytest.raises(PromptError, match="zero area") as caught:
            PromptSet([BoxPrompt(1, box, name="box C")]).key_boxes(SHAPE)
        assert "box C" in str(caught.value)


def test_a_zero_length_short_axis_is_a_point_the_box_covers_with_one_warning():
    # a click, or a target one voxel wide: the rectangle covering the long axis and that point, plus the margin
    with pytest.warns(RuntimeWarning, match="lesion B: the short axis has zero length") as caught:
        prompt = RecistPrompt(1, ((5, 5), (15, 5)), ((9, 12), (9, 12)), name="lesion B")
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # computing the box again does not warn again
        np.testing.assert_allclose(prompt.raw_box(), [0, 0, 20, 17])
        np.testing.assert_allclose(PromptSet([prompt]).key_boxes(SHAPE)[1][1][0], [0, 0, 20, 17])


@pytest.mark.parametrize("box", [(float("nan"), 1, 5, 5), (1, 1, float("inf"), 5), (1, float("-inf"), 5, 5)])
def test_non_finite_box_is_refused_naming_the_prompt(box):
    # RecistPrompt refuses non-finite points; a BoxPrompt built directly (the Slicer module does)
    # must not hand a NaN or clipped-infinite box to the model either
    with pytest.raises(PromptError) as caught:
        PromptSet([BoxPrompt(1, box, name="box E")]).key_boxes(SHAPE)
    assert "box E" in str(caught.value)
    with pytest.raises(PromptError, match="two points"):
        RecistPrompt(1, ((float("nan"), 1), (5, 5)), name="line F").raw_box()


@pytest.mark.parametrize("slice_index", [12, 100, -1])
def test_slice_out_of_range_is_refused_naming_the_slice(slice_index):
    with pytest.raises(PromptError) as caught:
        PromptSet([BoxPrompt(slice_index, (1, 1, 5, 5), name="box D")]).key_boxes(SHAPE)
    message = str(caught.value)
    assert "box D" in message and f"slice {slice_index}" in message and "0-11" in message


def test_key_boxes_group_by_label_and_slice_keeping_several_per_slice():
    prompts = PromptSet([
        BoxPrompt(3, (1, 1, 5, 5), label=1),
        BoxPrompt(3, (10, 10, 20, 20), label=1),
        BoxPrompt(7, (2, 2, 6, 6), label=1),
        BoxPrompt(3, (30, 30, 40, 35), label=2),
        RecistPrompt(5, ((40, 10), (50, 10)), label=2),
    ])
    assert prompts.labels == [1, 2]
    boxes = prompts.key_boxes(SHAPE)
    assert sorted(boxes) == [1, 2]
    assert sorted(boxes[1]) == [3, 7] and sorted(boxes[2]) == [3, 5]
    assert len(boxes[1][3]) == 2 and len(boxes[1][7]) == 1 and len(boxes[2][3]) == 1
    np.testing.assert_array_equal(boxes[1][3][0], [1, 1, 5, 5])
    np.testing.assert_array_equal(boxes[1][3][1], [10, 10, 20, 20])
    np.testing.assert_array_equal(boxes[2][3][0], [30, 30, 40, 35])
    np.testing.assert_array_equal(boxes[2][5][0], [40, 5, 50, 15])


def test_key_boxes_use_the_slicing_axis():
    shape = (10, 20, 30)  # K, J, I
    # axis 0: slices along I (30 of them), plane (K, J) = 10 rows x 20 columns
    boxes = PromptSet([BoxPrompt(29, (-5, -5, 100, 100))], axis=0).key_boxes(shape)
    np.testing.assert_array_equal(boxes[1][29][0], [0, 0, 19, 9])
    with pytest.raises(PromptError, match="slice 30"):
        PromptSet([BoxPrompt(30, (1, 1, 5, 5))], axis=0).key_boxes(shape)
    # axis 1: slices along J (20), plane (K, I) = 10 rows x 30 columns
    boxes = PromptSet([BoxPrompt(19, (-5, -5, 100, 100))], axis=1).key_boxes(shape)
    np.testing.assert_array_equal(boxes[1][19][0], [0, 0, 29, 9])
    with pytest.raises(PromptError, match="slice 20"):
        PromptSet([BoxPrompt(20, (1, 1, 5, 5))], axis=1).key_boxes(shape)


def test_bad_axis_is_refused():
    for axis in (3, -1, "2", True):
        with pytest.raises(MedSAMError):
            PromptSet([BoxPrompt(0, (1, 1, 5, 5))], axis=axis)


# --- the axis convention -----------------------------------------------------------------------

def test_plane_shape_slice_count_and_in_plane_axes():
    shape = (4, 5, 6)  # K, J, I
    assert plane_shape(shape, 2) == (5, 6) and slice_count(shape, 2) == 4
    assert plane_shape(shape, 1) == (4, 6) and slice_count(shape, 1) == 5
    assert plane_shape(shape, 0) == (4, 5) and slice_count(shape, 0) == 6
    assert [in_plane_axes(a) for a in (0, 1, 2)] == [(1, 2), (0, 2), (0, 1)]
    assert [array_dim(a) for a in (0, 1, 2)] == [2, 1, 0]


@pytest.mark.parametrize("axis,index,row,column", [(2, 1, 2, 3), (1, 2, 1, 3), (0, 3, 1, 2)])
def test_take_slice_and_slice_indexer_pick_the_right_voxel(axis, index, row, column):
    k, j, i = 1, 2, 3
    volume = np.zeros((4, 5, 6), dtype=np.int32)
    volume[k, j, i] = 7
    plane = take_slice(volume, axis, index)
    assert plane.shape == plane_shape(volume.shape, axis)
    assert plane[row, column] == 7 and plane.sum() == 7
    np.testing.assert_array_equal(volume[slice_indexer(axis, index)], plane)
    # the neighbouring slice along the axis does not hold the voxel
    assert take_slice(volume, axis, index - 1).sum() == 0
    # writing through slice_indexer puts the pixel (row, column) back at (k, j, i)
    written = np.zeros_like(volume)
    new_plane = np.zeros(plane.shape, dtype=np.int32)
    new_plane[row, column] = 5
    written[slice_indexer(axis, index)] = new_plane
    assert written[k, j, i] == 5 and written.sum() == 5


# --- image geometry ----------------------------------------------------------------------------

ANGLE = np.radians(25)
GEOMETRY = ImageGeometry(
    size=(64, 48, 20), spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0),
    direction=tuple((np.array([[math.cos(ANGLE), -math.sin(ANGLE), 0.0],
                               [math.sin(ANGLE), math.cos(ANGLE), 0.0],
                               [0.0, 0.0, 1.0]]) @ np.diag([-1.0, 1.0, 1.0])).reshape(-1)))


def test_ijk_to_lps_matches_the_itk_definition():
    matrix = GEOMETRY.ijk_to_lps
    direction = np.asarray(GEOMETRY.direction).reshape(3, 3)
    np.testing.assert_allclose(matrix @ [0, 0, 0, 1], [10, -20, 30, 1])
    np.testing.assert_allclose((matrix @ [1, 0, 0, 1])[:3], np.array([10, -20, 30]) + 0.7 * direction[:, 0])
    np.testing.assert_allclose((matrix @ [0, 0, 1, 1])[:3], np.array([10, -20, 32.5]))
    ijk = np.array([3.0, 5.0, 7.0])
    np.testing.assert_allclose((matrix @ np.append(ijk, 1))[:3],
                               np.array([10, -20, 30]) + direction @ (ijk * [0.7, 0.8, 2.5]))
    assert GEOMETRY.shape_kji == (20, 48, 64)
    assert GEOMETRY.in_plane_spacing(2) == (0.7, 0.8)
    assert GEOMETRY.in_plane_spacing(1) == (0.7, 2.5)
    assert GEOMETRY.in_plane_spacing(0) == (0.8, 2.5)
    assert GEOMETRY.voxel_volume_ml == pytest.approx(0.7 * 0.8 * 2.5 / 1000)


def test_lps_and_ras_to_ijk_round_trip():
    rng = np.random.default_rng(0)
    ijk = rng.random((10, 3)) * [63, 47, 19]
    lps = (GEOMETRY.ijk_to_lps @ np.c_[ijk, np.ones(10)].T).T[:, :3]
    np.testing.assert_allclose(GEOMETRY.lps_to_ijk(lps), ijk, atol=1e-9)
    ras = lps * [-1, -1, 1]
    np.testing.assert_allclose(GEOMETRY.ras_to_ijk(ras), ijk, atol=1e-9)
    np.testing.assert_allclose(GEOMETRY.ras_to_ijk(ras[0]), ijk[:1], atol=1e-9)
    # RAS is not LPS: reading a RAS point as LPS gives another voxel
    assert not np.allclose(GEOMETRY.lps_to_ijk(ras), ijk, atol=1e-3)


# --- the prompt file ---------------------------------------------------------------------------

VALID = {
    "axis": 1,
    "prompts": [
        {"type": "box", "slice": 40, "box": [10, 12.5, 30, 40], "label": 1},
        {"type": "recist", "slice": 44, "long_axis": [[5, 6], [25, 7]], "short_axis": [[15, 1], [15, 12]],
         "label": 2},
        {"type": "recist", "slice": 45, "long_axis": [[5, 6], [25, 7]]},
    ],
}


def write_json(tmp_path, document, name="prompts.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def summary(prompts: PromptSet):
    rows = []
    for p in prompts.prompts:
        if isinstance(p, BoxPrompt):
            rows.append(("box", p.slice, tuple(map(float, p.box)), p.label))
        else:
            short = None if p.short_axis is None else tuple(tuple(map(float, q)) for q in p.short_axis)
            rows.append(("recist", p.slice, tuple(tuple(map(float, q)) for q in p.long_axis), short, p.label))
    return prompts.axis, rows


def test_read_valid_prompt_file(tmp_path):
    prompts = read_prompt_file(write_json(tmp_path, VALID))
    assert summary(prompts) == (1, [
        ("box", 40, (10.0, 12.5, 30.0, 40.0), 1),
        ("recist", 44, ((5.0, 6.0), (25.0, 7.0)), ((15.0, 1.0), (15.0, 12.0)), 2),
        ("recist", 45, ((5.0, 6.0), (25.0, 7.0)), None, 1),
    ])
    assert isinstance(prompts.prompts[0], BoxPrompt) and isinstance(prompts.prompts[1], RecistPrompt)
    assert prompts.labels == [1, 2]
    np.testing.assert_array_equal(prompts.prompts[1].raw_box(), [0, -4, 30, 17])


def test_write_then_read_gives_equal_prompts(tmp_path):
    original = PromptSet([
        BoxPrompt(3, (1.25, 2.0, 30.0, 40.5), label=2),
        RecistPrompt(5, ((10.0, 20.0), (30.0, 20.0)), ((20.0, 15.0), (20.0, 26.0)), label=1),
        RecistPrompt(6, ((11.0, 21.0), (31.5, 19.0)), label=3),
    ], axis=0)
    path = tmp_path / "out.json"
    write_prompt_file(path, original)
    again = read_prompt_file(path)
    assert summary(again) == summary(original)
    assert json.loads(path.read_text())["axis"] == 0
    # and a second round trip is byte-identical
    write_prompt_file(tmp_path / "again.json", again)
    assert (tmp_path / "again.json").read_text() == path.read_text()


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.json"
    with pytest.raises(PromptError, match="does not exist") as caught:
        read_prompt_file(path)
    assert "nowhere.json" in str(caught.value)


def test_invalid_json_names_line_and_column(tmp_path):
    path = write_json(tmp_path, '{\n  "axis": 2,\n  "prompts": [,]\n}\n')
    with pytest.raises(PromptError) as caught:
        read_prompt_file(path)
    message = str(caught.value)
    assert "not valid JSON" in message and "line 3 column 15" in message and "prompts.json" in message


def bad(**changes):
    """VALID with its second prompt replaced by ``changes`` applied to a valid recist prompt."""
    entry = dict(VALID["prompts"][1])
    for key, value in changes.items():
        if value is ...:
            entry.pop(key)
        else:
            entry[key] = value
    return {"axis": 1, "prompts": [VALID["prompts"][0], entry]}


BOX = {"type": "box", "slice": 4, "box": [1, 2, 3, 4]}


@pytest.mark.parametrize("document,expected", [
    ([1, 2], "JSON object"),
    ("\"prompts\"", "JSON object"),
    ({"axis": 2}, "'prompts' must be a non-empty list"),
    ({"prompts": []}, "'prompts' must be a non-empty list"),
    ({"prompts": {"type": "box"}}, "'prompts' must be a non-empty list"),
    ({"prompts": [BOX, 5]}, "prompt 2 must be an object"),
    (bad(type="circle"), "'type' must be 'box' or 'recist', got 'circle'"),
    (bad(type=...), "'type' must be 'box' or 'recist'"),
    (bad(slice=...), "'slice' must be an integer"),
    (bad(slice=4.5), "'slice' must be an integer, got 4.5"),
    (bad(slice="4"), "'slice' must be an integer, got '4'"),
    (bad(label=0), "'label' must be 1 or more, got 0"),
    (bad(label=-2), "'label' must be 1 or more, got -2"),
    (bad(label=1.5), "'label' must be an integer, got 1.5"),
    (bad(long_axis=...), "'long_axis' is required"),
    (bad(long_axis=[[1, 2], [3, "x"]]), "'long_axis' must be a finite number, got 'x'"),
    (bad(short_axis=[[1, 2]]), "'short_axis' must be two points"),
    (bad(short_axis=[[1, 2], [3]]), "'short_axis' must be two points"),
    (bad(short_axis="[[1,2],[3,4]]"), "'short_axis' must be two points"),
    (bad(short_axis=[[1, 2], [3, None]]), "'short_axis' must be a finite number, got None"),
    ({"prompts": [dict(BOX, box=[1, 2, 3])]}, "'box' must be [x0, y0, x1, y1], got [1, 2, 3]"),
    ({"prompts": [dict(BOX, box=[1, 2, 3, 4, 5])]}, "'box' must be [x0, y0, x1, y1]"),
    ({"prompts": [dict(BOX, box=[1, 2, "3", 4])]}, "'box' must be a finite number, got '3'"),
    ({"prompts": [dict(BOX, box=[1, 2, float("nan"), 4])]}, "'box' must be a finite number, got nan"),
    ({"prompts": [dict(BOX, box=[1, 2, float("inf"), 4])]}, "'box' must be a finite number, got inf"),
    ({"prompts": [dict(BOX, box=[1, True, 3, 4])]}, "'box' must be a finite number, got True"),
    ({"axis": 3, "prompts": [BOX]}, "'axis' must be 0, 1 or 2, got 3"),
    ({"axis": "2", "prompts": [BOX]}, "'axis' must be 0, 1 or 2, got '2'"),
    ({"axis": True, "prompts": [BOX]}, "'axis' must be 0, 1 or 2, got True"),
])
def test_bad_prompt_files_are_refused_naming_the_problem(tmp_path, document, expected):
    path = write_json(tmp_path, json.dumps(document), name="lesions.json")
    with pytest.raises(PromptError) as caught:
        read_prompt_file(path)
    message = str(caught.value)
    assert expected in message
    assert "lesions.json" in message
    if isinstance(document, dict) and len(document.get("prompts", [])) == 2 and "must be an object" not in expected:
        assert "prompt 2" in message  # the second prompt is the bad one


def test_axis_argument_must_agree_with_the_file(tmp_path):
    path = write_json(tmp_path, {"axis": 2, "prompts": [BOX]})
    with pytest.raises(PromptError) as caught:
        read_prompt_file(path, axis=0)
    message = str(caught.value)
    assert "'axis' is 2" in message and "axis 0" in message
    assert read_prompt_file(path, axis=2).axis == 2


def test_file_without_axis_takes_the_given_axis_or_k(tmp_path):
    path = write_json(tmp_path, {"prompts": [BOX]})
    assert read_prompt_file(path, axis=1).axis == 1
    assert read_prompt_file(path, axis=0).axis == 0
    assert read_prompt_file(path).axis == 2
