"""The split every SAM-family model offers: an expensive per-slice encode, a cheap per-prompt decode.

``SliceModel`` is ``SamPredictor``'s ``set_image``/``predict`` split made explicit so that
embeddings can be computed by a background worker, cached, and decoded later. Subclasses define
each published pipeline's own resampling, box mapping and mask post-processing.
"""

from abc import ABC, abstractmethod
from typing import Tuple

import numpy as np
import torch
from torch import nn


def min_max_normalise(image: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the image's own min and max; the denominator is at least 1e-8 (a constant slice gives 0)."""
    image = image.astype(np.float64)
    low = image.min()
    return (image - low) / max(image.max() - low, 1e-8)


class SliceModel(ABC):
    """A loaded model that turns uint8 slices into embeddings and (embedding, boxes) into masks."""

    #: side of the square model input, pixels
    input_size: int = 1024

    def __init__(self, model_id: str, image_encoder: nn.Module, prompt_encoder: nn.Module,
                 mask_decoder: nn.Module, device: torch.device, fingerprint: str):
        self.model_id = model_id
        self.device = torch.device(device)
        self.image_encoder = image_encoder.to(self.device).eval()
        self.prompt_encoder = prompt_encoder.to(self.device).eval()
        self.mask_decoder = mask_decoder.to(self.device).eval()
        #: identifies these weights (checkpoint SHA-256) in cache keys
        self.fingerprint = fingerprint

    @property
    def cache_id(self) -> str:
        return f"{self.model_id}@{self.fingerprint[:16]}"

    @abstractmethod
    def prepare(self, slice_u8: np.ndarray) -> np.ndarray:
        """The model input ``(3, S, S)`` float32 for one ``(H, W)`` uint8 slice."""

    @abstractmethod
    def model_boxes(self, boxes: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        """Boxes ``(N, 4)`` in slice pixels mapped to the model's input space."""

    @abstractmethod
    def postprocess(self, logits: torch.Tensor, slice_shape: Tuple[int, int]) -> torch.Tensor:
        """Decoder logits ``(N, 1, 256, 256)`` to foreground masks ``(N, H, W)`` (bool)."""

    @torch.inference_mode()
    def encode(self, batch: np.ndarray) -> torch.Tensor:
        """Embeddings ``(B, 256, 64, 64)`` float32 on the CPU for prepared inputs ``(B, 3, S, S)``."""
        images = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return self.image_encoder(images).float().cpu()

    @torch.inference_mode()
    def decode(self, embedding: torch.Tensor, boxes: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        """Masks ``(N, H, W)`` bool for ``N`` boxes ``(x0, y0, x1, y1)`` on one slice's embedding ``(256, 64, 64)``."""
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        box_tensor = torch.as_tensor(self.model_boxes(boxes, slice_shape), dtype=torch.float, device=self.device)
        sparse, dense = self.prompt_encoder(points=None, boxes=box_tensor[:, None, :], masks=None)
        logits, _ = self.mask_decoder(
            image_embeddings=embedding.to(self.device, torch.float32)[None],
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return self.postprocess(logits, slice_shape).cpu().numpy()
