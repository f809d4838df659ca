"""What an evaluation run leaves behind: a CSV of every score, a summary table, a Wilcoxon
signed-rank test between models, a DSC box plot per label and protocol (as in the papers'
figures), an overlay image per label showing an example slice, its prompt and the mask, and for
the simulated annotation study the DSC after each correction, as a CSV and a curve.
"""

import csv
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ..files.output_files import atomic_output
from ..prompts.prompt_simulation import PointPrompt
from .annotation_study import CorrectionCurve
from .volume_evaluation import TargetResult

COLUMNS = ["case", "model", "label", "name", "protocol", "dsc", "nsd", "iou", "slices", "seconds",
           "box_fill_dsc", "box_fill_nsd"]
CORRECTION_COLUMNS = ["case", "model", "label", "name", "corrections", "interactions", "hand_slices", "truth_slices",
                      "dsc"]


@dataclass
class Row:
    case: str
    model: str
    name: str
    result: TargetResult

    def as_dict(self) -> dict:
        values = {"case": self.case, "model": self.model, "name": self.name, **asdict(self.result)}
        return {column: values[column] for column in COLUMNS}


@dataclass
class CurveRow:
    case: str
    model: str
    name: str
    curve: CorrectionCurve


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    with atomic_output(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())


def write_corrections_csv(path: Path, rows: Sequence[CurveRow]) -> None:
    """One line per target and step: the corrections so far, the slices drawn by hand and the DSC."""
    with atomic_output(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=CORRECTION_COLUMNS)
        writer.writeheader()
        for row in rows:
            for step, (dsc, hand) in enumerate(zip(row.curve.dsc, row.curve.hand_slices)):
                writer.writerow({"case": row.case, "model": row.model, "label": row.curve.label, "name": row.name,
                                 "corrections": step, "interactions": row.curve.hand_slices[0] + step,
                                 "hand_slices": hand, "truth_slices": row.curve.truth_slices, "dsc": dsc})


def correction_lines(rows: Sequence[CurveRow]) -> List[str]:
    """Per target: DSC after the markers, corrections to the target, slices by hand against slice by slice."""
    lines = []
    for row in rows:
        curve = row.curve
        reached = curve.corrections_to_target
        start = (f"{row.model} {row.name} ({row.case}): DSC {curve.dsc[0]:.3f} after markers on {curve.hand_slices[0]} "
                 f"of {curve.truth_slices} slices; ")
        if reached is None:
            lines.append(start + f"DSC {curve.target_dsc:.2f} not reached in {len(curve.dsc) - 1} correction(s) "
                                 f"(DSC {curve.dsc[-1]:.3f}, {curve.hand_slices[-1]} slices by hand)")
        else:
            lines.append(start + f"DSC {curve.target_dsc:.2f} after {reached} correction(s), "
                                 f"{curve.hand_slices[reached]} slices by hand: {curve.slices_saved:.0%} fewer than "
                                 "slice by slice")
    for model in sorted({row.model for row in rows}):
        curves = [row.curve for row in rows if row.model == model]
        lines.append(f"{model}: mean share of slices not drawn by hand "
                     f"{np.mean([c.slices_saved for c in curves]):.0%}, "
                     f"target reached on {sum(c.corrections_to_target is not None for c in curves)} of {len(curves)}")
    return lines


def plot_corrections(path: Path, rows: Sequence[CurveRow]) -> None:
    """DSC against the corrections after the RECIST markers: each target thin, each model's mean bold.

    A target that reached the target DSC (or ran out of slices) keeps its last DSC in the mean.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    longest = max((len(row.curve.dsc) for row in rows), default=1)
    for number, model in enumerate(sorted({row.model for row in rows})):
        colour = f"C{number}"
        curves = [row.curve.dsc for row in rows if row.model == model]
        for dsc in curves:
            axes.plot(range(len(dsc)), dsc, color=colour, alpha=0.3, linewidth=0.8)
        padded = np.array([dsc + [dsc[-1]] * (longest - len(dsc)) for dsc in curves])
        axes.plot(range(longest), padded.mean(axis=0), color=colour, linewidth=2.5, marker="o", markersize=3,
                  label=f"{model}: mean of {len(curves)} target(s)")
    if rows:
        axes.axhline(rows[0].curve.target_dsc, color="grey", linestyle="--", linewidth=1, label="target")
    axes.set_xlabel("correction boxes after the RECIST markers")
    axes.set_ylabel("3D DSC")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    _save(figure, path)


def summary_lines(rows: Sequence[Row]) -> List[str]:
    """Mean and standard deviation of DSC and NSD per model, protocol and label, with the box-fill baseline."""
    groups: Dict[tuple, List[Row]] = {}
    for row in rows:
        groups.setdefault((row.model, row.result.protocol, row.name), []).append(row)
    width = max([16] + [len(model) for model, _, _ in groups])
    lines = [f"{'model':<{width}} {'protocol':<14} {'label':<12} {'n':>3} {'DSC':>13} {'NSD':>13} {'box-fill DSC':>13}"]
    for (model, protocol, name), members in sorted(groups.items()):
        stats = lambda values: "-" if np.isnan(values).all() else f"{np.mean(values):.3f}+/-{np.std(values):.3f}"  # noqa: E731
        lines.append(f"{model:<{width}} {protocol:<14} {name:<12} {len(members):>3} "
                     f"{stats([r.result.dsc for r in members]):>13} {stats([r.result.nsd for r in members]):>13} "
                     f"{stats([r.result.box_fill_dsc for r in members]):>13}")
    return lines


def wilcoxon_lines(rows: Sequence[Row]) -> List[str]:
    """Paired Wilcoxon signed-rank tests of DSC between every two models, over the same cases, labels and protocols."""
    from scipy.stats import wilcoxon

    by_model: Dict[str, Dict[tuple, float]] = {}
    for row in rows:
        by_model.setdefault(row.model, {})[(row.case, row.result.label, row.result.protocol)] = row.result.dsc
    lines = []
    for first, second in itertools.combinations(sorted(by_model), 2):
        shared = sorted(set(by_model[first]) & set(by_model[second]))
        a = np.array([by_model[first][k] for k in shared])
        b = np.array([by_model[second][k] for k in shared])
        if len(shared) < 2 or np.allclose(a, b):
            lines.append(f"Wilcoxon {first} vs {second}: not testable ({len(shared)} pairs, "
                         f"{'identical scores' if len(shared) >= 2 else 'too few'})")
            continue
        statistic, p_value = wilcoxon(a, b)
        lines.append(f"Wilcoxon {first} vs {second}: n={len(shared)}, mean DSC {a.mean():.3f} vs {b.mean():.3f}, "
                     f"W={statistic:.1f}, p={p_value:.4g}")
    return lines


def plot_dsc(path: Path, rows: Sequence[Row]) -> None:
    """A box plot of DSC per (label, protocol, model), the box-fill baseline beside each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: Dict[str, List[float]] = {}
    for row in rows:
        groups.setdefault(f"{row.name}\n{row.result.protocol}\n{row.model}", []).append(row.result.dsc)
        if not np.isnan(row.result.box_fill_dsc):  # click protocols have no box
            groups.setdefault(f"{row.name}\n{row.result.protocol}\nbox fill", []).append(row.result.box_fill_dsc)
    figure, axes = plt.subplots(figsize=(max(4.0, 1.3 * len(groups)), 4.0))
    axes.boxplot(list(groups.values()))
    axes.set_xticks(range(1, len(groups) + 1), list(groups), fontsize=7)
    axes.set_ylabel("DSC")
    axes.set_ylim(0, 1)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    _save(figure, path)


def plot_overlay(path: Path, image_slice: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                 prompts: Sequence, title: str) -> None:
    """One slice with the truth outline (green), the model's mask outline (red) and the prompts (yellow).

    ``prompts`` are boxes ``(x0, y0, x1, y1)`` or clicks (``PointPrompt``: + adds, x removes).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    figure, axes = plt.subplots(figsize=(5, 5))
    axes.imshow(image_slice, cmap="gray")
    for mask, colour in ((truth, "lime"), (prediction, "red")):
        if mask.any():
            axes.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1)
    for prompt in prompts:
        if isinstance(prompt, PointPrompt):
            axes.plot(prompt.x, prompt.y, "+" if prompt.positive else "x", color="yellow", markersize=9)
        else:
            x0, y0, x1, y1 = prompt
            axes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1))
    axes.set_title(title, fontsize=9)
    axes.axis("off")
    figure.tight_layout()
    _save(figure, path)


def _save(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
