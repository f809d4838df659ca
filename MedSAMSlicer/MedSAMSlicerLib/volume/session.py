"""A volume prepared for one model: prompts in, masks out, embeddings reused across prompts.

``SegmentationSession`` is ``SamPredictor`` stretched across the slices of a volume: the volume
is normalised once, each slice's embedding is computed once by the background
``EmbeddingWorker`` and cached, and every prompt is then a cheap decode. The Slicer module keeps
one session per (volume, model, intensity settings); the command line uses one per image.
"""

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..models.slice_model import SliceModel
from ..prompts.geometry import check_axis, plane_shape, slice_indexer
from ..prompts.interpolation import SliceBoxes, interpolate_boxes
from ..prompts.prompt_types import PromptSet
from .contested_voxels import give_contested_voxels
from .crop_window import CropWindow
from .embedding_cache import EmbeddingCache, image_identity
from .embedding_worker import EmbeddingWorker
from .intensity import IntensitySettings, normalize_volume
from .propagation import STOPPING_RULE, StoppingRule, propagate as propagate_target, target_reference
from .refinement import Refinement, refine_target, refined_probability, zoom_window, zoom_windows
from .slice_progress import ProgressCount, SliceProgress
from .slice_source import SliceSource

#: boxes decoded at once: full-resolution masks of a slice with many boxes would otherwise all sit in memory
DECODE_BATCH = 8


@dataclass
class LabelMask:
    """The segmentation of one target (label) in ``[k, j, i]`` order, and the slices that were segmented."""

    label: int
    mask: np.ndarray
    slices: List[int] = field(default_factory=list)


class SegmentationSession:
    def __init__(self, volume: np.ndarray, model: SliceModel, intensity: IntensitySettings,
                 cache: Optional[EmbeddingCache] = None, worker: Optional[EmbeddingWorker] = None):
        if volume.ndim != 3:
            raise ValueError(f"expected a [k, j, i] volume, got shape {volume.shape}")
        self.model = model
        self.intensity = intensity
        self.shape = tuple(volume.shape)
        self.image_id = image_identity(volume)
        self.volume_u8 = normalize_volume(volume, intensity)
        if worker is not None and cache is not None and cache is not worker.cache:
            raise ValueError("a session given a worker uses the worker's cache; pass one or the other")
        self.cache = worker.cache if worker is not None else (cache if cache is not None else EmbeddingCache())
        self._owns_worker = worker is None
        self.worker = worker if worker is not None else EmbeddingWorker(model, self.cache)
        self._sources: Dict[Tuple[int, Optional[CropWindow]], SliceSource] = {}

    def source(self, axis: int, window: Optional[CropWindow] = None) -> SliceSource:
        """The slices along ``axis`` (or their ``window`` crops) as the worker encodes them."""
        axis = check_axis(axis)
        if (axis, window) not in self._sources:
            self._sources[axis, window] = SliceSource(self.volume_u8, axis, self.image_id, self.intensity.key, window)
        return self._sources[axis, window]

    def prefetch(self, indices: Sequence[int], axis: int = 2, priority: float = 0,
                 window: Optional[CropWindow] = None) -> Dict[int, Future]:
        """Queue embeddings in the background; returns their futures."""
        return self.worker.request(self.source(axis, window), indices, priority)

    def warm(self, indices: Sequence[int], axis: int = 2, priority: float = 0,
             window: Optional[CropWindow] = None) -> None:
        """Queue the embeddings not cached yet, handing nothing back (``EmbeddingWorker.warm``)."""
        self.worker.warm(self.source(axis, window), indices, priority)

    def embedding(self, index: int, axis: int = 2, window: Optional[CropWindow] = None) -> np.ndarray:
        """The slice's (or its crop's) embedding: from the cache, else encoded ahead of everything queued."""
        return self.worker.request(self.source(axis, window), [index], priority=float("-inf"))[index].result()

    def slice_probabilities(self, index: int, boxes: Sequence[np.ndarray], axis: int = 2,
                            window: Optional[CropWindow] = None) -> np.ndarray:
        """Foreground probability ``(H, W)`` of the union of ``boxes`` on one slice, the model run on the slice or on
        its ``window`` crop (zoomed inference; zero outside the crop)."""
        shape = plane_shape(self.shape, axis)
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        frame = shape if window is None else (window.side, window.side)
        inputs = boxes if window is None else window.boxes_in_crop(boxes)
        embedding = self.embedding(index, axis, window)
        probability = np.zeros(frame, dtype=np.float32)
        for start in range(0, len(inputs), DECODE_BATCH):
            probability = np.maximum(probability, self.model.decode_probabilities(
                embedding, inputs[start:start + DECODE_BATCH], frame).max(axis=0))
        return probability if window is None else window.paste(probability, shape)

    def segment_slice(self, index: int, boxes: Sequence[np.ndarray], axis: int = 2,
                      embedding: Optional[np.ndarray] = None,
                      decoded: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """The union of the masks of ``boxes`` (slice pixels, ``(x0, y0, x1, y1)``) on one slice, ``(H, W)`` bool.

        Boxes are decoded ``DECODE_BATCH`` at a time; ``decoded(n)`` is told after each batch of ``n``.
        """
        if embedding is None:
            embedding = self.embedding(index, axis)
        shape = plane_shape(self.shape, axis)
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        union = np.zeros(shape, dtype=bool)
        for start in range(0, len(boxes), DECODE_BATCH):
            batch = boxes[start:start + DECODE_BATCH]
            union |= self.model.decode(embedding, batch, shape).any(axis=0)
            if decoded is not None:
                decoded(len(batch))
        return union

    def segment(self, prompts: PromptSet, propagate: int = 0, progress: Optional[SliceProgress] = None,
                refinement: Optional[Refinement] = None,
                stopping: StoppingRule = STOPPING_RULE) -> Dict[int, LabelMask]:
        """Segment every target of ``prompts`` across its annotated range, and beyond each end until ``stopping``
        says the target ended there, at most ``propagate`` slices (see ``propagation``).

        Without ``refinement`` these are exactly the published steps; with it, the refined mode's (see ``refinement``),
        on the propagated slices too. Voxels that several targets' masks claim go to the inner target where one's
        box lies inside another's, else to the likeliest (``contested_voxels``). ``progress(done, total)`` follows
        every decode; each propagated slice adds one to the total.
        """
        axis = prompts.axis
        shape = plane_shape(self.shape, axis)
        plans = {label: interpolate_boxes(boxes) for label, boxes in prompts.key_boxes(self.shape).items()}
        self.prefetch(sorted({index for plan in plans.values() for index in plan}), axis)  # every target's slices, now
        count = ProgressCount(sum(len(boxes) for plan in plans.values() for boxes in plan.values()), progress)
        windows = None if refinement is None else zoom_windows(plans, shape, refinement)
        results: Dict[int, LabelMask] = {}
        for label, plan in plans.items():
            mask = self.segment_slices(plan, axis, refinement, count.decoded, windows and windows[label])
            results[label] = result = LabelMask(label, mask, sorted(plan))
            if propagate > 0:
                reference = target_reference(self.volume_u8, mask, axis, plan)
                for start, step in ((min(plan), -1), (max(plan), +1)):
                    added = propagate_target(self, mask, axis, start, step, propagate, refinement, stopping,
                                             reference, count)
                    plan.update({index: [box] for index, box in added.items()})  # the boxes each slice was shown
            result.slices = sorted(plan)

        def probability(label: int, index: int) -> np.ndarray:
            """The target's foreground probability on the slice, from the boxes and crop its mask was made with."""
            boxes = plans[label][index]
            if refinement is None:
                return self.slice_probabilities(index, boxes, axis)
            window = windows[label][index] if index in windows[label] else zoom_window(boxes, shape, refinement)
            return refined_probability(self, index, boxes, axis, window, refinement)

        give_contested_voxels({label: result.mask for label, result in results.items()}, axis, probability,
                              lambda label, index: plans[label][index])
        return results

    def segment_slices(self, plan: SliceBoxes, axis: int = 2, refinement: Optional[Refinement] = None,
                       decoded: Optional[Callable[[int], None]] = None,
                       windows: Optional[Dict[int, Optional[CropWindow]]] = None) -> np.ndarray:
        """The ``[k, j, i]`` mask of one target from its boxes per slice: the published steps, or with ``refinement``
        the refined mode's (``windows``: its crops per slice, see ``refinement.zoom_windows``)."""
        if refinement is not None:
            return refine_target(self, plan, axis, refinement, decoded, windows)
        futures = self.prefetch(sorted(plan), axis)
        mask = np.zeros(self.shape, dtype=bool)
        for index, boxes in plan.items():
            mask[slice_indexer(axis, index)] = self.segment_slice(index, boxes, axis, futures[index].result(), decoded)
        return mask

    def close(self, wait: bool = True) -> None:
        """Stop the session's own worker (``EmbeddingWorker.close``); a worker passed in is its owner's to close."""
        if self._owns_worker:
            self.worker.close(wait)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
