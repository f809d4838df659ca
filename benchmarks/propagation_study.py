"""Where propagation beyond the annotated slices should stop, measured on real cohorts for each candidate rule.

    python benchmarks/propagation_study.py COHORT_DIR [COHORT_DIR ...] [--mode refined ...]
                                          [--window auto] [--every 5] [--limit 50] [-o table.md]

COHORT_DIRs hold images/, labels/ and labels.json as ``real_cohort.py`` and ``lesion_cohort.py``
write them. Every target is segmented alone, in each mode (``MODES``: published, refined, and the
refined mode's annotated slices with the published steps on the propagated ones), in two protocols:

* (A) one RECIST marker (long and short axis, from the truth) on the target's largest slice,
  propagated both ways: the 3D DSC and NSD (2 mm) against the truth;
* (B) RECIST markers every ``--every`` slices reaching the target's first and last slices (the
  sparse protocol): DSC without propagation and with it. Past those slices the truth is empty,
  so every slice a rule keeps there is a false one, and a rule must not lower the DSC.

A rule only decides where a run of propagated slices ends: the slices it would see are the same
for every rule (each is prompted by the one before). So each end's run is traced once, up to
``--limit`` slices, the volume's edge or an empty mask (``propagation.traced_slices``), and each
rule is applied to it as the engine applies it (``propagation.kept_slices``); the chosen rule's
result is also checked against a real ``session.segment(..., propagate=limit)`` (in the engine's two
modes). Printed (and written with ``-o``): per rule and cohort the mean and worst target, then per
target for the rules in ``SHOWN``.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMSlicer"))

from cohort_cases import cohort_cases  # noqa: E402
from MedSAMSlicerLib.evaluation.metrics import dice, normalized_surface_dice  # noqa: E402
from MedSAMSlicerLib.models.model_registry import load_model  # noqa: E402
from MedSAMSlicerLib.prompts.prompt_simulation import recist_from_truth, recist_on_largest_slice  # noqa: E402
from MedSAMSlicerLib.volume.embedding_cache import EmbeddingCache  # noqa: E402
from MedSAMSlicerLib.volume.intensity import IntensitySettings  # noqa: E402
from MedSAMSlicerLib.volume.propagation import (DEFAULT_PROPAGATE_SLICES, STOPPING_RULE, VANISHED,  # noqa: E402
                                                StoppingRule, TargetReference, kept_slices, target_reference,
                                                traced_slices)
from MedSAMSlicerLib.volume.refinement import REFINED  # noqa: E402
from MedSAMSlicerLib.volume.session import SegmentationSession  # noqa: E402

TOLERANCE_MM = 2.0
#: mode: (the annotated slices' refinement, the propagated slices'); the engine propagates in the annotated slices' mode
MODES = {"published": (None, None), "refined": (REFINED, REFINED), "refined, published propagation": (REFINED, None)}
AXIS = 2
PROTOCOLS = ("one marker", "sparse")
CANDIDATES = [
    VANISHED,
    *(StoppingRule(min_previous_share=f) for f in (0.3, 0.5, 0.6, 0.7)),
    *(StoppingRule(min_largest_share=f) for f in (0.1, 0.2, 0.3, 0.4)),
    *(StoppingRule(max_growth=g) for g in (1.1, 1.25, 1.5, 2.0)),
    *(StoppingRule(min_confidence=p) for p in (0.75, 0.8, 0.85, 0.9)),
    *(StoppingRule(min_overlap=t) for t in (0.2, 0.3, 0.4, 0.5, 0.6)),
    *(StoppingRule(min_contrast=c) for c in (0.3, 0.4, 0.5, 0.6)),
    # the two best single tests together, then with the tip test; the neighbours of the chosen thresholds
    *(StoppingRule(min_contrast=0.5, min_overlap=t) for t in (0.2, 0.3, 0.4)),
    *(StoppingRule(min_contrast=c, min_overlap=0.3, min_largest_share=0.25) for c in (0.4, 0.6)),
    *(StoppingRule(min_contrast=0.5, min_overlap=t, min_largest_share=0.25) for t in (0.2, 0.4)),
    *(StoppingRule(min_contrast=0.5, min_overlap=0.3, min_largest_share=f) for f in (0.15, 0.2, 0.3)),
    STOPPING_RULE,
]


def rule_name(rule: StoppingRule) -> str:
    """The tests a rule adds to the empty mask's, in words (``vanished``: none)."""
    tests = [f"contrast < {rule.min_contrast:g}" if rule.min_contrast > VANISHED.min_contrast else "",
             f"IoU < {rule.min_overlap:g}" if rule.min_overlap else "",
             f"area < {rule.min_largest_share:g} x largest" if rule.min_largest_share else "",
             f"area < {rule.min_previous_share:g} x previous" if rule.min_previous_share else "",
             f"area > {rule.max_growth:g} x previous" if rule.max_growth < VANISHED.max_growth else "",
             f"confidence < {rule.min_confidence:g}" if rule.min_confidence else ""]
    return " or ".join(test for test in tests if test) or "vanished"


RULES: Dict[str, StoppingRule] = {rule_name(rule): rule for rule in CANDIDATES}
CHOSEN = rule_name(STOPPING_RULE)
#: the rules whose per-target scores are printed: the old rule, each kind of test at its best, the pair, the chosen
SHOWN = ["vanished", "area < 0.6 x previous", "area < 0.3 x largest", "area > 1.25 x previous", "confidence < 0.85",
         "IoU < 0.3", "contrast < 0.5", "contrast < 0.5 or IoU < 0.3", CHOSEN]


@dataclass
class Trace:
    """One target in one mode and protocol: its annotated range's mask and, per end, the run propagation would see."""

    truth: np.ndarray
    planned: np.ndarray
    reference: TargetReference
    runs: List[Tuple[np.ndarray, list]]  # (the end slice's mask, [TracedSlice, ...]) per end


def trace_target(session: SegmentationSession, truth: np.ndarray, protocol: str, spacing_xy, every: int,
                 mode: str, limit: int) -> Trace:
    prompts = (recist_on_largest_slice(truth, AXIS, spacing_xy) if protocol == "one marker"
               else recist_from_truth(truth, every, AXIS, spacing_xy))
    annotated, propagated = MODES[mode]
    result = session.segment(prompts, refinement=annotated)[1]
    planned, slices = result.mask, result.slices
    runs = []
    for start, step in ((min(slices), -1), (max(slices), +1)):
        end = planned[start]
        runs.append((end, list(traced_slices(session, AXIS, start, step, end, limit, propagated))))
    return Trace(truth, planned, target_reference(session.volume_u8, planned, AXIS, slices), runs)


def apply_rule(trace: Trace, rule: StoppingRule) -> Tuple[np.ndarray, int]:
    """The target's mask with the slices ``rule`` keeps, and how many it keeps."""
    mask, kept = trace.planned.copy(), 0
    for end, run in trace.runs:
        for found in kept_slices(run, end, rule, trace.reference):
            mask[found.index] |= found.mask
            kept += 1
    return mask, kept


def scores(truth: np.ndarray, mask: np.ndarray, spacing_kji) -> Tuple[float, float]:
    """DSC and NSD at ``TOLERANCE_MM``, the NSD on the box around both masks plus 2 voxels (the same value, faster)."""
    both = np.argwhere(truth | mask)
    low, high = np.maximum(both.min(axis=0) - 2, 0), both.max(axis=0) + 3
    window = tuple(slice(a, b) for a, b in zip(low, high))
    return dice(truth, mask), normalized_surface_dice(truth[window], mask[window], TOLERANCE_MM, spacing_kji)


def measure(cohorts: List[Path], modes: List[str], window: str, every: int, limit: int):
    """Rows ``{"cohort", "case", "target", "slices", "scores": {(mode, protocol, rule): (dsc, nsd, kept)},
    "unpropagated": {mode: dsc of protocol B without propagation}}``."""
    model = load_model("lite-medsam", None, "cpu", "auto")
    rows = []
    for cohort in cohorts:
        for case, image, labels, names in cohort_cases(cohort):
            spacing_kji = tuple(reversed(image.geometry.spacing))
            spacing_xy = image.geometry.spacing[:2]
            intensity = IntensitySettings.parse(window, image.array, image.modality)
            with SegmentationSession(image.array, model, intensity, EmbeddingCache(max_bytes=6 << 30)) as session:
                for label in (int(v) for v in np.unique(labels.array) if v != 0):
                    truth = labels.array == label
                    row = {"cohort": cohort.name, "case": case,
                           "target": names.get(str(label), f"label {label}"),
                           "slices": int(truth.any(axis=(1, 2)).sum()), "scores": {}, "unpropagated": {}}
                    for mode in modes:
                        for protocol in PROTOCOLS:
                            trace = trace_target(session, truth, protocol, spacing_xy, every, mode, limit)
                            if protocol == "sparse":
                                row["unpropagated"][mode] = dice(truth, trace.planned)
                            for name, rule in RULES.items():
                                mask, kept = apply_rule(trace, rule)
                                row["scores"][mode, protocol, name] = scores(truth, mask, spacing_kji) + (kept,)
                            if MODES[mode][0] == MODES[mode][1]:
                                check_engine(session, trace, truth, protocol, spacing_xy, every, mode, limit)
                    rows.append(row)
                    print(f"{row['case']} {row['target']}: " + ", ".join(
                        f"{mode} {protocol} {name} {row['scores'][mode, protocol, name][0]:.3f}"
                        for mode in modes for protocol in PROTOCOLS for name in ("vanished", CHOSEN)), flush=True)
    return rows


def check_engine(session, trace: Trace, truth, protocol, spacing_xy, every, mode, limit) -> None:
    """The engine, run for real with the default rule, gives what the study scores for it."""
    prompts = (recist_on_largest_slice(truth, AXIS, spacing_xy) if protocol == "one marker"
               else recist_from_truth(truth, every, AXIS, spacing_xy))
    engine = session.segment(prompts, propagate=limit, refinement=MODES[mode][0])[1].mask
    if not np.array_equal(engine, apply_rule(trace, STOPPING_RULE)[0]):
        raise AssertionError(f"the engine's propagation differs from the study's ({mode}, {protocol})")


def summary(rows, modes) -> str:
    """Per rule, mode and cohort: (A) mean and worst DSC, mean NSD; (B) mean and worst DSC change from none."""
    cohorts = sorted({row["cohort"] for row in rows})
    lines = ["| rule | mode | " + " | ".join(
        f"{c}: (A) DSC mean / worst | (A) NSD mean | (B) DSC change mean / worst" for c in cohorts) + " |",
        "|" + " --- |" * (2 + 3 * len(cohorts))]
    for name in RULES:
        for mode in modes:
            cells = []
            for cohort in cohorts:
                mine = [row for row in rows if row["cohort"] == cohort]
                one = np.array([row["scores"][mode, "one marker", name][:2] for row in mine])
                change = np.array([row["scores"][mode, "sparse", name][0] - row["unpropagated"][mode] for row in mine])
                cells += [f"{one[:, 0].mean():.3f} / {one[:, 0].min():.3f}", f"{one[:, 1].mean():.3f}",
                          f"{change.mean():+.3f} / {change.min():+.3f}"]
            lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_target(rows, mode: str, protocol: str, shown: List[str]) -> str:
    """(A): DSC / NSD (slices kept) per rule; (B): DSC (slices kept) per rule, after the DSC without propagation.
    Each cohort's targets, then their mean."""
    header = ["case", "target", "slices"] + (["no propagation"] if protocol == "sparse" else []) + shown
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]

    def cells(group, case, target):
        """The row of one target (a group of one) or the mean of a cohort's."""
        out = [case, target, str(sum(r["slices"] for r in group))]
        if protocol == "sparse":
            out.append(f"{np.mean([r['unpropagated'][mode] for r in group]):.3f}")
        for name in shown:
            dsc, nsd, kept = np.mean([r["scores"][mode, protocol, name] for r in group], axis=0)
            slices = f"{kept:.0f}" if len(group) == 1 else f"{kept:.1f}"
            out.append(f"{dsc:.3f} / {nsd:.3f} ({slices})" if protocol == "one marker" else f"{dsc:.3f} ({slices})")
        return out

    for cohort in sorted({row["cohort"] for row in rows}):
        mine = [row for row in rows if row["cohort"] == cohort]
        table = [cells([row], row["case"], row["target"]) for row in mine]
        table.append(cells(mine, f"**{cohort} mean**", f"{len(mine)} targets"))
        lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def report(rows, modes, shown: Optional[List[str]] = None) -> str:
    shown = shown or SHOWN
    parts = ["Per rule: (A) one marker on the largest slice, propagated; (B) markers every few slices reaching the "
             "ends, DSC with propagation minus without.", summary(rows, modes)]
    for mode in modes:
        for protocol, title in (("one marker", "(A) one marker on the largest slice: DSC / NSD (slices propagated)"),
                                ("sparse", "(B) markers reaching the first and last slice: DSC (slices propagated)")):
            parts += [f"{title}, {mode} mode", per_target(rows, mode, protocol, shown)]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cohorts", type=Path, nargs="+")
    parser.add_argument("--mode", action="append", choices=list(MODES), help="repeat to compare (default: all)")
    parser.add_argument("--window", default="auto", help="intensity, as for medsam-slicer segment (default auto)")
    parser.add_argument("--every", type=int, default=5, help="(B): RECIST markers every K slices (default 5)")
    parser.add_argument("--limit", type=int, default=DEFAULT_PROPAGATE_SLICES,
                        help=f"the most slices propagated beyond each end (default {DEFAULT_PROPAGATE_SLICES})")
    parser.add_argument("-o", "--output", type=Path, help="also write the tables (Markdown) here")
    args = parser.parse_args()
    modes = args.mode or list(MODES)
    text = report(measure(args.cohorts, modes, args.window, args.every, args.limit), modes)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
