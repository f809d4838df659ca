"""Image reading (files, DICOM series, 2D) and segmentation writing keep the geometry and never leave partial files."""

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from dicom_writer import write_dicom_series
from MedSAMSlicerLib.errors import ImageError, OutputError
from MedSAMSlicerLib.files.image_io import check_output_path, read_image, write_image, write_segmentation
from MedSAMSlicerLib.files.output_files import atomic_output
from MedSAMSlicerLib.prompts.geometry import ImageGeometry

OBLIQUE = ImageGeometry(size=(12, 10, 6), spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0),
                        direction=tuple(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).ravel()))


def test_image_round_trip_keeps_voxels_and_geometry(tmp_path):
    array = np.arange(6 * 10 * 12, dtype=np.int16).reshape(6, 10, 12)
    write_image(tmp_path / "ct.nrrd", array, OBLIQUE)
    loaded = read_image(tmp_path / "ct.nrrd")
    np.testing.assert_array_equal(loaded.array, array)
    assert loaded.geometry == OBLIQUE or np.allclose(loaded.geometry.ijk_to_lps, OBLIQUE.ijk_to_lps)


def test_two_dimensional_image_becomes_one_slice(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.full((20, 30), 7, np.uint8)), str(tmp_path / "slice.png"))
    loaded = read_image(tmp_path / "slice.png")
    assert loaded.array.shape == (1, 20, 30) and loaded.geometry.size == (30, 20, 1)


def test_dicom_series_folder_is_read_with_modality(tmp_path):
    array = np.random.default_rng(0).integers(-1000, 1000, (4, 16, 18)).astype(np.int16)
    write_dicom_series(tmp_path, array, (0.5, 0.6), 3.0)
    loaded = read_image(tmp_path)
    np.testing.assert_array_equal(loaded.array, array)
    assert loaded.modality == "CT"
    assert loaded.geometry.spacing == pytest.approx((0.5, 0.6, 3.0))


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.nrrd", "does not exist"),
    (lambda p: (p / "x.nrrd").write_text("garbage") and p / "x.nrrd", "cannot read image"),
    (lambda p: p, "holds no DICOM series"),
])
def test_unreadable_images_are_refused_with_the_path(tmp_path, make, message):
    with pytest.raises(ImageError, match=message):
        read_image(make(tmp_path))


def test_colour_image_is_refused(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 3), np.uint8), isVector=True), str(tmp_path / "rgb.png"))
    with pytest.raises(ImageError, match="3 components per voxel"):
        read_image(tmp_path / "rgb.png")


def test_seg_nrrd_has_one_named_segment_per_label_in_the_image_geometry(tmp_path):
    first = np.zeros(OBLIQUE.shape_kji, bool)
    first[1:3, 2:5, 3:7] = True
    second = np.zeros(OBLIQUE.shape_kji, bool)
    second[2:4, 4:8, 5:9] = True  # overlaps the first: Slicer keeps both, in separate layers
    write_segmentation(tmp_path / "out.seg.nrrd", {1: first, 2: second}, OBLIQUE, names={2: "lymph node"})
    segmentation = slicerio.read_segmentation(str(tmp_path / "out.seg.nrrd"))
    np.testing.assert_allclose(segmentation["ijkToLPS"], OBLIQUE.ijk_to_lps, atol=1e-6)
    assert [s["name"] for s in segmentation["segments"]] == ["label 1", "lymph node"]
    for segment, truth in zip(segmentation["segments"], (first, second)):
        voxels = segmentation["voxels"]
        layer = voxels[segment["layer"]] if voxels.ndim == 4 else voxels
        np.testing.assert_array_equal((layer == segment["labelValue"]).transpose(2, 1, 0), truth)


def test_label_image_output_higher_label_wins_on_overlap(tmp_path):
    first = np.zeros(OBLIQUE.shape_kji, bool)
    first[1:3] = True
    second = np.zeros(OBLIQUE.shape_kji, bool)
    second[2:4] = True
    write_segmentation(tmp_path / "labels.nii.gz", {1: first, 2: second}, OBLIQUE)
    labels = read_image(tmp_path / "labels.nii.gz")
    assert np.allclose(labels.geometry.ijk_to_lps, OBLIQUE.ijk_to_lps, atol=1e-5)
    assert [int(v) for v in labels.array[:, 0, 0]] == [0, 1, 2, 2, 0, 0]


def test_failed_write_leaves_neither_partial_nor_target_file(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "out.seg.nrrd") as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("write, verify, message", [
    (lambda t: None, None, "nothing was written"),
    (lambda t: t.write_text("bad"), lambda t: _refuse(), "read back wrong"),
    (lambda t: (_ for _ in ()).throw(OSError(28, "No space left on device")), None, "No space left on device"),
])
def test_a_failed_replacement_keeps_the_previous_file(tmp_path, write, verify, message):
    target = tmp_path / "result.json"
    target.write_text("the previous result")
    with pytest.raises(OutputError, match=f"cannot write .*result.json: .*{message}"):
        with atomic_output(target, verify) as temporary:
            write(temporary)
    assert target.read_text() == "the previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def _refuse():
    raise OutputError("cannot write result.json: read back wrong")


@pytest.mark.parametrize("name, message", [("out.png", "must end in .seg.nrrd"), ("out.txt", "must end in .seg.nrrd"),
                                           ("out", "must end in .seg.nrrd"), ("out.mhd", "use .mha or .nrrd"),
                                           ("out.nhdr", "use .mha or .nrrd")])
def test_output_names_without_a_safe_writer_are_refused(tmp_path, name, message):
    with pytest.raises(OutputError, match=message):
        check_output_path(tmp_path / name)
