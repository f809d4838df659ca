"""The real CT and MR slices the int8 image encoder is calibrated on (``MedSAMSlicerLib/data/calibration_slices.npz``).

    python benchmarks/calibration_set.py [OUTPUT.npz]

Post-training quantization sets each activation's int8 range from what the network sees on
representative inputs, so these are real scans as the engine feeds them to the encoder: uint8
slices after the intensity window, whole and as the refined mode's zoomed crops.

* MR: the MNI ICBM152 2009a T1 template (nilearn wheel, ``real_cohort.fetch_maps``), percentile
  window, axial, coronal and sagittal slices through the brain.
* CT: ``CT_small.dcm`` from the pydicom wheel, a real CT slice (128 x 128, downsized by pydicom from
  the NEMA WG04 sample ``CT1_UNC``), in the soft-tissue, brain and lung windows.

Both wheels are fetched with pip (nothing is installed). Licences: the template's notice is in
``MedSAMSlicerLib/data/CALIBRATION_LICENSE.txt``; pydicom is MIT-licensed.
"""

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSAMSlicer"))

from MedSAMSlicerLib.volume.crop_window import crop_window  # noqa: E402
from MedSAMSlicerLib.volume.intensity import IntensitySettings, normalize_volume  # noqa: E402
from real_cohort import fetch_maps  # noqa: E402

PYDICOM = "pydicom==3.0.1"
CT_MEMBER = "pydicom/data/test_files/CT_small.dcm"
OUTPUT = ROOT / "MedSAMSlicer" / "MedSAMSlicerLib" / "data" / "calibration_slices.npz"
#: template slices (array index along k, j, i) through the brain
MR_SLICES = {0: (60, 75, 90, 105, 120), 1: (90, 115, 140), 2: (60, 80, 117, 137)}
CT_WINDOWS = ("soft-tissue", "brain", "lung")
#: boxes (x0, y0, x1, y1) of the zoomed crops taken from the first axial MR slice and the soft-tissue CT slice
CROP_BOXES = ((80, 90, 110, 120), (50, 50, 75, 80))


def mr_slices(folder: Path) -> dict:
    import SimpleITK as sitk

    t1 = sitk.GetArrayFromImage(sitk.ReadImage(str(fetch_maps(folder)["t1"])))
    volume = normalize_volume(t1, IntensitySettings.parse("percentile", t1))
    return {f"mr_dim{dim}_{index}": np.take(volume, index, axis=dim) for dim, indices in MR_SLICES.items()
            for index in indices}


def ct_slices(folder: Path) -> dict:
    import SimpleITK as sitk

    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PYDICOM, "-d", str(folder)],
                   check=True)
    with zipfile.ZipFile(next(folder.glob("pydicom-*.whl"))) as archive:
        path = archive.extract(CT_MEMBER, folder)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(np.float32)  # rescaled to HU by the reader
    return {f"ct_{window}": normalize_volume(hu, IntensitySettings.preset(window))[0] for window in CT_WINDOWS}


def write_calibration_set(output: Path) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        slices = {**mr_slices(Path(folder)), **ct_slices(Path(folder))}
    for name, box in zip(("mr_dim0_60", "ct_soft-tissue"), CROP_BOXES):
        image = slices[name]
        slices[f"{name}_crop"] = crop_window(np.array([box], dtype=float), image.shape).crop(image)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **slices)
    return slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, nargs="?", default=OUTPUT, help=f"default {OUTPUT.relative_to(ROOT)}")
    args = parser.parse_args()
    slices = write_calibration_set(args.output)
    for name, image in slices.items():
        print(f"{name}: {image.shape[1]}x{image.shape[0]}, mean {image.mean():.0f}")
    print(f"wrote {args.output} ({len(slices)} slices, {args.output.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
