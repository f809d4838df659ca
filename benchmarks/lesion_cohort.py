"""A real-image evaluation cohort with inserted lesions, whose masks are therefore known exactly.

    python benchmarks/lesion_cohort.py COHORT_DIR [--seed 0] [--sample Testing/data/mni152_lesion]
    medsam-slicer evaluate --images COHORT_DIR/images --labels COHORT_DIR/labels \
        --labels-map COHORT_DIR/labels.json --protocol recist-sparse -o REPORT_DIR

Expert labels of small structures are scarce; inserting synthetic lesions into real scans is an
accepted way to validate segmentation when they are. Two real head scans, both fetched here on a
fresh machine (nothing is shipped):

* CT: ``Cranium.inv3`` from the Debian package ``invesalius-examples`` (``apt-get download``, no
  install), a head CT (108 axial slices of 256 x 256, 0.957 x 0.957 x 1.5 mm, in HU). It is
  GPL-2, copyright the Centro de Tecnologia da Informacao Renato Archer and the InVesalius
  authors: see ``/usr/share/doc/invesalius-examples/copyright`` in the package.
* MR: the MNI ICBM152 2009a T1 template and its white-matter map, from the nilearn wheel
  (``real_cohort.fetch_maps``; licence in ``Testing/data/mni152/LICENSE.txt``).

Each scan gives ``CASES`` cases of two lesions (labels 1 and 2). A lesion is an ellipsoid with
random axes (longest diameter 10-35 mm, in mm, so anisotropic voxels are handled) and orientation
whose radius is modulated by random low-order polynomials of the direction (spherical-harmonic-like
lobes). It is rendered at ``SUPERSAMPLING``-fold per axis to a partial-volume fraction; the label
is the fraction >= 0.5. The intensity is ``image + w * (contrast * (1 + heterogeneity) + texture)``
with correlated texture of the local tissue's noise level and ``w`` the fraction slightly blurred
like the scanner's point spread. CT lesions are one hyperdense (+25..+50 HU) and one hypodense
(-15..-25 HU) per case, in the parenchyma, at least 3 mm from bone and air; MR lesions are
T1-hypointense (-25..-50 % of the local white matter), about a third with a slightly bright rim,
centred where the white-matter probability is above 0.9 and mostly inside white matter. Lesions do
not overlap and each spans at least ``MIN_SLICES`` axial slices. ``lesions.csv`` lists them.
"""

import argparse
import csv
import json
import plistlib
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

from debian_package import extract_debian_package
from real_cohort import fetch_maps

CT_PACKAGE = "invesalius-examples"
CT_MEMBER = "usr/share/doc/invesalius-examples/examples/Cranium.inv3"
LABELS = {1: "lesion 1", 2: "lesion 2"}
CASES = 3
MIN_SLICES = 6
DIAMETER_MM = (10.0, 35.0)
SUPERSAMPLING = 4
#: fraction of a lesion's label that must lie in its tissue (CT parenchyma, MR white matter)
MIN_IN_TISSUE = 0.85
ATTEMPTS = 2000
#: the test suite's sample (seed 0): this case's lesion, on the axial slices it spans, as label 1
SAMPLE_CASE, SAMPLE_LABEL = "mr_lesions_1", 2


@dataclass
class Scan:
    """A source scan as ``[k, j, i]`` voxels, with the masks that say where a lesion may go."""

    name: str
    image: np.ndarray
    spacing: tuple  # mm along (k, j, i)
    centres: np.ndarray  # where a lesion's centre may be
    footprint: np.ndarray  # where every voxel a lesion touches must be
    tissue: np.ndarray  # the lesion's host tissue: most of its label, and the noise estimate
    blur_mm: float  # the point spread to give a lesion's edge, to match the scan's own edges


def fetch_ct(folder: Path) -> tuple:
    """The InVesalius example head CT as an int16 ``[k, j, i]`` array (rows flipped so the face is at the top, as
    in DICOM: InVesalius keeps VTK's bottom-up rows) and its spacing (x, y, z) in mm."""
    # an .inv3 project is a gzipped tar
    with tarfile.open(extract_debian_package(CT_PACKAGE, folder) / CT_MEMBER) as project:
        members = {Path(m.name).name: m for m in project.getmembers()}
        header = plistlib.load(project.extractfile(members["main.plist"]))
        matrix = header["matrix"]
        raw = project.extractfile(members[matrix["filename"]]).read()
    if header["modality"] != "CT" or len(raw) != np.prod(matrix["shape"]) * np.dtype(matrix["dtype"]).itemsize:
        raise RuntimeError("Cranium.inv3 is not the raw CT matrix this script expects; has the package changed?")
    image = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"]).newbyteorder("<")).reshape(matrix["shape"])
    return np.ascontiguousarray(image[:, ::-1]).astype(np.int16), tuple(header["spacing"])


def ct_scan(image: np.ndarray, spacing_kji: tuple) -> Scan:
    """Brain = the largest soft-tissue component at least 3 mm from bone and air (the skull cuts it off the scalp
    and face); parenchyma = brain at 15..60 HU after a small median, so not CSF, fat or old infarcts."""
    smooth = ndimage.median_filter(image, 3)
    far = [ndimage.distance_transform_edt(~mask, sampling=spacing_kji) >= 3 for mask in (smooth > 150, smooth < -200)]
    soft = ndimage.binary_opening((smooth > 0) & (smooth < 80) & far[0] & far[1], iterations=2)
    components, _ = ndimage.label(soft)
    brain = ndimage.binary_fill_holes(components == np.bincount(components.ravel())[1:].argmax() + 1)
    parenchyma = brain & (smooth >= 15) & (smooth <= 60)
    return Scan("ct", image, spacing_kji, parenchyma, brain, parenchyma, blur_mm=0.5)


def mr_scan(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> Scan:
    """Centres where white matter is certain; a lesion may touch grey matter but not CSF or the outside."""
    return Scan("mr", t1, (1.0, 1.0, 1.0), wm > 0.9, gm + wm > 0.5, wm > 0.5, blur_mm=1.5)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix with the signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def monomials(directions: np.ndarray) -> np.ndarray:
    """Degree 1-4 monomials of unit vectors ``[..., 3]``: on the sphere they span the harmonics of degree <= 4."""
    x, y, z = np.moveaxis(directions, -1, 0)
    return np.stack([x ** a * y ** b * z ** c for a in range(5) for b in range(5) for c in range(5)
                     if 1 <= a + b + c <= 4], axis=-1)


@dataclass
class Shape:
    """An ellipsoid (semi-axes in mm, rotation) whose radius is scaled by ``1 + lobes(direction)``."""

    semi_axes: np.ndarray
    rotation: np.ndarray
    lobes: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Shape":
        longest = rng.uniform(*DIAMETER_MM) / 2 / 1.1  # the lobes reach about 10 % beyond on average
        semi_axes = longest * np.array([1.0, rng.uniform(0.55, 1.0), rng.uniform(0.45, 0.9)])
        lobes = rng.standard_normal(monomials(np.zeros(3)).size)
        sphere = rng.standard_normal((2000, 3))
        lobes *= rng.uniform(0.15, 0.35) / np.abs(monomials(sphere / np.linalg.norm(sphere, axis=1, keepdims=True))
                                                  @ lobes).max()
        return cls(semi_axes, random_rotation(rng), lobes)

    def inside(self, offsets_mm: np.ndarray) -> np.ndarray:
        """Whether points ``[..., 3]`` (mm from the centre, along k, j, i) are inside."""
        scaled = offsets_mm @ self.rotation / self.semi_axes
        radius = np.linalg.norm(scaled, axis=-1)
        return radius < 1 + monomials(scaled / np.maximum(radius, 1e-9)[..., None]) @ self.lobes

    def fraction(self, box: tuple, centre: np.ndarray, spacing: np.ndarray, samples: int) -> np.ndarray:
        """The partial-volume fraction of each voxel of ``box`` (slices) inside, from ``samples``**3 sub-voxels."""
        grid = np.stack(np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij"), axis=-1)
        sub = (np.arange(samples) + 0.5) / samples - 0.5
        total = np.zeros(grid.shape[:-1])
        for shift in np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), axis=-1).reshape(-1, 3):
            total += self.inside((grid + shift - centre) * spacing)
        return total / samples ** 3


def smooth_noise(rng: np.random.Generator, shape: tuple, sigma_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Gaussian-correlated noise of unit standard deviation: lesion texture and heterogeneity."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_mm / spacing)
    return field / field.std()


def longest_diameter(mask: np.ndarray, spacing: np.ndarray) -> float:
    """The largest distance in mm between two voxel centres of ``mask`` (over its convex hull)."""
    points = np.argwhere(mask) * spacing
    return float(pdist(points[ConvexHull(points).vertices]).max())


def insert_lesions(scan: Scan, rng: np.random.Generator, contrasts: list) -> tuple:
    """Place one lesion per ``contrasts`` entry (a callable giving the intensity change from the local tissue's
    median), each where the scan's masks allow, apart from the others; returns image, labels and table rows."""
    spacing = np.asarray(scan.spacing)
    image = scan.image.astype(np.float64)
    labels = np.zeros(image.shape, dtype=np.uint8)
    taken = np.zeros(image.shape, dtype=bool)
    candidates = np.argwhere(scan.centres)
    rows = []
    for label, contrast in enumerate(contrasts, start=1):
        for _ in range(ATTEMPTS):
            shape = Shape.random(rng)
            centre = candidates[rng.integers(len(candidates))]
            reach = np.ceil(shape.semi_axes[0] * 1.5 / spacing).astype(int) + 4
            if np.any(centre - reach < 1) or np.any(centre + reach >= np.array(image.shape) - 1):
                continue
            box = tuple(slice(c - r, c + r + 1) for c, r in zip(centre, reach))
            rough = shape.fraction(box, centre, spacing, 1)  # cheap: voxel centres only
            if not fits(scan, box, rough, taken):
                continue
            box = tuple(slice(s.start + b.start - 3, s.start + b.stop + 3)  # crop to the shape, then supersample
                        for s, b in zip(box, ndimage.find_objects(rough.astype(int))[0]))
            fraction = shape.fraction(box, centre, spacing, SUPERSAMPLING)
            mask = fraction >= 0.5
            if fits(scan, box, fraction, taken):
                diameter = longest_diameter(mask, spacing)
                if DIAMETER_MM[0] <= diameter <= DIAMETER_MM[1]:
                    break
        else:
            raise RuntimeError(f"no place for lesion {label} in {scan.name} after {ATTEMPTS} attempts")
        host = scan.tissue[box] & (fraction == 0)
        local = image[box][host]
        noise = 1.4826 * np.median(np.abs(local - np.median(local)))  # robust std of the surrounding tissue
        change, description = contrast(rng, fraction, np.median(local))
        weight = ndimage.gaussian_filter(fraction, scan.blur_mm / spacing)
        texture = rng.uniform(0.6, 1.0) * noise * smooth_noise(rng, fraction.shape, 0.8, spacing)
        image[box] += weight * (change * (1 + 0.2 * smooth_noise(rng, fraction.shape, 3.0, spacing)) + texture)
        labels[box][mask] = label
        taken[box] |= fraction > 0
        rows.append({"label": label, "centre_kji": " ".join(map(str, centre)),
                     "longest_diameter_mm": round(diameter, 1),
                     "volume_ml": round(mask.sum() * spacing.prod() / 1000, 2), "contrast": description,
                     "slices": int(np.count_nonzero(mask.any(axis=(1, 2))))})
    return cast_like(image, scan.image.dtype), labels, rows


def fits(scan: Scan, box: tuple, fraction: np.ndarray, taken: np.ndarray) -> bool:
    """Whether a lesion with this partial-volume fraction over ``box`` spans MIN_SLICES axial slices, touches only
    the scan's footprint, keeps two voxels from the lesions ``taken`` and has its label mostly in host tissue."""
    mask = fraction >= 0.5
    return (np.count_nonzero(mask.any(axis=(1, 2))) >= MIN_SLICES
            and not np.any(ndimage.binary_dilation(fraction > 0, iterations=2) & taken[box])
            and not np.any((fraction > 0) & ~scan.footprint[box])
            and scan.tissue[box][mask].mean() >= MIN_IN_TISSUE)


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the source scan's dtype (CT int16, the MR template's own), rounding and clipping integers."""
    if np.issubdtype(dtype, np.integer):
        values = np.clip(np.rint(values), np.iinfo(dtype).min, np.iinfo(dtype).max)
    return values.astype(dtype)


def ct_contrasts(rng: np.random.Generator) -> list:
    """One hyperdense (haemorrhage-like) and one hypodense (oedema- or infarct-like) lesion, in random order."""
    def hyper(rng, fraction, tissue):
        change = rng.uniform(25, 50)
        return change, f"+{change:.0f} HU"

    def hypo(rng, fraction, tissue):
        change = -rng.uniform(15, 25)
        return change, f"{change:.0f} HU"

    return list(rng.permutation([hyper, hypo]))


def mr_contrasts(rng: np.random.Generator) -> list:
    """T1-hypointense lesions (MS plaque- or tumour-like), a third with a rim slightly brighter than white matter."""
    def hypo(rng, fraction, tissue):
        relative = -rng.uniform(0.25, 0.5)
        if rng.random() >= 0.3:
            return relative * tissue, f"{relative:.0%} of white matter"
        core = ndimage.binary_erosion(fraction >= 0.5)
        rim = rng.uniform(0.04, 0.08)
        return np.where(core, relative, rim) * tissue, f"{relative:.0%} of white matter, rim +{rim:.0%}"

    return [hypo, hypo]


def write_case(output: Path, name: str, image: np.ndarray, labels: np.ndarray, reference) -> None:
    """Image and labels as NIfTI on the reference image's geometry."""
    import SimpleITK as sitk

    for folder, array in (("images", image), ("labels", labels)):
        volume = sitk.GetImageFromArray(array)
        volume.CopyInformation(reference)
        (output / folder).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(volume, str(output / folder / f"{name}.nii.gz"), useCompression=True)


def write_cohort(output: Path, seed: int) -> list:
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as folder:
        ct, (x, y, z) = fetch_ct(Path(folder))
        paths = fetch_maps(Path(folder))
        t1 = sitk.ReadImage(str(paths["t1"]))
        gm, wm = (sitk.GetArrayFromImage(sitk.ReadImage(str(paths[k]))) / 255.0 for k in ("gm", "wm"))
    ct_reference = sitk.GetImageFromArray(ct)
    ct_reference.SetSpacing((x, y, z))
    scans = [(ct_scan(ct, (z, y, x)), ct_contrasts, ct_reference),
             (mr_scan(sitk.GetArrayFromImage(t1), gm, wm), mr_contrasts, t1)]
    table = []
    for index, (scan, contrasts, reference) in enumerate(scans):
        for case in range(1, CASES + 1):
            rng = np.random.default_rng([seed, index, case])
            name = f"{scan.name}_lesions_{case}"
            image, labels, rows = insert_lesions(scan, rng, contrasts(rng))
            write_case(output, name, image, labels, reference)
            table += [{"case": name, **row} for row in rows]
    (output / "labels.json").write_text(json.dumps({str(k): v for k, v in LABELS.items()}, indent=2) + "\n",
                                        encoding="utf-8")
    with open(output / "lesions.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return table


def write_sample(cohort: Path, output: Path) -> range:
    """The test suite's real-image lesion sample: ``SAMPLE_LABEL`` of ``SAMPLE_CASE`` on its slices only, same
    geometry."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(cohort / "images" / f"{SAMPLE_CASE}.nii.gz"))
    labels = sitk.ReadImage(str(cohort / "labels" / f"{SAMPLE_CASE}.nii.gz"))
    lesion = sitk.GetArrayFromImage(labels) == SAMPLE_LABEL
    occupied = np.flatnonzero(lesion.any(axis=(1, 2)))
    span = range(int(occupied[0]), int(occupied[-1]) + 1)
    sample = sitk.GetImageFromArray(lesion[span.start:span.stop].astype(np.uint8))
    sample.CopyInformation(labels[:, :, span.start:span.stop])
    output.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image[:, :, span.start:span.stop], str(output / "t1.nii.gz"), useCompression=True)
    sitk.WriteImage(sample, str(output / "labels.nii.gz"), useCompression=True)
    return span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="cohort folder: images/, labels/, labels.json, lesions.csv")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the lesions (default 0)")
    parser.add_argument("--sample", type=Path, help="also write the test suite's lesion sample here (seed 0)")
    args = parser.parse_args()
    table = write_cohort(args.output, args.seed)
    for row in table:
        print(", ".join(f"{key} {value}" for key, value in row.items()))
    print(f"wrote {args.output}/images, labels, labels.json and lesions.csv ({len(table)} lesions)")
    if args.sample is not None:
        span = write_sample(args.output, args.sample)
        print(f"wrote {args.sample}/t1.nii.gz and labels.nii.gz ({SAMPLE_CASE} lesion {SAMPLE_LABEL}, "
              f"slices {span.start}-{span.stop - 1})")


if __name__ == "__main__":
    main()
