"""A square crop around a box, for zoomed inference: the model sees a small target at a larger scale.

A model resizes the whole slice to its input side (256 px for LiteMedSAM), so a 15 px lesion on a
512 px CT reaches the encoder 7 px wide. Cropping a square of ``ZOOM_FACTOR`` times the box's
longest side around its centre (at least ``MIN_CROP_SIDE`` px) and running the model on the crop
gives the encoder the lesion with its context at several times the scale. Crops are padded with
zeros where they reach past the slice, like the model's own padding, and never cover more than
the slice's longer side.
"""

from dataclasses import dataclass
from typing import Tuple

import numpy as np

ZOOM_FACTOR = 2.0
MIN_CROP_SIDE = 48
#: crop origins and sides are rounded to this many pixels, so that nearby boxes share a cached crop embedding
CROP_GRID = 8


@dataclass(frozen=True)
class CropWindow:
    """The square ``[y0, y0 + side) x [x0, x0 + side)`` of a slice (it may reach past the slice's edges)."""

    x0: int
    y0: int
    side: int

    @property
    def key(self) -> str:
        return f"crop{self.x0},{self.y0},{self.side}"

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The window's pixels of a 2D ``image``, zero outside the image."""
        out = np.zeros((self.side, self.side), dtype=image.dtype)
        (ya, yb, xa, xb), (ta, tb, sa, sb) = self._overlap(image.shape)
        out[ta:tb, sa:sb] = image[ya:yb, xa:xb]
        return out

    def paste(self, values: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
        """``values`` ``(side, side)`` placed in a zero array of the slice's ``shape``."""
        out = np.zeros(shape, dtype=values.dtype)
        (ya, yb, xa, xb), (ta, tb, sa, sb) = self._overlap(shape)
        out[ya:yb, xa:xb] = values[ta:tb, sa:sb]
        return out

    def boxes_in_crop(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``(N, 4)`` in slice pixels moved into the crop's pixels."""
        return np.asarray(boxes, dtype=float).reshape(-1, 4) - np.array([self.x0, self.y0, self.x0, self.y0])

    def _overlap(self, shape: Tuple[int, int]):
        height, width = shape
        ya, yb = max(self.y0, 0), min(self.y0 + self.side, height)
        xa, xb = max(self.x0, 0), min(self.x0 + self.side, width)
        return (ya, yb, xa, xb), (ya - self.y0, yb - self.y0, xa - self.x0, xb - self.x0)


def crop_window(boxes: np.ndarray, shape: Tuple[int, int], factor: float = ZOOM_FACTOR,
                min_side: int = MIN_CROP_SIDE) -> CropWindow:
    """The zoom window for ``boxes`` ``(N, 4)`` (their union) on a slice of ``shape`` ``(H, W)``."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    x0, y0 = boxes[:, :2].min(axis=0)
    x1, y1 = boxes[:, 2:].max(axis=0)
    side = max(factor * max(x1 - x0, y1 - y0), min_side)
    side = int(min(np.ceil(side / CROP_GRID) * CROP_GRID, max(shape)))
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    origin_x = int(np.round((centre_x - side / 2) / CROP_GRID) * CROP_GRID)
    origin_y = int(np.round((centre_y - side / 2) / CROP_GRID) * CROP_GRID)
    return CropWindow(origin_x, origin_y, side)
