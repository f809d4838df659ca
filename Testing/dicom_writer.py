"""A DICOM series written from an array, for tests that read images from a series folder."""

import locale
from pathlib import Path
from typing import Tuple

import numpy as np
import SimpleITK as sitk


def write_dicom_series(folder: Path, array: np.ndarray, spacing_ij: Tuple[float, float], slice_step: float,
                       modality: str = "CT") -> None:
    """One file per slice of the ``[k, j, i]`` ``array``, with the tags that order and place the slices.

    GDCM's writer switches the process to the C locale; it is put back, or every later test that reads
    a subprocess's output as text would decode it as ASCII.
    """
    folder.mkdir(parents=True, exist_ok=True)
    saved = locale.setlocale(locale.LC_ALL)
    for k in range(array.shape[0]):
        image = sitk.GetImageFromArray(array[k])
        image.SetSpacing(spacing_ij)
        for tag, value in (("0008|0060", modality), ("0020|000d", "1.2.3"), ("0020|000e", "1.2.3.4"),
                           ("0020|0032", f"0\\0\\{k * slice_step}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0013", str(k + 1)), ("0028|0030", f"{spacing_ij[1]}\\{spacing_ij[0]}")):
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k}.dcm"))
        writer.Execute(image)
    locale.setlocale(locale.LC_ALL, saved)
