"""Bad input and faults against ``medsam-slicer segment`` (and sample, evaluate, train, bench): refused cleanly.

Every case asserts the exit status, the one-line message, that no output and no partial file is
left, and (through the ``work`` fixture) that every input file's bytes and mode are unchanged.
Cases that can be refused before any model work also assert that the model was never loaded.
The cohort command has its own file, ``test_bad_input_cohort.py``.
"""

import contextlib
import errno
import gzip
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from bad_input_harness import STOP_SIGNALS, EngineProcess, stalling_patch
from dicom_reports import Line, headers, write_report
from dicom_writer import write_dicom_series
from MedSAMSlicerLib.files import output_files
from MedSAMSlicerLib.files.image_io import read_image, write_image
from MedSAMSlicerLib.models.model_registry import embedded_lite_checkpoint
from MedSAMSlicerLib.volume.embedding_cache import EmbeddingCache
from MedSAMSlicerLib.volume.session import SegmentationSession


def segment(w, *extra, output="result.seg.nrrd", image="ct.nii.gz", prompts="prompts.json"):
    """``segment`` on the workspace's phantom; ``-o`` into the output folder unless ``extra`` gives one."""
    image = image if isinstance(image, Path) else w.input(image)
    prompts = prompts if isinstance(prompts, Path) else w.input(prompts)
    args = ["segment", image, "--prompts", prompts, "--quiet", *extra]
    return args if "-o" in extra else args + ["-o", w.out / output]


def prompt_file(w, name, *entries, **document):
    return w.add(name, json.dumps({"prompts": list(entries), **document}))


BOX = {"type": "box", "slice": 2, "box": [18, 10, 34, 26]}


def nested(depth: int) -> str:
    return '{"prompts": ' + "[" * depth + "]" * depth + "}"


def read_only_folder() -> Path:
    """A folder nobody can write in, root included (sysfs is mounted read-only)."""
    folder = Path("/sys/medsam-slicer-test")
    try:
        folder.mkdir()
    except OSError:
        return folder
    folder.rmdir()
    pytest.skip("/sys is writable here: no read-only folder for root")


def symlink_to_input(w):
    (w.out / "link.nii.gz").symlink_to(w.input("ct.nii.gz"))
    return segment(w, "-o", w.out / "link.nii.gz")


def hard_link_to_input(w):
    os.link(w.input("ct.nii.gz"), w.out / "hard.nii.gz")
    return segment(w, "-o", w.out / "hard.nii.gz")


def file_in_the_way(w, name="afile"):
    (w.out / name).write_text("not a folder")
    return w.out / name


def image_input(w, name, image):
    """``image`` (a SimpleITK image) written as the input file ``name``."""
    sitk.WriteImage(image, str(w.input(name)))
    return w.add(name, w.input(name).read_bytes())


def four_d_image(w):
    return segment(w, image=image_input(w, "4d.nrrd", sitk.JoinSeries([sitk.Image([6, 5, 4], sitk.sitkInt16)] * 2)))


def rgb_image(w):
    image = sitk.GetImageFromArray(np.zeros((8, 8, 3), np.uint8), isVector=True)
    return segment(w, image=image_input(w, "rgb.png", image))


def markups(w, *entries):
    return w.add("bad.mrk.json", json.dumps({"markups": list(entries)}))


LINE = {"type": "Line", "coordinateSystem": "LPS", "controlPoints": [{"position": [0, 0, 0]}, {"position": [5, 0, 0]}]}

# (id, argv from the workspace, message regex): each refused with status 2 before the model is loaded
REFUSED_BEFORE_THE_MODEL = [
    # outputs that would replace an input (defect 1)
    ("output is the input", lambda w: segment(w, "-o", w.input("ct.nii.gz")), r"is the input file .*ct\.nii\.gz"),
    ("output is the input by ./ and ..", lambda w: segment(w, "-o", w.inputs / "dicom" / ".." / "." / "ct.nii.gz"),
     "is the input file"),
    ("output is a symlink to the input", symlink_to_input, "is the input file"),
    ("output is a hard link to the input", hard_link_to_input, "is the input file"),
    ("output inside the DICOM input folder",
     lambda w: segment(w, "-o", w.input("dicom") / "out.seg.nrrd", image="dicom", prompts="dicom_prompts.json"),
     "inside the input folder .*dicom"),
    ("output is the prompt file", lambda w: segment(w, "-o", w.add("prompts.nrrd", json.dumps({"prompts": [BOX]})),
                                                    prompts=w.input("prompts.nrrd")),
     "is the input file .*prompts.nrrd"),
    # outputs that cannot be written safely (defects 3 and 5)
    ("two-file .mhd", lambda w: segment(w, output="x.mhd"), r"\(\.mhd, \.nhdr\) cannot be written safely; use \.mha"),
    ("two-file .nhdr", lambda w: segment(w, output="x.nhdr"), r"cannot be written safely; use \.mha or \.nrrd"),
    ("unknown output format", lambda w: segment(w, output="x.png"),
     r"must end in \.seg\.nrrd, \.dcm \(DICOM SEG\) or one of"),
    ("output is a folder", lambda w: segment(w, "-o", w.out), "is a folder; give a file name"),
    ("output folder is a file", lambda w: segment(w, "-o", file_in_the_way(w) / "x.nii.gz"),
     "afile is a file, not a folder"),
    ("output folder not writable", lambda w: segment(w, "-o", read_only_folder() / "x.nii.gz"), "cannot be written"),
    ("--cache-dir is a file", lambda w: segment(w, "--cache-dir", file_in_the_way(w)), "--cache-dir .*afile is a file"),
    ("--cache-dir not writable", lambda w: segment(w, "--cache-dir", read_only_folder() / "cache"),
     "--cache-dir .* cannot be written"),
    ("--cache-dir is the input folder", lambda w: segment(w, "--cache-dir", w.inputs),
     "--cache-dir .* holds the input"),
    ("label beyond a label image", lambda w: segment(w, output="x.nii.gz", prompts=prompt_file(w, "big.json", {
        **BOX, "label": 2 ** 32})), "label 4294967296 does not fit a label image .*use .seg.nrrd"),
    # prompt files (defects 5, 7 and 8, and the malformed files handled before)
    ("prompt JSON nested 100,000 deep", lambda w: segment(w, prompts=w.add("deep.json", nested(100_000))),
     "prompt file .*deep.json is nested too deeply"),
    ("markups nested 100,000 deep", lambda w: segment(w, prompts=w.add("deep.mrk.json", nested(100_000))),
     "markups file .*deep.mrk.json is nested too deeply"),
    ("1001 prompts", lambda w: segment(w, prompts=prompt_file(w, "many.json", *[BOX] * 1001)),
     "1001 prompts; at most 1000 are taken per image"),
    ("101 boxes on one slice", lambda w: segment(w, prompts=prompt_file(w, "crowd.json", *[BOX] * 101)),
     "label 1 has more than 100 boxes on slice 2; at most 100 are taken per target and slice"),
    ("zero-length long axis", lambda w: segment(w, prompts=prompt_file(w, "dot.json", {
        "type": "recist", "slice": 2, "long_axis": [[20, 20], [20, 20]]})), "long axis has zero length"),
    ("prompt file missing", lambda w: segment(w, prompts=w.inputs / "absent.json"),
     "prompt file .*absent.json does not exist"),
    ("prompt file is a folder", lambda w: segment(w, prompts=w.input("dicom")), "prompt file .*dicom cannot be read"),
    ("prompt file not UTF-8", lambda w: segment(w, prompts=w.add("latin.json", b'{"prompts": "\xe9"}')),
     "latin.json cannot be read"),
    ("prompt file not JSON", lambda w: segment(w, prompts=w.add("bad.json", '{"prompts": [')),
     "bad.json is not valid JSON: .* at line 1 column"),
    ("prompt file not an object", lambda w: segment(w, prompts=w.add("list.json", "[1, 2]")), "expected a JSON object"),
    ("no prompts", lambda w: segment(w, prompts=prompt_file(w, "none.json")), "'prompts' must be a non-empty list"),
    ("slice outside the image", lambda w: segment(w, prompts=prompt_file(w, "far.json", {**BOX, "slice": 99})),
     "slice 99 is outside 0-5 along axis 2"),
    ("box wholly outside",
     lambda w: segment(w, prompts=prompt_file(w, "out.json", {**BOX, "box": [200, 200, 300, 300]})),
     "lies outside the 48x40 slice"),
    ("box of zero area", lambda w: segment(w, prompts=prompt_file(w, "flat.json", {**BOX, "box": [5, 5, 5, 20]})),
     "has zero area"),
    ("unknown prompt type", lambda w: segment(w, prompts=prompt_file(w, "type.json", {**BOX, "type": "circle"})),
     "'type' must be 'box' or 'recist', got 'circle'"),
    ("label 0", lambda w: segment(w, prompts=prompt_file(w, "zero.json", {**BOX, "label": 0})),
     "'label' must be 1 or more"),
    ("text coordinates", lambda w: segment(w, prompts=prompt_file(w, "text.json", {**BOX, "box": ["a", 1, 2, 3]})),
     "'box' must be a finite number, got 'a'"),
    ("NaN coordinates", lambda w: segment(w, prompts=w.add("nan.json", '{"prompts": [{"type": "box", "slice": 2, '
                                                                      '"box": [NaN, 1, 20, 20]}]}')),
     "must be a finite number, got nan"),
    ("a huge value is shown short",
     lambda w: segment(w, prompts=prompt_file(w, "huge.json", {**BOX, "box": [1] * 10000})),
     r"'box' must be \[x0, y0, x1, y1\], got \[1, 1, .*\.\.\.$"),
    ("axis disagrees with --axis",
     lambda w: segment(w, "--axis", "1", prompts=prompt_file(w, "axis.json", BOX, axis=2)),
     "its 'axis' is 2 but axis 1 was asked for"),
    ("markups of another type", lambda w: segment(w, prompts=markups(w, {**LINE, "type": "Fiducial"})),
     "'Fiducial' markup is not a prompt"),
    ("markups line across slices", lambda w: segment(w, prompts=markups(w, {**LINE, "controlPoints": [
        {"position": [-20, -20, -40]}, {"position": [-25, -20, -30]}]})), "must lie in one slice"),
    ("markups in other units", lambda w: segment(w, prompts=markups(w, {**LINE, "coordinateUnits": "um"})),
     "coordinate units 'um' are not mm"),
    # images
    ("image missing", lambda w: segment(w, image="absent.nii.gz"), "image .*absent.nii.gz does not exist"),
    ("image is garbage", lambda w: segment(w, image=w.add("garbage.nrrd", "not an image")),
     "cannot read image .*garbage.nrrd"),
    ("image is empty", lambda w: segment(w, image=w.add("empty.nii.gz", b"")), "cannot read image .*empty.nii.gz"),
    ("image is 4D", four_d_image, "is 4D; a 2D or 3D image is needed"),
    ("image is RGB", rgb_image, "has 3 components per voxel"),
    ("folder without DICOM", lambda w: segment(w, image=w.out), "holds no DICOM series"),
    # options
    ("unknown window", lambda w: segment(w, "--window", "wide"), "window 'wide' is not one of"),
    ("negative window width", lambda w: segment(w, "--window=-400,40"), "window width must be a positive number"),
    ("negative --propagate", lambda w: segment(w, "--propagate", "-1"), "--propagate must be 0 or more"),
    ("int8 in the published mode", lambda w: segment(w, "--mode", "published", "--precision", "int8"),
     r"int8 precision cannot be used in the published mode, which is the published fp32 steps"),
]


# the other commands' outputs, refused before any work in the same way
REFUSED_COMMANDS = [
    ("sample into a file", lambda w: ["sample", file_in_the_way(w)], "output folder .*afile is a file; give a folder"),
    ("evaluate -o a file", lambda w: ["evaluate", "--images", w.inputs, "--labels", w.inputs, "-o", file_in_the_way(w)],
     "output folder .*afile is a file"),
    ("evaluate -o the images folder",
     lambda w: ["evaluate", "--images", w.inputs, "--labels", w.inputs, "-o", w.inputs],
     "output folder .* holds the input"),
    ("evaluate labels map nested deep",
     lambda w: ["evaluate", "--images", w.inputs, "--labels", w.inputs, "--labels-map",
                w.add("names.json", nested(100_000)), "-o", w.out / "report"],
     "labels map .*names.json is nested too deeply"),
    ("train -o a file", lambda w: ["train", "--images", w.inputs, "--labels", w.inputs, "--epochs", "1", "-o",
                                   file_in_the_way(w)], "output folder .*afile is a file"),
    ("train -o the labels folder", lambda w: ["train", "--images", w.inputs, "--labels", w.inputs, "--epochs", "1",
                                              "-o", w.inputs], "holds the input"),
    ("bench -o in a read-only folder", lambda w: ["bench", "-o", read_only_folder() / "bench.json"],
     "cannot be written"),
]


# ---- round two (issue 23): what a hospital's files still broke ----

def dicom_series(w, name, edit):
    """A copy of the workspace's 4-slice DICOM series, changed by ``edit(folder)``, as the image to segment."""
    shutil.copytree(w.input("dicom"), w.inputs / name)
    edit(w.inputs / name)
    w.refresh()
    return segment(w, image=w.inputs / name, prompts="dicom_prompts.json")


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def raw_nifti(w) -> bytes:
    """The phantom as an uncompressed .nii (ITK's .nii.gz is that file, gzipped)."""
    return gzip.decompress(w.input("ct.nii.gz").read_bytes())


def detached_header(w, suffix: str, field: str):
    """The phantom as a header (``.nhdr`` or ``.mhd``) whose data file is named ``voxels.nii``; -o that file."""
    sitk.WriteImage(sitk.ReadImage(str(w.input("ct.nii.gz"))), str(w.inputs / f"ct{suffix}"))
    header = w.inputs / f"ct{suffix}"
    data = re.search(rf"^{field}\s*[:=]\s*(\S+)$", header.read_text(), re.M).group(1)
    (w.inputs / data).rename(w.inputs / "voxels.nii")
    header.write_text(header.read_text().replace(data, "voxels.nii"))
    w.refresh()
    return segment(w, "-o", w.input("voxels.nii"), image=header)


def special_input(w, name, make):
    """An input that is not a regular file (``make(path)`` creates it: a pipe), fingerprinted with the others."""
    make(w.inputs / name)
    w.refresh()
    return w.inputs / name


def far_markups(w, markup):
    return segment(w, prompts=markups(w, markup))


def symlink_loop(w):
    (w.out / "loop").symlink_to("loop")
    return segment(w, "-o", w.out / "loop" / "x.nii.gz")


def spaced_image(w, spacing):
    image = sitk.ReadImage(str(w.input("ct.nii.gz")))
    image.SetSpacing(spacing)
    return image_input(w, "far.mha", image)


HUGE = "1" * 5000

REFUSED_ROUND_TWO = [
    ("DICOM series with a missing slice", lambda w: dicom_series(w, "gap", lambda f: (f / "slice1.dcm").unlink()),
     r"DICOM series in .*gap has a gap of 5 mm between slice0.dcm \(at 0.00 mm\) and slice2.dcm \(at 5.00 mm\) "
     r"where slices are 2.5 mm apart: about 1 slice\(s\) missing"),
    ("DICOM series with two files at one position", lambda w: dicom_series(
        w, "twice", lambda f: shutil.copy(f / "slice1.dcm", f / "slice1b.dcm")),
     r"DICOM files slice1.dcm and slice1b.dcm in .*twice lie at the same position \(2.50 mm along the slice normal\)"),
    ("DICOM series with a damaged file",
     lambda w: dicom_series(w, "damaged", lambda f: truncate(f / "slice3.dcm", 4000)),
     r"DICOM file .*damaged/slice3.dcm cannot be read \(damaged or incomplete\)"),
    ("truncated .nii.gz", lambda w: segment(w, image=w.add("cut.nii.gz", w.input("ct.nii.gz").read_bytes()[:300])),
     r"image .*cut.nii.gz is incomplete: its compressed data ends before the voxels its header promises"),
    ("truncated .nii", lambda w: segment(w, image=w.add("cut.nii", raw_nifti(w)[:5000])),
     r"image .*cut.nii is incomplete: its header promises 23392 bytes, the file holds 5000"),
    ("NIfTI header without data", lambda w: segment(w, image=w.add("head.nii", raw_nifti(w)[:352])),
     r"image .*head.nii is incomplete: its header promises 23392 bytes, the file holds 352"),
    ("complex-valued image", lambda w: segment(w, image=image_input(
        w, "complex.nii.gz", sitk.GetImageFromArray(np.zeros((6, 40, 48), np.complex64)))), "holds complex numbers"),
    ("spacing of 1e300", lambda w: segment(w, image=spaced_image(w, (1e300, 0.9, 2.5))),
     r"image .*far.mha has a voxel spacing of 1e\+300 x 0.9 x 2.5 mm; a scan's spacing lies between"),
    ("output is an .nhdr input's data file", lambda w: detached_header(w, ".nhdr", "data file"),
     r"output .*voxels.nii is the data file .*voxels.nii of the input .*ct.nhdr"),
    ("output is an .mhd input's data file", lambda w: detached_header(w, ".mhd", "ElementDataFile"),
     r"output .*voxels.nii is the data file .*voxels.nii of the input .*ct.mhd"),
    ("image is a FIFO", lambda w: segment(w, image=special_input(w, "pipe.nii.gz", os.mkfifo)),
     r"image .*pipe.nii.gz cannot be read: it is a named pipe \(FIFO\), not a file"),
    ("prompt file is a FIFO", lambda w: segment(w, prompts=special_input(w, "pipe.json", os.mkfifo)),
     r"prompt file .*pipe.json cannot be read: it is a named pipe \(FIFO\), not a file"),
    ("prompt file is /dev/zero", lambda w: segment(w, prompts=Path("/dev/zero")),
     r"prompt file /dev/zero cannot be read: it is a character device, not a file"),
    ("image is /dev/zero", lambda w: segment(w, image=Path("/dev/zero")),
     "image /dev/zero cannot be read: it is a character"),
    ("5000-digit integer in a prompt file",
     lambda w: segment(w, prompts=w.add("huge.json", '{"prompts": [{"type": "box", '
                                                     f'"slice": 2, "box": [{HUGE}, 1, 20, 20]}}]}}')),
     r"prompt file .*huge.json holds an integer of 5000 digits \(111111111111...\); "
     r"no value in a prompt file is that long"),
    ("5000-digit integer in markups", lambda w: segment(w, prompts=w.add("huge.mrk.json", json.dumps(
        {"markups": [{**LINE, "controlPoints": [{"position": [0, 0, 0]}, {"position": ["X", 0, 0]}]}]}).replace(
            '"X"', HUGE))),
     r"markups file .*huge.mrk.json holds an integer of 5000 digits"),
    ("label beyond int64", lambda w: segment(w, prompts=prompt_file(w, "label.json", {**BOX, "label": 2 ** 70})),
     r"'label' must be at most 9223372036854775807, got 1180591620717411303424"),
    ("RECIST axis far outside", lambda w: segment(w, prompts=prompt_file(w, "far.json", {
        "type": "recist", "slice": 2, "long_axis": [[-1e308, 0], [1e308, 0]]})),
     r"'long_axis' must be a voxel coordinate \(at most 1e\+09 voxels from the image\), got -1e\+308"),
    ("markups line far outside", lambda w: far_markups(w, {**LINE, "controlPoints": [{"position": [1e308, 0, 0]},
                                                                                   {"position": [-1e308, 0, 0]}]}),
     r"Line #1: lies far outside the image"),
    ("markups ROI far outside", lambda w: far_markups(w, {"type": "ROI", "center": [1e300, 0, 0],
                                                          "size": [1e308, 1e308, 1e308]}),
     r"ROI #1: lies far outside the image"),
    ("--cache-dir is the output file", lambda w: segment(w, "--cache-dir", w.out / "x.nii.gz", output="x.nii.gz"),
     r"--cache-dir .*x.nii.gz is the output file .*x.nii.gz; give the cache a folder of its own"),
    ("symlink loop above the output", symlink_loop,
     r"out/loop is a symbolic link that leads nowhere \(broken, or a loop\)"),
    ("evaluate --tolerance nan",
     lambda w: ["evaluate", "--images", w.inputs, "--labels", w.inputs, "--tolerance", "nan", "-o", w.out / "report"],
     r"--tolerance must be a number of mm, 0 or more, got nan"),
    ("labels map key '²'", lambda w: ["evaluate", "--images", w.inputs, "--labels", w.inputs, "--labels-map",
                                      w.add("names.json", '{"\u00b2": "liver"}'), "-o", w.out / "report"],
     r"labels map .*names.json: key must be a label number \(digits 0-9\), got '²'"),
    ("labels map with a 5000-digit integer", lambda w: ["evaluate", "--images", w.inputs, "--labels", w.inputs,
                                                         "--labels-map", w.add("names.json", f'{{"1": {HUGE}}}'),
                                                         "-o", w.out / "report"],
     r"labels map .*names.json holds an integer of 5000 digits"),
]


# ---- DICOM SEG and SR (issue 24): what a trial's files and a wrong output name give ----

def recist_report(w, name, lines, volumes=()):
    """A TID 1500 SR of ``lines(instances, others)`` on the workspace's DICOM series (``instances``: its headers),
    built as a viewer builds one; a line may lie on ``others``, the instances of another series."""
    series, other = headers(w.input("dicom")), w.inputs / "other"
    if not other.exists():
        write_dicom_series(other, np.zeros((4, 40, 48), np.int16), (0.8, 0.9), 2.5)
    others = headers(other)
    path = write_report(w.inputs / name, lines(series, others), series + others, volumes)
    w.refresh()
    return path


def dicom_segment(w, *extra, prompts, output="seg.dcm"):
    return segment(w, *extra, image=w.input("dicom"), prompts=prompts, output=output)


REFUSED_DICOM = [
    ("SR with no lengths", lambda w: dicom_segment(w, prompts=recist_report(w, "none.dcm", lambda s, o: [], [1.5])),
     r"prompt file .*none.dcm holds no length drawn as a line on an image"),
    ("SR length on a missing instance", lambda w: dicom_segment(w, prompts=recist_report(
        w, "elsewhere.dcm", lambda s, o: [Line(s[1], [[20, 12], [30, 12]], tracking="T1"),
                                          Line(o[2], [[20, 12], [30, 12]], tracking="T2")])),
     r"elsewhere.dcm: measurement group 2 \(T2\), Long axis: the line lies on instance [\d.]+, which is not in the "
     r"DICOM series in .*dicom"),
    ("SR polyline of three points", lambda w: dicom_segment(w, prompts=recist_report(
        w, "bent.dcm", lambda s, o: [Line(s[1], [[20, 12], [25, 18], [30, 12]])])),
     r"bent.dcm: measurement group 1, Long axis: a POLYLINE of 3 point\(s\); a RECIST length is a POLYLINE of two"),
    ("non-DICOM file named .dcm as prompts", lambda w: dicom_segment(w, prompts=w.add("reads.dcm", "{}")),
     r"prompt file .*reads.dcm is not a DICOM file \(no DICM mark at byte 128\)"),
    ("DICOM image given as prompts", lambda w: dicom_segment(w, prompts=w.input("dicom") / "slice1.dcm"),
     r"prompt file .*slice1.dcm is a DICOM CT without report content, not a structured report"),
    ("SR for a NIfTI image", lambda w: segment(w, prompts=recist_report(
        w, "reads.dcm", lambda s, o: [Line(s[1], [[20, 12], [30, 12]])])),
     r"prompt file reads.dcm is a DICOM SR: its lines lie on the images of a DICOM series, so the image must be"),
    ("SEG output for a NIfTI image", lambda w: segment(w, output="seg.dcm"),
     r"output .*seg.dcm: a DICOM SEG or SR refers to the images of a DICOM series, and the image is not one"),
    ("--sr without a SEG", lambda w: dicom_segment(w, "--sr", w.out / "sr.dcm", prompts=w.input("dicom_prompts.json"),
                                                   output="x.seg.nrrd"),
     r"--sr .*sr.dcm: the report refers to the segments of a DICOM SEG; give -o a .dcm name"),
    ("--sr is the SEG", lambda w: dicom_segment(w, "--sr", w.out / "seg.dcm", prompts=w.input("dicom_prompts.json")),
     r"--sr .*seg.dcm is the -o file; the SR and the SEG are two files"),
]
REFUSED = REFUSED_BEFORE_THE_MODEL + REFUSED_COMMANDS + REFUSED_ROUND_TWO + REFUSED_DICOM


@pytest.mark.slow
@pytest.mark.parametrize("make, message", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_refused_before_the_model_loads(work, cli, make, message):
    argv = make(work)
    outputs_before = sorted(work.out.iterdir())
    outcome = cli(*argv)
    assert outcome.code == 2, outcome.stderr
    assert re.search(message, outcome.message), outcome.message
    assert outcome.model_loads == 0 and outcome.stdout == ""
    assert sorted(work.out.iterdir()) == outputs_before  # nothing written


def code_pickle(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    return pickle.dumps({"image_encoder.weight": Payload()})


CHECKPOINTS = [
    ("missing", lambda w: w.inputs / "absent.pth", "checkpoint .*absent.pth does not exist"),
    ("garbage", lambda w: w.add("garbage.pth", b"\x00\x01 not a checkpoint" * 10),
     "is not a readable PyTorch checkpoint"),
    ("empty", lambda w: w.add("empty.pth", b""), "is not a readable PyTorch checkpoint"),
    ("pickled code", lambda w: w.add("evil.pth", code_pickle(w.root / "ran")), "refused for safety"),
    ("another architecture", lambda w: embedded_lite_checkpoint(), "is not a medsam-vit-b .* checkpoint: "),
]


@pytest.mark.slow
@pytest.mark.parametrize("make, message", [c[1:] for c in CHECKPOINTS], ids=[c[0] for c in CHECKPOINTS])
def test_bad_checkpoints_are_refused_and_no_code_runs(work, cli, make, message):
    outcome = cli(*segment(work, "--model", "medsam-vit-b", "--checkpoint", make(work)))
    assert outcome.code == 2, outcome.stderr
    assert re.search(message, outcome.message), outcome.message
    assert not (work.root / "ran").exists()  # the pickled os.system never ran
    assert list(work.out.iterdir()) == []


# ---- faults while writing (defect 2): the run fails with one line and leaves no file ----

def write_nothing(image, path, *args, **kwargs):
    Path(path).write_bytes(b"")  # what SimpleITK does on a full disk, without an error


def write_half(real):
    def write(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:len(data) // 2])
    return write


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow
@pytest.mark.parametrize("output, patch, message", [
    ("x.nii.gz", lambda m: m.setattr(sitk, "WriteImage", write_nothing), "nothing was written"),
    ("x.mha", lambda m: m.setattr(sitk, "WriteImage", write_half(sitk.WriteImage)), "does not read back as written"),
    ("x.seg.nrrd", lambda m: m.setattr(slicerio, "write_segmentation", disk_full), "No space left on device"),
    ("x.nii.gz", lambda m: m.setattr(output_files.os, "fsync", disk_full), "No space left on device"),
], ids=["silent empty .nii.gz", "truncated .mha", ".seg.nrrd ENOSPC", "fsync ENOSPC"])
def test_a_failed_write_is_an_error_and_leaves_no_file(work, cli, monkeypatch, output, patch, message):
    patch(monkeypatch)
    outcome = cli(*segment(work, output=output))
    assert outcome.code == 2
    assert re.search(rf"cannot write .*{re.escape(output)}: .*{message}", outcome.message), outcome.message
    assert "wrote" not in outcome.stdout
    assert list(work.out.iterdir()) == []


@pytest.fixture
def full_disk(tmp_path):
    """A real 64 kB filesystem, filled to the last byte (needs root; skipped elsewhere)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    try:
        with open(mount / "filler", "wb", buffering=0) as stream:
            try:
                while stream.write(b"\0" * 4096):
                    pass
            except OSError:  # ENOSPC: full
                pass
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("output", ["x.nii.gz", "x.mha", "x.seg.nrrd"])
def test_a_really_full_disk_is_an_error_and_leaves_no_file(work, cli, full_disk, output):
    outcome = cli(*segment(work, "-o", full_disk / output))
    assert outcome.code == 2
    assert re.search(rf"cannot write .*{re.escape(output)}", outcome.message), outcome.message
    assert "wrote" not in outcome.stdout
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# ---- interrupts: no output, no partial file ----

def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["segmenting", "writing"])
def test_an_interrupt_leaves_no_output(work, cli, monkeypatch, where):
    if where == "segmenting":
        monkeypatch.setattr(SegmentationSession, "segment", interrupt)
    else:
        monkeypatch.setattr(sitk, "WriteImage", interrupt)
    outcome = cli(*segment(work, output="x.nii.gz"))
    assert outcome.code == 130 and outcome.message == "interrupted"
    assert list(work.out.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2], ids=["Ctrl+C", "Ctrl+C twice, 0.1 s apart"])
def test_ctrl_c_in_a_real_process_leaves_no_output(work, presses):
    """A second Ctrl+C during the first one's clean-up is ignored: no abort, no traceback from a closing bar."""
    argv = segment(work, output="x.seg.nrrd")
    argv.remove("--quiet")  # the progress bar says when segmentation has begun
    run = EngineProcess(argv)
    run.wait_for_stderr(b"segmenting slices")
    run.signal(*[signal.SIGINT] * presses, gap=0.1)
    code, stderr = run.finish()
    assert code == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "terminate called" not in stderr
    assert stderr.rstrip().splitlines()[-1].split("\r")[-1] == "medsam-slicer: error: interrupted"
    assert list(work.out.iterdir()) == []


def test_an_image_with_no_finite_voxel_is_refused(work, cli):
    image = read_image(work.input("ct.nii.gz"))
    write_image(work.out / "nan.mha", np.full(image.array.shape, np.nan, np.float32), image.geometry)
    nan_image = work.add("nan.mha", (work.out / "nan.mha").read_bytes())
    (work.out / "nan.mha").unlink()
    outcome = cli(*segment(work, image=nan_image))
    assert outcome.code == 2 and outcome.message == f"image {nan_image} holds no finite voxel (all NaN or infinite)"
    assert outcome.model_loads == 0  # refused when read, before the model loads
    assert list(work.out.iterdir()) == []


# ---- input that is valid, or recoverable with a warning: the right result, said once ----

@pytest.mark.slow
def test_a_nan_voxel_does_not_change_the_result(work, cli):
    image = read_image(work.input("ct.nii.gz"))
    poisoned = image.array.astype(np.float32)
    poisoned[0, 0, 0] = np.nan  # air, far from the lesion, as outside the field of view of a resampled scan
    poisoned[-1, -1, -1] = np.inf
    write_image(work.out / "poisoned.mha", poisoned, image.geometry)
    nan_image = work.add("poisoned.mha", (work.out / "poisoned.mha").read_bytes())
    (work.out / "poisoned.mha").unlink()
    clean = cli(*segment(work, "--window", "400,40", output="clean.nii.gz"))
    outcome = cli(*segment(work, "--window", "400,40", output="nan.nii.gz", image=nan_image))
    assert clean.code == 0 and outcome.code == 0, outcome.stderr
    assert outcome.warning_lines == ["medsam-slicer: warning: 2 non-finite voxel(s) (NaN or infinite) are treated as "
                                     "the lowest intensity (0 after normalisation); the other voxels are normalised "
                                     "without them"]
    with_nan, without = (read_image(work.out / name).array for name in ("nan.nii.gz", "clean.nii.gz"))
    assert without.sum() > 50
    np.testing.assert_array_equal(with_nan, without)
    assert outcome.stdout.splitlines()[0] == clean.stdout.splitlines()[0]  # the same slices, mL and diameter
    auto = cli(*segment(work, output="auto.nii.gz", image=nan_image))  # auto still sees a CT (min -1000 HU)
    assert "window:400:40" in auto.stdout


@pytest.mark.slow
def test_a_zero_length_short_axis_keeps_the_whole_file_with_one_warning(work, cli):
    targets = [{"type": "recist", "slice": 2, "long_axis": [[20, 14], [32, 22]], "short_axis": [[26, 18], [26, 18]],
                "label": 1}] + [{"type": "recist", "slice": 2 + n % 2, "long_axis": [[18, 12], [34, 24]],
                                 "short_axis": [[24, 22], [28, 13]], "label": n} for n in range(2, 13)]
    outcome = cli(*segment(work, prompts=prompt_file(work, "twelve.json", *targets)))
    assert outcome.code == 0, outcome.stderr
    assert len(outcome.warning_lines) == 1
    assert "prompt 1 (recist on slice 2): the short axis has zero length" in outcome.warning_lines[0]
    assert [line.split(":")[0] for line in outcome.stdout.splitlines()[:12]] == [f"label {n}" for n in range(1, 13)]


@pytest.mark.slow
def test_a_failing_cache_folder_is_a_warning_not_a_lost_run(work, cli, monkeypatch):
    monkeypatch.setattr(EmbeddingCache, "_write", disk_full)
    outcome = cli(*segment(work, "--cache-dir", work.out / "cache", output="x.nii.gz"))
    assert outcome.code == 0, outcome.stderr
    assert len(outcome.warning_lines) == 1
    assert re.search(r"embedding cache folder .*cache cannot be written \(No space left on device\); embeddings are "
                     "kept in memory only", outcome.warning_lines[0])
    assert read_image(work.out / "x.nii.gz").array.sum() > 50


def test_a_prompt_file_with_a_byte_order_mark_is_read(work, cli):
    text = work.input("prompts.json").read_text(encoding="utf-8")
    marked = work.add("bom.json", b"\xef\xbb\xbf" + text.encode("utf-8"))
    plain, bom = (cli(*segment(work, prompts=p, output=f"{p.stem}.nii.gz"))
                  for p in (work.input("prompts.json"), marked))
    assert plain.code == bom.code == 0, bom.stderr
    np.testing.assert_array_equal(read_image(work.out / "bom.nii.gz").array,
                                  read_image(work.out / "prompts.nii.gz").array)


def test_labels_above_65535_fit_a_label_image(work, cli):
    outcome = cli(*segment(work, output="x.nii.gz", prompts=prompt_file(work, "big.json", {**BOX, "label": 70000})))
    assert outcome.code == 0, outcome.stderr
    written = read_image(work.out / "x.nii.gz").array
    assert written.dtype == np.uint32 and set(np.unique(written)) == {0, 70000}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_take_the_mode_the_umask_gives(work, cli, umask, mode):
    old = os.umask(umask)
    try:
        outcome = cli(*segment(work, output="x.seg.nrrd"))
    finally:
        os.umask(old)
    assert outcome.code == 0, outcome.stderr
    assert (work.out / "x.seg.nrrd").stat().st_mode & 0o777 == mode


@pytest.mark.slow
def test_many_boxes_on_a_slice_are_decoded_in_batches_with_progress_per_box(work, cli):
    boxes = [{**BOX, "box": [16 + n % 4, 8 + n % 5, 34 + n % 3, 26 + n % 2]} for n in range(100)]
    argv = segment(work, prompts=prompt_file(work, "crowd.json", *boxes))
    argv.remove("--quiet")
    outcome = cli(*argv)
    assert outcome.code == 0, outcome.stderr
    assert "/100 [" in outcome.stderr and "box/s" in outcome.stderr  # counted in boxes: one slice, 100 boxes


def test_an_existing_output_that_is_not_an_input_is_replaced_whole(work, cli):
    (work.out / "x.nii.gz").write_text("an older result")
    outcome = cli(*segment(work, output="x.nii.gz"))
    assert outcome.code == 0, outcome.stderr
    assert read_image(work.out / "x.nii.gz").array.sum() > 50


# ---- evaluate (defect 9, and the error on its own line) ----

def labelled_pair(w, name, labels):
    image = read_image(w.input("ct.nii.gz"))
    for folder, array in (("images", image.array), ("labels", labels)):
        write_image(w.out / "staging.nii.gz", array, image.geometry)
        w.add(f"{folder}/{name}", (w.out / "staging.nii.gz").read_bytes())
    (w.out / "staging.nii.gz").unlink()


@pytest.mark.slow
def test_evaluate_refuses_non_integer_labels_on_a_line_of_its_own(work, cli):
    truth = read_image(work.input("truth.nii.gz")).array
    labelled_pair(work, "a_good.nii.gz", truth.astype(np.uint8))
    labelled_pair(work, "b_float.nii.gz", truth.astype(np.float32) * 0.5)
    argv = ["evaluate", "--images", work.input("images"), "--labels", work.input("labels"), "-o", work.out / "report"]
    outcome = cli(*argv)
    assert outcome.code == 2
    assert outcome.message == "labels b_float.nii.gz hold non-integer values; a label volume holds label numbers"
    assert not (work.out / "report" / "scores.csv").exists()


@pytest.mark.slow
def test_evaluate_takes_whole_valued_float_labels(work, cli):
    labelled_pair(work, "case.nii.gz", read_image(work.input("truth.nii.gz")).array.astype(np.float32))
    outcome = cli("evaluate", "--images", work.input("images"), "--labels", work.input("labels"), "-o", work.out / "r")
    assert outcome.code == 0, outcome.stderr
    assert "label 1" in outcome.stdout


# ---- round two (issue 23): input that is valid, or failures that must say the truth ----

@pytest.mark.parametrize("name", ["scan.nii.nii.gz", "scan.nii.gz.nii.gz", "scan.img.nii"])
def test_an_output_named_with_two_extensions_is_written_by_its_last_one(work, cli, name):
    outcome = cli(*segment(work, output=name))
    assert outcome.code == 0, outcome.stderr
    assert os.listdir(work.out) == [name]  # nothing beside it: no partial file, no .hdr of a guessed Analyze pair
    assert read_image(work.out / name).array.sum() > 50


def latin1(*parts: bytes) -> Path:
    """A path whose names are Latin-1 bytes, as Python holds names that are not UTF-8."""
    return Path(os.fsdecode(os.path.join(*parts)))


@pytest.mark.slow
def test_file_names_that_are_not_utf8_are_read_and_written(work, cli):
    folder = latin1(os.fsencode(work.inputs), b"d\xe9p\xf4t")
    folder.mkdir()
    shutil.copy(work.input("ct.nii.gz"), folder / latin1(b"sc\xe9n.nii.gz"))
    series = folder / latin1(b"s\xe9rie")
    shutil.copytree(work.input("dicom"), series)
    (series / "slice2.dcm").rename(series / latin1(b"co\xfbpe2.dcm"))
    outputs = latin1(os.fsencode(work.out), b"r\xe9sultats")
    work.refresh()
    plain = cli(*segment(work, output="plain.nii.gz"))
    outcome = cli(*segment(work, "-o", outputs / latin1(b"\xe9.nii.gz"), image=folder / latin1(b"sc\xe9n.nii.gz")))
    dicom = cli(*segment(work, "-o", outputs / "series.seg.nrrd", image=series, prompts="dicom_prompts.json"))
    assert plain.code == outcome.code == dicom.code == 0, outcome.stderr + dicom.stderr
    assert outcome.stdout.splitlines()[0] == plain.stdout.splitlines()[0]
    assert "\\udce9.nii.gz" in outcome.stdout  # the name that is not UTF-8, shown escaped
    np.testing.assert_array_equal(read_image(outputs / latin1(b"\xe9.nii.gz")).array,
                                  read_image(work.out / "plain.nii.gz").array)
    assert slicerio.read_segmentation(str(outputs / "series.seg.nrrd"))["voxels"].sum() > 0


def test_the_measurements_printed_are_those_of_the_file_written(work, cli):
    """Two targets on the same box: their probabilities tie on every voxel, which the lower label takes (targets never
    share a voxel), in a label image and a .seg.nrrd alike; what is printed is what was written."""
    both = prompt_file(work, "both.json", {**BOX, "label": 1}, {**BOX, "label": 2})
    for output in ("x.nii.gz", "x.seg.nrrd"):
        outcome = cli(*segment(work, output=output, prompts=both))
        assert outcome.code == 0, outcome.stderr
        printed = dict(re.findall(r"^label (\d+): \d+ slices, ([\d.]+) mL", outcome.stdout, re.M))
        assert printed["2"] == "0.00" and printed["1"] != "0.00"
        if output == "x.nii.gz":
            written = read_image(work.out / output).array
            assert (written == 2).sum() == 0
            assert float(printed["1"]) == pytest.approx((written == 1).sum() * 0.8 * 0.9 * 2.5 / 1000, abs=0.005)


def nan_checkpoint(w) -> Path:
    import torch

    state = torch.load(embedded_lite_checkpoint(), map_location="cpu", weights_only=True)
    weights = state.get("model", state)
    name = next(key for key, value in weights.items() if value.is_floating_point())
    weights[name] = torch.full_like(weights[name], float("nan"))
    path = w.inputs / "diverged.pth"
    torch.save(state, path)
    w.refresh()
    return path


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_tensor(work, cli):
    outcome = cli(*segment(work, "--checkpoint", nan_checkpoint(work), output="x.nii.gz"))
    assert outcome.code == 2, outcome.stderr
    assert re.fullmatch(r"checkpoint .*diverged.pth: tensor '[\w.]+' holds NaN or infinite weights \(what a diverged "
                        r"training run writes\); the model would answer with empty masks", outcome.message)
    assert list(work.out.iterdir()) == []


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_an_export_cache_that_cannot_be_written_is_a_warning(work, cli, monkeypatch, fault):
    """The model runs from memory (PyTorch) when its network exports cannot be kept."""
    if fault == "read-only":
        monkeypatch.setenv("MEDSAM_SLICER_CACHE", str(read_only_folder()))
    else:
        import torch
        monkeypatch.setenv("MEDSAM_SLICER_CACHE", str(work.root / "exports"))
        monkeypatch.setattr(torch.onnx, "export", disk_full)
    outcome = cli(*segment(work, "--checkpoint", embedded_lite_checkpoint(), output="x.nii.gz"))
    assert outcome.code == 0, outcome.stderr
    assert len(outcome.warning_lines) == 1
    reason = "No space left on device" if fault == "full" else "Operation not permitted|Read-only file system"
    assert re.search(rf"network export folder .* cannot be written \(({reason})\); the networks run in PyTorch",
                     outcome.warning_lines[0])
    assert "cpu/torch/fp32" in outcome.stdout
    assert read_image(work.out / "x.nii.gz").array.sum() > 50


def test_a_full_standard_output_is_named_as_such(work, cli, monkeypatch):
    full = open("/dev/full", "w")
    monkeypatch.setattr(sys, "stdout", full)
    try:
        outcome = cli(*segment(work, output="x.nii.gz"))
    finally:
        with contextlib.suppress(OSError):
            full.close()
    assert outcome.code == 2
    assert outcome.message == "cannot write to standard output: No space left on device"
    assert read_image(work.out / "x.nii.gz").array.sum() > 50  # the result was written whole before the report


@pytest.mark.parametrize("name, make, reason", [
    ("bad.png", lambda w: b"\x89PNG\r\n\x1a\n" + b"junk" * 20, "the PNG reader failed"),
    ("cut.mha", lambda w: mha_bytes(w)[:3000], "the MetaImage reader failed"),
])
def test_an_unreadable_image_is_one_line_in_the_users_words(work, name, make, reason):
    """In a real process: nothing of ITK's, libpng's or MetaImage's own printing reaches the terminal."""
    image = work.add(name, make(work))
    run = EngineProcess(segment(work, output="x.nii.gz", image=image))
    code, stderr = run.finish()
    assert code == 2
    assert stderr == f"medsam-slicer: error: cannot read image {image}: the file is damaged or incomplete ({reason})\n"
    assert list(work.out.iterdir()) == []


def mha_bytes(w) -> bytes:
    write_image(w.out / "staging.mha", read_image(w.input("ct.nii.gz")).array,
                read_image(w.input("ct.nii.gz")).geometry)
    data = (w.out / "staging.mha").read_bytes()
    (w.out / "staging.mha").unlink()
    return data


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_signal_while_writing_leaves_no_partial_file(work, stop):
    """A scheduler's SIGTERM is treated as Ctrl+C: the partial file being written is deleted."""
    number, status, message = STOP_SIGNALS[stop]
    marker = work.root / "writing"
    run = EngineProcess(segment(work, output="x.nii.gz"), stalling_patch("SimpleITK", "WriteImage", marker))
    run.wait_for_file(marker)
    assert [p.name.startswith(".partial-") for p in work.out.iterdir()] == [True]  # caught while one exists
    run.signal(number)
    code, stderr = run.finish()
    assert code == status, stderr
    assert stderr.rstrip().splitlines()[-1] == f"medsam-slicer: error: {message}"
    assert list(work.out.iterdir()) == []
