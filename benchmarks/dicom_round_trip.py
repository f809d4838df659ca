"""One DICOM series converted end to end, on a real MRI: RECIST reads in as a TID 1500 SR, a SEG and an SR out,
checked by dciodvfy and read back by dcmqi, then the SR written read back as prompts.

    python benchmarks/dicom_round_trip.py OUT_DIR

The series is the real-image lesion sample of the tests (``Testing/data/mni152_lesion``: 21 slices of the MNI
ICBM152 T1 template with a lesion of known mask) written as a single-frame MR series, files out of order; the
reads are RECIST markers drawn from the known mask every 5th slice, stored as a viewer stores them (highdicom,
``Testing/dicom_reports.py``). Each step runs the installed ``medsam-slicer`` and dcmqi commands, printed as run.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "MedSAMSlicer"), str(ROOT / "Testing")]

from dicom_checks import dcmqi_masks, dciodvfy_errors  # noqa: E402
from dicom_reports import Line, headers, write_report  # noqa: E402
from dicom_writer import write_dicom_series  # noqa: E402
from MedSAMSlicerLib.evaluation.metrics import dice  # noqa: E402
from MedSAMSlicerLib.files.image_io import read_image  # noqa: E402
from MedSAMSlicerLib.prompts.prompt_simulation import recist_from_truth  # noqa: E402
from pydicom.sr.codedict import codes  # noqa: E402

SAMPLE = ROOT / "Testing" / "data" / "mni152_lesion"
TOOLS = Path(sys.executable).parent


def run(*command) -> None:
    print("$", " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="a new folder for the series, the reads and the results")
    out = parser.parse_args().output
    out.mkdir(parents=True)
    image, truth = read_image(SAMPLE / "t1.nii.gz"), read_image(SAMPLE / "labels.nii.gz").array == 1
    geometry = image.geometry
    direction = np.reshape(geometry.direction, (3, 3))
    order = list(np.random.default_rng(0).permutation(image.array.shape[0]))
    write_dicom_series(out / "series", image.array.astype(np.int16), geometry.spacing[:2], geometry.spacing[2], "MR",
                       [*direction[:, 0], *direction[:, 1]], geometry.origin, order, patient="MNI^ICBM152")
    series = read_image(out / "series")
    by_name = {path.name: ds for path, ds in zip(sorted((out / "series").glob("*.dcm")), headers(out / "series"))}
    instances = [by_name[path.name] for path in series.dicom_files]
    markers = recist_from_truth(truth, every=5, spacing_xy=geometry.spacing[:2]).prompts
    write_report(out / "reads.dcm", [Line(instances[m.slice], np.add(axis, 0.5), code, "lesion 1")
                                     for m in markers for axis, code in ((m.long_axis, codes.SCT.LongAxis),
                                                                         (m.short_axis, codes.SCT.ShortAxis))
                                     if axis is not None],
                 headers(out / "series"))
    print(f"series: {len(instances)} MR instances; reads: {len(markers)} RECIST markers on slices "
          f"{[m.slice for m in markers]}")
    run(TOOLS / "medsam-slicer", "segment", out / "series", "--prompts", out / "reads.dcm", "-o", out / "result.dcm",
        "--sr", out / "measurements.dcm", "--quiet")
    for name in ("result.dcm", "measurements.dcm"):
        print(f"dciodvfy {name}: {len(dciodvfy_errors(out / name))} errors")
    print("$", TOOLS / "segimage2itkimage", "--inputDICOM", out / "result.dcm", "--outputDirectory", out / "dcmqi",
          "-t", "nrrd")
    mask = dcmqi_masks(out / "result.dcm", out / "dcmqi", series.geometry)[1]
    print(f"read back by dcmqi: {int(mask.sum())} voxels, DSC {dice(truth, mask):.4f} against the known lesion")
    run(TOOLS / "medsam-slicer", "segment", out / "series", "--prompts", out / "measurements.dcm", "-o",
        out / "again.dcm", "--quiet")
    again = dcmqi_masks(out / "again.dcm", out / "dcmqi_again", series.geometry)[1]
    print("round trip (the SR written, read back as prompts): "
          f"{'the same' if np.array_equal(again, mask) else 'a different'} "
          f"segmentation ({int((again != mask).sum())} voxels differ)")


if __name__ == "__main__":
    main()
