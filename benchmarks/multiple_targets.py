"""Targets segmented each in its own run against all in one prompt file, per target, on real cohorts.

    python benchmarks/multiple_targets.py COHORT_DIR [COHORT_DIR ...] [--engine-dir DIR] [--every 5]
                                          [--mode published --mode refined] [-o table.md]

COHORT_DIRs hold images/, labels/ and labels.json as ``real_cohort.py``, ``lesion_cohort.py`` and
``deep_brain_cohort.py`` write them. For every case, RECIST markers are simulated from each label's
truth every ``--every`` slices (the sparse protocol, as ``evaluate --protocol recist-sparse`` draws
them); each target is then segmented alone, and all of the case's targets together in one prompt
set, as a user's file holds them, in each mode, and scored from the label image as it is written
(were masks to overlap, the higher label's). Printed (and written with ``-o``): per target its 3D DSC and NSD (2 mm)
alone and in the file, then each cohort's mean. A target in a file must score as it does alone.
``--engine-dir`` runs another checkout's engine (``git worktree add /tmp/before REV`` then
``--engine-dir /tmp/before/MedSAMSlicer``), so that before and after are measured the same way.
"""

import sys
from pathlib import Path

from cohort_cases import cohort_parser


def main(argv=None):
    parser = cohort_parser(__doc__)
    parser.add_argument("--engine-dir", type=Path, default=Path(__file__).resolve().parents[1] / "MedSAMSlicer")
    parser.add_argument("--mode", action="append", choices=("published", "refined"))
    parser.add_argument("--window", default="auto")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.engine_dir.resolve()))
    rows = measure(args.cohorts, args.mode or ["published", "refined"], args.window, args.every)
    text = table(rows, args.mode or ["published", "refined"])
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


def measure(cohorts, modes, window, every):
    """Rows ``{"cohort", "case", "target", "scores": {(mode, "alone" or "file"): (dsc, nsd)}}``."""
    import numpy as np
    from cohort_cases import cohort_cases

    from MedSAMSlicerLib.evaluation.metrics import dice, normalized_surface_dice
    from MedSAMSlicerLib.models.model_registry import load_model
    from MedSAMSlicerLib.prompts.prompt_simulation import recist_from_truth
    from MedSAMSlicerLib.prompts.prompt_types import PromptSet
    from MedSAMSlicerLib.volume.embedding_cache import EmbeddingCache
    from MedSAMSlicerLib.volume.intensity import IntensitySettings
    from MedSAMSlicerLib.volume.refinement import refinement_for
    from MedSAMSlicerLib.volume.session import SegmentationSession

    model = load_model("lite-medsam", None, "cpu", "auto")
    rows = []
    for cohort in cohorts:
        for case, image, labels, names in cohort_cases(cohort):
            spacing_kji = tuple(reversed(image.geometry.spacing))
            truths = {int(v): labels.array == v for v in np.unique(labels.array) if v != 0}
            markers = {label: recist_from_truth(truth, every, 2, image.geometry.spacing[:2], label).prompts
                       for label, truth in truths.items()}
            intensity = IntensitySettings.parse(window, image.array, image.modality)
            case_rows = {label: {"cohort": cohort.name, "case": case,
                                 "target": names.get(str(label), f"label {label}"), "scores": {}} for label in truths}
            with SegmentationSession(image.array, model, intensity, EmbeddingCache(max_bytes=6 << 30)) as session:
                for mode in modes:
                    together = session.segment(PromptSet([p for ps in markers.values() for p in ps], 2),
                                               refinement=refinement_for(mode))
                    written = np.zeros(labels.array.shape, dtype=np.int32)
                    for label in sorted(together):  # as the label image is written: where masks overlap, the higher
                        written[together[label].mask] = label  # label wins
                    runs = {"file": {label: written == label for label in together}}
                    runs["alone"] = {label: session.segment(PromptSet(markers[label], 2),
                                                            refinement=refinement_for(mode))[label].mask
                                     for label in truths}
                    for label, truth in truths.items():
                        for run, masks in runs.items():
                            mask = masks[label]
                            near = tuple(slice(max(int(a.min()) - 4, 0), int(a.max()) + 5)  # NSD around the two
                                         for a in np.nonzero(truth | mask))
                            case_rows[label]["scores"][mode, run] = (
                                dice(truth, mask), normalized_surface_dice(truth[near], mask[near], 2.0, spacing_kji))
            for row in case_rows.values():
                rows.append(row)
                print(f"{row['case']} {row['target']}: " + ", ".join(
                    f"{mode} {run} {row['scores'][mode, run][0]:.3f}" for mode in modes for run in ("alone", "file")),
                    flush=True)
    return rows


def table(rows, modes) -> str:
    """Per target, then each cohort's mean: DSC / NSD alone and in the file, per mode."""
    import numpy as np

    header = "| cohort | case | target | " + " | ".join(f"{mode}: alone | {mode}: in the file" for mode in modes) + " |"
    lines = [header, "|" + " --- |" * (3 + 2 * len(modes))]

    def cells(scores):
        return " | ".join(f"{scores[mode, run][0]:.3f} / {scores[mode, run][1]:.3f}"
                          for mode in modes for run in ("alone", "file"))

    for cohort in sorted({row["cohort"] for row in rows}):
        mine = [row for row in rows if row["cohort"] == cohort]
        for row in mine:
            lines.append(f"| {cohort} | {row['case']} | {row['target']} | {cells(row['scores'])} |")
        mean = {key: tuple(np.mean([row["scores"][key][i] for row in mine]) for i in (0, 1))
                for key in mine[0]["scores"]}
        lines.append(f"| **{cohort}** | **mean** | {len(mine)} targets | {cells(mean)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
