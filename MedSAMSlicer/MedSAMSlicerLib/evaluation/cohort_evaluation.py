"""Models scored on a set of labelled cases under the prompt protocols, with the report written to a folder.

Shared by ``medsam-slicer evaluate`` (cases read from folders) and the Slicer logic (cases taken from
the scene): each case is loaded only when its turn comes, so a cohort never sits in memory at once.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..errors import ImageError, PromptError
from ..files.output_files import atomic_output
from ..models.model_registry import load_model, parse_model_choice
from ..models.slice_model import SliceModel
from ..prompts.geometry import take_slice
from ..volume.intensity import IntensitySettings
from ..volume.refinement import DEFAULT_MODE, MODES, Refinement, refinement_for
from ..volume.session import SegmentationSession
from .annotation_study import correction_curve
from .evaluation_report import (CurveRow, Row, correction_lines, plot_corrections, plot_dsc, plot_overlay,
                                summary_lines, wilcoxon_lines, write_corrections_csv, write_csv)
from .volume_evaluation import PROTOCOLS, TargetEvaluation, evaluate_case

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


@dataclass
class _CohortReport:
    """What the runs of a cohort add to its report: scored rows, correction curves, one overlay per label."""
    output: Path
    options: EvaluationOptions
    names: Dict[int, str]
    rows: List[Row] = field(default_factory=list)
    curves: List[CurveRow] = field(default_factory=list)
    overlaid: Set[int] = field(default_factory=set)

    def name(self, label: int) -> str:
        return self.names.get(label, f"label {label}")


@dataclass(frozen=True)
class _CaseRun:
    """One case under one model in one mode: the session whose cached embeddings every protocol and the study use."""
    case: str
    data: LabelledImage
    session: SegmentationSession
    tag: str  # the report's model column, "model (mode)"
    refinement: Optional[Refinement]


def evaluate_cohort(cases: Sequence[EvaluationCase], models: Sequence[str], output: Path,
                    options: EvaluationOptions = EvaluationOptions(), label_names: Optional[Dict[int, str]] = None,
                    progress: Optional[CaseProgress] = None) -> List[Row]:
    """Score every model (``ID`` or ``ID=CHECKPOINT``) on every case; writes scores.csv, summary.txt and PNGs."""
    options.check()
    choices = [parse_model_choice(text) for text in models]
    report = _CohortReport(Path(output), options, label_names or {})
    report.output.mkdir(parents=True, exist_ok=True)
    for model_id, checkpoint in choices:
        _evaluate_model(report, cases, model_id, checkpoint, progress)
    if not report.rows:
        raise ImageError("no labelled voxels in any case: nothing to evaluate")
    _write_report(report)
    return report.rows


def _evaluate_model(report: _CohortReport, cases: Sequence[EvaluationCase], model_id: str,
                    checkpoint: Optional[str], progress: Optional[CaseProgress]) -> None:
    """One model on every case, each case loaded only when its turn comes."""
    options = report.options
    model = load_model(model_id, checkpoint, options.device, options.runtime, options.precision,
                       "published" if "published" in options.modes else "refined")
    model_tag = model_id if checkpoint is None else f"{model_id}={Path(checkpoint).name}"
    for number, case in enumerate(cases, start=1):
        _evaluate_case(report, case, model, model_tag)
        if progress is not None:
            progress(f"evaluating {model_tag}", number, len(cases))


def _evaluate_case(report: _CohortReport, case: EvaluationCase, model: SliceModel, model_tag: str) -> None:
    """One case in every mode: the modes share the session's embeddings."""
    data = case.load()
    if data.labels.shape != data.image.shape:
        raise ImageError(f"labels of {case.name} have shape {data.labels.shape}, the image {data.image.shape}")
    intensity = IntensitySettings.parse(report.options.window, data.image, data.modality)
    with SegmentationSession(data.image, model, intensity) as session:
        for mode in report.options.modes:
            run = _CaseRun(case.name, data, session, f"{model_tag} ({mode})", refinement_for(mode))
            _score_protocols(report, run)
            if report.options.corrections:  # the annotation study, from the embeddings cached above
                _study_corrections(report, run)


def _score_protocols(report: _CohortReport, run: _CaseRun) -> None:
    """Every label under every protocol, as rows; the first score of each label also drawn as its overlay."""
    options = report.options
    for evaluation in evaluate_case(run.session, run.data.labels, run.data.spacing_kji, options.protocols,
                                    axis=options.axis, every=options.every, jitter=options.jitter,
                                    clicks=options.clicks, tolerance_mm=options.tolerance_mm,
                                    refinement=run.refinement):
        label = evaluation.result.label
        report.rows.append(Row(run.case, run.tag, report.name(label), evaluation.result))
        if label not in report.overlaid:
            report.overlaid.add(label)
            _plot_largest_slice(report, run, evaluation)


def _plot_largest_slice(report: _CohortReport, run: _CaseRun, evaluation: TargetEvaluation) -> None:
    """A label's example overlay: the truth, the prediction and the prompts on its largest prompted slice."""
    axis, label = report.options.axis, evaluation.result.label
    truth = run.data.labels == label
    index = max(evaluation.prompts, key=lambda i: take_slice(truth, axis, i).sum())
    plot_overlay(report.output / f"overlay_label{label}.png", take_slice(run.session.volume_u8, axis, index),
                 take_slice(truth, axis, index), take_slice(evaluation.prediction, axis, index),
                 evaluation.prompts[index],
                 f"{run.case}, {report.name(label)}, slice {index}, {evaluation.result.protocol} ({run.tag})")


def _study_corrections(report: _CohortReport, run: _CaseRun) -> None:
    """The simulated annotation study on every label: corrections of the worst slice until the target DSC."""
    options, data = report.options, run.data
    for label in (int(v) for v in np.unique(data.labels) if v != 0):
        curve = correction_curve(run.session, data.labels == label, data.spacing_kji, label, options.axis,
                                 options.every, options.corrections, options.target_dsc, run.refinement)
        report.curves.append(CurveRow(run.case, run.tag, report.name(label), curve))


def _write_report(report: _CohortReport) -> None:
    """scores.csv, summary.txt (with the study's lines where it ran), its CSV and curve, and the DSC box plot."""
    output, rows, curves = report.output, report.rows, report.curves
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
