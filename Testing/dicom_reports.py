"""TID 1500 reports of RECIST lengths built in the tests with highdicom, as a viewer would store them, independently
of the project's own writer: each line a planar group (Image Region) or a TID 300 length whose line is its own
child (INFERRED FROM), with or without tracking identifiers."""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid


@dataclass
class Line:
    """A length drawn on ``instance`` (a source dataset) from SCOORD ``points`` [[column, row], [column, row]]."""

    instance: pydicom.Dataset
    points: Sequence[Sequence[float]]
    axis: object = codes.SCT.LongAxis  # or ShortAxis, Length
    tracking: Optional[str] = None  # a tracking identifier; None: the group has none (nor a tracking UID)
    inferred: bool = False  # the line as the NUM's own child (TID 300) instead of the group's image region


def headers(folder: Path) -> list:
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.glob("*.dcm"))]


def write_report(path: Path, lines: Sequence[Line], evidence: Sequence[pydicom.Dataset],
                 volumes: Sequence[float] = ()) -> Path:
    """The SR of ``lines``, after a group per ``volumes`` value holding only a volume in mL (no line)."""
    groups = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"volume {n}"),
        measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=value,
                                        unit=hd.sr.CodedConcept("mL", "UCUM", "milliliter"))])
        for n, value in enumerate(volumes, start=1)]
    for line in lines:
        points = np.asarray(line.points, dtype=float)
        source = hd.sr.SourceImageForRegion.from_source_image(line.instance)
        tracking = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=line.tracking or "drop me")
        length = float(np.linalg.norm(points[1] - points[0]))
        if line.inferred:
            coordinates = hd.sr.CoordinatesForMeasurement(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                                         graphic_data=points, source_image=source)
            measurement = hd.sr.Measurement(name=line.axis, value=length, unit=codes.UCUM.Millimeter,
                                            referenced_coordinates=[coordinates])
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(tracking_identifier=tracking,
                                                                      measurements=[measurement]))
        else:
            region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=points,
                                       source_image=source)
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, referenced_region=region,
                measurements=[hd.sr.Measurement(name=line.axis, value=length, unit=codes.UCUM.Millimeter)]))
    report = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(),
                                     procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(evidence=list(evidence), content=report, series_instance_uid=generate_uid(),
                                 series_number=7, sop_instance_uid=generate_uid(), instance_number=1)
    for group, line in zip(list(_groups(sr.ContentSequence))[len(volumes):], lines):
        if line.tracking is None:  # as a viewer that tracks nothing writes it
            group.ContentSequence = [item for item in group.ContentSequence
                                     if item.ConceptNameCodeSequence[0].CodeValue not in ("112039", "112040")]
    sr.save_as(path)
    return path


def _groups(items):
    for item in items:
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "125007":
            yield item
        elif "ContentSequence" in item:
            yield from _groups(item.ContentSequence)
