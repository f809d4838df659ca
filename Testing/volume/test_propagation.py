"""Propagation beyond the annotated slices with the measured stopping rule, with the real LiteMedSAM weights.

One RECIST marker on a lesion's largest slice must become its 3D mask, stopping where the lesion
ends; markers that already reach the first and last slices must not be extended; every propagated
slice reports progress, and a raise from the callback (the Slicer module's cancel) stops at once.
"""

from pathlib import Path

import numpy as np
import pytest

from MedSAMSlicerLib.evaluation.metrics import dice
from MedSAMSlicerLib.files.image_io import read_image, read_label_image
from MedSAMSlicerLib.prompts.geometry import occupied_slices
from MedSAMSlicerLib.prompts.prompt_simulation import recist_from_truth, recist_on_largest_slice
from MedSAMSlicerLib.volume.intensity import IntensitySettings
from MedSAMSlicerLib.volume.propagation import (DEFAULT_PROPAGATE_SLICES, STOPPING_RULE, VANISHED, SliceStep,
                                                StoppingRule, TargetReference, TracedSlice, slice_step,
                                                target_reference)
from MedSAMSlicerLib.volume.refinement import refinement_for
from MedSAMSlicerLib.volume.session import SegmentationSession

LESION_SAMPLE = Path(__file__).parents[1] / "data" / "mni152_lesion"
#: the box a traced slice was prompted with (the slice step does not read it)
BOX = np.array([1.0, 1.0, 9.0, 9.0])


def one_marker(phantom):
    return recist_on_largest_slice(phantom.truth, 2, phantom.geometry.spacing[:2])


def test_the_marker_is_on_the_phantoms_largest_slice(phantom):
    (marker,) = one_marker(phantom).prompts
    areas = phantom.truth.sum(axis=(1, 2))
    assert marker.slice == int(np.argmax(areas)) and list(occupied_slices(phantom.truth, 2)) == list(range(4, 20))


def test_the_rule_reads_each_test_from_the_slice_step():
    step = SliceStep(area=50, previous_area=100, largest_area=400, confidence=0.8, overlap=0.4, contrast=0.7)
    assert not VANISHED.stops(step) and VANISHED.stops(SliceStep(0, 100, 400, 0.0, 0.0, 0.0))
    assert StoppingRule(min_previous_share=0.6).stops(step) and not StoppingRule(min_previous_share=0.5).stops(step)
    assert StoppingRule(min_largest_share=0.2).stops(step) and not StoppingRule(min_largest_share=0.1).stops(step)
    assert StoppingRule(max_growth=0.4).stops(step) and not StoppingRule(max_growth=0.6).stops(step)
    assert StoppingRule(min_confidence=0.85).stops(step) and not StoppingRule(min_confidence=0.75).stops(step)
    assert StoppingRule(min_overlap=0.5).stops(step) and not StoppingRule(min_overlap=0.3).stops(step)
    assert StoppingRule(min_contrast=0.8).stops(step) and not StoppingRule(min_contrast=0.6).stops(step)


def test_a_slice_step_measures_area_confidence_overlap_and_contrast():
    image = np.full((12, 12), 100.0)
    previous, mask = np.zeros((12, 12), bool), np.zeros((12, 12), bool)
    previous[2:6, 2:6], mask[4:8, 4:8] = True, True  # 16 pixels each, 4 shared
    image[4:8, 4:8] = 130.0  # the mask stands out by 30 against its 3 px ring
    probability = np.where(mask, 0.75, 0.1).astype(np.float32)
    step = slice_step(previous, TracedSlice(5, mask, probability, image, BOX), TargetReference(40, -60.0))
    assert (step.area, step.previous_area, step.largest_area) == (16, 16, 40)
    assert step.confidence == pytest.approx(0.75) and step.overlap == pytest.approx(4 / 28)
    assert step.contrast == pytest.approx(-0.5)  # half the annotated target's contrast, and of the other sign
    empty = slice_step(previous, TracedSlice(5, np.zeros_like(mask), probability, image, BOX),
                       TargetReference(40, 30.0))
    assert (empty.area, empty.confidence, empty.overlap, empty.contrast) == (0, 0.0, 0.0, 0.0)


def test_the_reference_pools_the_annotated_slices(phantom):
    truth = phantom.truth
    reference = target_reference(phantom.image, truth, 2, [11, 12])
    assert reference.largest_area == max(int(truth[11].sum()), int(truth[12].sum()))
    assert reference.contrast == pytest.approx(100, abs=3)  # a 140 HU lesion in 40 HU tissue


def test_the_measured_rule_is_the_default_and_tests_contrast_overlap_and_the_tip():
    assert STOPPING_RULE == StoppingRule(min_contrast=0.5, min_overlap=0.3, min_largest_share=0.25)
    assert DEFAULT_PROPAGATE_SLICES == 50
    assert STOPPING_RULE.stops(SliceStep(100, 100, 200, 0.9, 0.8, contrast=0.4))  # hardly stands out: past the end
    assert STOPPING_RULE.stops(SliceStep(100, 100, 200, 0.9, 0.2, contrast=1.0))  # another structure
    assert STOPPING_RULE.stops(SliceStep(40, 100, 200, 0.9, 0.8, contrast=1.0))  # the tip: a fifth of the largest
    assert not STOPPING_RULE.stops(SliceStep(100, 100, 200, 0.6, 0.8, contrast=0.8))  # low confidence is no reason


# Measured with the embedded LiteMedSAM: one marker on slice 11 of the lesion's 4-19 gives 3D Dice 0.9305 in either mode
# (this small phantom's zoom crop would cover most of the slice, so the refined mode is the published one here), and
# 0.170 without propagation; pinned 0.01 below.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["refined", "published"])
def test_one_marker_on_the_largest_slice_reaches_the_pinned_dice_and_stops_at_the_lesions_ends(session, phantom, mode):
    prompts = one_marker(phantom)
    result = session.segment(prompts, propagate=DEFAULT_PROPAGATE_SLICES, refinement=refinement_for(mode))[1]
    assert dice(result.mask, phantom.truth) >= 0.92
    # the lesion spans slices 4-19; its tips, 4 and 19, are an eighth of its largest cross-section, under the rule's
    # quarter: propagation stops one slice inside each end, never past it
    assert result.slices == list(range(5, 19))
    assert not result.mask[:5].any() and not result.mask[19:].any()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["refined", "published"])
def test_markers_reaching_the_lesions_ends_are_not_extended(session, phantom, mode):
    prompts = recist_from_truth(phantom.truth, 5, 2, phantom.geometry.spacing[:2])
    plain = session.segment(prompts, refinement=refinement_for(mode))[1]
    propagated = session.segment(prompts, propagate=DEFAULT_PROPAGATE_SLICES, refinement=refinement_for(mode))[1]
    assert propagated.slices == plain.slices == list(range(4, 20))
    np.testing.assert_array_equal(propagated.mask, plain.mask)


def probe(session, key_slice, monkeypatch):
    """The slices decoded beyond the annotated one (``slice_probabilities`` is how propagated slices are decoded)."""
    decoded = []
    original = session.slice_probabilities

    def recorded(index, boxes, axis=2, window=None):
        if index != key_slice and index not in decoded:
            decoded.append(index)
        return original(index, boxes, axis, window)

    monkeypatch.setattr(session, "slice_probabilities", recorded)
    return decoded


@pytest.mark.parametrize("mode", ["refined", "published"])
def test_every_propagated_slice_reports_progress_and_the_total_grows_with_them(session, phantom, mode, monkeypatch):
    prompts = one_marker(phantom)
    decoded = probe(session, prompts.prompts[0].slice, monkeypatch)
    reported = []
    result = session.segment(prompts, propagate=DEFAULT_PROPAGATE_SLICES, refinement=refinement_for(mode),
                             progress=lambda done, total: reported.append((done, total)))[1]
    assert len(decoded) >= len(result.slices) - 1 >= 10  # each kept slice was decoded, and the slices it stopped at
    assert len(reported) == 1 + len(decoded)  # the marker's slice, then one report per propagated slice
    assert [done for done, _ in reported] == list(range(1, len(reported) + 1))
    assert all(done <= total for done, total in reported) and reported[-1][0] == reported[-1][1]


def test_a_raise_from_progress_stops_propagation_at_once(session, phantom, monkeypatch):
    class Cancelled(Exception):
        pass

    def cancel_after_the_first_propagated_slice(done, total):
        if done == 2:
            raise Cancelled

    prompts = one_marker(phantom)
    decoded = probe(session, prompts.prompts[0].slice, monkeypatch)
    with pytest.raises(Cancelled):
        session.segment(prompts, propagate=DEFAULT_PROPAGATE_SLICES, refinement=refinement_for("refined"),
                        progress=cancel_after_the_first_propagated_slice)
    assert len(decoded) == 1


# The shipped real MR lesion sample (see Testing/evaluation/test_real_data.py): one marker on its largest slice,
# propagated both ways with the default rule. Measured with the embedded LiteMedSAM, --window auto (percentile):
# 3D Dice 0.857 refined, 0.683 published (RECIST every 5 slices gives 0.877 and 0.801); pinned 0.01 below.
ONE_MARKER_ON_THE_LESION = {"refined": 0.857, "published": 0.683}


@pytest.fixture(scope="module")
def lesion_sample(lite_model):
    image, labels = read_image(LESION_SAMPLE / "t1.nii.gz"), read_label_image(LESION_SAMPLE / "labels.nii.gz")
    with SegmentationSession(image.array, lite_model, IntensitySettings.parse("auto", image.array, image.modality)) \
            as session:
        yield session, image, labels.array == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(ONE_MARKER_ON_THE_LESION))
def test_one_marker_on_a_real_mr_lesion_reaches_the_pinned_dice(lesion_sample, mode):
    session, image, truth = lesion_sample
    prompts = recist_on_largest_slice(truth, 2, image.geometry.spacing[:2])
    result = session.segment(prompts, propagate=DEFAULT_PROPAGATE_SLICES, refinement=refinement_for(mode))[1]
    assert dice(result.mask, truth) >= ONE_MARKER_ON_THE_LESION[mode] - 0.01
    assert len(result.slices) > 9  # the marker's slice and at least four more on each side
