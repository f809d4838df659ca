"""What a segmentation session is built from besides the volume: the model, its weights, device and arithmetic, and
how intensities become the model's uint8 input.

One frozen value, so that a caller (the Slicer module's widget and logic) captures the user's choices once and keys
its session by them, as ``SamPredictor`` holds its model and takes the image once. The intensity is kept as the
text the user chose (``auto``, a preset, ``W,L``, ``percentile``) and resolved against the volume only when the
session is built, off the main thread: ``auto`` looks at every voxel to tell CT from MR, which must not happen on
each scroll or drag.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import SettingsError
from ..models.model_registry import load_model, model_spec
from ..models.quantization import PRECISIONS
from .intensity import IntensitySettings
from .session import SegmentationSession


@dataclass(frozen=True)
class SessionSettings:
    model: str = "lite-medsam"
    checkpoint: Optional[str] = None
    device: str = "auto"
    precision: str = "fp32"
    intensity: str = "auto"  # as ``IntensitySettings.parse`` reads it

    def check(self) -> "SessionSettings":
        """Refuse settings that no volume could make valid (an unknown model, precision or window), naming them."""
        model_spec(self.model)
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        IntensitySettings.parse(self.intensity)
        return self

    def build(self, volume: np.ndarray) -> SegmentationSession:
        """The session of ``volume`` ([k, j, i], a copy the caller no longer writes to): loads the model and
        normalises the volume, seconds to a minute, so callers with a GUI run it on a thread."""
        intensity = IntensitySettings.parse(self.intensity, volume)
        model = load_model(self.model, self.checkpoint, self.device, precision=self.precision)
        return SegmentationSession(volume, model, intensity)


def window_text(width: float, level: float) -> str:
    """A window as the settings' intensity text (``W,L``), exactly (no rounding of the user's numbers)."""
    return f"{float(width)!r},{float(level)!r}"
