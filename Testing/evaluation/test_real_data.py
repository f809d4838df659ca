"""LiteMedSAM on real MRI, published and refined mode, so that a change that hurts real intensities fails.

Phantoms prove geometry; only real images prove the masks. Three shipped samples (see their
LICENSE.txt): ``Testing/data/mni152``, 8 axial slices of a real T1-weighted template with both
lateral ventricles labelled from the template's own tissue maps; ``Testing/data/mni152_lesion``,
the 21 slices of the same template that an inserted T1-hypointense lesion spans (its mask known
exactly); ``Testing/data/colin27_deep_brain``, 8 axial slices of a real single-subject T1 with eight
deep brain structures drawn by anatomists (the AAL atlas), several on every slice, some touching.
The Dice values are pinned just below what was measured, and no change may lower them.
On the ventricles they are low, and the box-fill baseline beats both modes: that is the state of
the pipeline on this real target, not a reason to weaken the test.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from MedSAMSlicerLib.evaluation.metrics import dice
from MedSAMSlicerLib.evaluation.volume_evaluation import evaluate_case
from MedSAMSlicerLib.files.image_io import read_image, read_label_image
from MedSAMSlicerLib.prompts.prompt_simulation import recist_from_labels
from MedSAMSlicerLib.prompts.prompt_types import PromptSet
from MedSAMSlicerLib.volume.intensity import IntensitySettings
from MedSAMSlicerLib.volume.refinement import MODES, refinement_for
from MedSAMSlicerLib.volume.session import SegmentationSession

pytestmark = pytest.mark.slow  # real models on whole volumes: CI runs it, the inner loop (-m "not slow") does not

SAMPLE = Path(__file__).parents[1] / "data" / "mni152"
LESION_SAMPLE = Path(__file__).parents[1] / "data" / "mni152_lesion"
DEEP_BRAIN_SAMPLE = Path(__file__).parents[1] / "data" / "colin27_deep_brain"

# Measured with the embedded LiteMedSAM, --window auto (percentile for these MR), RECIST every 3 slices on the
# ventricles (8 slices) and every 5 on the lesion, as the maintainers' held-out protocol draws them:
# (DSC, NSD at 2 mm, box-fill DSC); the DSC and NSD are pinned 0.01 below.
MEASURED = {
    ("ventricles", "published", "box-each", 1): (0.1381, 0.3853, 0.6373),
    ("ventricles", "published", "box-each", 2): (0.1286, 0.3650, 0.6373),
    ("ventricles", "published", "recist-sparse", 1): (0.1779, 0.3482, 0.2319),
    ("ventricles", "published", "recist-sparse", 2): (0.1758, 0.3063, 0.2319),
    ("ventricles", "refined", "box-each", 1): (0.1964, 0.4608, 0.6373),
    ("ventricles", "refined", "box-each", 2): (0.2866, 0.5723, 0.6373),
    ("ventricles", "refined", "recist-sparse", 1): (0.3585, 0.4512, 0.2319),
    ("ventricles", "refined", "recist-sparse", 2): (0.3042, 0.4006, 0.2319),
    ("lesion", "published", "recist-sparse", 1): (0.8012, 0.8832, 0.6368),
    ("lesion", "refined", "recist-sparse", 1): (0.8772, 0.9936, 0.6368),
}
SAMPLES = {"ventricles": (SAMPLE, ["box-each", "recist-sparse"], 3), "lesion": (LESION_SAMPLE, ["recist-sparse"], 5)}


def evaluate_sample(model, name):
    folder, protocols, every = SAMPLES[name]
    image, labels = read_image(folder / "t1.nii.gz"), read_label_image(folder / "labels.nii.gz")
    intensity = IntensitySettings.parse("auto", image.array, image.modality)
    assert intensity.mode == "percentile"  # an MR: no Hounsfield units
    spacing_kji = tuple(reversed(image.geometry.spacing))
    with SegmentationSession(image.array, model, intensity) as session:
        return {(name, mode, e.result.protocol, e.result.label): e.result for mode in MODES
                for e in evaluate_case(session, labels.array, spacing_kji, protocols, every=every,
                                       refinement=refinement_for(mode))}


@pytest.fixture(scope="module")
def evaluations(lite_model):
    return {**evaluate_sample(lite_model, "ventricles"), **evaluate_sample(lite_model, "lesion")}


def test_the_sample_is_real_mri_with_both_ventricles_on_every_slice():
    image, labels = read_image(SAMPLE / "t1.nii.gz"), read_label_image(SAMPLE / "labels.nii.gz")
    assert image.array.shape == labels.array.shape == (8, 233, 197)
    assert image.geometry.spacing == pytest.approx((1.0, 1.0, 1.0))
    for label in (1, 2):
        assert (labels.array == label).any(axis=(1, 2)).all()
        ventricle = image.array[labels.array == label].mean()
        assert ventricle < 0.5 * image.array[labels.array == 0][image.array[labels.array == 0] > 0].mean()  # dark CSF


@pytest.mark.parametrize("key", sorted(MEASURED))
def test_lite_medsam_dice_on_real_mri_never_drops(evaluations, key):
    dsc, nsd, box_fill = MEASURED[key]
    result = evaluations[key]
    assert result.dsc >= dsc - 0.01 and result.nsd >= nsd - 0.01
    assert result.box_fill_dsc == pytest.approx(box_fill, abs=1e-4)  # the prompts themselves did not change
    assert result.slices == (8 if key[0] == "ventricles" else 21)


def test_the_refined_mode_scores_above_the_published_one_on_the_real_samples(evaluations):
    for name in SAMPLES:
        published, refined = ([r.dsc for key, r in evaluations.items() if key[:2] == (name, mode)]
                              for mode in ("published", "refined"))
        assert np.mean(refined) > np.mean(published)


def test_the_lesion_sample_is_a_dark_lesion_in_real_white_matter_on_every_slice():
    image, labels = read_image(LESION_SAMPLE / "t1.nii.gz"), read_label_image(LESION_SAMPLE / "labels.nii.gz")
    assert image.array.shape == labels.array.shape == (21, 233, 197)
    lesion = labels.array == 1
    assert lesion.any(axis=(1, 2)).all() and 4000 <= lesion.sum() <= 6000  # 1 mm voxels: 4.9 mL
    around = np.logical_xor(ndimage.binary_dilation(lesion, iterations=3), lesion)
    assert image.array[lesion].mean() < 0.85 * image.array[around].mean()  # T1-hypointense against its surroundings


def test_the_cohort_script_labels_two_ventricles_and_not_the_midline():
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_cohort",
                                                  Path(__file__).parents[2] / "benchmarks" / "real_cohort.py")
    real_cohort = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_cohort)
    k, j, i = np.ogrid[:40, :60, :80]
    brain = ((k - 20) / 18) ** 2 + ((j - 30) / 27) ** 2 + ((i - 40) / 37) ** 2 <= 1
    wm = brain * 1.0
    blobs = {"left": ((i - 25) / 8) ** 2 + ((j - 30) / 16) ** 2 + ((k - 20) / 10) ** 2 <= 1,  # 5,300 voxels each
             "right": ((i - 55) / 8) ** 2 + ((j - 30) / 16) ** 2 + ((k - 20) / 10) ** 2 <= 1,
             "midline": ((i - 40) / 4) ** 2 + ((j - 30) / 24) ** 2 + ((k - 20) / 14) ** 2 <= 1}  # as large, across
    for blob in blobs.values():
        wm[blob] = 0.0
    assert all(blob.sum() >= real_cohort.MIN_VENTRICLE_VOXELS for blob in blobs.values())
    labels = real_cohort.ventricle_labels(np.zeros_like(wm), wm)
    assert np.array_equal(labels == 1, blobs["left"]) and np.array_equal(labels == 2, blobs["right"])


@pytest.mark.parametrize("mode", MODES)
def test_both_ventricles_in_one_prompt_file_score_as_each_does_alone(lite_model, mode):
    image, labels = read_image(SAMPLE / "t1.nii.gz"), read_label_image(SAMPLE / "labels.nii.gz")
    prompts = recist_from_labels(labels.array, 3, 2, image.geometry.spacing[:2])
    intensity = IntensitySettings.parse("auto", image.array, image.modality)
    with SegmentationSession(image.array, lite_model, intensity) as session:
        together = session.segment(prompts, refinement=refinement_for(mode))
        alone = {label: session.segment(PromptSet([p for p in prompts.prompts if p.label == label], 2),
                                        refinement=refinement_for(mode))[label].mask for label in (1, 2)}
    assert not (together[1].mask & together[2].mask).any()  # the label image holds what each target was given
    for label in (1, 2):
        truth = labels.array == label
        assert dice(truth, together[label].mask) == pytest.approx(dice(truth, alone[label]), abs=0.01)


# --- several targets on every slice: the deep brain sample

#: caudate, putamen, pallidum, thalamus; left (odd) and right (even)
DEEP_BRAIN = {1: "left caudate", 2: "right caudate", 3: "left putamen", 4: "right putamen", 5: "left pallidum",
              6: "right pallidum", 7: "left thalamus", 8: "right thalamus"}
# Measured as above (RECIST every 3 slices, all eight in one prompt set, scored as the label image holds them): the
# DSC of each target in the file, pinned 0.01 below; and the mean DSC of the eight each segmented alone.
DEEP_BRAIN_FILE = {
    "published": {1: 0.6246, 2: 0.6793, 3: 0.7643, 4: 0.6725, 5: 0.2121, 6: 0.4943, 7: 0.8521, 8: 0.8184},
    "refined": {1: 0.8117, 2: 0.7842, 3: 0.7832, 4: 0.6825, 5: 0.4144, 6: 0.6930, 7: 0.8509, 8: 0.8724},
}
DEEP_BRAIN_ALONE_MEAN = {"published": 0.6395, "refined": 0.7166}


@pytest.fixture(scope="module")
def deep_brain_scores(lite_model):
    """``{(mode, "file" or "alone"): {label: DSC}}`` on the deep brain sample."""
    image, labels = read_image(DEEP_BRAIN_SAMPLE / "t1.nii.gz"), read_label_image(DEEP_BRAIN_SAMPLE / "labels.nii.gz")
    prompts = recist_from_labels(labels.array, 3, 2, image.geometry.spacing[:2])
    intensity = IntensitySettings.parse("auto", image.array, image.modality)
    scores = {}
    with SegmentationSession(image.array, lite_model, intensity) as session:
        for mode in MODES:
            together = session.segment(prompts, refinement=refinement_for(mode))
            assert not np.any(np.sum([result.mask for result in together.values()], axis=0) > 1)  # no voxel shared
            scores[mode, "file"] = {label: dice(labels.array == label, together[label].mask) for label in DEEP_BRAIN}
            scores[mode, "alone"] = {
                label: dice(labels.array == label, session.segment(
                    PromptSet([p for p in prompts.prompts if p.label == label], 2),
                    refinement=refinement_for(mode))[label].mask) for label in DEEP_BRAIN}
    return scores


def test_the_deep_brain_sample_is_eight_expert_structures_on_every_slice_some_touching():
    image, labels = read_image(DEEP_BRAIN_SAMPLE / "t1.nii.gz"), read_label_image(DEEP_BRAIN_SAMPLE / "labels.nii.gz")
    assert image.array.shape == labels.array.shape == (8, 217, 181)
    assert image.geometry.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert sorted(np.unique(labels.array)) == [0, *DEEP_BRAIN]
    for label in DEEP_BRAIN:
        assert (labels.array == label).any(axis=(1, 2)).all()
    for putamen, pallidum in ((3, 5), (4, 6)):  # face to face
        assert (ndimage.binary_dilation(labels.array == putamen) & (labels.array == pallidum)).any()
    left, right = (np.nonzero(np.isin(labels.array, side))[2] for side in ((1, 3, 5, 7), (2, 4, 6, 8)))
    assert left.max() < right.min() + 10  # the hemispheres: left on the lower i (the thalami meet at the midline)
    assert np.median(left) + 30 < np.median(right)


@pytest.mark.parametrize("mode", MODES)
def test_deep_brain_structures_in_one_prompt_file_score_as_pinned_and_no_lower_than_alone(deep_brain_scores, mode):
    in_file, alone = deep_brain_scores[mode, "file"], deep_brain_scores[mode, "alone"]
    for label, measured in DEEP_BRAIN_FILE[mode].items():
        assert in_file[label] >= measured - 0.01, DEEP_BRAIN[label]
    assert np.mean(list(alone.values())) >= DEEP_BRAIN_ALONE_MEAN[mode] - 0.01
    assert np.mean(list(in_file.values())) >= np.mean(list(alone.values())) - 0.01


def test_the_refined_mode_beats_the_published_one_on_the_deep_brain_sample_alone_and_in_one_file(deep_brain_scores):
    for run in ("alone", "file"):
        refined, published = (np.mean(list(deep_brain_scores[mode, run].values())) for mode in ("refined", "published"))
        assert refined > published + 0.05  # measured 0.717 against 0.640 alone, 0.737 against 0.640 in the file


def test_the_deep_brain_cohort_script_keeps_the_twelve_aal_structures_and_names_what_touches():
    import importlib.util
    import sys

    benchmarks = Path(__file__).parents[2] / "benchmarks"
    sys.path.insert(0, str(benchmarks))  # the script imports its sibling debian_package
    try:
        spec = importlib.util.spec_from_file_location("deep_brain_cohort", benchmarks / "deep_brain_cohort.py")
        cohort = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cohort)
    finally:
        sys.path.remove(str(benchmarks))
    atlas = np.zeros((3, 4, 30), dtype=np.uint8)
    for label, (region, _) in cohort.STRUCTURES.items():
        atlas[1, 1, 2 * label] = region
    atlas[1, 2, :] = 5  # another AAL region (an orbital gyrus): not ours
    labels = cohort.deep_brain_labels(atlas)
    assert [int(labels[1, 1, 2 * label]) for label in cohort.STRUCTURES] == list(cohort.STRUCTURES)
    assert np.count_nonzero(labels) == 12
    assert cohort.touching_pairs(labels) == []
    labels[1, 1, 3] = 1  # the left caudate (label 1) now reaches the right one
    assert cohort.touching_pairs(labels) == [(1, 2)]
    with pytest.raises(RuntimeError, match=r"AAL region 78 \(right thalamus\) is missing"):
        cohort.deep_brain_labels(np.where(atlas == 78, 0, atlas))
