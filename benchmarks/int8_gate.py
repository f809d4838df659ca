"""The int8 encoder's accuracy gate, judged against the truth per target on the real cohorts.

    python benchmarks/int8_gate.py COHORT_DIR [COHORT_DIR ...] [--every 5] [--floats fp32|bf16] [-o table.md]

Each cohort (images/, labels/, labels.json as ``real_cohort.py``, ``lesion_cohort.py`` and
``deep_brain_cohort.py`` write them) is segmented from RECIST markers simulated every ``--every``
slices, all of a case's targets in one prompt set as a user's file holds them: in the published
mode, and in the refined mode with the fp32 and with the int8 encoder. Printed (and written with
``-o``): per target the 3D DSC of each, int8's DSC change and volume change (mL) against fp32,
then per cohort the mean, and the int8 masks' agreement with fp32 (median and 5th percentile of
the slices' IoU). What a user sees is the mask against the truth, so that is what the gate judges
(``GATE``), over every target of every cohort given: the mean DSC change at least -0.005, and no
target below -0.03.
``quantization.INT8_GATE_PASSED`` lists the weights that passed. ``--floats bf16`` judges a variant, the int8
encoder with its float operations (and the box decoder) in bfloat16, on a CPU that has bfloat16 dot products.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMSlicer"))

from cohort_cases import cohort_cases, cohort_parser  # noqa: E402

from MedSAMSlicerLib.evaluation.metrics import dice, iou  # noqa: E402
from MedSAMSlicerLib.models.inference_runtime import FLOATS  # noqa: E402
from MedSAMSlicerLib.models.model_registry import load_model  # noqa: E402
from MedSAMSlicerLib.models.quantization import bf16_pays_here  # noqa: E402
from MedSAMSlicerLib.prompts.geometry import take_slice  # noqa: E402
from MedSAMSlicerLib.prompts.prompt_simulation import recist_from_labels  # noqa: E402
from MedSAMSlicerLib.volume.intensity import IntensitySettings  # noqa: E402
from MedSAMSlicerLib.volume.refinement import REFINED  # noqa: E402
from MedSAMSlicerLib.volume.session import SegmentationSession  # noqa: E402

#: the lowest mean DSC change (int8 minus fp32) of a cohort, and the lowest of any one target
GATE = {"mean": -0.005, "target": -0.03}
RUNS = {"published": ("fp32", None), "refined fp32": ("fp32", REFINED), "refined int8": ("int8", REFINED)}


def measure(cohorts, every: int, floats: str = "fp32"):
    """Rows ``{"cohort", "case", "target", "dsc": {run: dsc}, "ml": {run: mL}, "ious": [slice IoU int8 vs fp32]}``;
    the int8 runs with their float operations in ``floats``."""
    if floats == "bf16" and not bf16_pays_here():
        raise SystemExit("this CPU has no bfloat16 dot products (AVX512-BF16 or AMX): --floats bf16 would be emulated")
    models = {"fp32": load_model("lite-medsam", None, "cpu", "auto", "fp32"),
              "int8": load_model("lite-medsam", None, "cpu", "auto", "int8", floats=floats)}
    if models["int8"].precision != "int8":
        raise SystemExit("int8 is not available here (OpenVINO and NNCF are needed)")
    rows = []
    for cohort in cohorts:
        for case, image, labels, names in cohort_cases(cohort):
            intensity = IntensitySettings.parse("auto", image.array, image.modality)
            prompts = recist_from_labels(labels.array, every, 2, image.geometry.spacing[:2])
            millilitres = float(np.prod(image.geometry.spacing)) / 1000
            masks = {}
            for precision in ("fp32", "int8"):
                with SegmentationSession(image.array, models[precision], intensity) as session:
                    masks.update({run: session.segment(prompts, refinement=refinement)
                                  for run, (wanted, refinement) in RUNS.items() if wanted == precision})
            for label in prompts.labels:
                truth = labels.array == label
                fp32, int8 = masks["refined fp32"][label], masks["refined int8"][label]
                pairs = [(take_slice(fp32.mask, 2, index), take_slice(int8.mask, 2, index)) for index in fp32.slices]
                ious = [iou(a, b) for a, b in pairs if a.any() or b.any()]
                row = {"cohort": cohort.name, "case": case, "target": names.get(str(label), f"label {label}"),
                       "dsc": {run: dice(truth, masks[run][label].mask) for run in RUNS},
                       "ml": {run: float(masks[run][label].mask.sum()) * millilitres for run in RUNS}, "ious": ious}
                rows.append(row)
                print(f"{case} {row['target']}: "
                      + ", ".join(f"{run} {value:.4f}" for run, value in row["dsc"].items()),
                      flush=True)
    return rows


def verdict(rows) -> tuple:
    """``(passed, lines)``: the int8 figures per cohort, then the gate over every target of every cohort."""
    lines = []
    for cohort in sorted({row["cohort"] for row in rows}):
        mine = [row for row in rows if row["cohort"] == cohort]
        ious = np.concatenate([row["ious"] for row in mine])
        lines.append(f"- {cohort}: {changes_text(mine)}; {len(ious)} slices, IoU with fp32 median "
                     f"{np.median(ious):.3f}, 5th percentile {np.percentile(ious, 5):.3f}")
    changes = np.array([row["dsc"]["refined int8"] - row["dsc"]["refined fp32"] for row in rows])
    passed = bool(changes.mean() >= GATE["mean"] and changes.min() >= GATE["target"])
    lines.append(f"- every cohort: {changes_text(rows)}")
    lines.append(f"- gate (mean over every target >= {GATE['mean']}, each target >= {GATE['target']}): "
                 f"{'passed' if passed else 'FAILED'}")
    return passed, lines


def changes_text(rows) -> str:
    """int8's DSC change (mean, lowest) and volume change (median, worst) against fp32 over ``rows``."""
    changes = np.array([row["dsc"]["refined int8"] - row["dsc"]["refined fp32"] for row in rows])
    volumes = np.array([row["ml"]["refined int8"] - row["ml"]["refined fp32"] for row in rows])
    worst = int(np.argmax(np.abs(volumes)))
    return (f"{len(rows)} targets, mean DSC change {changes.mean():+.4f}, lowest {changes.min():+.4f}; volume change "
            f"median {np.median(np.abs(volumes)):.2f} mL, worst {volumes[worst]:+.2f} mL ({rows[worst]['target']} of "
            f"{rows[worst]['ml']['refined fp32']:.2f} mL)")


def table(rows) -> str:
    """Per target, then each cohort's mean: DSC per run, int8's DSC and volume change."""
    lines = ["| cohort | case | target | " + " | ".join(RUNS) + " | int8 DSC change | int8 volume change (mL) |",
             "|" + " --- |" * (5 + len(RUNS))]

    def cells(dsc, ml):
        return (" | ".join(f"{dsc[run]:.3f}" for run in RUNS) + f" | {dsc['refined int8'] - dsc['refined fp32']:+.3f}"
                f" | {ml['refined int8'] - ml['refined fp32']:+.2f}")

    for cohort in sorted({row["cohort"] for row in rows}):
        mine = [row for row in rows if row["cohort"] == cohort]
        for row in mine:
            lines.append(f"| {cohort} | {row['case']} | {row['target']} | {cells(row['dsc'], row['ml'])} |")
        mean = {key: {run: np.mean([row[key][run] for row in mine]) for run in RUNS} for key in ("dsc", "ml")}
        lines.append(f"| **{cohort}** | **mean** | {len(mine)} targets | {cells(mean['dsc'], mean['ml'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = cohort_parser(__doc__)
    parser.add_argument("--floats", choices=FLOATS, default="fp32",
                        help="the int8 networks' float arithmetic (default fp32, what --precision int8 runs)")
    args = parser.parse_args()
    rows = measure(args.cohorts, args.every, args.floats)
    passed, lines = verdict(rows)
    text = f"int8 with its float operations in {args.floats}\n\n" + table(rows) + "\n\n" + "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
