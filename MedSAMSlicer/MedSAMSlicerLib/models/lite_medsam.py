"""LiteMedSAM (TinyViT encoder, 256 input) as its published inference script runs it.

The slice is resized with OpenCV's area interpolation so that its longest side is 256, min-max
normalised, and zero-padded bottom/right to 256x256. Boxes scale by ``256 / max(H, W)`` and are
truncated to integers, as the published code does (click points likewise). The 256x256 logits are cropped to the
unpadded region, resized bilinearly to the slice, and thresholded at sigmoid 0.5.
"""

from typing import Tuple

import cv2
import numpy as np

from .slice_model import SliceModel, min_max_normalise, resize_bilinear, sigmoid


def resized_shape(slice_shape: Tuple[int, int], target: int) -> Tuple[int, int]:
    """``(h, w)`` of a slice resized so that its longest side is ``target``."""
    height, width = slice_shape
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class LiteMedSamSliceModel(SliceModel):
    input_size = 256

    def prepare(self, slice_u8: np.ndarray) -> np.ndarray:
        new_h, new_w = resized_shape(slice_u8.shape, self.input_size)
        resized = cv2.resize(np.ascontiguousarray(slice_u8), (new_w, new_h), interpolation=cv2.INTER_AREA)
        normalised = min_max_normalise(resized)
        padded = np.zeros((self.input_size, self.input_size), dtype=np.float32)
        padded[:new_h, :new_w] = normalised
        return np.broadcast_to(padded, (3,) + padded.shape)

    def content_shape(self, slice_shape: Tuple[int, int]) -> Tuple[int, int]:
        return resized_shape(slice_shape, self.input_size)

    def model_coords(self, coords: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        ratio = self.input_size / max(slice_shape)
        return np.trunc(coords * ratio)

    def probabilities(self, logits: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        new_h, new_w = self.content_shape(slice_shape)
        logits = resize_bilinear(logits, (self.input_size, self.input_size))
        return sigmoid(resize_bilinear(logits[..., :new_h, :new_w], slice_shape))
