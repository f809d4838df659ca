"""Existing RECIST reads taken as prompts: the length measurements of a TID 1500 measurement report (SR).

Viewers (OHIF, Slicer's Quantitative Reporting, highdicom) store each length as a NUM in mm inside a
Measurement Group, drawn as a two-point SCOORD polyline on one image: either the NUM's own child
(INFERRED FROM, TID 300) or the group's Image Region (TID 1410). Every group of the report is read,
whatever its place in the tree. Lengths on one instance become one RECIST marker: the two lines of a
target there (same tracking identifier, else tracking UID, else finding site) are its long and
short axis (the one coded Long axis, else the longer); lines with none of these are paired when they
cross, and a line left alone is a long axis without a short one. A target is what shares one of
these, so its markers on several instances form one label, named by it; each marker with none is a
target of its own. SCOORD coordinates put the centre of the top-left pixel at (0.5, 0.5), so a
point's voxel index is its column or row minus 0.5.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import PromptError
from ..files.dicom_series import has_dicom_mark
from ..files.input_files import check_regular_file
from ..prompts.prompt_types import PromptSet, RecistPrompt
from .source_series import SourceSeries

MEASUREMENT_GROUP = ("DCM", "125007")
TRACKING_IDENTIFIER, TRACKING_UID = ("DCM", "112039"), ("DCM", "112040")
FINDING_SITE = ("SCT", "363698007")
LONG_AXIS, SHORT_AXIS = ("SCT", "103339001"), ("SCT", "103340004")
#: units of a length (UCUM): a NUM in one of these is a length (its line, not its value, is what is read)
LENGTH_UNITS = frozenset({"mm", "cm", "m", "um"})
#: where a length's line lies: the SCOORD's offset from the pixel grid (centre of the top-left pixel at 0.5, 0.5)
PIXEL_CENTRE = 0.5


@dataclass(frozen=True, eq=False)  # lines are told apart by identity: their points are arrays
class DrawnLength:
    """One length measurement drawn as a line on one slice of the series."""

    target: Optional[str]  # tracking identifier, else finding site; None when the report gives neither
    axis: Optional[str]  # "long", "short", or None when only "length" is said
    slice: int
    points: np.ndarray  # 2x2, voxel (x, y)
    name: str

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.points[1] - self.points[0]))


def read_recist_report(path, series: SourceSeries) -> Tuple[PromptSet, Dict[int, str]]:
    """RECIST markers (axis 2) from the SR at ``path`` whose lines lie on instances of ``series``, and the names of
    their targets (the tracking identifier or finding site, where the report gives one); raises ``PromptError``
    naming the file and the measurement for anything that cannot be read as such."""
    import pydicom

    path = check_regular_file(path, "prompt file", PromptError)
    if not has_dicom_mark(path):
        raise PromptError(f"prompt file {path} is not a DICOM file (no DICM mark at byte 128); give a DICOM SR, a "
                          "JSON prompt file or a Slicer .mrk.json")
    try:
        report = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many kinds for a damaged file
        raise PromptError(f"prompt file {path} cannot be read as DICOM ({error.__class__.__name__})") from None
    if getattr(report, "Modality", "") != "SR" or "ContentSequence" not in report:
        raise PromptError(f"prompt file {path} is a DICOM {getattr(report, 'Modality', '') or 'object'} without "
                          "report content, not a structured report (SR) of RECIST lengths")
    lengths = [length for number, group in enumerate(_groups(report.ContentSequence), start=1)
               for length in _group_lengths(group, number, path, series)]
    if not lengths:
        raise PromptError(f"prompt file {path} holds no length drawn as a line on an image (a Measurement Group with "
                          "a NUM in mm and a two-point SCOORD polyline): nothing to segment")
    markers, names = _markers(lengths)
    return PromptSet(markers, axis=2), names


def _groups(items):
    """Every Measurement Group container below ``items``, in document order."""
    for item in items:
        if item.ValueType == "CONTAINER" and _concept(item) == MEASUREMENT_GROUP:
            yield item
        elif "ContentSequence" in item:
            yield from _groups(item.ContentSequence)


def _concept(item) -> Optional[Tuple[str, str]]:
    if "ConceptNameCodeSequence" not in item or not item.ConceptNameCodeSequence:
        return None
    code = item.ConceptNameCodeSequence[0]
    return str(code.CodingSchemeDesignator), str(code.CodeValue)


def _children(item) -> list:
    return list(item.ContentSequence) if "ContentSequence" in item else []


def _group_lengths(group, number: int, path: Path, series: SourceSeries) -> List[DrawnLength]:
    """The lines of one group's length measurements, checked against the series."""
    children = _children(group)
    identifier = next((str(c.TextValue) for c in children if _concept(c) == TRACKING_IDENTIFIER), None)
    uid = next((f"tracking UID {c.UID}" for c in children if _concept(c) == TRACKING_UID), None)
    site = next((f"finding site {c.ConceptCodeSequence[0].CodeMeaning}" for c in children
                 if _concept(c) == FINDING_SITE and c.ValueType == "CODE"), None)
    target = identifier or uid or site
    group_name = f"{path.name}: measurement group {number}" + (f" ({identifier})" if identifier else "")
    region = [c for c in children if c.ValueType in ("SCOORD", "SCOORD3D")]
    lengths = []
    for item in children:
        if item.ValueType != "NUM" or not _is_length(item):
            continue
        meaning = item.ConceptNameCodeSequence[0].CodeMeaning
        drawn = [c for c in _children(item) if c.ValueType in ("SCOORD", "SCOORD3D")] or region
        if not drawn:
            continue  # a length with no line (a volume's diameter): nothing to place
        name = f"{group_name}, {meaning}"
        if len(drawn) > 1:
            raise PromptError(f"{name}: {len(drawn)} graphics; a RECIST length is one line")
        slice_index, points = _line(drawn[0], name, series)
        axis = {LONG_AXIS: "long", SHORT_AXIS: "short"}.get(_concept(item))
        lengths.append(DrawnLength(target, axis, slice_index, points, name))
    return lengths


def _is_length(item) -> bool:
    measured = item.MeasuredValueSequence if "MeasuredValueSequence" in item else []
    if not measured or "MeasurementUnitsCodeSequence" not in measured[0]:
        return False
    return str(measured[0].MeasurementUnitsCodeSequence[0].CodeValue) in LENGTH_UNITS


def _line(scoord, name: str, series: SourceSeries) -> Tuple[int, np.ndarray]:
    """The slice and voxel ``(x, y)`` ends of a two-point SCOORD polyline on an instance of ``series``."""
    if scoord.ValueType == "SCOORD3D":
        raise PromptError(f"{name}: the line is given in 3D patient coordinates (SCOORD3D); only lines on an "
                          "image (SCOORD) are read")
    graphic = str(getattr(scoord, "GraphicType", ""))
    points = np.asarray(getattr(scoord, "GraphicData", []), dtype=float)
    if graphic != "POLYLINE" or points.size != 4 or not np.all(np.isfinite(points)):
        raise PromptError(f"{name}: a {graphic or 'graphic'} of {points.size // 2} point(s); a RECIST length is a "
                          "POLYLINE of two points")
    images = [c for c in _children(scoord) if c.ValueType == "IMAGE" and "ReferencedSOPSequence" in c]
    if len(images) != 1:
        raise PromptError(f"{name}: the line names {len(images)} images; a RECIST length lies on one")
    uid = str(images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    slice_index = series.slice_of.get(uid)
    if slice_index is None:
        raise PromptError(f"{name}: the line lies on instance {uid}, which is not in the DICOM series in "
                          f"{series.folder}")
    return slice_index, points.reshape(2, 2) - PIXEL_CENTRE


def _markers(lengths: List[DrawnLength]) -> Tuple[List[RecistPrompt], Dict[int, str]]:
    """RECIST markers from the lines: a target's lines on an instance paired, the others paired where they cross."""
    labels: Dict[str, int] = {}
    markers, next_label = [], 1
    on_instance: Dict[Tuple[Optional[str], int], List[DrawnLength]] = {}
    for length in lengths:
        on_instance.setdefault((length.target, length.slice), []).append(length)
    for (target, slice_index), lines in on_instance.items():
        pairs = _target_pairs(lines) if target is not None and len(lines) <= 2 else _crossing_pairs(lines)
        for long_line, short_line in pairs:
            label = next_label if target is None else labels.setdefault(target, next_label)
            next_label = max(next_label, label + 1)
            markers.append(RecistPrompt(
                slice_index, _segment(long_line.points), None if short_line is None else _segment(short_line.points),
                label, long_line.name))
    return markers, {label: target for target, label in labels.items()}


def _target_pairs(lines: List[DrawnLength]) -> List[Tuple[DrawnLength, Optional[DrawnLength]]]:
    """One target's one or two lines on an instance: the long axis first (coded, else the longer)."""
    if len(lines) == 1:
        return [(lines[0], None)]
    first, second = lines
    if first.axis == "short" or second.axis == "long" or (first.axis is None and second.axis is None
                                                           and second.length > first.length):
        first, second = second, first
    return [(first, second)]


def _crossing_pairs(lines: List[DrawnLength]) -> List[Tuple[DrawnLength, Optional[DrawnLength]]]:
    """Lines on one instance paired where they cross (each longest line first takes the longest line crossing
    it); a line that crosses none stands alone, as a long axis."""
    left = sorted(lines, key=lambda line: -line.length)
    pairs = []
    while left:
        long_line = left.pop(0)
        crossing = next((line for line in left if _cross(long_line.points, line.points)), None)
        if crossing is not None:
            left.remove(crossing)
        pairs.append((long_line, crossing))
    return pairs


def _cross(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether segments ``a`` and ``b`` (2x2) meet, ends included."""
    def side(p, q, r) -> float:  # the z of (q - p) x (r - p): which side of p-q the point r lies
        return float((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    d1, d2 = side(b[0], b[1], a[0]), side(b[0], b[1], a[1])
    d3, d4 = side(a[0], a[1], b[0]), side(a[0], a[1], b[1])
    return d1 * d2 <= 0 and d3 * d4 <= 0 and not (d1 == d2 == 0)


def _segment(points: np.ndarray):
    return tuple(tuple(float(v) for v in point) for point in points)
