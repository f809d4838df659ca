"""The independent checkers run on every DICOM file the project writes: David Clunie's ``dciodvfy`` (dicom3tools)
and dcmqi's ``segimage2itkimage`` (the converter Slicer's Quantitative Reporting uses). Both are installed with the
tests (pyproject's ``test`` extra), beside the Python that runs them; a missing one fails, never skips."""

import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

from MedSAMSlicerLib.prompts.geometry import ImageGeometry

TOOLS = Path(sys.executable).parent


def dciodvfy_errors(path: Path) -> List[str]:
    """The lines ``dciodvfy`` reports as errors for ``path`` (it checks the file against its IOD's modules)."""
    done = subprocess.run([str(TOOLS / "dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).splitlines()
    assert lines, f"dciodvfy printed nothing for {path}"
    return [line for line in lines if line.startswith("Error")]


def dcmqi_masks(seg: Path, folder: Path, geometry: ImageGeometry) -> Dict[int, np.ndarray]:
    """Each segment of ``seg`` as dcmqi converts it, put on the ``[k, j, i]`` grid of ``geometry``: dcmqi writes
    only the slices that hold frames, so its image must lie on that grid (same axes and spacing, an origin on a
    voxel of it) and is placed there by whole voxels."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(TOOLS / "segimage2itkimage"), "--inputDICOM", str(seg), "--outputDirectory",
                           str(folder), "-t", "nrrd"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    masks = {}
    for path in sorted(folder.glob("*.nrrd"), key=lambda p: int(p.stem)):
        image = sitk.ReadImage(str(path))
        assert np.allclose(image.GetDirection(), geometry.direction, atol=1e-5)
        assert np.allclose(image.GetSpacing(), geometry.spacing, rtol=1e-5)
        start = np.linalg.solve(np.reshape(geometry.direction, (3, 3)) * geometry.spacing,
                                np.subtract(image.GetOrigin(), geometry.origin))
        assert np.allclose(start, np.round(start), atol=1e-3), f"dcmqi's {path.name} lies off the image's voxels"
        i, j, k = np.round(start).astype(int)
        voxels = sitk.GetArrayFromImage(image) > 0
        mask = np.zeros(geometry.shape_kji, bool)
        mask[k:k + voxels.shape[0], j:j + voxels.shape[1], i:i + voxels.shape[2]] = voxels
        masks[int(path.stem)] = mask
    return masks
