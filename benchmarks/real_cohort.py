"""A real MRI evaluation cohort that a fresh machine can fetch: the MNI ICBM152 2009a T1 template and its ventricles.

    python benchmarks/real_cohort.py COHORT_DIR [--sample Testing/data/mni152]
    medsam-slicer evaluate --images COHORT_DIR/images --labels COHORT_DIR/labels \
        --labels-map COHORT_DIR/labels.json --protocol recist-sparse --protocol box-each -o REPORT_DIR

The template (a real T1-weighted MRI, the non-linear average of 152 brains, 1 mm) and its grey-
and white-matter probability maps ship inside the ``nilearn`` wheel on PyPI, which this script
downloads with pip (nothing is installed). The labels are independent of the T1 intensities the
model sees: the left and right lateral ventricles are the two large cerebrospinal-fluid
components inside the brain, CSF being where the tissue maps give grey plus white matter below
0.3. Licence of the images: see ``Testing/data/mni152/LICENSE.txt``.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from scipy import ndimage

NILEARN = "nilearn==0.14.1"
MAPS = {kind: f"nilearn/datasets/data/mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
        for kind in ("t1", "gm", "wm")}
LABELS = {1: "left lateral ventricle", 2: "right lateral ventricle"}
#: the slices of the shipped sample (Testing/data/mni152): both ventricles' bodies, 8 consecutive axial slices
SAMPLE_SLICES = slice(83, 91)
#: a lateral ventricle has about 7000 voxels here; other CSF pockets inside the brain are under 5000 or span the midline
MIN_VENTRICLE_VOXELS = 5000


def ventricle_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Labels (1 left, 2 right lateral ventricle) from grey/white-matter probabilities in [0, 1], ``[k, j, i]``, on
    the template's grid, whose i axis runs from the patient's left to right (see ``write_cohort``)."""
    brain = ndimage.binary_fill_holes(ndimage.binary_closing((gm + wm) > 0.5, iterations=4))
    csf = brain & (gm + wm < 0.3)
    components, count = ndimage.label(csf)
    sizes = ndimage.sum(csf, components, range(1, count + 1))
    extents = ndimage.find_objects(components)
    middle = csf.shape[2] / 2
    labels = np.zeros(csf.shape, dtype=np.uint8)
    for index in np.flatnonzero(sizes >= MIN_VENTRICLE_VOXELS):
        extent = extents[index][2]
        if extent.start < middle < extent.stop:
            continue  # crosses the midline: cisterns and the interhemispheric fissure, not a lateral ventricle
        labels[components == index + 1] = 1 if extent.stop <= middle else 2
    if sorted(np.unique(labels)) != [0, 1, 2]:
        raise RuntimeError("the tissue maps did not give two lateral ventricles; has the template changed?")
    return labels


def fetch_maps(folder: Path) -> dict:
    """Download the nilearn wheel (no install) and extract the T1 and tissue maps into ``folder``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", NILEARN, "-d", str(folder)],
                   check=True)
    wheel = next(folder.glob("nilearn-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        return {kind: Path(archive.extract(member, folder)) for kind, member in MAPS.items()}


def write_cohort(output: Path) -> None:
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as folder:
        paths = fetch_maps(Path(folder))
        t1 = sitk.ReadImage(str(paths["t1"]))
        if t1.GetDirection()[0] >= 0:
            raise RuntimeError("the template's i axis no longer runs from left to right; check the laterality")
        gm, wm = (sitk.GetArrayFromImage(sitk.ReadImage(str(paths[k]))) / 255.0 for k in ("gm", "wm"))
    labels = sitk.GetImageFromArray(ventricle_labels(gm, wm))
    labels.CopyInformation(t1)
    for folder, image in (("images", t1), ("labels", labels)):
        (output / folder).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(output / folder / "mni152_t1.nii.gz"), useCompression=True)
    (output / "labels.json").write_text(json.dumps({str(k): v for k, v in LABELS.items()}, indent=2) + "\n",
                                        encoding="utf-8")


def write_sample(cohort: Path, output: Path) -> None:
    """The test suite's real-image sample: ``SAMPLE_SLICES`` of the cohort's image and labels, same geometry."""
    import SimpleITK as sitk

    output.mkdir(parents=True, exist_ok=True)
    for folder, name in (("images", "t1.nii.gz"), ("labels", "labels.nii.gz")):
        image = sitk.ReadImage(str(cohort / folder / "mni152_t1.nii.gz"))
        start = SAMPLE_SLICES.start
        sitk.WriteImage(image[:, :, start:SAMPLE_SLICES.stop], str(output / name), useCompression=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="cohort folder: images/, labels/, labels.json")
    parser.add_argument("--sample", type=Path, help="also write the test suite's few-slice sample here")
    args = parser.parse_args()
    write_cohort(args.output)
    print(f"wrote {args.output}/images, labels and labels.json ({', '.join(LABELS.values())})")
    if args.sample is not None:
        write_sample(args.output, args.sample)
        print(f"wrote {args.sample}/t1.nii.gz and labels.nii.gz "
              f"(slices {SAMPLE_SLICES.start}-{SAMPLE_SLICES.stop - 1})")


if __name__ == "__main__":
    main()
