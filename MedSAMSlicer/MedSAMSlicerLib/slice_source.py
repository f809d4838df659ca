"""One normalised volume seen along one slicing axis: the slices a worker encodes and their cache keys."""

from dataclasses import dataclass

import numpy as np

from .embedding_cache import EmbeddingKey
from .geometry import check_axis, plane_shape, slice_count, take_slice


@dataclass(frozen=True, eq=False)
class SliceSource:
    volume_u8: np.ndarray  # [k, j, i] uint8, already intensity-normalised
    axis: int
    image_id: str
    preprocessing: str

    def __post_init__(self):
        check_axis(self.axis)

    @property
    def count(self) -> int:
        return slice_count(self.volume_u8.shape, self.axis)

    @property
    def plane_shape(self):
        return plane_shape(self.volume_u8.shape, self.axis)

    def slice(self, index: int) -> np.ndarray:
        return take_slice(self.volume_u8, self.axis, index)

    def key(self, index: int, model_id: str) -> EmbeddingKey:
        return EmbeddingKey(self.image_id, self.axis, int(index), self.preprocessing, model_id)
