"""Intensity normalisation of a whole volume to uint8, exactly as the published MedSAM pipeline.

CT: clip to the window [L - W/2, L + W/2], min-max rescale the clipped volume to 0-255.
Other modalities: clip to the 0.5th/99.5th percentiles of the strictly positive voxels,
min-max rescale to 0-255, voxels that were zero stay zero. Then a truncating cast to uint8.
The caller's array is never modified; the float work is done slab by slab, in the dtype the
reference computes in, so that a 512x512x300 CT never needs a full float64 copy.
Non-finite voxels (NaN or infinite, common outside the field of view of resampled scans) would
poison every min, max and percentile: they are left out of the statistics, become 0 (the lowest
intensity), and a warning says how many there were.
"""

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import ImageError, SettingsError

#: Paper presets, (width, level) in HU.
CT_PRESETS = {
    "soft-tissue": (400.0, 40.0),
    "lung": (1500.0, -160.0),
    "brain": (80.0, 40.0),
}

_SLAB_VOXELS = 1 << 22


@dataclass(frozen=True)
class IntensitySettings:
    """How a volume becomes uint8: a CT window (``width``, ``level``) or percentile clipping."""

    mode: str = "percentile"  # "window" or "percentile"
    width: float = 0.0
    level: float = 0.0
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5

    def __post_init__(self):
        if self.mode not in ("window", "percentile"):
            raise SettingsError(f"intensity mode {self.mode!r} is not 'window' or 'percentile'")
        if self.mode == "window" and not (math.isfinite(self.width) and self.width > 0 and math.isfinite(self.level)):
            raise SettingsError("window width must be a positive number and level a finite one, "
                                f"got W={self.width}, L={self.level}")
        if self.mode == "percentile" and not 0 <= self.lower_percentile < self.upper_percentile <= 100:
            raise SettingsError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.lower_percentile}, "
                f"{self.upper_percentile}")

    @classmethod
    def window(cls, width: float, level: float) -> "IntensitySettings":
        return cls(mode="window", width=float(width), level=float(level))

    @classmethod
    def preset(cls, name: str) -> "IntensitySettings":
        if name not in CT_PRESETS:
            raise SettingsError(f"unknown CT window preset {name!r}; choose one of {', '.join(CT_PRESETS)}")
        return cls.window(*CT_PRESETS[name])

    @classmethod
    def parse(cls, text: str, image: Optional[np.ndarray] = None,
              modality: Optional[str] = None) -> "IntensitySettings":
        """Parse a command-line choice: a preset name, ``W,L``, ``percentile`` or ``auto``.

        ``auto`` uses the soft-tissue window for CT (DICOM modality CT, or intensities that look like
        Hounsfield units: a minimum at or below -500) and percentile clipping otherwise.
        """
        text = text.strip().lower()
        if text in CT_PRESETS:
            return cls.preset(text)
        if text == "percentile":
            return cls()
        if text == "auto":
            return cls.preset("soft-tissue") if looks_like_ct(image, modality) else cls()
        parts = text.split(",")
        if len(parts) == 2:
            try:
                width, level = float(parts[0]), float(parts[1])
            except ValueError:
                pass
            else:
                return cls.window(width, level)
        raise SettingsError(
            f"window {text!r} is not one of {', '.join(CT_PRESETS)}, W,L (e.g. 400,40), percentile or auto")

    @property
    def key(self) -> str:
        """A stable text that identifies these settings (part of the embedding cache key)."""
        if self.mode == "window":
            return f"window:{self.width:g}:{self.level:g}"
        return f"percentile:{self.lower_percentile:g}:{self.upper_percentile:g}"


def looks_like_ct(image: Optional[np.ndarray], modality: Optional[str] = None) -> bool:
    """True for DICOM modality CT, or, without one, for an image whose minimum is at or below -500 (HU air)."""
    if modality:
        return modality.strip().upper() == "CT"
    if image is None:
        return False
    finite = finite_voxels(np.asarray(image))
    return finite.size > 0 and float(np.min(finite)) <= -500


def non_finite_mask(image: np.ndarray) -> Optional[np.ndarray]:
    """Where ``image`` is NaN or infinite, or None when every voxel is finite (always for integer images)."""
    if not np.issubdtype(image.dtype, np.inexact):
        return None
    bad = ~np.isfinite(image)
    return bad if bad.any() else None


def finite_voxels(image: np.ndarray, bad: Optional[np.ndarray] = None) -> np.ndarray:
    """``image`` itself when it is all finite, else its finite voxels (flattened)."""
    bad = non_finite_mask(image) if bad is None else bad
    return image if bad is None else image[~bad]


def normalize_volume(image: np.ndarray, settings: IntensitySettings) -> np.ndarray:
    """Return a new uint8 array of ``image``'s shape, normalised as the published pipeline does."""
    image = np.asarray(image)
    if image.size == 0:
        raise SettingsError("cannot normalise an empty image")
    bad = non_finite_mask(image)
    values = finite_voxels(image, bad)
    if bad is not None:
        if values.size == 0:
            raise ImageError("the image holds no finite voxel (all NaN or infinite)")
        warnings.warn(f"{int(bad.sum())} non-finite voxel(s) (NaN or infinite) are treated as the lowest "
                      "intensity (0 after normalisation); the other voxels are normalised without them",
                      RuntimeWarning, stacklevel=2)
    if settings.mode == "window":
        lower = settings.level - settings.width / 2
        upper = settings.level + settings.width / 2
    else:
        positive = values[values > 0]
        if positive.size == 0:
            return np.zeros(image.shape, dtype=np.uint8)
        lower = np.percentile(positive, settings.lower_percentile)
        upper = np.percentile(positive, settings.upper_percentile)
    # The reference's arithmetic runs in the dtype np.clip gives (float32 for float32 images, else
    # float64); using the same dtype and order of operations makes every voxel round the same way.
    dtype = np.clip(image.reshape(-1)[:1], lower, upper).dtype
    clipped_min = np.clip(np.min(values), lower, upper).astype(dtype)
    clipped_max = np.clip(np.max(values), lower, upper).astype(dtype)
    span = clipped_max - clipped_min

    out = np.empty(image.shape, dtype=np.uint8)
    flat_in, flat_out = image.reshape(-1), out.reshape(-1)
    flat_bad = None if bad is None else bad.reshape(-1)
    for start in range(0, flat_in.size, _SLAB_VOXELS):
        slab = flat_in[start:start + _SLAB_VOXELS]
        if span > 0:
            scaled = (np.clip(slab, lower, upper) - clipped_min) / span * 255.0
        else:
            scaled = np.zeros(slab.shape, dtype=dtype)
        if settings.mode == "percentile":
            scaled[slab == 0] = 0
        if flat_bad is not None:
            scaled[flat_bad[start:start + _SLAB_VOXELS]] = 0
        flat_out[start:start + _SLAB_VOXELS] = scaled.astype(np.uint8)
    return out
