"""The hospital's round trip from the command line, with the real LiteMedSAM: a DICOM series and its RECIST reads
as a TID 1500 SR in, a DICOM SEG and SR out, checked by dciodvfy and dcmqi; the SR written, read back as prompts,
gives the same segmentation; ``batch`` does the same for a folder of series with their SRs."""

import csv
import json

import numpy as np
import pytest
from pydicom.sr.codedict import codes

from dicom_checks import dcmqi_masks, dciodvfy_errors
from dicom_reports import Line, headers, write_report
from dicom_writer import write_dicom_series
from MedSAMSlicerLib.cli import main
from MedSAMSlicerLib.evaluation.metrics import dice
from MedSAMSlicerLib.files.image_io import read_image
from MedSAMSlicerLib.files.prompt_file import write_prompt_file
from MedSAMSlicerLib.files.sample_data import make_phantom, recist_prompts

pytestmark = pytest.mark.slow  # real models on whole volumes: CI runs it, the inner loop (-m "not slow") does not

RUN = ["--mode", "published", "--device", "cpu", "--quiet"]


def phantom_case(folder, seed=0):
    """A phantom CT as a single-frame series (LPS-flipped like the phantom, files out of order), its truth, its
    RECIST markers as a prompt file, and the same markers as a viewer's TID 1500 SR on the series' instances."""
    phantom = make_phantom(size=(64, 56, 12), spacing=(0.8, 0.9, 2.5), radii_mm=(12.0, 10.0, 10.0), seed=seed)
    geometry = phantom.geometry
    direction = np.reshape(geometry.direction, (3, 3))
    order = list(np.random.default_rng(seed).permutation(phantom.image.shape[0]))
    write_dicom_series(folder / "series", phantom.image.astype(np.int16), geometry.spacing[:2], geometry.spacing[2],
                       "CT", [*direction[:, 0], *direction[:, 1]], geometry.origin, order)
    prompts = recist_prompts(phantom, every=3)
    write_prompt_file(folder / "prompts.json", prompts)
    image = read_image(folder / "series")
    assert np.array_equal(image.array, phantom.image) and np.allclose(image.geometry.origin, geometry.origin)
    instances = _in_volume_order(folder / "series", image)
    lines = [Line(instances[p.slice], np.add(axis, 0.5), code, "lesion 1")
             for p in prompts.prompts for axis, code in ((p.long_axis, codes.SCT.LongAxis),
                                                        (p.short_axis, codes.SCT.ShortAxis))]
    write_report(folder / "reads.dcm", lines, headers(folder / "series"))
    return phantom, prompts


def _in_volume_order(folder, image):
    """The headers of the series' instances, that of the volume's slice k the k-th."""
    by_path = {path.name: ds for path, ds in zip(sorted(folder.glob("*.dcm")), headers(folder))}
    return [by_path[path.name] for path in image.dicom_files]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_case")
    return (root, *phantom_case(root))


def test_recist_sr_in_seg_and_sr_out_checked_by_dciodvfy_and_dcmqi(case, lite_model, tmp_path, capsys):
    root, phantom, prompts = case
    series = root / "series"
    assert main(["segment", str(series), "--prompts", str(root / "reads.dcm"), "-o", str(tmp_path / "seg.dcm"),
                 "--sr", str(tmp_path / "sr.dcm"), *RUN]) == 0
    said = capsys.readouterr().out
    assert f"wrote {tmp_path / 'seg.dcm'} and {tmp_path / 'sr.dcm'}" in said
    assert dciodvfy_errors(tmp_path / "seg.dcm") == [] and dciodvfy_errors(tmp_path / "sr.dcm") == []
    geometry = read_image(series).geometry
    from_dcmqi = dcmqi_masks(tmp_path / "seg.dcm", tmp_path / "dcmqi", geometry)
    # the same markers from the JSON prompt file, written as a label image: the same voxels
    assert main(["segment", str(series), "--prompts", str(root / "prompts.json"), "-o", str(tmp_path / "x.nii.gz"),
                 *RUN]) == 0
    from_json = read_image(tmp_path / "x.nii.gz").array == 1
    assert list(from_dcmqi) == [1] and np.array_equal(from_dcmqi[1], from_json)
    assert dice(phantom.truth, from_json) > 0.9
    volume = float(said.split("slices, ")[1].split(" mL")[0])
    assert volume == pytest.approx(from_json.sum() * np.prod(geometry.spacing) / 1000, abs=0.006)
    # round trip: the SR written, read back as prompts, gives the same segmentation
    assert main(["segment", str(series), "--prompts", str(tmp_path / "sr.dcm"), "-o", str(tmp_path / "again.dcm"),
                 *RUN]) == 0
    assert np.array_equal(dcmqi_masks(tmp_path / "again.dcm", tmp_path / "dcmqi2", geometry)[1], from_json)
    import highdicom as hd
    labels = [d.SegmentLabel for d in hd.seg.segread(tmp_path / "again.dcm").SegmentSequence]
    assert labels == ["lesion 1"]  # the target keeps the name its first report gave it


def test_batch_takes_series_with_their_srs_and_writes_a_seg_and_sr_per_case(lite_model, tmp_path):
    images, reads = tmp_path / "images", tmp_path / "reads"
    images.mkdir()
    reads.mkdir()
    truths = {}
    for n in range(2):
        made = tmp_path / f"made{n}"
        phantom, _ = phantom_case(made, seed=n)
        (made / "series").rename(images / f"case{n}")
        (made / "reads.dcm").rename(reads / f"case{n}.dcm")
        truths[f"case{n}"] = phantom.truth
    out = tmp_path / "out"
    assert main(["batch", "--images", str(images), "--prompts", str(reads), "-o", str(out), "--format", ".dcm",
                 *RUN]) == 0
    for name, truth in truths.items():
        assert dciodvfy_errors(out / f"{name}.seg.dcm") == [] and dciodvfy_errors(out / f"{name}.sr.dcm") == []
        mask = dcmqi_masks(out / f"{name}.seg.dcm", tmp_path / f"dcmqi_{name}", read_image(images / name).geometry)[1]
        assert dice(truth, mask) > 0.9
        record = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert record["targets"][0]["volume_ml"] > 0
    with open(out / "summary.csv", newline="", encoding="utf-8") as stream:
        assert [row["case"] for row in csv.DictReader(stream)] == ["case0", "case1"]
