"""A real multi-target cohort: twelve deep brain structures, expert-drawn, on a real single-subject T1 MRI.

    python benchmarks/deep_brain_cohort.py COHORT_DIR [--sample Testing/data/colin27_deep_brain]
    python benchmarks/multiple_targets.py COHORT_DIR      # each target alone and all in one prompt file

A radiologist's prompt file often holds several targets on the same slices, some touching, some
apart. Here they are the caudate, putamen, pallidum, thalamus, hippocampus and amygdala of both
hemispheres: the putamen touches the pallidum and the hippocampus the amygdala, and each structure
faces its twin across the midline on the same axial slices.

Both files come from the Debian package ``mricron-data`` (``apt-get download``, no install):
``ch2.nii.gz``, the Colin27 brain (one subject scanned 27 times and averaged, T1-weighted, 1 mm,
in MNI space), and ``aal.nii.gz``, the AAL atlas (Tzourio-Mazoyer et al., NeuroImage 15, 273-289,
2002), whose regions anatomists drew by hand on that same brain, slice by slice: labels made by
experts, not from thresholds of the intensities the model sees. Licence: see
``Testing/data/colin27_deep_brain/LICENSE.txt``.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from debian_package import extract_debian_package

PACKAGE = "mricron-data"
TEMPLATES = "usr/share/mricron/templates"
CASE = "colin27_t1"
#: our label: (AAL region number, structure); twins next to each other, touching structures in sequence
STRUCTURES = {1: (71, "left caudate"), 2: (72, "right caudate"), 3: (73, "left putamen"), 4: (74, "right putamen"),
              5: (75, "left pallidum"), 6: (76, "right pallidum"), 7: (77, "left thalamus"),
              8: (78, "right thalamus"), 9: (37, "left hippocampus"), 10: (38, "right hippocampus"),
              11: (41, "left amygdala"), 12: (42, "right amygdala")}
#: the test suite's sample: 8 axial slices on which caudate, putamen, pallidum and thalamus of both sides all lie
SAMPLE_SLICES = slice(70, 78)
SAMPLE_LABELS = range(1, 9)


def deep_brain_labels(atlas: np.ndarray) -> np.ndarray:
    """Our labels (``STRUCTURES``) from the AAL region numbers of an atlas array; every other region is 0."""
    labels = np.zeros(atlas.shape, dtype=np.uint8)
    for label, (region, name) in STRUCTURES.items():
        where = atlas == region
        if not where.any():
            raise RuntimeError(f"AAL region {region} ({name}) is missing; has the atlas changed?")
        labels[where] = label
    return labels


def touching_pairs(labels: np.ndarray) -> list:
    """The pairs of labels with voxels face to face (6-connectivity), as ``(lower, higher)``."""
    pairs = set()
    for label in np.unique(labels[labels > 0]):
        rim = ndimage.binary_dilation(labels == label) & (labels > label)
        pairs.update((int(label), int(other)) for other in np.unique(labels[rim]))
    return sorted(pairs)


def write_cohort(output: Path) -> list:
    """The cohort folder: images/colin27_t1.nii.gz, labels/colin27_t1.nii.gz, labels.json; the touching pairs."""
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as folder:
        templates = extract_debian_package(PACKAGE, Path(folder)) / TEMPLATES
        t1, atlas = (sitk.ReadImage(str(templates / name)) for name in ("ch2.nii.gz", "aal.nii.gz"))
    same = (t1.GetSize() == atlas.GetSize() and np.allclose(t1.GetSpacing(), atlas.GetSpacing())
            and np.allclose(t1.GetOrigin(), atlas.GetOrigin()) and np.allclose(t1.GetDirection(), atlas.GetDirection()))
    if not same:
        raise RuntimeError("ch2 and the AAL atlas are no longer on one grid; has the package changed?")
    if t1.GetDirection()[0] >= 0:
        raise RuntimeError("ch2's i axis no longer runs from the left to the right; check the laterality")
    array = deep_brain_labels(sitk.GetArrayFromImage(atlas))
    left, right = (np.nonzero(array == label)[2].mean() for label in (1, 2))
    if not left < right:  # voxel i grows towards the patient's right here, so the left caudate has the smaller i
        raise RuntimeError("the AAL '_L' regions are not on the patient's left; check the laterality")
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(t1)
    for folder, image in (("images", t1), ("labels", labels)):
        (output / folder).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(output / folder / f"{CASE}.nii.gz"), useCompression=True)
    names = {str(label): name for label, (_, name) in STRUCTURES.items()}
    (output / "labels.json").write_text(json.dumps(names, indent=2) + "\n", encoding="utf-8")
    return touching_pairs(array)


def write_sample(cohort: Path, output: Path) -> None:
    """The test suite's sample: ``SAMPLE_SLICES`` of the cohort with ``SAMPLE_LABELS`` only, same geometry."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(cohort / "images" / f"{CASE}.nii.gz"))[:, :, SAMPLE_SLICES.start:SAMPLE_SLICES.stop]
    labels = sitk.ReadImage(str(cohort / "labels" / f"{CASE}.nii.gz"))[:, :, SAMPLE_SLICES.start:SAMPLE_SLICES.stop]
    array = sitk.GetArrayFromImage(labels)
    kept = sitk.GetImageFromArray(np.where(np.isin(array, SAMPLE_LABELS), array, 0).astype(np.uint8))
    kept.CopyInformation(labels)
    output.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(output / "t1.nii.gz"), useCompression=True)
    sitk.WriteImage(kept, str(output / "labels.nii.gz"), useCompression=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="cohort folder: images/, labels/, labels.json")
    parser.add_argument("--sample", type=Path, help="also write the test suite's few-slice sample here")
    args = parser.parse_args()
    pairs = write_cohort(args.output)
    names = {label: name for label, (_, name) in STRUCTURES.items()}
    print(f"wrote {args.output}/images, labels and labels.json ({len(STRUCTURES)} structures); touching: "
          + ", ".join(f"{names[a]} and {names[b]}" for a, b in pairs))
    if args.sample is not None:
        write_sample(args.output, args.sample)
        print(f"wrote {args.sample}/t1.nii.gz and labels.nii.gz "
              f"(slices {SAMPLE_SLICES.start}-{SAMPLE_SLICES.stop - 1}, "
              f"labels {SAMPLE_LABELS.start}-{SAMPLE_LABELS.stop - 1})")


if __name__ == "__main__":
    main()
