"""The original SAM (ViT-B/L/H) as ``SamPredictor`` runs it, for comparison with MedSAM.

Unlike MedSAM, SAM resizes the longest side to 1024 (keeping the aspect ratio), normalises
with ImageNet mean/std, pads to 1024x1024, and thresholds logits at 0. This uses
segment-anything's own transforms so the masks are those of ``SamPredictor``.
"""

from typing import Callable, Tuple

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from .device import Device
from .slice_model import SliceModel


class SamVitSliceModel(SliceModel):
    input_size = 1024
    multimask_oracle = True  # SAM answers an ambiguous click with three masks; the evaluation's oracle picks one

    def __init__(self, model_id: str, load_network: Callable[[], Sam], device: Device, fingerprint: str):
        super().__init__(model_id, load_network, device, fingerprint)
        self.transform = ResizeLongestSide(self.input_size)

    @property
    def sam(self) -> Sam:
        """The whole ``Sam``: its pixel statistics and mask post-processing are part of SAM's pipeline."""
        return self.network

    def prepare(self, slice_u8: np.ndarray) -> np.ndarray:
        rgb = np.repeat(slice_u8[:, :, None], 3, axis=2)
        resized = torch.as_tensor(self.transform.apply_image(rgb)).permute(2, 0, 1).float()
        mean, std = self.sam.pixel_mean.cpu(), self.sam.pixel_std.cpu()
        normalised = (resized - mean) / std
        padded = torch.zeros((3, self.input_size, self.input_size))
        padded[:, :normalised.shape[1], :normalised.shape[2]] = normalised
        return padded.numpy()

    def content_shape(self, slice_shape: Tuple[int, int]) -> Tuple[int, int]:
        return self.transform.get_preprocess_shape(slice_shape[0], slice_shape[1], self.input_size)

    def model_coords(self, coords: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        return self.transform.apply_coords(coords, tuple(slice_shape))

    def _upscaled(self, logits: np.ndarray, slice_shape: Tuple[int, int]) -> torch.Tensor:
        """SAM's own ``postprocess_masks`` (resize to 1024, crop the padding, resize to the slice) on the logits."""
        with torch.inference_mode():
            return self.sam.postprocess_masks(torch.from_numpy(np.ascontiguousarray(logits)).to(self.torch_device),
                                              self.content_shape(slice_shape), tuple(slice_shape))

    def probabilities(self, logits: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        return torch.sigmoid(self._upscaled(logits, slice_shape)).float().cpu().numpy()

    def postprocess(self, logits: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        # SAM's own threshold on the logits, exactly as SamPredictor
        return (self._upscaled(logits, slice_shape) > self.sam.mask_threshold).cpu().numpy()
