"""Boxes between key slices from the neighbouring slice's mask, against the interpolated boxes, on real cohorts.

    python benchmarks/neighbour_boxes.py COHORT_DIR [COHORT_DIR ...] [--every 5] [-o table.md]

Between two RECIST key slices the engine prompts each slice with the box interpolated linearly
between the key slices' boxes. The variant measured here (issue 22, item 6) walks from each key
slice towards the middle of the gap and prompts each slice with the bounding box of the mask just
segmented on its neighbour, clipped to the interpolated box (the interpolated box where the
neighbour's mask is empty or the two do not meet). Each target of each case is segmented alone,
markers simulated every ``--every`` slices, in both modes; printed: per target the 3D DSC with
the interpolated boxes and with the neighbours' boxes, then each cohort's mean.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMSlicer"))

from cohort_cases import cohort_cases, cohort_parser  # noqa: E402

from MedSAMSlicerLib.evaluation.metrics import dice  # noqa: E402
from MedSAMSlicerLib.models.model_registry import load_model  # noqa: E402
from MedSAMSlicerLib.prompts.geometry import slice_indexer  # noqa: E402
from MedSAMSlicerLib.prompts.interpolation import interpolate_boxes  # noqa: E402
from MedSAMSlicerLib.prompts.prompt_simulation import bounding_box, recist_from_truth  # noqa: E402
from MedSAMSlicerLib.volume.intensity import IntensitySettings  # noqa: E402
from MedSAMSlicerLib.volume.refinement import MODES, refined_probability, refinement_for, zoom_window  # noqa: E402
from MedSAMSlicerLib.volume.session import SegmentationSession  # noqa: E402


def slice_mask(session, index: int, boxes, refinement) -> np.ndarray:
    """One slice's mask from ``boxes`` in a mode (``refinement`` None: the published steps)."""
    if refinement is None:
        return session.slice_probabilities(index, boxes, 2) > 0.5
    shape = session.shape[1:]
    return refined_probability(session, index, boxes, 2, zoom_window(boxes, shape, refinement), refinement) > 0.5


def neighbour_box(previous: np.ndarray, interpolated: np.ndarray) -> np.ndarray:
    """The bounding box of the neighbour's mask clipped to the interpolated box; the interpolated box where the
    mask is empty or outside it."""
    if not previous.any():
        return interpolated
    box = bounding_box(previous)
    clipped = np.array([max(box[0], interpolated[0]), max(box[1], interpolated[1]),
                        min(box[2], interpolated[2]), min(box[3], interpolated[3])])
    return clipped if clipped[2] > clipped[0] and clipped[3] > clipped[1] else interpolated


def segment_from_neighbours(session, key_boxes, refinement) -> np.ndarray:
    """The target's mask with each slice between key slices prompted from its neighbour's mask (see above)."""
    plan = interpolate_boxes(key_boxes)
    masks = {index: slice_mask(session, index, key_boxes[index], refinement) for index in key_boxes}
    keys = sorted(key_boxes)
    for low, high in zip(keys, keys[1:]):
        lower, upper = low + 1, high - 1
        while lower <= upper:  # from both ends towards the middle
            for index, neighbour in ((lower, lower - 1), (upper, upper + 1)):
                if index in masks:  # the two walks met on this slice
                    continue
                boxes = [neighbour_box(masks[neighbour], plan[index][0])] if len(plan[index]) == 1 else plan[index]
                masks[index] = slice_mask(session, index, boxes, refinement)
            lower, upper = lower + 1, upper - 1
    result = np.zeros(session.shape, dtype=bool)
    for index, mask in masks.items():
        result[slice_indexer(2, index)] = mask
    return result


def main() -> None:
    args = cohort_parser(__doc__).parse_args()
    model = load_model("lite-medsam", None, "cpu", "auto")
    lines = ["| cohort | case | target | " + " | ".join(f"{mode}: interpolated | {mode}: from the neighbour"
                                                       for mode in MODES) + " |", "|" + " --- |" * (3 + 2 * len(MODES))]
    for cohort in args.cohorts:
        scores = []
        for case, image, labels, names in cohort_cases(cohort):
            intensity = IntensitySettings.parse("auto", image.array, image.modality)
            with SegmentationSession(image.array, model, intensity) as session:
                for label in (int(v) for v in np.unique(labels.array) if v != 0):
                    truth = labels.array == label
                    prompts = recist_from_truth(truth, args.every, 2, image.geometry.spacing[:2], label)
                    key_boxes = prompts.key_boxes(image.array.shape)[label]
                    row = []
                    for mode in MODES:
                        refinement = refinement_for(mode)
                        row += [dice(truth, session.segment(prompts, refinement=refinement)[label].mask),
                                dice(truth, segment_from_neighbours(session, key_boxes, refinement))]
                    scores.append(row)
                    lines.append(f"| {cohort.name} | {case} | {names.get(str(label), f'label {label}')} | "
                                 + " | ".join(f"{value:.3f}" for value in row) + " |")
                    print(lines[-1], flush=True)
        lines.append(f"| **{cohort.name}** | **mean** | {len(scores)} targets | "
                     + " | ".join(f"{value:.3f}" for value in np.mean(scores, axis=0)) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
