"""Bad input and faults against ``medsam-slicer batch``: no case is lost, misplaced or written over an input.

As in ``test_bad_input.py``, every case asserts the exit status, the one-line message, and (through
the ``work`` fixture) that no input file changed and no partial file is left.
"""

import csv
import json
import os
import re

import pytest
import SimpleITK as sitk

from bad_input_harness import STOP_SIGNALS, EngineProcess, stalling_patch
from MedSAMSlicerLib.cases import cohort_segmentation

pytestmark = pytest.mark.slow  # real models on whole volumes: CI runs it, the inner loop (-m "not slow") does not


def cohort(w, names=("a_case", "b_case", "c_case")):
    """Image and prompt folders holding the phantom under several case names."""
    for name in names:
        w.add(f"images/{name}.nii.gz", w.input("ct.nii.gz").read_bytes())
        w.add(f"prompts/{name}.json", w.input("prompts.json").read_bytes())
    return ["batch", "--images", w.input("images"), "--prompts", w.input("prompts"), "--quiet"]


def duplicate_names(w):
    """Two images whose file names differ only in their format: one case name."""
    argv = cohort(w, ["dup"])
    w.add("images/dup.nrrd", w.input("ct.nii.gz").read_bytes())
    return argv


def detached_cohort(w):
    """A cohort CSV whose image is an .nhdr with its data file in the folder ``data``."""
    sitk.WriteImage(sitk.ReadImage(str(w.input("ct.nii.gz"))), str(w.inputs / "ct.nhdr"))
    (w.inputs / "data").mkdir()
    (w.inputs / "ct.raw").rename(w.inputs / "data" / "ct.raw")
    header = w.inputs / "ct.nhdr"
    header.write_text(header.read_text().replace("data file: ct.raw", "data file: data/ct.raw"))
    return w.add("cases.csv", "image,prompts\nct.nhdr,prompts.json\n")


def summary(folder):
    with open(folder / "summary.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.parametrize("make, message", [
    (lambda w: cohort(w) + ["-o", w.input("images")], "output folder .*images holds the input .*a_case.nii.gz"),
    (lambda w: cohort(w) + ["-o", w.input("prompts"), "--format", ".nrrd"], "output folder .*prompts holds the input"),
    (lambda w: cohort(w) + ["-o", w.inputs / "images" / ".." / "prompts"], "holds the input"),
    (lambda w: cohort(w) + ["-o", w.add("a_file", "x")], "output folder .*a_file is a file; give a folder"),
    (lambda w: cohort(w) + ["-o", w.add("a_file", "x") / "below"], "a_file is a file, not a folder"),
    (lambda w: duplicate_names(w) + ["-o", w.out], "images dup.nii.gz and dup.nrrd .* have the same case name 'dup'"),
    (lambda w: ["batch", "--csv", w.add("cases.csv", "case,image,prompts\n../../escaped,ct.nii.gz,prompts.json\n"),
                "-o", w.out / "results"], r"line 2: case name '\.\./\.\./escaped' must be a plain file name"),
    (lambda w: ["batch", "--csv", w.add("cases.csv", "case,image,prompts\nsub/dir,ct.nii.gz,prompts.json\n"),
                "-o", w.out / "results"], "case name 'sub/dir' must be a plain file name"),
    (lambda w: ["batch", "--csv", w.add("cases.csv", "case,image,prompts\n..,ct.nii.gz,prompts.json\n"),
                "-o", w.out / "results"], r"case name '\.\.' must be a plain file name"),
    (lambda w: ["batch", "--csv", w.add("cases.csv", "image,prompts\nct.nii.gz,prompts.json\n"), "-o", w.inputs],
     "holds the input"),
    (lambda w: ["batch", "--csv", detached_cohort(w), "-o", w.inputs / "data"],
     "output folder .*data holds the input .*ct.nhdr"),
], ids=["-o the images folder", "-o the prompts folder", "-o the prompts folder by ..", "-o a file",
        "-o below a file", "two images, one case name", "CSV case escaping -o", "CSV case with a folder",
        "CSV case ..", "-o the CSV's folder", "-o the folder of an .nhdr's data file"])
def test_refused_before_the_model_loads(work, cli, make, message):
    argv = make(work)
    outputs_before = sorted(work.root.rglob("*"))
    outcome = cli(*argv)
    assert outcome.code == 2, outcome.stderr
    assert re.search(message, outcome.message), outcome.message
    assert outcome.model_loads == 0
    assert sorted(work.root.rglob("*")) == outputs_before  # nothing written anywhere, inside -o or out of it


def test_an_unexpected_error_in_one_case_is_recorded_and_the_cohort_goes_on(work, cli, monkeypatch):
    real = cohort_segmentation.segment_case

    def failing_for_a(case, output, *args, **kwargs):
        if output.name.startswith("a_case"):
            raise OverflowError("Python integer 70000 out of bounds for uint16")
        return real(case, output, *args, **kwargs)

    monkeypatch.setattr(cohort_segmentation, "segment_case", failing_for_a)
    outcome = cli(*cohort(work), "-o", work.out, "--format", ".nii.gz")
    assert outcome.code == 2
    assert outcome.message == "1 case(s) failed, reasons in their .error.txt files: a_case"
    assert (work.out / "a_case.error.txt").read_text(encoding="utf-8") == (
        "OverflowError: Python integer 70000 out of bounds for uint16\n")
    assert sorted(p.name for p in work.out.glob("*.nii.gz")) == ["b_case.nii.gz", "c_case.nii.gz"]
    rows = summary(work.out)
    assert [(row["case"], row["error"]) for row in rows] == [
        ("a_case", "OverflowError: Python integer 70000 out of bounds for uint16"), ("b_case", ""), ("c_case", "")]
    assert all(float(row["volume_ml"]) > 0 for row in rows[1:])
    monkeypatch.setattr(cohort_segmentation, "segment_case", real)  # the cause fixed, a rerun does only a_case
    again = cli(*cohort(work), "-o", work.out, "--format", ".nii.gz")
    assert again.code == 0 and "1 segmented, 2 already done, 0 failed" in again.stdout
    assert not (work.out / "a_case.error.txt").exists()
    assert [row["error"] for row in summary(work.out)] == ["", "", ""]


def test_a_case_with_bad_prompts_is_recorded_and_the_others_go_on(work, cli):
    argv = cohort(work)
    work.add("prompts/b_case.json", json.dumps({"prompts": [{"type": "box", "slice": 99, "box": [1, 1, 5, 5]}]}))
    outcome = cli(*argv, "-o", work.out)
    assert outcome.code == 2 and "b_case" in outcome.message
    assert "slice 99 is outside 0-5" in (work.out / "b_case.error.txt").read_text(encoding="utf-8")
    assert sorted(p.name for p in work.out.glob("*.seg.nrrd")) == ["a_case.seg.nrrd", "c_case.seg.nrrd"]
    assert [row["case"] for row in summary(work.out) if row["error"]] == ["b_case"]


def test_an_interrupt_keeps_the_finished_cases_and_their_summary(work, cli, monkeypatch):
    real = cohort_segmentation.segment_case

    def interrupted_at_b(case, output, *args, **kwargs):
        if output.name.startswith("b_case"):
            raise KeyboardInterrupt
        return real(case, output, *args, **kwargs)

    monkeypatch.setattr(cohort_segmentation, "segment_case", interrupted_at_b)
    outcome = cli(*cohort(work), "-o", work.out)
    assert outcome.code == 130 and outcome.message == "interrupted"
    assert sorted(p.name for p in work.out.iterdir()) == ["a_case.json", "a_case.seg.nrrd", "summary.csv"]
    assert [row["case"] for row in summary(work.out)] == ["a_case"]


def test_csv_cases_with_plain_names_land_inside_the_output_folder(work, cli):
    table = work.add("cases.csv", "case,image,prompts\nfirst,ct.nii.gz,prompts.json\n")
    outcome = cli("batch", "--csv", table, "-o", work.out / "results", "--quiet")
    assert outcome.code == 0, outcome.stderr
    assert sorted(p.name for p in (work.out / "results").iterdir()) == ["first.json", "first.seg.nrrd", "summary.csv"]


# ---- round two (issue 23): no case lost because of another, nothing left behind ----

def test_long_case_names_do_not_stop_the_cohort(work, cli):
    """Names so long that a case's own files (NAME.error.txt) would not fit are shortened; the JSON keeps the name."""
    long_a, long_b = "a" * 246, "b" * 248  # image files of 253 and 255 characters, the most a name may have
    argv = cohort(work, [long_a, long_b, "c_case"])
    work.add(f"prompts/{long_a}.json", json.dumps({"prompts": [{"type": "box", "slice": 99, "box": [1, 1, 5, 5]}]}))
    outcome = cli(*argv, "-o", work.out)
    assert outcome.code == 2 and outcome.message.startswith("1 case(s) failed") and long_a in outcome.message
    errors = list(work.out.glob("*.error.txt"))
    assert len(errors) == 1 and errors[0].name.startswith("a" * 200) and len(errors[0].name) <= 255
    assert "slice 99 is outside 0-5" in errors[0].read_text(encoding="utf-8")
    rows = summary(work.out)
    assert [row["case"] for row in rows if not row["error"]] == [long_b, "c_case"]
    assert all(float(row["volume_ml"]) > 0 for row in rows if not row["error"])
    again = cli(*argv, "-o", work.out)
    assert "0 segmented, 2 already done, 1 failed" in again.stdout  # the shortened names are found again


def test_a_300_character_csv_case_name_is_segmented(work, cli):
    name = "c" * 300
    table = work.add("cases.csv", f"case,image,prompts\n{name},ct.nii.gz,prompts.json\nshort,ct.nii.gz,prompts.json\n")
    outcome = cli("batch", "--csv", table, "-o", work.out, "--quiet")
    assert outcome.code == 0, outcome.stderr
    assert [row["case"] for row in summary(work.out)] == [name, "short"]


def test_a_lone_surrogate_in_a_prompt_is_that_cases_failure_only(work, cli):
    argv = cohort(work)
    work.add("prompts/b_case.json", '{"prompts": [{"type": "\\ud800", "slice": 2, "box": [18, 10, 34, 26]}]}')
    outcome = cli(*argv, "-o", work.out)
    assert outcome.code == 2 and outcome.message == "1 case(s) failed, reasons in their .error.txt files: b_case"
    assert "got '\\ud800'" in (work.out / "b_case.error.txt").read_text(encoding="utf-8")
    assert [row["case"] for row in summary(work.out) if not row["error"]] == ["a_case", "c_case"]


def test_an_image_whose_name_is_not_utf8_is_segmented(work, cli):
    name = os.fsdecode(b"sc\xe9n")
    argv = cohort(work, [name, "plain"])
    outcome = cli(*argv, "-o", work.out)
    assert outcome.code == 0, outcome.stderr
    assert [row["case"] for row in summary(work.out)] == ["plain", "sc\\udce9n"]  # escaped in the UTF-8 summary
    assert (work.out / f"{name}.seg.nrrd").is_file()


def test_an_excel_csv_with_a_byte_order_mark_is_read(work, cli):
    table = work.add("cases.csv", "\ufeffcase,image,prompts\nfirst,ct.nii.gz,prompts.json\n".encode("utf-8"))
    outcome = cli("batch", "--csv", table, "-o", work.out, "--quiet")
    assert outcome.code == 0, outcome.stderr
    assert [row["case"] for row in summary(work.out)] == ["first"]


def test_a_case_named_like_an_image_file_is_written_under_its_name(work, cli):
    table = work.add("cases.csv", "case,image,prompts\nscan.nii,ct.nii.gz,prompts.json\n")
    outcome = cli("batch", "--csv", table, "-o", work.out, "--format", ".nii.gz", "--quiet")
    assert outcome.code == 0, outcome.stderr
    assert sorted(p.name for p in work.out.iterdir()) == ["scan.nii.json", "scan.nii.nii.gz", "summary.csv"]
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(work.out / "scan.nii.nii.gz"))).sum() > 50


def test_the_summary_holds_the_volumes_of_the_files_written(work, cli):
    """Two targets on one box: their probabilities tie on every voxel, which the lower label takes (targets never
    share a voxel, ``contested_voxels``), and the summary says label 2 has none."""
    argv = cohort(work, ["overlap"])
    box = {"type": "box", "slice": 2, "box": [18, 10, 34, 26]}
    work.add("prompts/overlap.json", json.dumps({"prompts": [{**box, "label": 1}, {**box, "label": 2}]}))
    outcome = cli(*argv, "-o", work.out, "--format", ".nii.gz")
    assert outcome.code == 0, outcome.stderr
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(work.out / "overlap.nii.gz")))
    volumes = {row["label"]: float(row["volume_ml"]) for row in summary(work.out)}
    assert volumes["2"] == 0 and (written == 2).sum() == 0
    assert volumes["1"] == pytest.approx((written == 1).sum() * 0.8 * 0.9 * 2.5 / 1000) and volumes["1"] > 0


def test_sigterm_keeps_the_finished_cases_and_their_summary(work):
    """A scheduler's SIGTERM stops the cohort as Ctrl+C does: the finished cases and summary.csv stay."""
    number, status, message = STOP_SIGNALS["SIGTERM"]
    marker = work.root / "at_b"
    run = EngineProcess([*cohort(work), "-o", work.out], stalling_patch(
        "MedSAMSlicerLib.cases.cohort_segmentation", "segment_case", marker, "args[1].name.startswith('b_case')",
        first=True))
    run.wait_for_file(marker)
    run.signal(number)
    code, stderr = run.finish()
    assert code == status, stderr
    assert stderr.rstrip().splitlines()[-1] == f"medsam-slicer: error: {message}"
    assert sorted(p.name for p in work.out.iterdir()) == ["a_case.json", "a_case.seg.nrrd", "summary.csv"]
    assert [row["case"] for row in summary(work.out)] == ["a_case"]
