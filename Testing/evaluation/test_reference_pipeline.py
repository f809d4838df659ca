"""The engine's cached, batched path gives the masks of the published MedSAM pipelines.

Each reference (``MedSAMSlicerLib.evaluation.reference_pipeline``) is a plain per-slice transcription of the
published inference steps (DESIGN.md section 4): three-channel resize, encoder call, decoder call,
no cache, no batching. The engine must match it (IoU >= 0.999 per mask) for MedSAM ViT-B (random
weights: the real ones are not reachable here) and LiteMedSAM (real weights).
"""

import numpy as np
import pytest
from skimage import transform

from MedSAMSlicerLib.evaluation.metrics import iou
from MedSAMSlicerLib.evaluation.reference_pipeline import reference_lite_medsam, reference_medsam_vit
from MedSAMSlicerLib.models.model_registry import load_model
from MedSAMSlicerLib.models.slice_model import resize_bilinear, sigmoid
from MedSAMSlicerLib.prompts.geometry import take_slice
from MedSAMSlicerLib.volume.embedding_cache import EmbeddingCache
from MedSAMSlicerLib.volume.embedding_worker import EmbeddingWorker
from MedSAMSlicerLib.volume.intensity import IntensitySettings, normalize_volume
from MedSAMSlicerLib.volume.session import SegmentationSession

pytestmark = pytest.mark.slow  # real models on whole volumes: CI runs it, the inner loop (-m "not slow") does not


def engine_masks(model, volume, settings, axis, cases, batch_size):
    """Masks from the engine: embeddings encoded in batches by the worker, then decoded from the cache."""
    cache = EmbeddingCache()
    with EmbeddingWorker(model, cache, batch_size=batch_size) as worker, \
            SegmentationSession(volume, model, settings, worker=worker) as session:
        futures = session.prefetch(sorted({index for index, _ in cases}), axis)
        for future in futures.values():
            future.result()
        assert len(cache) == len(futures)
        return [session.segment_slice(index, [box], axis) for index, box in cases]


def assert_same_masks(engine, reference):
    for ours, theirs in zip(engine, reference):
        assert theirs.sum() > 0
        assert iou(ours, theirs) >= 0.999


def test_lite_medsam_matches_published_inference(lite_model, small_phantom):
    settings = IntensitySettings.preset("soft-tissue")
    volume_u8 = normalize_volume(small_phantom.image, settings)
    # K slices are 80x96 (non-square: padding and cropping matter); J slices are 24x96
    cases_k = [(9, np.array([20.5, 18.2, 66.7, 53.9])), (12, np.array([25.0, 20.0, 60.0, 50.0])),
               (12, np.array([40.0, 25.0, 70.0, 45.0]))]
    cases_j = [(36, np.array([30.0, 4.0, 75.0, 19.0]))]
    for axis, cases in ((2, cases_k), (1, cases_j)):
        reference = [reference_lite_medsam(lite_model, take_slice(volume_u8, axis, i), box) for i, box in cases]
        assert_same_masks(engine_masks(lite_model, small_phantom.image, settings, axis, cases, batch_size=2), reference)


def test_medsam_vit_b_matches_published_inference(vit_b_checkpoint, small_phantom):
    model = load_model("medsam-vit-b", vit_b_checkpoint, device="cpu")
    settings = IntensitySettings.preset("soft-tissue")
    image = small_phantom.image[8:14, 10:60, 20:90]  # small 50x70 slices
    volume_u8 = normalize_volume(image, settings)
    cases = [(1, np.array([10.0, 8.0, 50.0, 40.0])), (4, np.array([5.5, 3.2, 60.1, 45.7]))]
    reference = [reference_medsam_vit(model, take_slice(volume_u8, 2, i), box) for i, box in cases]
    assert_same_masks(engine_masks(model, image, settings, 2, cases, batch_size=2), reference)


@pytest.mark.parametrize("source, target", [((256, 256), (512, 512)), ((192, 256), (90, 120)), ((187, 256), (333, 517)),
                                            ((256, 256), (256, 256)), ((256, 256), (1500, 1200)),
                                            ((200, 256), (100, 128))])
def test_resize_bilinear_is_pytorchs_bilinear_interpolation(source, target):
    """The engine's post-processing resizes logits with OpenCV (no PyTorch import); the published code with
    ``F.interpolate(mode="bilinear", align_corners=False)``: up, down, by non-integer factors, the same values."""
    import torch
    import torch.nn.functional as F

    logits = (np.random.default_rng(2).standard_normal((3, 1) + source) * 12).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(logits), size=target, mode="bilinear", align_corners=False).numpy()
    ours = resize_bilinear(logits, target)
    assert ours.shape == expected.shape and ours.dtype == np.float32
    # measured: 7.6e-6 at most on these white-noise logits of magnitude ~12 (the steepest there are)
    assert float(np.abs(ours - expected).max()) < 1e-4
    assert np.array_equal(sigmoid(ours) > 0.5, torch.sigmoid(torch.from_numpy(expected)).numpy() > 0.5)
    np.testing.assert_allclose(sigmoid(logits), torch.sigmoid(torch.from_numpy(logits)).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(50, 70), (333, 517), (1500, 1200)])
def test_single_channel_resize_equals_three_channel(shape):
    """The engine resizes one channel where the reference resizes three identical ones: same uint8 result."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, shape).astype(np.uint8)
    three = transform.resize(np.repeat(image[:, :, None], 3, -1), (1024, 1024), order=3, preserve_range=True,
                             anti_aliasing=True).astype(np.uint8)
    one = transform.resize(image, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(three[:, :, channel], one)


def test_sam_vit_b_matches_sam_predictor(vit_b_checkpoint, small_phantom):
    """The original SAM models follow segment-anything's own SamPredictor (resize longest side, mean/std, pad)."""
    from segment_anything import SamPredictor

    model = load_model("sam-vit-b", vit_b_checkpoint, device="cpu")
    settings = IntensitySettings.preset("soft-tissue")
    image = small_phantom.image[10:12, 10:60, 20:90]
    slice_u8 = take_slice(normalize_volume(image, settings), 2, 1)
    box = np.array([10.0, 8.0, 50.0, 40.0])
    predictor = SamPredictor(model.sam)
    predictor.set_image(np.repeat(slice_u8[:, :, None], 3, axis=2))
    reference, _, _ = predictor.predict(box=box, multimask_output=False)
    assert_same_masks(engine_masks(model, image, settings, 2, [(1, box)], batch_size=1), [reference[0]])
