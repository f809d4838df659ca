"""The refined mode: crop windows, cached crop embeddings, and the published mode left exactly as it was."""

import numpy as np
import pytest

from MedSAMSlicerLib.evaluation.metrics import dice
from MedSAMSlicerLib.files.sample_data import make_phantom, recist_prompts
from MedSAMSlicerLib.prompts.interpolation import interpolate_boxes
from MedSAMSlicerLib.volume.crop_window import CropWindow, crop_window
from MedSAMSlicerLib.volume.embedding_cache import EmbeddingKey
from MedSAMSlicerLib.volume.intensity import IntensitySettings
from MedSAMSlicerLib.volume.refinement import REFINED, Refinement, refinement_for
from MedSAMSlicerLib.volume.session import SegmentationSession


def test_the_crop_is_twice_the_box_side_centred_on_the_grid():
    window = crop_window(np.array([[100, 200, 140, 220]]), (512, 512))
    assert window.side == 80  # 2 x the longest side (40), already a multiple of 8
    assert (window.x0, window.y0) == (80, 168)  # centre (120, 210) minus 40, on the 8 px grid
    assert window.x0 <= 100 and window.x0 + window.side >= 140 and window.y0 <= 200 and window.y0 + window.side >= 220


def test_a_small_box_gets_the_minimum_crop_and_a_huge_one_never_more_than_the_slice():
    assert crop_window(np.array([[50, 50, 55, 53]]), (512, 512)).side == 48
    assert crop_window(np.array([[0, 0, 300, 200]]), (256, 320)).side == 320
    several = crop_window(np.array([[10, 10, 20, 20], [60, 10, 70, 30]]), (128, 128))  # the union of a slice's boxes
    assert several.side == 120 and several.x0 <= 10 and several.x0 + several.side >= 70


def test_crop_and_paste_round_trip_with_zero_padding_past_the_edge():
    image = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    window = CropWindow(x0=-4, y0=12, side=16)  # reaches past the left and bottom edges
    crop = window.crop(image)
    assert crop.shape == (16, 16)
    assert np.array_equal(crop[:8, 4:], image[12:20, 0:12]) and not crop[8:].any() and not crop[:, :4].any()
    pasted = window.paste(crop, image.shape)
    assert np.array_equal(pasted[12:20, 0:12], image[12:20, 0:12]) and pasted[:12].sum() == 0
    assert np.array_equal(window.boxes_in_crop(np.array([[0, 12, 5, 15]])), [[4, 0, 9, 3]])


def test_whole_slice_cache_keys_are_unchanged_and_crops_have_their_own():
    whole = EmbeddingKey("img", 2, 7, "percentile", "lite-medsam@abc")
    assert str(whole) == "img|2|7|percentile|lite-medsam@abc"  # files cached before the refined mode still match
    crop = EmbeddingKey("img", 2, 7, "percentile", "lite-medsam@abc", CropWindow(8, 16, 48).key)
    assert crop != whole and crop.file_name != whole.file_name and str(crop).endswith("|crop8,16,48")


def test_modes_by_name_and_bad_settings_are_refused():
    assert refinement_for("published") is None and refinement_for("refined") is REFINED
    with pytest.raises(ValueError, match="mode 'zoomed' is not one of published, refined"):
        refinement_for("zoomed")
    with pytest.raises(ValueError, match="invalid refinement"):
        Refinement(zoom_weight=1.5)


@pytest.fixture(scope="module")
def small_lesion():
    """A 512x512 CT whose 12 mm lesion spans about 12 slices: about 25 px wide, 12 px at LiteMedSAM's 256 input."""
    return make_phantom(size=(512, 512, 14), spacing=(0.5, 0.5, 2.0), radii_mm=(6.0, 5.0, 12.0))


@pytest.mark.slow
def test_refined_mode_beats_the_published_one_on_a_small_lesion_and_caches_its_crops(small_lesion, lite_model):
    prompts = recist_prompts(small_lesion, every=5)
    with SegmentationSession(small_lesion.image, lite_model, IntensitySettings.preset("soft-tissue")) as session:
        published = session.segment(prompts)[1].mask
        refined = session.segment(prompts, refinement=REFINED)[1]
        encoded = session.worker._encoded
        again = session.segment(prompts, refinement=REFINED)[1].mask
        assert session.worker._encoded == encoded  # crop embeddings came from the cache
        slices = len(refined.slices)
        crops = [key for key in session.cache._entries if key.region]
        assert len(crops) == slices and encoded == 2 * slices  # one crop per slice, plus the whole slices
    assert np.array_equal(again, refined.mask)
    assert dice(small_lesion.truth, refined.mask) > dice(small_lesion.truth, published)


@pytest.mark.slow
def test_a_box_covering_most_of_the_slice_is_not_zoomed(lite_model):
    phantom = make_phantom(size=(64, 56, 12), spacing=(0.8, 0.9, 2.5), radii_mm=(20.0, 20.0, 10.0))
    prompts = recist_prompts(phantom, every=5)
    with SegmentationSession(phantom.image, lite_model, IntensitySettings.preset("soft-tissue")) as session:
        published = session.segment(prompts)[1].mask
        refined = session.segment(prompts, refinement=REFINED)[1].mask
        assert not any(key.region for key in session.cache._entries)
    assert np.array_equal(published, refined)  # nothing to zoom: the refined mode is the published one


@pytest.mark.slow
def test_a_zoom_weight_of_zero_gives_exactly_the_published_masks(small_lesion, lite_model):
    prompts = recist_prompts(small_lesion, every=5)
    plan = interpolate_boxes(prompts.key_boxes(small_lesion.image.shape)[1])
    with SegmentationSession(small_lesion.image, lite_model, IntensitySettings.preset("soft-tissue")) as session:
        published = session.segment_slices(plan)
        assert np.array_equal(session.segment_slices(plan, refinement=Refinement(zoom_weight=0.0)), published)


@pytest.mark.slow
def test_targets_apart_on_the_same_slices_get_a_crop_each(lite_model):
    from MedSAMSlicerLib.prompts.prompt_types import PromptSet

    phantom = make_phantom(size=(160, 160, 12), spacing=(0.5, 0.5, 2.5), radii_mm=(5.0, 5.0, 10.0))
    first = recist_prompts(phantom, every=3).prompts
    shifted = [type(p)(p.slice, tuple((x + 30, y) for x, y in p.long_axis), tuple((x + 30, y) for x, y in p.short_axis),
                       label=2, name="second target") for p in first]  # a second target 15 mm beside the first
    prompts = PromptSet(list(first) + shifted)
    with SegmentationSession(phantom.image, lite_model, IntensitySettings.preset("soft-tissue")) as session:
        results = session.segment(prompts, refinement=REFINED)
        slices = sorted(set(results[1].slices) | set(results[2].slices))
        crops = [key for key in session.cache._entries if key.region]
        assert len(crops) == 2 * len(slices)  # one crop per target and slice: a shared one would zoom in less
    assert dice(phantom.truth, results[1].mask) > 0.8
