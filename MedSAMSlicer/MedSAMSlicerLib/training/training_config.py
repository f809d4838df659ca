"""The settings of a fine-tuning run (``medsam-slicer train``, the module's Training panel), checked and recorded.

Apart from the trainer so that building the command line, or checking settings before a run,
imports no PyTorch.
"""

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

from ..errors import SettingsError
from ..models.model_registry import DEFAULT_MODEL, model_spec

TRAIN_MODES = ("decoder", "encoder+decoder")
#: ground-truth 3D objects smaller than this (voxels) are dropped before training, as the published training did
MIN_OBJECT_VOXELS = 1000
#: ground-truth 2D objects smaller than this (pixels) likewise
MIN_OBJECT_PIXELS = 100


@dataclass
class TrainingConfig:
    model: str = DEFAULT_MODEL
    checkpoint: Optional[str] = None  # starting weights (the embedded ones for lite-medsam when None)
    train: str = "decoder"  # or "encoder+decoder"
    epochs: int = 10
    batch_size: int = 4
    accumulate: int = 1  # batches per optimizer step
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    jitter: int = 20  # box sides loosened by 0..jitter px
    validation_fraction: float = 0.2
    validation_cases: Tuple[str, ...] = ()  # image file names to validate on (instead of a random share)
    seed: int = 0
    window: str = "auto"
    axis: int = 2
    min_object_voxels: int = MIN_OBJECT_VOXELS
    min_object_pixels: int = MIN_OBJECT_PIXELS
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on a GPU that supports it; never on the CPU

    def check(self) -> None:
        model_spec(self.model)
        if self.train not in TRAIN_MODES:
            raise SettingsError(f"--train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}")
        for name in ("epochs", "batch_size", "accumulate"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be 1 or more, got {getattr(self, name)}")
        for name in ("jitter", "min_object_voxels", "min_object_pixels"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not (self.learning_rate > 0 and self.weight_decay >= 0):
            raise SettingsError("the learning rate must be above 0 and the weight decay 0 or more")

    @property
    def train_encoder(self) -> bool:
        return self.train == "encoder+decoder"

    def as_record(self) -> Dict[str, object]:
        """The settings as plain values, as stored in the checkpoint."""
        record = asdict(self)
        record["validation_cases"] = list(self.validation_cases)
        return record
