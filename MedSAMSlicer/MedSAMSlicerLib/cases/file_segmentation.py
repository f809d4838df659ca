"""One image file and its prompt file in, a segmentation file and its measurements out.

What ``medsam-slicer segment`` does for one case and ``medsam-slicer batch`` for each case of a
cohort: prompts are validated before any model work, the output is written atomically in the
input's geometry, and each target is measured (slices, volume, longest diameter).
"""

import time
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..dicom.measurement_report import ReportedTarget, write_measurement_report
from ..dicom.segmentation_object import write_dicom_seg
from ..dicom.source_series import SourceSeries, read_source_series
from ..errors import OutputError, PromptError
from ..files.dicom_series import has_dicom_mark
from ..files.image_io import LoadedImage, is_dicom_output, read_image, write_segmentation
from ..models.slice_model import SliceModel
from ..prompts.geometry import ImageGeometry, occupied_slices
from ..prompts.measurements import longest_diameter_in_volume_mm, volume_ml
from ..prompts.prompt_types import PromptSet, RecistPrompt
from ..volume.embedding_cache import EmbeddingCache
from ..volume.intensity import IntensitySettings
from ..volume.refinement import DEFAULT_MODE, refinement_for
from ..volume.session import SegmentationSession


@dataclass
class TargetMeasurement:
    label: int
    slices: int
    volume_ml: float
    longest_diameter_mm: float
    diameter_slice: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FileSegmentation:
    targets: List[TargetMeasurement]
    intensity: str
    seconds: float


def read_prompts(path, image: LoadedImage, series: Callable[[], SourceSeries],
                 axis: Optional[int] = None) -> Tuple[PromptSet, Dict[int, str]]:
    """A JSON prompt file, a Slicer markups file (``.mrk.json``, RAS points mapped through the image geometry) or a
    DICOM SR of RECIST lengths on the images of ``series()``, the series ``image`` was read from; and the targets'
    names, where the file gives them."""
    from ..dicom.recist_reads import read_recist_report
    from ..files.markups_file import read_markups_prompts
    from ..files.prompt_file import read_prompt_file

    path, names = str(path), {}
    if path.lower().endswith(".dcm") or (Path(path).is_file() and has_dicom_mark(Path(path))):  # not a FIFO
        if not image.dicom_files:
            raise PromptError(f"prompt file {Path(path).name} is a DICOM SR: its lines lie on the images of a DICOM "
                              "series, so the image must be that series' folder")
        if axis not in (None, 2):
            raise PromptError(f"--axis {axis}: the lines of the DICOM SR {Path(path).name} lie on the series' images, "
                              "slices along axis 2")
        prompts, names = read_recist_report(path, series())
    elif path.lower().endswith(".mrk.json"):
        prompts = read_markups_prompts(path, image.geometry, axis=2 if axis is None else axis)
    else:
        prompts = read_prompt_file(path, axis)
    if not prompts.prompts:
        raise PromptError(f"prompt file {Path(path).name} holds no prompts")
    return prompts, names


@dataclass
class PreparedCase:
    """An image read and its prompts checked against it: everything that can be refused before any model work."""

    image: LoadedImage
    prompts: PromptSet
    intensity: IntensitySettings
    #: the DICOM series the image was read from (for an SR's prompts, a DICOM SEG or SR), read on first use and
    #: kept; raises if the image was not one
    series_of: Callable[[], SourceSeries] = field(repr=False)
    names: Dict[int, str] = field(default_factory=dict)  # target names the prompt file gives

    @property
    def series(self) -> SourceSeries:
        return self.series_of()


def read_case(image_path, prompts_path, window: str = "auto", axis: Optional[int] = None) -> PreparedCase:
    image = read_image(image_path)

    @cache
    def series() -> SourceSeries:  # the headers are read once, for the prompts and the outputs alike
        return read_source_series(image.dicom_files)

    prompts, names = read_prompts(prompts_path, image, series, axis)
    prompts.key_boxes(image.array.shape)  # every prompt is checked here
    return PreparedCase(image, prompts, IntensitySettings.parse(window, image.array, image.modality), series, names)


def check_dicom_outputs(case: PreparedCase, output: Path, report: Optional[Path]) -> None:
    """Refuse, before any model work, a DICOM SEG or SR the case cannot have: a SEG needs a DICOM series as the
    image, an SR needs a SEG to refer to and RECIST lines on the series' images (slices along axis 2)."""
    if is_dicom_output(output):
        case.series  # read and checked now
    if report is None:
        return
    if not is_dicom_output(output):
        raise OutputError(f"--sr {report}: the report refers to the segments of a DICOM SEG; give -o a .dcm name")
    if case.prompts.axis != 2:
        raise OutputError(f"--sr {report}: the prompts lie on slices along axis {case.prompts.axis}, not on the "
                          "series' images (axis 2)")


def segment_case(case: PreparedCase, output, model: SliceModel, propagate: int = 0,
                 cache: Optional[EmbeddingCache] = None,
                 progress: Optional[Callable[[int, int], None]] = None, mode: str = DEFAULT_MODE,
                 report: Optional[Path] = None) -> FileSegmentation:
    """Segment a prepared case (in ``mode``, see ``refinement``) and write ``output`` (``.seg.nrrd``, a label image,
    or a DICOM SEG of the series the image was read from) in the image's geometry, and a DICOM SR ``report`` of the
    measurements when asked (``check_dicom_outputs`` says when it can be)."""
    if propagate < 0:
        raise PromptError(f"propagate must be 0 or more, got {propagate}")
    refinement = refinement_for(mode)
    image, prompts = case.image, case.prompts
    started = time.perf_counter()
    with SegmentationSession(image.array, model, case.intensity, cache) as session:
        results = session.segment(prompts, propagate=propagate, progress=progress, refinement=refinement)
    del session  # its normalised volume and in-memory embeddings go before the output's copies are made
    masks = {label: r.mask for label, r in results.items()}
    del results
    if is_dicom_output(output):
        segmentation = write_dicom_seg(Path(output), masks, case.series, model.model_id, case.names)
        written = masks  # a SEG keeps every segment whole, as a .seg.nrrd
    else:
        written = write_segmentation(output, masks, image.geometry, case.names)
    targets = [measure_target(label, mask, image.geometry, prompts.axis) for label, mask in written.items()]
    if report is not None:
        reported = [reported_target(t, case.names.get(t.label, f"label {t.label}"), written[t.label],
                                    [p for p in prompts.prompts if p.label == t.label]) for t in targets]
        write_measurement_report(Path(report), reported, segmentation, case.series, model.model_id)
    return FileSegmentation(targets, case.intensity.key, time.perf_counter() - started)


def reported_target(measured: TargetMeasurement, name: str, mask: np.ndarray, prompts) -> ReportedTarget:
    """What a DICOM SR reports of a measured target: its measurements, the RECIST markers among its ``prompts``
    (boxes are prompts, not measurements) and the slices along K its ``mask`` reaches."""
    return ReportedTarget(measured.label, name, measured.volume_ml, measured.longest_diameter_mm,
                          [p for p in prompts if isinstance(p, RecistPrompt)], occupied_slices(mask, 2))


def measure_target(label: int, mask: np.ndarray, geometry: ImageGeometry, axis: int) -> TargetMeasurement:
    """A target's measurements, taken from its mask as the output file holds it (what is reported is what was
    written: in a label image a target may lose voxels to an overlapping one with a higher label)."""
    diameter, where = longest_diameter_in_volume_mm(mask, geometry, axis)
    return TargetMeasurement(label, len(occupied_slices(mask, axis)), volume_ml(mask, geometry), diameter, where)
