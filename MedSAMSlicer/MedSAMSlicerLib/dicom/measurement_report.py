"""Each target's measurements written as a TID 1500 measurement report (DICOM SR) beside its SEG.

Per target, under one tracking identifier and UID: a volumetric group that refers to the target's
segment of the SEG, with its volume (mL) and longest in-plane diameter (mm); and per RECIST marker
used, one planar group per axis, the line drawn as a two-point image-region polyline on its source
instance with its length (Long axis, Short axis) in mm. A viewer shows the numbers beside the masks,
and ``recist_reads`` reads the lines back as the same prompts. Boxes are prompts, not measurements,
and are not written. The file goes through ``atomic_output`` and is read back as RECIST markers,
which must be those written, before it is put in place.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np

from ..errors import OutputError, PromptError
from ..files.output_files import atomic_output
from ..prompts.prompt_types import RecistPrompt
from .recist_reads import PIXEL_CENTRE, read_recist_report
from .segmentation_object import MANUFACTURER, SEG_SERIES_NUMBER, segment_numbers
from .source_series import SourceSeries

#: series number of the SRs written (the SEG's, plus one)
SR_SERIES_NUMBER = SEG_SERIES_NUMBER + 1


@dataclass(frozen=True)
class ReportedTarget:
    """What is reported of one target: its label, name, measurements and the RECIST markers it was drawn from."""

    label: int
    name: str
    volume_ml: float
    longest_diameter_mm: float
    markers: Sequence[RecistPrompt]  # on slices along axis 2: the series' instances
    slices: Sequence[int]  # the slices its mask reaches


def write_measurement_report(path: Path, targets: List[ReportedTarget], segmentation, series: SourceSeries,
                             model_name: str) -> None:
    """Write the SR for ``targets``, whose masks are the segments of ``segmentation`` (the SEG dataset written)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    numbers = segment_numbers(target.label for target in targets)
    groups = []
    for target in targets:
        tracking = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=target.name)
        segment = _referenced_segment(segmentation, numbers[target.label], series, target.slices)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_segment=segment, finding_type=codes.SCT.Lesion, measurements=[
                hd.sr.Measurement(name=codes.SCT.Volume, value=target.volume_ml,
                                  unit=hd.sr.CodedConcept("mL", "UCUM", "milliliter")),
                hd.sr.Measurement(name=codes.SCT.Diameter, value=target.longest_diameter_mm,
                                  unit=codes.UCUM.Millimeter, derivation=codes.SCT.Maximum)]))
        for marker in target.markers:
            for axis, points in ((codes.SCT.LongAxis, marker.long_axis), (codes.SCT.ShortAxis, marker.short_axis)):
                if points is not None:
                    groups.append(_line_group(tracking, axis, np.asarray(points, float), series, marker.slice))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=f"MedSAM ({model_name})", manufacturer_name=MANUFACTURER))
    report = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_device_context=observer),
                                     procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*series.datasets, segmentation], content=report, series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        is_complete=True)
    meant = [marker for target in targets for marker in target.markers]

    def verify(written: Path) -> None:
        _check_report(path, written, meant, series)

    with atomic_output(path, verify) as temporary:
        sr.save_as(temporary)


def _referenced_segment(segmentation, number: int, series: SourceSeries, slices: Sequence[int]):
    """The segment, with the instances it was drawn on (the whole series for an empty one, which has no frame)."""
    import highdicom as hd

    sources = [hd.sr.SourceImageForSegmentation.from_source_image(series.datasets[k]) for k in slices]
    return hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID, sop_instance_uid=segmentation.SOPInstanceUID, segment_number=number,
        source_images=sources or None,
        source_series=None if sources else hd.sr.SourceSeriesForSegmentation(series.datasets[0].SeriesInstanceUID))


def _line_group(tracking, axis, points: np.ndarray, series: SourceSeries, slice_index: int):
    """A planar group: one RECIST axis drawn on the instance of ``slice_index``, with its length in mm."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    source = series.datasets[slice_index]
    row_mm, column_mm = (float(v) for v in source.PixelSpacing)
    length = float(np.hypot((points[1, 0] - points[0, 0]) * column_mm, (points[1, 1] - points[0, 1]) * row_mm))
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=points + PIXEL_CENTRE,
                               source_image=hd.sr.SourceImageForRegion.from_source_image(source))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_region=region, finding_type=codes.SCT.Lesion,
        measurements=[hd.sr.Measurement(name=axis, value=length, unit=codes.UCUM.Millimeter)])


def _check_report(path: Path, written: Path, meant: List[RecistPrompt], series: SourceSeries) -> None:
    """The SR on disk reads back with the lines written: the same ones on the same slices (to 1e-4 voxel)."""
    try:
        read = _lines(read_recist_report(written, series)[0].prompts if meant else [])
    except PromptError:
        read = None
    expected = _lines(meant)
    if read is None or len(read) != len(expected) or not np.allclose(read, expected, atol=1e-4):
        raise OutputError(f"cannot write {path}: the DICOM SR written does not read back as written")


def _lines(markers: List[RecistPrompt]) -> np.ndarray:
    """Every axis of ``markers`` as (slice, x0, y0, x1, y1), in a fixed order whatever pairs them."""
    lines = [[marker.slice, *np.asarray(points, float).ravel()] for marker in markers
             for points in (marker.long_axis, marker.short_axis) if points is not None]
    return np.array(sorted(lines)).reshape(-1, 5)
