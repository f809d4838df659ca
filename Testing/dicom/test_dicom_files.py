"""DICOM SEG and SR written, and RECIST reads taken in, on series of every geometry a scanner writes: each file
the project writes passes dciodvfy, each SEG reads back voxel for voxel through dcmqi and highdicom, each SR reads
back as the lines written, and reports built independently with highdicom are read as their lines say."""

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes

from dicom_checks import dcmqi_masks, dciodvfy_errors
from dicom_reports import Line, headers, write_report
from dicom_writer import write_dicom_series
from MedSAMSlicerLib.dicom.measurement_report import ReportedTarget, write_measurement_report
from MedSAMSlicerLib.dicom.recist_reads import read_recist_report
from MedSAMSlicerLib.dicom.segmentation_object import write_dicom_seg
from MedSAMSlicerLib.dicom.source_series import read_source_series
from MedSAMSlicerLib.errors import ImageError, OutputError, PromptError
from MedSAMSlicerLib.files.image_io import read_image
from MedSAMSlicerLib.prompts.prompt_types import RecistPrompt

SHAPE = (6, 20, 24)  # slices, rows, columns
TILT = (np.cos(0.5), np.sin(0.5), 0.0, -np.sin(0.5) * np.cos(0.3), np.cos(0.5) * np.cos(0.3), np.sin(0.3))
SERIES = {  # modality, orientation, slice step (negative: against the normal), file order
    "axial CT in order": ("CT", (1, 0, 0, 0, 1, 0), 2.5, None),
    "oblique MR, files out of order": ("MR", TILT, 3.0, [3, 1, 0, 5, 2, 4]),
    "flipped CT against its normal, files out of order": ("CT", (-1, 0, 0, 0, -1, 0), -2.0, [5, 0, 4, 1, 3, 2]),
}


@pytest.fixture(params=sorted(SERIES), scope="module")
def series(request, tmp_path_factory):
    """A series, the volume read from it, and its instance UIDs as the writer made them (slice by slice)."""
    modality, orientation, step, order = SERIES[request.param]
    folder = tmp_path_factory.mktemp("series") / "series"
    uids = write_dicom_series(folder, np.arange(np.prod(SHAPE)).reshape(SHAPE) % 200, (0.7, 0.8), step, modality,
                              orientation, (12.0, -30.0, 40.0), order)
    image = read_image(folder)
    flipped = step < 0  # the volume runs along the normal, so against the order written
    return image, read_source_series(image.dicom_files), uids[::-1] if flipped else uids


def targets():
    first = np.zeros(SHAPE, bool)
    first[1:4, 4:11, 5:13] = True
    second = np.zeros(SHAPE, bool)
    second[3:5, 8:16, 10:20] = True  # overlaps the first on slice 3: a SEG keeps both whole
    return {3: first, 8: second}


@pytest.mark.slow
def test_a_seg_passes_dciodvfy_and_reads_back_through_dcmqi_and_highdicom(series, tmp_path):
    image, source, uids = series
    masks = targets()
    write_dicom_seg(tmp_path / "seg.dcm", masks, source, "lite-medsam", {8: "node"})
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    from_dcmqi = dcmqi_masks(tmp_path / "seg.dcm", tmp_path / "dcmqi", image.geometry)
    assert sorted(from_dcmqi) == [1, 2]
    assert np.array_equal(from_dcmqi[1], masks[3]) and np.array_equal(from_dcmqi[2], masks[8])
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2], assert_missing_frames_are_empty=True)
    assert np.array_equal(pixels[..., 0] > 0, masks[3]) and np.array_equal(pixels[..., 1] > 0, masks[8])
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["label 3", "node"]
    assert [d.SegmentedPropertyTypeCodeSequence[0].CodeMeaning for d in seg.SegmentSequence] == ["Lesion"] * 2
    assert seg.StudyInstanceUID == source.datasets[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.datasets[0].FrameOfReferenceUID


@pytest.mark.slow
def test_an_sr_passes_dciodvfy_carries_the_measurements_and_reads_back_as_its_lines(series, tmp_path):
    image, source, uids = series
    masks = targets()
    seg = write_dicom_seg(tmp_path / "seg.dcm", masks, source, "lite-medsam")
    markers = [RecistPrompt(2, ((5.0, 6.0), (12.0, 9.0)), ((8.0, 10.0), (9.5, 5.0)), 3),
               RecistPrompt(3, ((5.0, 6.0), (12.0, 6.0)), None, 3), RecistPrompt(4, ((11, 9), (18, 15)), None, 8)]
    reported = [ReportedTarget(3, "liver lesion", 1.5, 7.25, markers[:2], [1, 2, 3]),
                ReportedTarget(8, "label 8", 0.75, 9.5, markers[2:], [3, 4])]
    write_measurement_report(tmp_path / "sr.dcm", reported, seg, source, "lite-medsam")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    prompts, names = read_recist_report(tmp_path / "sr.dcm", source)
    assert names == {1: "liver lesion", 2: "label 8"}
    assert [(p.slice, p.label, p.long_axis, p.short_axis) for p in prompts.prompts] == [
        (m.slice, 1 if m.label == 3 else 2, m.long_axis, m.short_axis) for m in markers]
    content = hd.sr.srread(tmp_path / "sr.dcm").content
    volumetric = content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in volumetric] == ["liver lesion", "label 8"]
    assert [g.referenced_segment.referenced_segment_numbers for g in volumetric] == [[1], [2]]
    assert all(g.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID for g in volumetric)
    values = [{m.name.meaning: (m.value, m.unit.value) for m in g.get_measurements()} for g in volumetric]
    assert values[0] == {"Volume": (1.5, "mL"), "Diameter": (7.25, "mm")}
    planar = content.get_planar_roi_measurement_groups(tracking_uid=volumetric[0].tracking_uid)
    long_axis = planar[0].get_measurements()[0]
    assert long_axis.name == codes.SCT.LongAxis
    assert long_axis.value == pytest.approx(np.hypot(7 * 0.7, 3 * 0.8))  # columns 0.7 mm apart, rows 0.8 mm
    assert planar[0].roi.value.tolist() == [[5.5, 6.5], [12.5, 9.5]]  # the centre of pixel (0, 0) is (0.5, 0.5)
    assert planar[0].roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uids[2]


def test_a_report_built_with_highdicom_is_read_as_its_lines_say(series, tmp_path):
    image, source, uids = series
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source.datasets}
    on = [by_uid[uid] for uid in uids]
    report = write_report(tmp_path / "reads.dcm", [
        Line(on[2], [[4.5, 6.5], [14.5, 6.5]], codes.SCT.ShortAxis, "target 1"),  # coded short, though the longer
        Line(on[2], [[9.5, 2.5], [9.5, 10.5]], codes.SCT.LongAxis, "target 1"),
        Line(on[4], [[3.5, 3.5], [13.5, 3.5]], codes.SCT.Length, "target 1", inferred=True),
        Line(on[1], [[2.5, 12.5], [12.5, 12.5]], codes.SCT.Length),  # no tracking: paired where lines cross
        Line(on[1], [[7.5, 9.5], [7.5, 14.5]], codes.SCT.Length),
        Line(on[1], [[15.5, 2.5], [20.5, 4.5]], codes.SCT.Length),  # crosses nothing: alone
    ], source.datasets)
    prompts, names = read_recist_report(report, source)
    assert prompts.axis == 2
    got = [(p.slice, p.label, p.long_axis, p.short_axis) for p in prompts.prompts]
    assert got == [
        (2, 1, ((9.0, 2.0), (9.0, 10.0)), ((4.0, 6.0), (14.0, 6.0))),  # the coded long axis, though shorter
        (4, 1, ((3.0, 3.0), (13.0, 3.0)), None),
        (1, 2, ((2.0, 12.0), (12.0, 12.0)), ((7.0, 9.0), (7.0, 14.0))),
        (1, 3, ((15.0, 2.0), (20.0, 4.0)), None),
    ]
    assert names == {1: "target 1"}


@pytest.mark.slow
def test_an_empty_target_is_written_without_frames_and_all_empty_is_refused(series, tmp_path):
    image, source, uids = series
    masks = targets()
    masks[8][:] = False
    seg = write_dicom_seg(tmp_path / "seg.dcm", masks, source, "lite-medsam")
    write_measurement_report(tmp_path / "sr.dcm", [ReportedTarget(3, "a", 1.0, 2.0, [], [1, 2, 3]),
                                                   ReportedTarget(8, "b", 0.0, 0.0, [], [])], seg, source, "x")
    assert dciodvfy_errors(tmp_path / "seg.dcm") == [] and dciodvfy_errors(tmp_path / "sr.dcm") == []
    assert not dcmqi_masks(tmp_path / "seg.dcm", tmp_path / "dcmqi", image.geometry)[2].any()
    masks[3][:] = False
    with pytest.raises(OutputError, match="every target is empty, and a DICOM SEG needs at least one voxel"):
        write_dicom_seg(tmp_path / "none.dcm", masks, source, "lite-medsam")
    assert not (tmp_path / "none.dcm").exists()


@pytest.mark.parametrize("line, message", [
    (lambda on: Line(on[0], [[1, 1], [5, 5], [9, 1]]), r"measurement group 1, Long axis: a POLYLINE of 3 point\(s\); "
                                                       "a RECIST length is a POLYLINE of two points"),
    (lambda on: Line(on[0], [[1, 1], [5, 5]], tracking="T9"), r"measurement group 1 \(T9\), Long axis: the line lies "
                                                              r"on instance [\d.]+, which is not in the DICOM series"),
])
def test_lines_that_are_no_recist_length_of_this_series_are_refused_by_name(tmp_path, line, message):
    folder = tmp_path / "series"
    write_dicom_series(folder, np.zeros(SHAPE, np.int16), (0.7, 0.8), 2.5)
    other = tmp_path / "other"
    write_dicom_series(other, np.zeros(SHAPE, np.int16), (0.7, 0.8), 2.5)
    source = read_source_series(read_image(folder).dicom_files)
    on = headers(folder) if "POLYLINE" in message else headers(other)
    report = write_report(tmp_path / "bad.dcm", [line(on)], on)
    with pytest.raises(PromptError, match=rf"bad.dcm: {message}"):
        read_recist_report(report, source)


def test_a_series_a_seg_cannot_refer_to_is_refused_by_name(tmp_path):
    folder = tmp_path / "series"
    write_dicom_series(folder, np.zeros(SHAPE, np.int16), (0.7, 0.8), 2.5)
    files = read_image(folder).dicom_files
    import pydicom
    broken = pydicom.dcmread(files[2])
    del broken.FrameOfReferenceUID
    broken.save_as(files[2])
    with pytest.raises(ImageError, match=r"DICOM file .*slice2.dcm lacks FrameOfReferenceUID; a DICOM SEG or SR cannot "
                                         "refer to it"):
        read_source_series(files)
    with pytest.raises(ImageError, match="needs a DICOM series as the image"):
        read_source_series(())


def test_a_seg_or_sr_that_does_not_read_back_is_an_error_and_leaves_no_file(series, tmp_path, monkeypatch):
    image, source, uids = series
    seg = write_dicom_seg(tmp_path / "seg.dcm", targets(), source, "lite-medsam")

    def save_half(dataset, path, *args, **kwargs):
        real_save(dataset, path, *args, **kwargs)
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])

    real_save = hd.seg.Segmentation.save_as
    monkeypatch.setattr(hd.seg.Segmentation, "save_as", save_half)
    monkeypatch.setattr(hd.sr.Comprehensive3DSR, "save_as", save_half)
    with pytest.raises(OutputError, match=r"cannot write .*half.dcm: the DICOM SEG written does not read back"):
        write_dicom_seg(tmp_path / "half.dcm", targets(), source, "lite-medsam")
    marker = RecistPrompt(2, ((5.0, 6.0), (12.0, 9.0)), None, 3)
    with pytest.raises(OutputError, match=r"cannot write .*half_sr.dcm: the DICOM SR written does not read back"):
        write_measurement_report(tmp_path / "half_sr.dcm", [ReportedTarget(3, "a", 1.0, 2.0, [marker], [1, 2, 3])],
                                 seg, source, "lite-medsam")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["seg.dcm"]


def test_the_series_behind_an_srs_prompts_is_read_once_for_the_prompts_and_the_outputs(series, tmp_path, monkeypatch):
    from MedSAMSlicerLib.cases import file_segmentation

    image, source, uids = series
    on = {str(ds.SOPInstanceUID): ds for ds in source.datasets}[uids[2]]
    report = write_report(tmp_path / "reads.dcm", [Line(on, [[4.5, 6.5], [14.5, 6.5]])], source.datasets)
    reads, real = [], file_segmentation.read_source_series
    monkeypatch.setattr(file_segmentation, "read_source_series", lambda files: reads.append(files) or real(files))
    case = file_segmentation.read_case(image.dicom_files[0].parent, report)
    file_segmentation.check_dicom_outputs(case, tmp_path / "seg.dcm", tmp_path / "sr.dcm")
    assert [(p.slice, p.long_axis) for p in case.prompts.prompts] == [(2, ((4.0, 6.0), (14.0, 6.0)))]
    assert case.series is case.series and len(reads) == 1
