"""MedSAM ViT-B as the published inference script runs it (``MedSAM_Inference.py``).

The slice is stretched (not padded) to 1024x1024 with scikit-image's cubic resize, cast to
uint8, min-max normalised per slice, and fed to the image encoder directly: no ImageNet
mean/std (``Sam.preprocess`` is bypassed). Boxes scale by ``1024 / [W, H, W, H]``; masks are the
sigmoid of the logits, resized bilinearly to the slice, above 0.5.
"""

from typing import Tuple

import numpy as np
from skimage.transform import resize

from .slice_model import SliceModel, min_max_normalise, resize_bilinear, sigmoid


class MedSamVitSliceModel(SliceModel):
    input_size = 1024

    def prepare(self, slice_u8: np.ndarray) -> np.ndarray:
        # One channel resized equals each of the reference's three identical channels (tested).
        resized = resize(slice_u8, (self.input_size, self.input_size), order=3,
                         preserve_range=True, anti_aliasing=True).astype(np.uint8)
        normalised = min_max_normalise(resized)
        return np.broadcast_to(normalised.astype(np.float32), (3,) + normalised.shape)

    def content_shape(self, slice_shape: Tuple[int, int]) -> Tuple[int, int]:
        return self.input_size, self.input_size  # stretched, never padded

    def model_coords(self, coords: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        height, width = slice_shape
        return coords / np.array([width, height]) * self.input_size

    def probabilities(self, logits: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        return resize_bilinear(sigmoid(logits), slice_shape)
