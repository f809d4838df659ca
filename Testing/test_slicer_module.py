"""The module's logic on a real MRML scene (slicer-core), and its own self-test, run headless."""

import numpy as np
import pytest

from slicer_harness import install

MedSAMSlicer = install()
import slicer  # noqa: E402  (after install: the harness sets up slicer.mrmlScene)


@pytest.mark.slow
def test_module_self_test_passes_headless():
    test = MedSAMSlicer.MedSAMSlicerTest()
    test.runTest()


#: what a Slicer's own Python has of the packages the module and its harness import (Slicer ships numpy and scipy)
SLICER_PACKAGES = ("numpy", "numpy.libs", "scipy", "scipy.libs", "slicer", "slicer_core", "vtk.py", "vtkmodules")


def test_module_self_test_passes_in_a_slicer_without_pytorch(tmp_path):
    """A build machine or a fresh Slicer has none of the engine's packages: the self-test still passes, the model
    part skipped with a message saying why."""
    import subprocess
    import sys
    from pathlib import Path

    site = Path(np.__file__).resolve().parents[1]
    for name in SLICER_PACKAGES:
        if (site / name).exists():
            (tmp_path / name).symlink_to(site / name)
    testing = Path(__file__).resolve().parent
    code = ("import logging, importlib.util; logging.basicConfig(level=logging.INFO)\n"
            "assert importlib.util.find_spec('torch') is None and importlib.util.find_spec('cv2') is None\n"
            "import slicer_harness; slicer_harness.install().MedSAMSlicerTest().runTest()")
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": f"{tmp_path}:{testing}:{testing.parent / 'MedSAMSlicer'}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("Skipped the segmentation with LiteMedSAM: PyTorch and MedSAM's packages are not installed in this "
            "Slicer") in result.stderr


ROTATION = np.array([[np.cos(0.4), -np.sin(0.4), 0.0], [np.sin(0.4), np.cos(0.4), 0.0], [0.0, 0.0, 1.0]])
GEOMETRIES = {  # IJK-to-RAS matrices with anisotropic spacing
    "axis-aligned": np.diag([0.7, 0.8, 2.5, 1.0]),
    "LPS file (flipped)": np.diag([-0.7, -0.8, 2.5, 1.0]),
    "oblique": np.block([[ROTATION @ np.diag([0.7, 0.8, 2.5]), np.array([[12.0], [-30.0], [55.0]])],
                         [np.zeros((1, 3)), np.ones((1, 1))]]),
}


@pytest.fixture
def logic():
    slicer.mrmlScene.Clear()
    logic = MedSAMSlicer.MedSAMSlicerLogic()
    yield logic
    logic.close()


def add_volume(ijk_to_ras, shape=(12, 30, 40)):
    array = np.random.default_rng(0).integers(-100, 200, shape).astype(np.int16)
    return slicer.util.addVolumeFromArray(array, ijkToRAS=ijk_to_ras, name="ct"), array


def ras(ijk_to_ras, ijk):
    return (ijk_to_ras @ np.r_[ijk, 1.0])[:3]


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_markups_placed_in_ras_become_prompts_in_ijk(logic, name):
    matrix = GEOMETRIES[name]
    volume, _ = add_volume(matrix)
    long_axis, short_axis = ((5.0, 10.0), (25.0, 14.0)), ((15.0, 6.0), (14.0, 18.0))
    nodes = []
    for line in (long_axis, short_axis):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsLineNode")
        for x, y in line:
            node.AddControlPoint(ras(matrix, [x, y, 7]))
        nodes.append(node)
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi_to_world = np.eye(4)  # the ROI's axes along the volume's, its centre at a known voxel
    roi_to_world[:3, :3] = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
    roi_to_world[:3, 3] = ras(matrix, [20.0, 15.0, 3.0])
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(roi_to_world))
    roi.SetSize(8 * 0.7, 10 * 0.8, 2.5)
    prompts = logic.promptsFromMarkups(volume, nodes + [roi]).prompts
    box, recist = prompts
    assert box.slice == 3 and np.allclose(box.box, (16.0, 10.0, 24.0, 20.0), atol=1e-6)
    assert recist.slice == 7
    np.testing.assert_allclose(recist.long_axis, long_axis, atol=1e-6)
    np.testing.assert_allclose(recist.short_axis, short_axis, atol=1e-6)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_slice_views_map_to_the_volume_axis_they_cut(logic, name):
    matrix = GEOMETRIES[name]
    volume, _ = add_volume(matrix)
    directions = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
    view = slicer.vtkMRMLSliceNode()
    for axis, index in ((2, 7), (1, 20), (0, 33)):
        slice_to_ras = np.eye(4)
        others = [a for a in range(3) if a != axis]
        slice_to_ras[:3, 0], slice_to_ras[:3, 1] = directions[:, others[0]], directions[:, others[1]]
        slice_to_ras[:3, 2] = -directions[:, axis]  # a view looking from the other side is the same slice
        slice_to_ras[:3, 3] = ras(matrix, [index if a == axis else 4.0 for a in range(3)])
        view.GetSliceToRAS().DeepCopy(slice_to_ras.ravel())
        assert logic.viewSlice(volume, view) == (axis, index)


def test_an_oblique_view_is_refused(logic):
    volume, _ = add_volume(GEOMETRIES["axis-aligned"])
    view = slicer.vtkMRMLSliceNode()
    tilted = np.eye(4)
    tilted[:3, :3] = [[1, 0, 0], [0, np.cos(0.5), -np.sin(0.5)], [0, np.sin(0.5), np.cos(0.5)]]
    view.GetSliceToRAS().DeepCopy(tilted.ravel())
    from MedSAMSlicerLib.errors import SettingsError
    with pytest.raises(SettingsError, match="oblique"):
        logic.viewSlice(volume, view)


def add_segment_with_box(logic, segmentation, volume, name, region):
    """A segment named ``name`` holding the box ``region`` (a [k, j, i] index tuple); returns id and mask."""
    segment = logic.ensureSegment(segmentation, volume, "", name)
    mask = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)
    mask[region] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segment, volume)
    return segment, mask


def test_masks_land_on_the_right_voxels_of_the_chosen_slices_only(logic):
    matrix = GEOMETRIES["oblique"]
    volume, array = add_volume(matrix)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    other, other_mask = add_segment_with_box(logic, segmentation, volume, "other", np.s_[5:8, 10:20, 10:30])
    target = logic.ensureSegment(segmentation, volume, "", "lesion")
    where = MedSAMSlicer.SegmentTarget(volume, segmentation, target)
    first = np.zeros(array.shape, bool)
    first[2:6, 3:9, 4:12] = True
    logic.writeSegmentMask(where, first, [2, 3, 4, 5], axis=2)
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, target, volume).astype(bool)
    np.testing.assert_array_equal(written, first)
    second = np.zeros(array.shape, bool)
    second[:, 20:25, 30:35] = True  # only slices 4 and 9 along K are to change
    outcome = logic.writeSegmentMask(where, second, [4, 9], axis=2)
    assert outcome.changed == [4, 9] and outcome.kept == []
    stats = logic.segmentStatistics(volume, segmentation, target)
    expected = first.copy()
    expected[4], expected[9] = second[4], second[9]
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, target, volume).astype(bool)
    np.testing.assert_array_equal(written, expected)
    assert stats["volumeMl"] == pytest.approx(expected.sum() * 0.7 * 0.8 * 2.5 / 1000)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), other_mask)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), array)  # the user's volume untouched
    assert logic.canUndo(segmentation)
    logic.undo(segmentation)  # one step back: the state after the first write
    np.testing.assert_array_equal(
        slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, target, volume).astype(bool), first)


def segment_array(segmentation, segment, volume):
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment, volume).astype(bool)


def test_hand_edits_survive_undo_redo_and_re_segmentation(logic):
    volume, array = add_volume(GEOMETRIES["oblique"])
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    target = logic.ensureSegment(segmentation, volume, "", "lesion")
    where = MedSAMSlicer.SegmentTarget(volume, segmentation, target)
    medsam = np.zeros(array.shape, bool)
    medsam[2:8, 5:15, 6:20] = True
    logic.writeSegmentMask(where, medsam, list(range(2, 8)), axis=2)
    np.testing.assert_array_equal(segment_array(segmentation, target, volume), medsam)

    # the radiologist refines slice 4 in the Segment Editor: erases a corner, paints beyond the edge
    edited = medsam.copy()
    edited[4, 5:9, 6:10] = False
    edited[4, 16:19, 8:12] = True
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited.astype(np.uint8), segmentation, target, volume)

    message = logic.undo(segmentation)
    assert message == "Undone on 5 slice(s); 1 slice(s) edited by hand since were kept"
    after_undo = segment_array(segmentation, target, volume)
    np.testing.assert_array_equal(after_undo[4], edited[4])  # the hand edit survives
    assert not after_undo[[2, 3, 5, 6, 7]].any()  # the rest is exactly as before MedSAM wrote

    assert logic.redo(segmentation) == "Redone on 5 slice(s)"
    # exactly what MedSAM wrote, and the edit
    np.testing.assert_array_equal(segment_array(segmentation, target, volume), edited)

    resegmented = np.zeros(array.shape, bool)
    resegmented[1:9, 4:16, 5:22] = True  # Segment volume again, with moved prompts
    outcome = logic.writeSegmentMask(where, resegmented, list(range(1, 9)), axis=2)
    assert outcome.kept == [4]
    after = segment_array(segmentation, target, volume)
    np.testing.assert_array_equal(after[4], edited[4])
    np.testing.assert_array_equal(after[[1, 2, 3, 5, 6, 7, 8]], resegmented[[1, 2, 3, 5, 6, 7, 8]])

    logic.undo(segmentation)  # back to MedSAM's first write (and the edit), then further back
    np.testing.assert_array_equal(segment_array(segmentation, target, volume), edited)
    logic.undo(segmentation)
    np.testing.assert_array_equal(segment_array(segmentation, target, volume)[4], edited[4])

    forced = logic.writeSegmentMask(where, resegmented, list(range(1, 9)), axis=2, overwriteEdited=True)
    assert forced.kept == []
    np.testing.assert_array_equal(segment_array(segmentation, target, volume), resegmented)
    logic.undo(segmentation)  # even an overwrite can be taken back: the hand edit returns
    np.testing.assert_array_equal(segment_array(segmentation, target, volume)[4], edited[4])
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), array)


def test_undo_says_why_when_every_slice_was_edited_by_hand(logic):
    volume, array = add_volume(GEOMETRIES["axis-aligned"])
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    target = logic.ensureSegment(segmentation, volume, "", "lesion")
    medsam = np.zeros(array.shape, bool)
    medsam[3, 5:15, 6:20] = True
    logic.writeSegmentMask(MedSAMSlicer.SegmentTarget(volume, segmentation, target), medsam, [3], axis=2)
    erased = np.zeros(array.shape, np.uint8)
    slicer.util.updateSegmentBinaryLabelmapFromArray(erased, segmentation, target, volume)
    assert logic.undo(segmentation) == ("Cannot undo: the 1 slice(s) MedSAM wrote have been edited by hand since; "
                                        "they are kept")
    assert not segment_array(segmentation, target, volume).any()
    assert logic.undo(segmentation) == "Nothing to undo" and not logic.canUndo(segmentation)
    segmentation.GetSegmentation().RemoveSegment(target)
    assert logic.redo(segmentation) == "Nothing to redo"


def test_seg_nrrd_export_reads_back_with_the_volume_geometry(logic, tmp_path):
    import slicerio

    matrix = GEOMETRIES["oblique"]
    volume, _ = add_volume(matrix)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    _, mask = add_segment_with_box(logic, segmentation, volume, "lesion", np.s_[3:5, 6:9, 10:14])
    logic.exportSegmentation(tmp_path / "case.seg.nrrd", volume, segmentation)
    exported = slicerio.read_segmentation(str(tmp_path / "case.seg.nrrd"))
    np.testing.assert_allclose(exported["ijkToLPS"], np.diag([-1, -1, 1, 1]) @ matrix, atol=1e-6)
    assert exported["segments"][0]["name"] == "lesion"
    np.testing.assert_array_equal((exported["voxels"] == 1).transpose(2, 1, 0), mask.astype(bool))


@pytest.mark.parametrize("export", ["exportSegmentation", "exportPrompts"])
def test_an_export_never_replaces_the_volume_file(logic, tmp_path, export):
    from MedSAMSlicerLib.errors import OutputError

    volume, _ = add_volume(GEOMETRIES["oblique"])
    original = tmp_path / "ct.seg.nrrd"  # a volume file named as an export would be
    original.write_bytes(b"the patient's scan")
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(original))
    volume.SetAndObserveStorageNodeID(storage.GetID())
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    add_segment_with_box(logic, segmentation, volume, "lesion", np.s_[3:5, 6:9, 10:14])
    second = segmentation if export == "exportSegmentation" else []
    with pytest.raises(OutputError, match="is the input file .*ct.seg.nrrd"):
        getattr(logic, export)(tmp_path / "." / "ct.seg.nrrd", volume, second)
    assert original.read_bytes() == b"the patient's scan"
    assert [p.name for p in tmp_path.iterdir()] == ["ct.seg.nrrd"]


def test_prompt_file_export_round_trips_through_the_engine(logic, tmp_path):
    from MedSAMSlicerLib.files.prompt_file import read_prompt_file

    matrix = GEOMETRIES["LPS file (flipped)"]
    volume, _ = add_volume(matrix)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsLineNode")
    for x, y in ((4.0, 5.0), (20.0, 9.0)):
        node.AddControlPoint(ras(matrix, [x, y, 6]))
    logic.exportPrompts(tmp_path / "prompts.json", volume, [node])
    prompt = read_prompt_file(tmp_path / "prompts.json").prompts[0]
    assert prompt.slice == 6 and prompt.short_axis is None
    np.testing.assert_allclose(prompt.long_axis, ((4.0, 5.0), (20.0, 9.0)), atol=1e-6)


def test_segment_from_a_prompt_dict_creates_the_segment(logic):
    from MedSAMSlicerLib.files.sample_data import make_phantom
    from MedSAMSlicerLib.volume.session_settings import SessionSettings

    phantom = make_phantom(size=(48, 40, 6), spacing=(0.8, 0.9, 2.5), radii_mm=(8.0, 7.0, 10.0))
    matrix = np.diag([-1.0, -1.0, 1.0, 1.0]) @ phantom.geometry.ijk_to_lps
    volume = slicer.util.addVolumeFromArray(phantom.image, ijkToRAS=matrix, name="phantom")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    ci, cj, ck = phantom.centre
    ri, rj, _ = phantom.radii
    document = {"prompts": [{"type": "box", "slice": int(ck),
                             "box": [ci - ri - 3, cj - rj - 3, ci + ri + 3, cj + rj + 3]}]}
    segment_id, stats = logic.segmentFromPrompts(volume, segmentation, "", document, SessionSettings(device="cpu"))
    assert segmentation.GetSegmentation().GetSegment(segment_id).GetName() == "MedSAM"
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume).astype(bool)
    assert np.flatnonzero(mask.any(axis=(1, 2))).tolist() == [int(ck)]
    truth = phantom.truth[int(ck)]
    assert 2 * np.logical_and(mask[int(ck)], truth).sum() / (mask[int(ck)].sum() + truth.sum()) > 0.9
    assert stats["slices"] == 1 and stats["longestDiameterMm"] > 0


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_a_drawn_roi_is_flattened_to_its_slice_and_keeps_its_box(logic, name):
    matrix = GEOMETRIES[name]
    volume, _ = add_volume(matrix)
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(ras(matrix, [20.0, 15.0, 6.2]))  # drawn world-aligned, as the mouse leaves it
    roi.SetSize(6.0, 5.0, 7.0)
    before = logic.promptsFromMarkups(volume, [roi]).prompts[0]
    logic.flattenROIToSlice(volume, roi, axis=2)
    after = logic.promptsFromMarkups(volume, [roi]).prompts[0]
    assert after.slice == before.slice == 6
    np.testing.assert_allclose(after.box, before.box, atol=1e-6)
    assert roi.GetSize()[2] == pytest.approx(2.5)  # one slice thick


def add_phantom_case(seed, radius_mm=8.0):
    """A phantom volume and a segmentation whose 'lesion' segment is its truth, plus an unrelated segment."""
    from MedSAMSlicerLib.files.sample_data import make_phantom

    phantom = make_phantom(size=(48, 40, 5), spacing=(0.8, 0.9, 2.5), radii_mm=(radius_mm, radius_mm - 1, 4.0),
                           seed=seed)
    matrix = np.diag([-1.0, -1.0, 1.0, 1.0]) @ phantom.geometry.ijk_to_lps
    volume = slicer.util.addVolumeFromArray(phantom.image, ijkToRAS=matrix, name=f"phantom{seed}")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    lesion = segmentation.GetSegmentation().AddEmptySegment("", "lesion")
    slicer.util.updateSegmentBinaryLabelmapFromArray(phantom.truth.astype(np.uint8), segmentation, lesion, volume)
    return phantom, volume, segmentation, lesion


@pytest.mark.slow
def test_evaluate_scores_the_scene_segments_off_the_main_thread(logic, tmp_path):
    import threading

    phantom, volume, segmentation, lesion = add_phantom_case(seed=1)
    before = slicer.util.arrayFromVolume(volume).copy()
    threads = []
    job = logic.evaluate(volume, segmentation, tmp_path / "report", [lesion], device="cpu", protocols=["box-all"],
                         progress=lambda *args: threads.append(threading.current_thread()))
    assert job.wait(timeout=300)
    rows = job.result()
    assert [(r.name, r.result.protocol) for r in rows] == [("lesion", "box-all")]
    # Measured: DSC 0.9455 against the phantom lesion (box fill 0.8617).
    assert rows[0].result.dsc > 0.9 and rows[0].result.dsc > rows[0].result.box_fill_dsc
    assert (tmp_path / "report" / "scores.csv").is_file() and (tmp_path / "report" / "overlay_label1.png").is_file()
    assert threads and all(t is not threading.main_thread() for t in threads)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)
    with pytest.raises(ValueError, match="segment 'nope' is not in"):
        logic.evaluate(volume, segmentation, tmp_path / "r2", ["nope"])


@pytest.mark.slow
def test_train_on_scene_segmentations_writes_the_cases_and_a_loadable_model(logic, tmp_path):
    from MedSAMSlicerLib.files.image_io import read_image
    from MedSAMSlicerLib.models.model_registry import load_model

    cases = [add_phantom_case(seed, radius) for seed, radius in ((0, 8.0), (1, 9.0), (2, 10.0))]
    stages = []
    job = logic.train([(volume, segmentation) for _, volume, segmentation, _ in cases], tmp_path / "run",
                      progress=lambda stage, done, total: stages.append(stage), epochs=1, jitter=2,
                      validation_cases=["case002.nrrd"], min_object_voxels=10, min_object_pixels=5, device="cpu")
    assert job.wait(timeout=600)
    result = job.result()
    assert [row["epoch"] for row in result.history] == [0, 1] and 0 < result.best_dsc <= 1
    assert {"reading cases", "embedding slices", "epoch 1/1", "validating"} <= set(stages)
    load_model("lite-medsam", result.model_file, "cpu")
    for number, (phantom, volume, segmentation, _) in enumerate(cases):
        image = read_image(tmp_path / "run" / "data" / "images" / f"case{number:03d}.nrrd")
        labels = read_image(tmp_path / "run" / "data" / "labels" / f"case{number:03d}.nrrd")
        np.testing.assert_array_equal(image.array, phantom.image)
        np.testing.assert_array_equal(labels.array, phantom.truth.astype(np.uint16))
        np.testing.assert_allclose(image.geometry.ijk_to_lps, phantom.geometry.ijk_to_lps, atol=1e-6)
    with pytest.raises(Exception, match="already holds a training run"):
        logic.train([(cases[0][1], cases[0][2])], tmp_path / "run", epochs=1)


def test_slices_written_into_a_segment_sharing_a_layer_leave_every_other_segment_as_it_was(logic):
    volume, array = add_volume(GEOMETRIES["oblique"])
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    other, other_mask = add_segment_with_box(logic, segmentation, volume, "other", np.s_[:, :6, :6])
    target = logic.ensureSegment(segmentation, volume, "", "lesion")  # an empty segment: it shares other's layer
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    where = MedSAMSlicer.SegmentTarget(volume, segmentation, target)
    mask = np.zeros(array.shape, bool)
    mask[3:9, 10:20, 10:25] = True  # beside the other segment, in its layer
    logic.writeSegmentMask(where, mask, list(range(3, 9)), axis=2)
    np.testing.assert_array_equal(segment_array(segmentation, target, volume), mask)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), other_mask)
    mask[3:9, 2:20, 2:25] = True  # now over part of the other segment
    logic.writeSegmentMask(where, mask, list(range(3, 9)), axis=2)
    np.testing.assert_array_equal(segment_array(segmentation, target, volume), mask)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), other_mask)
    planes = logic.readSegmentSlices(volume, segmentation, target, 2, [2, 3, 8, 9])
    assert [planes[i].any() for i in (2, 3, 8, 9)] == [False, True, True, False]
    mask[5] = False  # a slice taken back: only it changes
    assert logic.writeSegmentMask(where, mask, [5], axis=2).changed == [5]
    np.testing.assert_array_equal(segment_array(segmentation, target, volume), mask)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), other_mask)
    stats = logic.segmentStatistics(volume, segmentation, target)
    from MedSAMSlicerLib.prompts.measurements import longest_diameter_in_volume_mm
    diameter, where_slice = longest_diameter_in_volume_mm(mask, logic.volumeGeometry(volume), 2)
    assert ((stats["longestDiameterMm"], stats["diameterSlice"], stats["slices"])
            == (pytest.approx(diameter), where_slice, 5))


def written_lesion(logic):
    """A volume, a segmentation and its segment 'lesion' that MedSAM wrote on slices 2-4: (volume, segmentation,
    segment id, mask)."""
    volume, array = add_volume(GEOMETRIES["axis-aligned"])
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    target = logic.ensureSegment(segmentation, volume, "", "lesion")
    mask = np.zeros(array.shape, bool)
    mask[2:5, 5:15, 6:20] = True
    logic.writeSegmentMask(MedSAMSlicer.SegmentTarget(volume, segmentation, target), mask, [2, 3, 4], axis=2)
    return volume, segmentation, target, mask


def test_a_segment_removed_and_made_again_under_its_id_is_not_taken_for_a_hand_edit(logic):
    volume, segmentation, target, mask = written_lesion(logic)
    segmentation.GetSegmentation().RemoveSegment(target)
    assert not logic.canUndo(segmentation)
    again = logic.ensureSegment(segmentation, volume, target, "lesion")
    assert again == target
    outcome = logic.writeSegmentMask(MedSAMSlicer.SegmentTarget(volume, segmentation, again), mask, [2, 3, 4], axis=2)
    assert outcome.kept == [] and outcome.changed == [2, 3, 4]


def test_undo_after_the_volume_was_removed_says_so_and_leaves_the_segment_as_it_is(logic):
    volume, segmentation, target, mask = written_lesion(logic)
    slicer.mrmlScene.RemoveNode(volume)
    assert logic.undo(segmentation) == "Undone nothing: the segment or its volume has been removed"
    assert not logic.canUndo(segmentation) and logic.redo(segmentation) == "Nothing to redo"
    same_grid, _ = add_volume(GEOMETRIES["axis-aligned"])  # the removed volume's grid, to read the segment on
    np.testing.assert_array_equal(segment_array(segmentation, target, same_grid), mask)


def test_the_history_ends_with_the_scene(logic):
    volume, segmentation, target, mask = written_lesion(logic)
    ids = (volume.GetID(), segmentation.GetID())
    slicer.mrmlScene.Clear(0)
    volume, _ = add_volume(GEOMETRIES["axis-aligned"])
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert (volume.GetID(), segmentation.GetID()) == ids and not logic.canUndo(segmentation)
    segmentation.GetSegmentation().AddEmptySegment(target, "lesion")  # the next case, with the same ids
    outcome = logic.writeSegmentMask(MedSAMSlicer.SegmentTarget(volume, segmentation, target), mask, [2, 3, 4], axis=2)
    assert outcome.kept == [] and segment_array(segmentation, target, volume).sum() == mask.sum()


def test_a_volume_under_a_non_linear_transform_is_refused_with_the_way_out(logic):
    import vtk
    from MedSAMSlicerLib.errors import SettingsError

    volume, _ = add_volume(GEOMETRIES["axis-aligned"])
    warp = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    spline = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point in ((0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10)):
        source.InsertNextPoint(point)
        target.InsertNextPoint(np.add(point, (1.0, 2.0, 0.5)))
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    warp.SetAndObserveTransformToParent(spline)
    volume.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(SettingsError, match="ct is under the non-linear transform warp: harden it first"):
        logic.volumeGeometry(volume)


@pytest.mark.slow
def test_background_caching_around_the_view_asks_for_no_more_than_half_the_cache_holds(logic):
    """On a GPU every slice is worth caching, but a volume with more slices than the cache holds would evict the
    slice in view and the annotated range with its farthest slices, over and over."""
    import types

    from MedSAMSlicerLib.volume.session_settings import SessionSettings

    volume, _ = add_volume(GEOMETRIES["axis-aligned"], shape=(40, 30, 40))
    settings = SessionSettings(device="cpu")
    session = logic.session(volume, settings)
    asked = []
    session.warm = lambda indices, axis=2, priority=0, window=None: asked.extend(indices)  # what would be queued

    def around(index):
        asked.clear()
        logic.prefetchAround(volume, settings, (2, index), [])
        return asked[:]

    assert around(20) == [20, 19, 21, 18, 22, 17, 23, 16, 24, 15, 25]  # on a CPU: the view and 5 slices each way
    session.model = types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"), cache_id=session.model.cache_id)
    assert sorted(around(20)) == list(range(40))  # on a GPU: every slice, nearest first...
    session.cache.max_bytes = 9 * session.cache.max_bytes // session.cache.capacity  # ...that the cache can hold
    assert around(20) == [20, 19, 21, 18, 22]  # the view and 2 each way: half the capacity of 9 (rounded down)
