"""Bad input and faults against ``medsam-slicer batch``: no case is lost, misplaced or written over an input.

As in ``test_bad_input.py``, every case asserts the exit status, the one-line message, and (through
the ``work`` fixture) that no input file changed and no partial file is left.
"""

import csv
import json
import re

import pytest

from MedSAMSlicerLib.cases import cohort_segmentation


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
], ids=["-o the images folder", "-o the prompts folder", "-o the prompts folder by ..", "-o a file",
        "-o below a file", "two images, one case name", "CSV case escaping -o", "CSV case with a folder",
        "CSV case ..", "-o the CSV's folder"])
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
