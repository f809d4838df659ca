"""A folder holding one DICOM series, read as one volume once its slices' positions are checked.

ITK's series reader sorts the files it can read by position and takes them as evenly spaced. A slice
missing (an incomplete transfer from PACS), two files at one position, or a file it cannot read (left
out without a word) so give a volume whose spacing and geometry are wrong, and volumes in mL with them.
Here every file of the folder is looked at first: an image file (DICOM mark and pixel data) that cannot
be read is refused by name; files of other kinds (a DICOMDIR, a structured report, notes) are passed
over. The slices' positions along their normal must be distinct and evenly spaced: a gap or a repeated
position is refused, naming the files and their positions.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import ImageError
from .itk_bridge import itk_failure, read_itk_information, read_itk_series

#: neighbouring slices may lie this share further apart than the closest two (rounding in the files' positions)
STEP_TOLERANCE = 0.1
#: positions closer than this, in mm along the slice normal, are one position
SAME_POSITION_MM = 1e-3
#: where a DICOM file says "DICM", and the tag of its pixel data (group 7FE0, element 0010, little endian)
DICOM_MARK, PIXEL_DATA_TAG = (128, b"DICM"), b"\xe0\x7f\x10\x00"


@dataclass(frozen=True)
class DicomSlice:
    path: Path
    series: str
    position: Optional[np.ndarray]  # Image Position (Patient), mm
    orientation: Optional[np.ndarray]  # Image Orientation (Patient): row and column directions
    modality: Optional[str]


def read_dicom_series(folder: Path) -> Tuple[sitk.Image, Optional[str], Tuple[Path, ...]]:
    """The volume of the one DICOM series in ``folder``, its modality and its files in slice order (the file of
    slice ``k`` is the ``k``-th); raises ``ImageError`` naming the problem."""
    ordered = _in_order(_series_slices(folder), folder)
    try:
        image = read_itk_series([piece.path for piece in ordered])
    except RuntimeError as error:
        raise ImageError(f"cannot read the DICOM series in {folder}: {itk_failure(error)}") from None
    return image, ordered[0].modality, tuple(piece.path for piece in ordered)


def _series_slices(folder: Path) -> List[DicomSlice]:
    slices = [piece for path in sorted(folder.iterdir()) if path.is_file() for piece in [_header(path)] if piece]
    if not slices:
        raise ImageError(f"folder {folder} holds no DICOM series")
    series = {piece.series for piece in slices}
    if len(series) > 1:
        raise ImageError(f"folder {folder} holds {len(series)} DICOM series; give a folder with one")
    return slices


def _header(path: Path) -> Optional[DicomSlice]:
    """The slice ``path`` holds; None for a file that is no DICOM image; raises for a DICOM image that is damaged."""
    try:
        reader = read_itk_information(path, "GDCMImageIO")
    except RuntimeError:
        if _is_dicom_image(path):
            raise ImageError(f"DICOM file {path} cannot be read (damaged or incomplete); the series would lack "
                             "its slice") from None
        return None

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    return DicomSlice(path, tag("0020|000e"), _numbers(tag("0020|0032"), 3), _numbers(tag("0020|0037"), 6),
                      tag("0008|0060") or None)


def _is_dicom_image(path: Path) -> bool:
    """Whether ``path`` carries the DICOM mark and a pixel data element (so is an image, not a report or a DICOMDIR)."""
    try:
        return has_dicom_mark(path) and PIXEL_DATA_TAG in path.read_bytes()
    except OSError:
        return False


def has_dicom_mark(path: Path) -> bool:
    """Whether ``path`` starts as a DICOM file does ("DICM" after a 128-byte preamble); False if it cannot be read."""
    offset, mark = DICOM_MARK
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            return stream.read(len(mark)) == mark
    except OSError:
        return False


def _numbers(text: str, count: int) -> Optional[np.ndarray]:
    try:
        values = np.array([float(part) for part in text.split("\\")])
    except ValueError:
        return None
    return values if values.shape == (count,) and np.all(np.isfinite(values)) else None


def _in_order(slices: List[DicomSlice], folder: Path) -> List[DicomSlice]:
    """The slices sorted along their normal; refuses unplaceable slices, repeated positions and gaps."""
    if len(slices) == 1:
        return slices
    for piece in slices:
        if piece.position is None or piece.orientation is None:
            raise ImageError(f"DICOM file {piece.path} has no image position or orientation; the slices of {folder} "
                             "cannot be placed")
        if not np.allclose(piece.orientation, slices[0].orientation, atol=1e-4):
            raise ImageError(f"DICOM files {slices[0].path.name} and {piece.path.name} in {folder} lie in different "
                             "orientations; one series has one orientation")
    normal = np.cross(slices[0].orientation[:3], slices[0].orientation[3:])
    along = np.array([piece.position @ normal for piece in slices])
    order = np.argsort(along, kind="stable")
    ordered, along = [slices[n] for n in order], along[order]
    _check_steps(ordered, along, folder)
    return ordered


def _check_steps(ordered: List[DicomSlice], along: np.ndarray, folder: Path) -> None:
    steps = np.diff(along)
    for n in np.flatnonzero(steps < SAME_POSITION_MM)[:1]:
        raise ImageError(f"DICOM files {ordered[n].path.name} and {ordered[n + 1].path.name} in {folder} lie at the "
                         f"same position ({along[n]:.2f} mm along the slice normal): a slice is repeated, or two "
                         "acquisitions are mixed")
    closest, widest = steps.min(), int(np.argmax(steps))
    if steps[widest] > (1 + STEP_TOLERANCE) * closest:
        missing = max(1, int(round(steps[widest] / closest)) - 1)
        raise ImageError(f"DICOM series in {folder} has a gap of {steps[widest]:.4g} mm between "
                         f"{ordered[widest].path.name} (at {along[widest]:.2f} mm) and {ordered[widest + 1].path.name} "
                         f"(at {along[widest + 1]:.2f} mm) where slices are {closest:.4g} mm apart: about {missing} "
                         "slice(s) missing (an incomplete transfer?)")
