"""The loss MedSAM was trained with: soft Dice (sigmoid, squared denominators) plus binary cross-entropy.

Both terms are computed on logits upsampled to the model's input size, against the mask in the
input frame, as in the published training script (MONAI's ``DiceLoss(sigmoid=True,
squared_pred=True)`` plus ``BCEWithLogitsLoss``; the tests check the equality).
"""

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean soft-Dice loss over the ``(N, C)`` masks plus mean BCE over every pixel; ``logits`` and ``target``
    ``(N, C, H, W)``."""
    target = target.to(logits.dtype)
    probabilities = torch.sigmoid(logits)
    dims = tuple(range(2, logits.ndim))
    intersection = (probabilities * target).sum(dims)
    denominator = (probabilities ** 2).sum(dims) + (target ** 2).sum(dims)
    dice_loss = 1 - (2 * intersection + SMOOTH) / (denominator + SMOOTH)
    return dice_loss.mean() + F.binary_cross_entropy_with_logits(logits, target)
