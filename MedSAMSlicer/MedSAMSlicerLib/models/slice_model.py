"""The split every SAM-family model offers: an expensive per-slice encode, a cheap per-prompt decode.

``SliceModel`` is ``SamPredictor``'s ``set_image``/``predict`` split made explicit so that
embeddings can be computed by a background worker, cached, and decoded later. Subclasses define
each published pipeline's own resampling, box mapping and mask post-processing.

The PyTorch network is built, and its weights read, only when something needs it (training,
click prompts, PyTorch inference, a missing export): with its exports cached, a run under an
optimised runtime never builds it, nor even imports PyTorch (1-3 s of every start-up): embeddings
are numpy arrays, and box masks are post-processed in numpy (``resize_bilinear``, ``inference_runtime``).
"""

import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from .device import Device

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .inference_runtime import RuntimeNetworks


def _bilinear_taps(size: int, new_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output position along one axis: the two source indices and their weights, as PyTorch computes them
    (half-pixel centres, clamped at 0; the source position rounded once, as its fused multiply-add does)."""
    scale = np.float64(np.float32(size) / np.float32(new_size))
    position = (scale * (np.arange(new_size) + 0.5) - 0.5).astype(np.float32)
    position = np.maximum(position, np.float32(0))
    low = position.astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    upper = np.minimum(position - low.astype(np.float32), np.float32(1))
    return low, high, np.float32(1) - upper, upper


def resize_bilinear(planes: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """``(..., h, w)`` resized to ``(..., H, W)`` float32 as ``F.interpolate(mode="bilinear", align_corners=False)``
    does it: the published post-processing without importing PyTorch (the same weights; values equal to float
    rounding, tested against PyTorch)."""
    planes = np.asarray(planes, dtype=np.float32)
    if planes.shape[-2:] == tuple(shape):  # every weight is 1 on its own pixel: the identity, without the gathers
        return planes
    low, high, low_weight, high_weight = _bilinear_taps(planes.shape[-2], shape[0])
    rows = planes[..., low, :] * low_weight[:, None] + planes[..., high, :] * high_weight[:, None]
    low, high, low_weight, high_weight = _bilinear_taps(planes.shape[-1], shape[1])
    return rows[..., low] * low_weight + rows[..., high] * high_weight


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in float32 (a logit below -88 gives 0, quietly)."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float32)))).astype(np.float32, copy=False)


def min_max_normalise(image: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the image's own min and max; the denominator is at least 1e-8 (a constant slice gives 0)."""
    image = image.astype(np.float64)
    low = image.min()
    return (image - low) / max(image.max() - low, 1e-8)


class SliceModel(ABC):
    """A loaded model that turns uint8 slices into embeddings and (embedding, boxes) into masks."""

    #: side of the square model input, pixels
    input_size: int = 1024
    #: whether click prompts are scored with three candidate masks (SAM) or one (MedSAM, trained single-mask)
    multimask_oracle: bool = False

    def __init__(self, model_id: str, load_network: Callable[[], "nn.Module"], device: Device, fingerprint: str):
        """``load_network`` builds the network (``image_encoder``, ``prompt_encoder``, ``mask_decoder``) with its
        weights; it is called once, on first use."""
        self.model_id = model_id
        self.device = device
        #: identifies these weights (checkpoint SHA-256) in cache keys
        self.fingerprint = fingerprint
        #: the encoder and box decoder under an optimised runtime (``inference_runtime``), or None for PyTorch
        self.runtime_networks: Optional["RuntimeNetworks"] = None
        self._load_network: Optional[Callable[[], "nn.Module"]] = load_network
        self._network: Optional["nn.Module"] = None
        self._network_lock = threading.Lock()

    @property
    def torch_device(self) -> "torch.device":
        """``device`` as PyTorch names it (imports PyTorch: only for what runs in it)."""
        import torch
        return torch.device(str(self.device))

    @property
    def network(self) -> "nn.Module":
        """The PyTorch network on ``device`` in eval mode, built on first use (the worker and the GUI may both ask)."""
        with self._network_lock:
            if self._network is None:
                self._network = self._load_network().to(self.torch_device).eval()
                self._load_network = None
            return self._network

    @property
    def network_loaded(self) -> bool:
        """Whether the PyTorch network has been built (a run served from cached exports never builds it)."""
        return self._network is not None

    @property
    def image_encoder(self) -> "nn.Module":
        return self.network.image_encoder

    @property
    def prompt_encoder(self) -> "nn.Module":
        return self.network.prompt_encoder

    @property
    def mask_decoder(self) -> "nn.Module":
        return self.network.mask_decoder

    @property
    def runtime(self) -> str:
        """What runs the networks: ``torch``, ``openvino`` or ``onnxruntime``."""
        return self.runtime_networks.name if self.runtime_networks is not None else "torch"

    @property
    def precision(self) -> str:
        """The encoder's arithmetic: ``fp32``, or ``int8`` under an optimised runtime (``quantization``)."""
        return self.runtime_networks.precision if self.runtime_networks is not None else "fp32"

    @property
    def arithmetic(self) -> str:
        """The networks' arithmetic as run: ``fp32``, ``int8``, or ``int8+bf16`` (int8 products, the rest in bf16)."""
        floats = self.runtime_networks.floats if self.runtime_networks is not None else "fp32"
        return self.precision if floats == "fp32" else f"{self.precision}+{floats}"

    @property
    def cache_id(self) -> str:
        """Names these weights and this encoder in embedding cache keys (int8 embeddings are not fp32 ones)."""
        suffix = "" if self.arithmetic == "fp32" else f"+{self.arithmetic}"
        return f"{self.model_id}@{self.fingerprint[:16]}{suffix}"

    @abstractmethod
    def prepare(self, slice_u8: np.ndarray) -> np.ndarray:
        """The model input ``(3, S, S)`` float32 for one ``(H, W)`` uint8 slice."""

    @abstractmethod
    def content_shape(self, slice_shape: Tuple[int, int]) -> Tuple[int, int]:
        """``(h, w)`` of the slice's content inside the ``(S, S)`` input (the rest is padding)."""

    @abstractmethod
    def model_coords(self, coords: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        """Points ``(N, 2)`` ``(x, y)`` in slice pixels mapped to the model's input space."""

    def model_boxes(self, boxes: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        """Boxes ``(N, 4)`` in slice pixels mapped to the model's input space (their two corners as points)."""
        return self.model_coords(np.asarray(boxes, dtype=float).reshape(-1, 2), slice_shape).reshape(-1, 4)

    @abstractmethod
    def probabilities(self, logits: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        """Decoder logits ``(N, C, 256, 256)`` to foreground probabilities ``(N, C, H, W)`` float32 on the slice."""

    def postprocess(self, logits: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        """Decoder logits ``(N, C, 256, 256)`` to foreground masks ``(N, C, H, W)`` (bool)."""
        return self.probabilities(logits, slice_shape) > 0.5

    def prepare_mask(self, mask: np.ndarray) -> np.ndarray:
        """A slice's ``(H, W)`` mask in the ``(S, S)`` input frame (nearest neighbour, zero padding): the training
        target."""
        height, width = self.content_shape(mask.shape)
        resized = cv2.resize(np.ascontiguousarray(mask, dtype=np.uint8), (width, height),
                             interpolation=cv2.INTER_NEAREST)
        target = np.zeros((self.input_size, self.input_size), dtype=np.float32)
        target[:height, :width] = resized
        return target

    @property
    def parts(self) -> Dict[str, "nn.Module"]:
        return {"image_encoder": self.image_encoder, "prompt_encoder": self.prompt_encoder,
                "mask_decoder": self.mask_decoder}

    def state_dict(self) -> Dict[str, "torch.Tensor"]:
        """The weights as the network's own state dict (what ``load_model(..., checkpoint=)`` reads back)."""
        return {f"{name}.{key}": value.detach().cpu().clone()
                for name, part in self.parts.items() for key, value in part.state_dict().items()}

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings ``(B, 256, 64, 64)`` float32 for prepared inputs ``(B, 3, S, S)``."""
        if self.runtime_networks is not None:
            return self.runtime_networks.encode(batch)
        import torch

        images = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.torch_device)
        # on a GPU the encoder runs in half precision (the benchmark checks the masks against the fp32 reference)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
            return self.image_encoder(images).float().cpu().numpy()

    def logits(self, embedding: "torch.Tensor", boxes: Optional["torch.Tensor"] = None,
               points: Optional[Tuple["torch.Tensor", "torch.Tensor"]] = None,
               multimask: bool = False) -> Tuple["torch.Tensor", "torch.Tensor"]:
        """Low-resolution logits ``(N, C, 256, 256)`` and predicted IoUs ``(N, C)`` for one embedding ``(256, 64, 64)``.

        ``boxes`` ``(N, 4)`` and ``points`` (coordinates ``(N, P, 2)``, labels ``(N, P)``) are in model input space.
        Gradients flow (training uses this); ``decode`` and ``decode_points`` wrap it for inference.
        """
        import torch

        sparse, dense = self.prompt_encoder(points=points, boxes=None if boxes is None else boxes[:, None, :],
                                            masks=None)
        return self.mask_decoder(
            image_embeddings=torch.as_tensor(embedding).to(self.torch_device, torch.float32)[None],
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    def decode(self, embedding: np.ndarray, boxes: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        """Masks ``(N, H, W)`` bool for ``N`` boxes ``(x0, y0, x1, y1)`` on one slice's embedding ``(256, 64, 64)``."""
        return self.postprocess(self._box_logits(embedding, boxes, slice_shape), slice_shape)[:, 0]

    def decode_probabilities(self, embedding: np.ndarray, boxes: np.ndarray,
                             slice_shape: Tuple[int, int]) -> np.ndarray:
        """Foreground probabilities ``(N, H, W)`` float32 for ``N`` boxes: ``decode`` before its 0.5 threshold."""
        return self.probabilities(self._box_logits(embedding, boxes, slice_shape), slice_shape)[:, 0]

    def _box_logits(self, embedding: np.ndarray, boxes: np.ndarray, slice_shape: Tuple[int, int]) -> np.ndarray:
        boxes = self.model_boxes(boxes, slice_shape)
        if self.runtime_networks is not None and self.runtime_networks.box_decoder is not None:
            return self.runtime_networks.decode_boxes(embedding, boxes)
        import torch

        with torch.inference_mode():
            logits, _ = self.logits(embedding,
                                    boxes=torch.as_tensor(boxes, dtype=torch.float, device=self.torch_device))
            return logits.float().cpu().numpy()

    def decode_points(self, embedding: np.ndarray, points: np.ndarray, positive: np.ndarray,
                      slice_shape: Tuple[int, int], multimask: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """One prompt made of clicks ``(P, 2)`` ``(x, y)`` (``positive`` says which add, which remove).

        Returns candidate masks ``(C, H, W)`` bool and their predicted IoUs ``(C,)``: C is 3 with
        ``multimask`` (SAM's answer to an ambiguous click), else 1.
        """
        import torch

        coords = self.model_coords(np.asarray(points, dtype=float).reshape(-1, 2), slice_shape)
        with torch.inference_mode():
            coords = torch.as_tensor(coords, dtype=torch.float, device=self.torch_device)[None]
            labels = torch.as_tensor(np.asarray(positive, dtype=int).reshape(1, -1), device=self.torch_device)
            logits, scores = self.logits(embedding, points=(coords, labels), multimask=multimask)
            logits, scores = logits.float().cpu().numpy(), scores[0].float().cpu().numpy()
        return self.postprocess(logits, slice_shape)[0], scores
