"""The instances of the DICOM series a volume was read from, in the volume's slice order.

A DICOM SEG and SR refer to the images they were made from by study, series, frame of reference and SOP
instance UIDs, and place everything in pixel (column, row) coordinates of one instance. The volume's
slice ``k`` is the ``k``-th file ``dicom_series`` put in order, its ``i`` the column and ``j`` the row, so
an instance UID names a slice and back. Only the headers are read (no pixel data).
"""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, Sequence, Tuple

from ..errors import ImageError
from ..files.input_files import check_regular_file

#: what a SEG or SR needs of every source instance (besides what pydicom requires of any file)
REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID",
            "Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


@dataclass(frozen=True)
class SourceSeries:
    """Headers of a single-frame series' instances; ``datasets[k]`` is the instance of slice ``k``."""

    datasets: Tuple  # pydicom Datasets, without pixel data
    folder: Path

    @cached_property  # frozen: computed once, on the first line placed
    def slice_of(self) -> Dict[str, int]:
        """Slice index of each SOP instance UID."""
        return {str(ds.SOPInstanceUID): k for k, ds in enumerate(self.datasets)}


def read_source_series(files: Sequence[Path]) -> SourceSeries:
    """The headers of ``files`` (one series in slice order, as ``LoadedImage.dicom_files``); refuses a series a SEG
    cannot refer to (multi-frame files, a missing UID or geometry attribute, frames of reference that differ)."""
    import pydicom

    if not files:
        raise ImageError("a DICOM SEG or SR needs a DICOM series as the image (a folder of its files)")
    datasets = []
    for path in files:
        check_regular_file(path, "DICOM file")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as error:  # pydicom raises many kinds for a damaged file
            raise ImageError(f"DICOM file {path} cannot be read ({error.__class__.__name__})") from None
        missing = [name for name in REQUIRED if name not in ds or ds[name].value in (None, "")]
        if missing:
            raise ImageError(f"DICOM file {path} lacks {', '.join(missing)}; a DICOM SEG or SR cannot refer to it")
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise ImageError(f"DICOM file {path} holds {ds.NumberOfFrames} frames; only single-frame series are "
                             "supported for DICOM SEG and SR")
        datasets.append(ds)
    frames = {str(ds.FrameOfReferenceUID) for ds in datasets}
    if len(frames) > 1:
        raise ImageError(f"the DICOM series in {Path(files[0]).parent} has {len(frames)} frames of reference; one "
                         "volume has one")
    return SourceSeries(tuple(datasets), Path(files[0]).parent)
