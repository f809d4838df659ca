"""The seed study's annotation workflow, simulated: RECIST markers on a few slices, then fixing the worst slice.

In the MedSAM study radiologists drew RECIST markers every few slices, MedSAM filled in the volume
and they repaired what was wrong; annotation time fell by 82%. Here a simulated radiologist does
what the Slicer module lets a user do. After the markers (every ``every`` slices, from the truth),
it looks for the slice where the segmentation is worst (the most voxels wrong), draws a box from
the truth there (that slice becomes a key slice, replacing its marker) and segments again from
the cached embeddings, until the 3D DSC reaches the target or the corrections run out. What it
reports is what the study measured: how many slices were drawn by hand, against the slices a
slice-by-slice annotator draws (every slice of the target).
"""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from ..prompts.geometry import array_dim, in_plane_axes, occupied_slices, slice_indexer, take_slice
from ..prompts.prompt_simulation import bounding_box, recist_from_truth
from ..prompts.prompt_types import BoxPrompt, PromptSet
from ..volume.refinement import Refinement
from ..volume.session import SegmentationSession
from .metrics import dice


@dataclass
class CorrectionCurve:
    """The DSC after the markers and after each correction, with the slices drawn by hand at each point."""

    label: int
    target_dsc: float
    truth_slices: int  # what a slice-by-slice annotator draws
    dsc: List[float] = field(default_factory=list)
    hand_slices: List[int] = field(default_factory=list)

    @property
    def corrections_to_target(self) -> Optional[int]:
        """Corrections needed to reach the target DSC (0: the markers sufficed), or None if it was not reached."""
        return next((n for n, value in enumerate(self.dsc) if value >= self.target_dsc), None)

    @property
    def slices_saved(self) -> float:
        """The share of a slice-by-slice annotator's slices not drawn by hand, at the target (or at the end)."""
        reached = self.corrections_to_target
        drawn = self.hand_slices[reached if reached is not None else -1]
        return 1.0 - drawn / self.truth_slices


def correction_curve(session: SegmentationSession, truth_kji: np.ndarray, spacing_kji: Sequence[float],
                     label: int = 1, axis: int = 2, every: int = 5, corrections: int = 10,
                     target_dsc: float = 0.90, refinement: Optional[Refinement] = None) -> CorrectionCurve:
    """RECIST markers every ``every`` slices, then up to ``corrections`` boxes on the worst slices, stopping at the
    target."""
    truth = np.asarray(truth_kji, dtype=bool)
    spacing_xy = tuple(float(spacing_kji[array_dim(a)]) for a in in_plane_axes(axis))
    prompts = list(recist_from_truth(truth, every, axis, spacing_xy, label).prompts)
    occupied = [int(index) for index in occupied_slices(truth, axis)]
    curve = CorrectionCurve(label, target_dsc, len(occupied))
    corrected = set()
    while True:
        prediction = session.segment(PromptSet(prompts, axis), refinement=refinement)[label].mask
        curve.dsc.append(dice(truth, prediction))
        curve.hand_slices.append(len({p.slice for p in prompts}))
        if curve.dsc[-1] >= target_dsc or len(corrected) == corrections:
            return curve
        wrong = {index: int((take_slice(truth, axis, index) ^ take_slice(prediction, axis, index)).sum())
                 for index in occupied if index not in corrected}
        if not wrong or max(wrong.values()) == 0:
            return curve
        worst = max(wrong, key=wrong.get)
        box = bounding_box(truth[slice_indexer(axis, worst)]) + np.array([-0.5, -0.5, 0.5, 0.5])  # whole pixels
        prompts = [p for p in prompts if p.slice != worst] + [
            BoxPrompt(worst, tuple(box), label, f"correction box on slice {worst}")]
        corrected.add(worst)
