"""The int8 encoder's accuracy gate, measured on real cohorts: per-slice mask IoU against fp32 and the 3D Dice change.

    python benchmarks/int8_gate.py COHORT_DIR [COHORT_DIR ...] [--every 5]

Each cohort (images/, labels/ as ``real_cohort.py`` and ``lesion_cohort.py`` write them) is
segmented in the refined mode from RECIST markers simulated every ``--every`` slices, once with the
fp32 encoder and once with the int8 one. Printed: per target the 3D DSC of each and their
difference, and over every slice segmented the median and 5th percentile of the int8 mask's IoU
with the fp32 mask. The gate (``quantization.INT8_GATE_PASSED``) is: mean DSC change at most 0.005
(int8 below fp32), 5th-percentile IoU at least 0.95.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMSlicer"))

from MedSAMSlicerLib.evaluation.metrics import dice, iou  # noqa: E402
from MedSAMSlicerLib.files.image_io import paired_images, read_image, read_label_image  # noqa: E402
from MedSAMSlicerLib.models.model_registry import load_model  # noqa: E402
from MedSAMSlicerLib.prompts.geometry import take_slice  # noqa: E402
from MedSAMSlicerLib.prompts.prompt_simulation import recist_from_labels  # noqa: E402
from MedSAMSlicerLib.volume.intensity import IntensitySettings  # noqa: E402
from MedSAMSlicerLib.volume.refinement import REFINED  # noqa: E402
from MedSAMSlicerLib.volume.session import SegmentationSession  # noqa: E402

MAX_DSC_DROP = 0.005
MIN_P5_IOU = 0.95


def measure(cohorts, every: int):
    models = {precision: load_model("lite-medsam", None, "cpu", "auto", precision) for precision in ("fp32", "int8")}
    if models["int8"].precision != "int8":
        raise SystemExit("int8 is not available here (OpenVINO and NNCF are needed)")
    drops, ious = [], []
    for cohort in cohorts:
        for image_path, label_path in paired_images(Path(cohort) / "images", Path(cohort) / "labels"):
            image, labels = read_image(image_path), read_label_image(label_path)
            intensity = IntensitySettings.parse("auto", image.array, image.modality)
            prompts = recist_from_labels(labels.array, every, 2, image.geometry.spacing[:2])
            targets = prompts.labels
            masks = {}
            for precision, model in models.items():
                with SegmentationSession(image.array, model, intensity) as session:
                    masks[precision] = session.segment(prompts, refinement=REFINED)
            for label in targets:
                truth = labels.array == label
                fp32, int8 = masks["fp32"][label], masks["int8"][label]
                scores = dice(truth, fp32.mask), dice(truth, int8.mask)
                drops.append(scores[0] - scores[1])
                for index in fp32.slices:
                    a, b = take_slice(fp32.mask, 2, index), take_slice(int8.mask, 2, index)
                    if a.any() or b.any():
                        ious.append(iou(a, b))
                print(f"{image_path.name} label {label}: DSC fp32 {scores[0]:.4f}, int8 {scores[1]:.4f}, "
                      f"change {scores[1] - scores[0]:+.4f}", flush=True)
    return drops, ious


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cohorts", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()
    drops, ious = measure(args.cohorts, args.every)
    median, p5 = np.median(ious), np.percentile(ious, 5)
    passed = np.mean(drops) <= MAX_DSC_DROP and p5 >= MIN_P5_IOU
    print(f"{len(drops)} targets, {len(ious)} slices: mean DSC change {-np.mean(drops):+.4f} (worst {-max(drops):+.4f}); "
          f"slice IoU int8 vs fp32 median {median:.4f}, 5th percentile {p5:.4f}: gate {'passed' if passed else 'FAILED'}")


if __name__ == "__main__":
    main()
