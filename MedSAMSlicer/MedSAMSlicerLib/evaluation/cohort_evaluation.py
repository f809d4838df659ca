"""Models scored on a set of labelled cases under the prompt protocols, with the report written to a folder.

Shared by ``medsam-slicer evaluate`` (cases read from folders) and the Slicer logic (cases taken from
the scene): each case is loaded only when its turn comes, so a cohort never sits in memory at once.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ImageError, PromptError
from ..files.output_files import atomic_output
from ..models.model_registry import load_model, parse_model_choice
from ..prompts.geometry import take_slice
from ..volume.intensity import IntensitySettings
from ..volume.refinement import DEFAULT_MODE, MODES, refinement_for
from ..volume.session import SegmentationSession
from .annotation_study import correction_curve
from .evaluation_report import (CurveRow, Row, correction_lines, plot_corrections, plot_dsc, plot_overlay,
                                summary_lines, wilcoxon_lines, write_corrections_csv, write_csv)
from .volume_evaluation import PROTOCOLS, evaluate_case

CaseProgress = Callable[[str, int, int], None]  # (what, cases done, cases total)


@dataclass
class LabelledImage:
    image: np.ndarray  # [k, j, i]
    labels: np.ndarray  # [k, j, i] label numbers, same grid
    spacing_kji: Tuple[float, float, float]
    modality: Optional[str] = None


@dataclass(frozen=True)
class EvaluationCase:
    name: str
    load: Callable[[], LabelledImage]


@dataclass
class EvaluationOptions:
    protocols: Sequence[str] = ("box-each",)
    window: str = "auto"
    axis: int = 2
    every: int = 5
    jitter: int = 0
    clicks: int = 5
    tolerance_mm: float = 2.0
    device: str = "auto"
    runtime: str = "auto"
    corrections: int = 0  # recist-sparse: simulated corrections of the worst slice (the annotation study); 0 = off
    target_dsc: float = 0.90
    modes: Sequence[str] = (DEFAULT_MODE,)  # each model is scored in each mode (refinement.MODES)
    precision: str = "fp32"  # the encoder's (quantization.PRECISIONS); int8 only when every mode is refined

    def check(self) -> None:
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise PromptError(f"protocol(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(PROTOCOLS)}")
        if self.every < 1 or self.clicks < 1 or self.jitter < 0:
            raise PromptError("--every and --clicks must be 1 or more, --jitter 0 or more")
        if not (math.isfinite(self.tolerance_mm) and self.tolerance_mm >= 0):
            raise PromptError(f"--tolerance must be a number of mm, 0 or more, got {self.tolerance_mm}")
        if self.corrections < 0 or not 0 < self.target_dsc <= 1:
            raise PromptError("--corrections must be 0 or more and --target-dsc between 0 and 1")
        unknown_modes = [m for m in self.modes if m not in MODES]
        if unknown_modes or not self.modes:
            raise PromptError(f"mode(s) {', '.join(unknown_modes) or '(none)'}: choose from {', '.join(MODES)}")
        if self.corrections and "recist-sparse" not in self.protocols:
            raise PromptError("--corrections simulates the annotation study on recist-sparse: "
                              "add --protocol recist-sparse")


def evaluate_cohort(cases: Sequence[EvaluationCase], models: Sequence[str], output: Path,
                    options: EvaluationOptions = EvaluationOptions(), label_names: Optional[Dict[int, str]] = None,
                    progress: Optional[CaseProgress] = None) -> List[Row]:
    """Score every model (``ID`` or ``ID=CHECKPOINT``) on every case; writes scores.csv, summary.txt and PNGs."""
    options.check()
    choices = [parse_model_choice(text) for text in models]
    names = label_names or {}
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    rows: List[Row] = []
    curves: List[CurveRow] = []
    overlaid = set()
    for model_id, checkpoint in choices:
        model = load_model(model_id, checkpoint, options.device, options.runtime, options.precision,
                           "published" if "published" in options.modes else "refined")
        model_tag = model_id if checkpoint is None else f"{model_id}={Path(checkpoint).name}"
        for number, case in enumerate(cases, start=1):
            data = case.load()
            if data.labels.shape != data.image.shape:
                raise ImageError(f"labels of {case.name} have shape {data.labels.shape}, the image {data.image.shape}")
            intensity = IntensitySettings.parse(options.window, data.image, data.modality)
            with SegmentationSession(data.image, model, intensity) as session:
                for mode in options.modes:  # the modes share the session's embeddings
                    tag, refinement = f"{model_tag} ({mode})", refinement_for(mode)
                    for evaluation in evaluate_case(session, data.labels, data.spacing_kji, options.protocols,
                                                    axis=options.axis, every=options.every, jitter=options.jitter,
                                                    clicks=options.clicks, tolerance_mm=options.tolerance_mm,
                                                    refinement=refinement):
                        label = evaluation.result.label
                        name = names.get(label, f"label {label}")
                        rows.append(Row(case.name, tag, name, evaluation.result))
                        if label not in overlaid:  # one example per label: its largest slice
                            overlaid.add(label)
                            truth = data.labels == label
                            index = max(evaluation.prompts, key=lambda i: take_slice(truth, options.axis, i).sum())
                            plot_overlay(output / f"overlay_label{label}.png",
                                         take_slice(session.volume_u8, options.axis, index),
                                         take_slice(truth, options.axis, index),
                                         take_slice(evaluation.prediction, options.axis, index),
                                         evaluation.prompts[index],
                                         f"{case.name}, {name}, slice {index}, {evaluation.result.protocol} ({tag})")
                    if options.corrections:  # the annotation study, from the embeddings cached above
                        for label in (int(v) for v in np.unique(data.labels) if v != 0):
                            curve = correction_curve(session, data.labels == label, data.spacing_kji, label,
                                                     options.axis, options.every, options.corrections,
                                                     options.target_dsc, refinement)
                            curves.append(CurveRow(case.name, tag, names.get(label, f"label {label}"), curve))
            if progress is not None:
                progress(f"evaluating {model_tag}", number, len(cases))
    if not rows:
        raise ImageError("no labelled voxels in any case: nothing to evaluate")
    write_csv(output / "scores.csv", rows)
    lines = summary_lines(rows) + wilcoxon_lines(rows)
    if curves:
        write_corrections_csv(output / "corrections.csv", curves)
        plot_corrections(output / "correction_curve.png", curves)
        lines += (["", "simulated annotation study (RECIST markers, then boxes on the worst slices):"]
                  + correction_lines(curves))
    with atomic_output(output / "summary.txt") as temporary:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_dsc(output / "dsc_boxplot.png", rows)
    return rows
