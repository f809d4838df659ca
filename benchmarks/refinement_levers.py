"""The refined mode against the published pipeline on a real cohort, with each variant of its lever timed alone.

    python benchmarks/refinement_levers.py COHORT_DIR [--window percentile] [--every 5] [--variants NAME ...]
                                           [-o table.md]

COHORT_DIR holds images/, labels/ and labels.json as ``real_cohort.py`` and ``lesion_cohort.py``
write them. For every target, RECIST markers are simulated from its truth every ``--every``
slices (as ``evaluate --protocol recist-sparse`` does), all of a case's targets go in one prompt
set as a user's file would hold them, and each case is segmented once per variant, each in a fresh
session, so that each variant's seconds per slice (the case's time over the slices segmented)
include its own encoder passes. Printed (and written with ``-o``): per target and on the mean, the box-fill
baseline, DSC and NSD (2 mm) of each variant, and seconds per slice.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMSlicer"))

from MedSAMSlicerLib.evaluation.metrics import dice, normalized_surface_dice  # noqa: E402
from MedSAMSlicerLib.evaluation.volume_evaluation import fill_plan  # noqa: E402
from MedSAMSlicerLib.files.image_io import paired_images, read_image, read_label_image  # noqa: E402
from MedSAMSlicerLib.files.json_file import read_json  # noqa: E402
from MedSAMSlicerLib.models.model_registry import load_model  # noqa: E402
from MedSAMSlicerLib.prompts.interpolation import interpolate_boxes  # noqa: E402
from MedSAMSlicerLib.prompts.prompt_simulation import recist_from_labels  # noqa: E402
from MedSAMSlicerLib.volume.intensity import IntensitySettings  # noqa: E402
from MedSAMSlicerLib.volume.refinement import REFINED, Refinement  # noqa: E402
from MedSAMSlicerLib.volume.session import SegmentationSession  # noqa: E402

VARIANTS = {
    "published": None,
    "refined": REFINED,
    "zoomed view alone": Refinement(zoom_weight=1.0),
    "crop 1.5x box": Refinement(zoom_factor=1.5),
    "crop 3x box": Refinement(zoom_factor=3.0),
    # one view with more context than the 2x crop: one encoder pass per slice instead of two, were it to win
    "zoomed view alone, crop 3x box": Refinement(zoom_factor=3.0, zoom_weight=1.0),
    "zoomed view alone, crop 4x box": Refinement(zoom_factor=4.0, zoom_weight=1.0),
}
TOLERANCE_MM = 2.0


def measure(cohort: Path, window: str, every: int, variants=tuple(VARIANTS), model_id: str = "lite-medsam"):
    """Rows ``(case, target, slices, box fill (dsc, nsd), {variant: (dsc, nsd, seconds per slice)})`` for the
    ``variants`` named."""
    model = load_model(model_id, None, "cpu", "auto")
    names = read_json(cohort / "labels.json", "labels map") if (cohort / "labels.json").is_file() else {}
    rows = []
    for image_path, label_path in paired_images(cohort / "images", cohort / "labels"):
        image, labels = read_image(image_path), read_label_image(label_path)
        spacing_kji = tuple(reversed(image.geometry.spacing))
        intensity = IntensitySettings.parse(window, image.array, image.modality)
        prompts = recist_from_labels(labels.array, every, 2, image.geometry.spacing[:2])
        targets = prompts.labels
        scores = {label: {} for label in targets}
        for variant in variants:
            refinement = VARIANTS[variant]
            with SegmentationSession(image.array, model, intensity) as session:  # fresh: every variant encodes
                started = time.perf_counter()
                results = session.segment(prompts, refinement=refinement)
                # the case's targets share slices (and crops), so the time is the case's, per slice segmented
                seconds = (time.perf_counter() - started) / len({i for r in results.values() for i in r.slices})
            for label, result in results.items():
                truth = labels.array == label
                scores[label][variant] = (dice(truth, result.mask),
                                          normalized_surface_dice(truth, result.mask, TOLERANCE_MM, spacing_kji),
                                          seconds)
        key_boxes = prompts.key_boxes(labels.array.shape)
        for label in targets:
            truth = labels.array == label
            plan = interpolate_boxes(key_boxes[label])
            fill = fill_plan(truth.shape, plan)
            rows.append((image_path.name.split(".")[0], names.get(str(label), f"label {label}"), len(plan),
                         (dice(truth, fill), normalized_surface_dice(truth, fill, TOLERANCE_MM, spacing_kji)),
                         scores[label]))
            print(_line(rows[-1]), flush=True)
    return rows


def _line(row) -> str:
    case, name, slices, fill, scores = row
    cells = [f"{fill[0]:.3f} / {fill[1]:.3f}"] + [f"{d:.3f} / {n:.3f} ({s:.2f} s)" for d, n, s in scores.values()]
    return f"| {case} | {name} | {slices} | " + " | ".join(cells) + " |"


def table(rows) -> str:
    variants = list(rows[0][4])
    header = ["case", "target", "slices", "box fill"] + variants
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += [_line(row) for row in rows]
    mean_fill = np.mean([row[3] for row in rows], axis=0)
    means = {variant: np.mean([row[4][variant] for row in rows], axis=0) for variant in variants}
    lines.append(_line(("**mean**", f"{len(rows)} targets", int(np.sum([row[2] for row in rows])), mean_fill, means)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--window", default="auto", help="intensity, as for medsam-slicer segment (default auto)")
    parser.add_argument("--every", type=int, default=5, help="RECIST markers every K slices (default 5)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="the variants to run (default: all)")
    parser.add_argument("-o", "--output", type=Path, help="also write the table (Markdown) here")
    args = parser.parse_args()
    print("cells: DSC / NSD (2 mm) (seconds per slice, encoder included)")
    text = table(measure(args.cohort, args.window, args.every, args.variants))
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
