"""Labelled volumes turned into the 2D samples MedSAM is fine-tuned on: one (slice, label) each.

Preprocessing is the inference pipeline's own (the same intensity settings and the model's own
``prepare``), so a fine-tuned model sees at training time what it will see in use. Ground truth
is cleaned as the MedSAM training data was: 3D objects under 1000 voxels (26-connected) and
then 2D objects under 100 pixels (8-connected) are dropped. Splits are made by case, never by
slice, so no patient is in two splits.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..errors import ImageError, SettingsError
from ..files.image_io import read_image, read_label_image
from ..prompts.geometry import array_dim, check_axis, occupied_slices, slice_indexer
from ..volume.embedding_cache import image_identity
from ..volume.intensity import IntensitySettings, normalize_volume
from ..volume.slice_source import SliceSource
from .training_config import MIN_OBJECT_PIXELS, MIN_OBJECT_VOXELS


@dataclass(frozen=True, eq=False)
class TrainingCase:
    """One labelled volume, normalised for the model and seen along the training axis."""

    name: str
    source: SliceSource
    labels: np.ndarray  # [k, j, i], cleaned


@dataclass(frozen=True)
class TrainingSample:
    """One label on one slice of one case: an image, a mask, and (from the mask) a box prompt."""

    case: int
    label: int
    index: int


def drop_small_objects(mask: np.ndarray, min_size: int, structure: np.ndarray) -> np.ndarray:
    """``mask`` without its connected components (under ``structure``) of fewer than ``min_size`` elements."""
    components, count = ndimage.label(mask, structure=structure)
    if count == 0 or min_size <= 1:
        return mask.copy()
    sizes = np.bincount(components.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[components]


def clean_labels(labels: np.ndarray, axis: int = 2, min_object_voxels: int = MIN_OBJECT_VOXELS,
                 min_object_pixels: int = MIN_OBJECT_PIXELS) -> np.ndarray:
    """A cleaned copy of a ``[k, j, i]`` label volume: small 3D objects, then small objects per slice, removed.

    A one-slice volume (a 2D image) gets only the 2D cleaning.
    """
    cleaned = np.zeros_like(labels)
    slice_structure = np.zeros((3, 3, 3), dtype=bool)  # 8-connected within each slice, never across slices
    slice_structure[(slice(None),) * array_dim(axis) + (1,)] = True
    for label in (int(v) for v in np.unique(labels) if v != 0):
        mask = labels == label
        if labels.shape[0] > 1:
            mask = drop_small_objects(mask, min_object_voxels, np.ones((3, 3, 3), dtype=bool))
        cleaned[drop_small_objects(mask, min_object_pixels, slice_structure)] = label
    return cleaned


def load_case(image_path: Path, label_path: Path, window: str = "auto", axis: int = 2,
              min_object_voxels: int = MIN_OBJECT_VOXELS, min_object_pixels: int = MIN_OBJECT_PIXELS) -> TrainingCase:
    """Read, normalise and clean one (image, label) pair; the label volume must share the image's grid."""
    axis = check_axis(axis)
    image, labels = read_image(image_path), read_label_image(label_path)
    if labels.array.shape != image.array.shape:
        raise ImageError(f"labels {label_path.name} have shape {labels.array.shape}, the image {image.array.shape}")
    if image.array.shape[0] == 1 and axis != 2:
        raise SettingsError(f"{image_path.name} is a 2D image: it can only be cut along axis 2")
    intensity = IntensitySettings.parse(window, image.array, image.modality)
    source = SliceSource(normalize_volume(image.array, intensity), axis, image_identity(image.array), intensity.key)
    return TrainingCase(image_path.name, source, clean_labels(labels.array, axis, min_object_voxels, min_object_pixels))


def samples_of(cases: Sequence[TrainingCase]) -> List[TrainingSample]:
    """Every (case, label, slice) where the label is present after cleaning."""
    samples = []
    for number, case in enumerate(cases):
        for label in (int(v) for v in np.unique(case.labels) if v != 0):
            for index in occupied_slices(case.labels == label, case.source.axis):
                samples.append(TrainingSample(number, label, int(index)))
    return samples


def sample_mask(case: TrainingCase, sample: TrainingSample) -> np.ndarray:
    return case.labels[slice_indexer(case.source.axis, sample.index)] == sample.label


def split_by_case(names: Sequence[str], validation_fraction: float, seed: int = 0,
                  validation_names: Optional[Sequence[str]] = None) -> Tuple[List[str], List[str]]:
    """``(training, validation)`` case names: the given validation cases, else a seeded random share (at least one)."""
    names = list(names)
    if validation_names:
        unknown = sorted(set(validation_names) - set(names))
        if unknown:
            raise SettingsError(f"validation case(s) {', '.join(unknown)} are not among the training images")
        held = set(validation_names)
    else:
        if not 0 < validation_fraction < 1:
            raise SettingsError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
        if len(names) < 2:
            raise SettingsError(f"{len(names)} case(s): a split by case needs at least 2 (one to validate on)")
        count = min(len(names) - 1, max(1, int(round(validation_fraction * len(names)))))
        held = set(np.random.default_rng(seed).choice(names, size=count, replace=False).tolist())
    training = [n for n in names if n not in held]
    if not training:
        raise SettingsError("every case is held out for validation; nothing is left to train on")
    return training, [n for n in names if n in held]
