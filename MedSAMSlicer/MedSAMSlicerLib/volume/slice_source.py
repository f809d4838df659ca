"""One normalised volume seen along one slicing axis: the slices a worker encodes and their cache keys.

With a ``window``, each slice is the window's crop of it (zoomed inference, ``crop_window``).
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..prompts.geometry import check_axis, plane_shape, slice_count, take_slice
from .crop_window import CropWindow
from .embedding_cache import EmbeddingKey


@dataclass(frozen=True, eq=False)
class SliceSource:
    volume_u8: np.ndarray  # [k, j, i] uint8, already intensity-normalised
    axis: int
    image_id: str
    preprocessing: str
    window: Optional[CropWindow] = None

    def __post_init__(self):
        check_axis(self.axis)

    @property
    def count(self) -> int:
        return slice_count(self.volume_u8.shape, self.axis)

    @property
    def plane_shape(self):
        if self.window is not None:
            return self.window.side, self.window.side
        return plane_shape(self.volume_u8.shape, self.axis)

    def slice(self, index: int) -> np.ndarray:
        whole = take_slice(self.volume_u8, self.axis, index)
        return whole if self.window is None else self.window.crop(whole)

    def key(self, index: int, model_id: str) -> EmbeddingKey:
        region = "" if self.window is None else self.window.key
        return EmbeddingKey(self.image_id, self.axis, int(index), self.preprocessing, model_id, region)
