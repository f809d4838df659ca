"""One image file and its prompt file in, a segmentation file and its measurements out.

What ``medsam-slicer segment`` does for one case and ``medsam-slicer batch`` for each case of a
cohort: prompts are validated before any model work, the output is written atomically in the
input's geometry, and each target is measured (slices, volume, longest diameter).
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from ..errors import PromptError
from ..files.image_io import LoadedImage, read_image, write_segmentation
from ..models.slice_model import SliceModel
from ..prompts.geometry import ImageGeometry, occupied_slices
from ..prompts.measurements import longest_diameter_in_volume_mm, volume_ml
from ..prompts.prompt_types import PromptSet
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


def read_prompts(path, geometry, axis: Optional[int] = None) -> PromptSet:
    """A JSON prompt file, or a Slicer markups file (``.mrk.json``, RAS points mapped through ``geometry``)."""
    from ..files.markups_file import read_markups_prompts
    from ..files.prompt_file import read_prompt_file

    path = str(path)
    if path.lower().endswith(".mrk.json"):
        prompts = read_markups_prompts(path, geometry, axis=2 if axis is None else axis)
    else:
        prompts = read_prompt_file(path, axis)
    if not prompts.prompts:
        raise PromptError(f"prompt file {Path(path).name} holds no prompts")
    return prompts


@dataclass
class PreparedCase:
    """An image read and its prompts checked against it: everything that can be refused before any model work."""

    image: LoadedImage
    prompts: PromptSet
    intensity: IntensitySettings


def read_case(image_path, prompts_path, window: str = "auto", axis: Optional[int] = None) -> PreparedCase:
    image = read_image(image_path)
    prompts = read_prompts(prompts_path, image.geometry, axis)
    prompts.key_boxes(image.array.shape)  # every prompt is checked here
    return PreparedCase(image, prompts, IntensitySettings.parse(window, image.array, image.modality))


def segment_case(case: PreparedCase, output, model: SliceModel, propagate: int = 0,
                 cache: Optional[EmbeddingCache] = None,
                 progress: Optional[Callable[[int, int], None]] = None, mode: str = DEFAULT_MODE) -> FileSegmentation:
    """Segment a prepared case (in ``mode``, see ``refinement``) and write ``output`` (``.seg.nrrd`` or a label
    image) in the image's geometry."""
    if propagate < 0:
        raise PromptError(f"propagate must be 0 or more, got {propagate}")
    refinement = refinement_for(mode)
    image, prompts = case.image, case.prompts
    started = time.perf_counter()
    with SegmentationSession(image.array, model, case.intensity, cache) as session:
        results = session.segment(prompts, propagate=propagate, progress=progress, refinement=refinement)
    del session  # its normalised volume and in-memory embeddings go before the output's copies are made
    written = write_segmentation(output, {label: r.mask for label, r in results.items()}, image.geometry)
    del results
    targets = [measure_target(label, mask, image.geometry, prompts.axis) for label, mask in written.items()]
    return FileSegmentation(targets, case.intensity.key, time.perf_counter() - started)


def measure_target(label: int, mask: np.ndarray, geometry: ImageGeometry, axis: int) -> TargetMeasurement:
    """A target's measurements, taken from its mask as the output file holds it (what is reported is what was
    written: in a label image a target may lose voxels to an overlapping one with a higher label)."""
    diameter, where = longest_diameter_in_volume_mm(mask, geometry, axis)
    return TargetMeasurement(label, len(occupied_slices(mask, axis)), volume_ml(mask, geometry), diameter, where)
