"""Per-target masks written as a DICOM Segmentation (SEG) of the series they were made from.

One binary segment per target, numbered 1, 2, ... in label order, each with its label text, a coded
property (a lesion, a morphologically abnormal structure) and the algorithm that made it (MedSAM,
semi-automatic: a person gave the prompts), in the colours of the ``.seg.nrrd`` output. Frames refer
to their source instances, so PACS viewers, Slicer's Quantitative Reporting (dcmqi) and highdicom
place them without resampling; empty frames are left out, as highdicom does by default. The file
goes through ``atomic_output`` and is read back with highdicom, frame by frame against the masks,
before it is put in place.
"""

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..errors import OutputError
from ..files.image_io import SEGMENT_COLORS
from ..files.output_files import atomic_output
from .source_series import SourceSeries

#: series number given to the SEGs written (one above those scanners use for their own series)
SEG_SERIES_NUMBER = 1001
MANUFACTURER = "MedSAMSlicer"


def segment_numbers(labels) -> Dict[int, int]:
    """The SEG segment number of each target label: 1, 2, ... in label order (DICOM needs them consecutive)."""
    return {label: number for number, label in enumerate(sorted(labels), start=1)}


def write_dicom_seg(path: Path, masks: Dict[int, np.ndarray], series: SourceSeries, model_name: str,
                    names: Optional[Dict[int, str]] = None):
    """Write ``masks`` (``[k, j, i]`` per label, in the series' slice order) to ``path`` as a SEG; returns the SEG
    dataset (an SR refers to its segments)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from .. import __version__

    names = names or {}
    numbers = segment_numbers(masks)
    shape = (len(series.datasets), int(series.datasets[0].Rows), int(series.datasets[0].Columns))
    for label, mask in masks.items():
        if mask.shape != shape:
            raise OutputError(f"cannot write {path}: label {label}'s mask is {mask.shape}, the series {shape}")
    algorithm = hd.AlgorithmIdentificationSequence(name=f"MedSAM ({model_name})", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=names.get(label, f"label {label}"),
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=algorithm, tracking_id=f"label {label}", tracking_uid=generate_uid(),
        display_color=hd.color.CIELabColor.from_rgb(
            *(255 * np.array(SEGMENT_COLORS[(number - 1) % len(SEGMENT_COLORS)]))))
        for label, number in numbers.items()]
    frames = np.stack([masks[label] for label in numbers], axis=-1) if numbers else np.zeros(shape + (0,), bool)
    if not frames.any():
        raise OutputError(f"cannot write {path}: every target is empty, and a DICOM SEG needs at least one voxel")
    seg = hd.seg.Segmentation(
        source_images=list(series.datasets), pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=model_name, software_versions=__version__, device_serial_number="none",
        content_description="MedSAM segmentation from RECIST markers or boxes", content_label="MEDSAM")

    def verify(written: Path) -> None:
        _check_seg(path, written, frames, series)

    with atomic_output(path, verify) as temporary:
        seg.save_as(temporary)
    return seg


def _check_seg(path: Path, written: Path, frames: np.ndarray, series: SourceSeries) -> None:
    """The SEG on disk, read by highdicom, holds exactly ``frames`` on the series' instances."""
    import highdicom as hd

    uids = [str(ds.SOPInstanceUID) for ds in series.datasets]
    try:
        read = hd.seg.segread(written).get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=list(range(1, frames.shape[-1] + 1)),
            assert_missing_frames_are_empty=True, dtype=bool)
    except Exception:  # any failure to parse means the file on disk is not what was meant
        read = None
    if read is None or read.shape != frames.shape or not np.array_equal(read, frames):
        raise OutputError(f"cannot write {path}: the DICOM SEG written does not read back as written")
