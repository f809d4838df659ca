"""The published MedSAM and LiteMedSAM inference, transcribed literally: one slice, one box, nothing reused.

Per slice: the uint8 slice repeated to three channels, the published resampler, one image-encoder
call, one prompt-encoder and mask-decoder call, no cache, no batching. This is the yardstick the
engine's fast path is held to: the tests require the same masks (IoU >= 0.999), and the benchmark
times it as the naive baseline. Variable names follow the published scripts; tensors are only moved to
the model's device.
"""

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage import transform

from ..models.slice_model import SliceModel


@torch.no_grad()
def reference_medsam_vit(model: SliceModel, img_np: np.ndarray, box_np: np.ndarray) -> np.ndarray:
    """MedSAM_Inference.py, one slice, one box."""
    img_3c = np.repeat(img_np[:, :, None], 3, axis=-1)
    H, W, _ = img_3c.shape
    img_1024 = transform.resize(img_3c, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    img_1024 = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)
    img_1024_tensor = torch.tensor(img_1024).float().permute(2, 0, 1).unsqueeze(0).to(model.torch_device)
    box_1024 = box_np / np.array([W, H, W, H]) * 1024
    image_embedding = model.image_encoder(img_1024_tensor)
    box_torch = torch.as_tensor(box_1024[None, :], dtype=torch.float, device=model.torch_device)[:, None, :]
    sparse, dense = model.prompt_encoder(points=None, boxes=box_torch, masks=None)
    low_res_logits, _ = model.mask_decoder(image_embeddings=image_embedding,
                                           image_pe=model.prompt_encoder.get_dense_pe(),
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           multimask_output=False)
    low_res_pred = F.interpolate(torch.sigmoid(low_res_logits), size=(H, W), mode="bilinear", align_corners=False)
    return low_res_pred.squeeze().cpu().numpy() > 0.5


@torch.no_grad()
def reference_lite_medsam(model: SliceModel, img_2d: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The published LiteMedSAM inference, one slice, one box."""
    img_3c = np.repeat(img_2d[:, :, None], 3, axis=-1)
    H, W = img_2d.shape
    scale = 256 / max(H, W)
    new_h, new_w = int(H * scale + 0.5), int(W * scale + 0.5)
    img_256 = cv2.resize(img_3c, (new_w, new_h), interpolation=cv2.INTER_AREA)
    img_256 = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), a_min=1e-8, a_max=None)
    img_256 = np.pad(img_256, ((0, 256 - new_h), (0, 256 - new_w), (0, 0)))
    img_256_tensor = torch.tensor(img_256).float().permute(2, 0, 1).unsqueeze(0).to(model.torch_device)
    image_embedding = model.image_encoder(img_256_tensor)
    box_256 = np.array([int(c * scale) for c in box], dtype=float)
    box_torch = torch.as_tensor(box_256[None, None, :], dtype=torch.float, device=model.torch_device)
    sparse, dense = model.prompt_encoder(points=None, boxes=box_torch, masks=None)
    logits, _ = model.mask_decoder(image_embeddings=image_embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=False)
    logits = F.interpolate(logits, (256, 256), mode="bilinear", align_corners=False)[..., :new_h, :new_w]
    logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
    return torch.sigmoid(logits).squeeze().cpu().numpy() > 0.5


def reference_mask(model: SliceModel, slice_u8: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The published pipeline of ``model``'s kind (MedSAM ViT-B or LiteMedSAM) on one slice and box."""
    if model.input_size == 256:
        return reference_lite_medsam(model, slice_u8, box)
    return reference_medsam_vit(model, slice_u8, box)
