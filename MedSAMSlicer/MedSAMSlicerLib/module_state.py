"""The Slicer widget's rules, kept free of Qt so they are tested like the rest of the engine.

Which actions are possible follows from a few facts (a volume and segment chosen, a usable
model, prompts present, work running). Prompts can be placed as soon as there is a volume (the
segmentation and segment are created with the first one) and while a job runs (their slices are
segmented after it). A slice being segmented because a prompt was just placed does not make the
user wait: Segment volume and Segment slice stay available and start right after it.
"""

from dataclasses import dataclass
from typing import Dict

from .models.model_registry import model_spec


@dataclass(frozen=True)
class WidgetFacts:
    has_volume: bool = False
    has_segment: bool = False
    model_id: str = "lite-medsam"
    checkpoint_path: str = ""
    checkpoint_exists: bool = False
    prompt_count: int = 0
    prompts_on_current_slice: int = 0
    busy: bool = False  # what the user asked for runs: an install or a Segment volume / slice
    placed_slice_running: bool = False  # a slice is being segmented because a prompt on it was placed or moved
    undo_available: bool = False
    redo_available: bool = False


def needs_checkpoint(model_id: str) -> bool:
    return bool(model_spec(model_id).checkpoint_file)


def model_ready(facts: WidgetFacts) -> bool:
    return not needs_checkpoint(facts.model_id) or (bool(facts.checkpoint_path) and facts.checkpoint_exists)


def enabled_actions(facts: WidgetFacts) -> Dict[str, bool]:
    """Whether each button of the widget is enabled (keys are the .ui object names)."""
    ready = facts.has_volume and facts.has_segment and model_ready(facts) and not facts.busy
    return {
        "placeBoxButton": facts.has_volume,
        "placeRecistButton": facts.has_volume,
        "deletePromptButton": facts.prompt_count > 0,
        "segmentSliceButton": ready and facts.prompts_on_current_slice > 0,
        "segmentVolumeButton": ready and facts.prompt_count > 0,
        "cancelButton": facts.busy or facts.placed_slice_running,
        "undoButton": facts.undo_available and not facts.busy and not facts.placed_slice_running,
        "redoButton": facts.redo_available and not facts.busy and not facts.placed_slice_running,
        "exportPromptsButton": facts.prompt_count > 0,
        "exportSegmentationButton": facts.has_volume and facts.has_segment,
        "checkpointPathLineEdit": needs_checkpoint(facts.model_id),
    }

