"""The prompt encoder and mask decoder for one box on one embedding, as one network to export.

A box prompt's whole cost, run by the optimised runtime (``inference_runtime``) as a single call.
Its own module because it is a PyTorch module: importing it imports PyTorch, which a run served by
cached exports never does.
"""

import torch
from torch import nn


class BoxDecoder(nn.Module):
    """``(embedding (1, 256, 64, 64), box (1, 4) in model space)`` to low-resolution logits ``(1, 1, 256, 256)``."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module):
        super().__init__()
        self.prompt_encoder, self.mask_decoder = prompt_encoder, mask_decoder

    def forward(self, embedding: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        sparse, dense = self.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
        logits, _ = self.mask_decoder(image_embeddings=embedding, image_pe=self.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=False)
        return logits
