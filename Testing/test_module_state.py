"""The widget's rules without Qt: which buttons are enabled; the background job the widget polls."""

import threading

import pytest

from MedSAMSlicerLib.module_state import WidgetFacts, enabled_actions
from MedSAMSlicerLib.volume.background_job import BackgroundJob

READY = WidgetFacts(has_volume=True, has_segment=True, prompt_count=3, prompts_on_current_slice=1)


def test_nothing_but_export_of_an_empty_state_without_inputs():
    actions = enabled_actions(WidgetFacts())
    assert not any(v for k, v in actions.items() if k != "checkpointPathLineEdit")
    assert actions["checkpointPathLineEdit"] is False  # lite-medsam needs no checkpoint


def test_ready_state_enables_prompting_and_segmenting():
    actions = enabled_actions(READY)
    for name in ("placeBoxButton", "placeRecistButton", "deletePromptButton", "segmentSliceButton",
                 "segmentVolumeButton", "exportPromptsButton", "exportSegmentationButton"):
        assert actions[name], name
    assert not actions["cancelButton"] and not actions["undoButton"]


def test_segment_slice_needs_a_prompt_on_the_slice_in_view():
    facts = WidgetFacts(has_volume=True, has_segment=True, prompt_count=3, prompts_on_current_slice=0)
    assert not enabled_actions(facts)["segmentSliceButton"] and enabled_actions(facts)["segmentVolumeButton"]


def test_a_volume_alone_lets_the_user_place_prompts():
    actions = enabled_actions(WidgetFacts(has_volume=True))  # the segmentation comes with the first prompt
    assert actions["placeRecistButton"] and actions["placeBoxButton"]
    assert not actions["segmentVolumeButton"] and not actions["exportSegmentationButton"]


def test_while_busy_prompts_can_still_be_drawn_but_nothing_else_starts():
    actions = enabled_actions(WidgetFacts(**{**READY.__dict__, "busy": True, "undo_available": True}))
    assert actions["cancelButton"]
    assert actions["placeBoxButton"] and actions["placeRecistButton"] and actions["deletePromptButton"]
    assert not any(actions[n] for n in ("segmentSliceButton", "segmentVolumeButton", "undoButton"))


def test_a_placed_prompts_slice_being_segmented_leaves_segmenting_to_the_user_but_not_undo():
    actions = enabled_actions(WidgetFacts(**{**READY.__dict__, "placed_slice_running": True, "undo_available": True,
                                             "redo_available": True}))
    assert actions["segmentVolumeButton"] and actions["segmentSliceButton"] and actions["cancelButton"]
    assert not actions["undoButton"] and not actions["redoButton"]  # the running slice will write


@pytest.mark.parametrize("path, exists, ready", [("", False, False), ("/x/medsam_vit_b.pth", False, False),
                                                 ("/x/medsam_vit_b.pth", True, True)])
def test_vit_models_need_an_existing_checkpoint(path, exists, ready):
    facts = WidgetFacts(**{**READY.__dict__, "model_id": "medsam-vit-b", "checkpoint_path": path,
                           "checkpoint_exists": exists})
    actions = enabled_actions(facts)
    assert actions["checkpointPathLineEdit"]
    assert actions["segmentVolumeButton"] is ready
    assert actions["placeRecistButton"]  # prompts can be drawn before the checkpoint is chosen


def test_background_job_reports_progress_result_and_errors():
    release = threading.Event()

    def work(progress):
        progress(1, 4)
        release.wait(5)
        progress(4, 4)
        return "mask"

    job = BackgroundJob(work)
    for _ in range(100):
        if job.progress == (1, 4):
            break
        threading.Event().wait(0.01)
    assert job.progress == (1, 4) and not job.done
    with pytest.raises(RuntimeError, match="still running"):
        job.result()
    release.set()
    assert job.wait(5) and job.result() == "mask" and job.progress == (4, 4)

    failing = BackgroundJob(lambda progress: 1 / 0)
    assert failing.wait(5)
    with pytest.raises(ZeroDivisionError):
        failing.result()
