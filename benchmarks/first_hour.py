"""The radiologist's first hour with the module, in actions and seconds, on the phantom, through the headless Slicer.

    python benchmarks/first_hour.py [--module-dir DIR] [--markers largest|every-5] [-o result.json]

A user (``Testing/slicer_harness.SlicerUser``: clicks, keys, views scrolled, markups placed point by point, modules
switched, message boxes closed) takes the phantom CT of ``medsam-slicer sample`` (a lesion across 32 slices) from a
loaded volume to a 3D result, then makes one hand edit (in the Segment Editor module, whose own choices are
counted but not driven, or in the module's panel). Counted: every action (a click, a key, a
point placed, a view scrolled, a module or node chosen, a message box closed) and the wall-clock seconds from opening
the module to the result shown (a button disabled while the module works is waited for, without an action),
model loading and embedding included (2 CPU cores; the one-time export of the
model for the CPU runtime is done before timing; the user looks at each slice for ``LOOK_SECONDS`` before
drawing on it). ``--module-dir`` runs another checkout's module and engine
(``git worktree add /tmp/before 9b1bc7f`` then ``--module-dir /tmp/before/MedSAMSlicer``), driven the same way,
so that before and after are measured side by side. ``--markers``: one RECIST pair on the lesion's largest slice,
or RECIST pairs every 5th slice from its first to its last (the seed study's protocol).
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: how long the user looks at a slice before drawing on it (the module embeds it meanwhile)
LOOK_SECONDS = 3.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module-dir", type=Path, default=ROOT / "MedSAMSlicer")
    parser.add_argument("--markers", choices=("largest", "every-5"), default="largest")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    sys.path[:0] = [str(args.module_dir.resolve()), str(ROOT / "Testing")]

    import numpy as np
    import slicer_harness
    from MedSAMSlicerLib.files.sample_data import make_phantom, recist_prompts
    from MedSAMSlicerLib.models.model_registry import load_model

    load_model("lite-medsam", device="cpu")  # the one-time export, outside the timing
    slicer_harness.install(args.module_dir / "MedSAMSlicer.py")
    import slicer

    user = slicer_harness.SlicerUser()
    phantom = make_phantom()
    ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ phantom.geometry.ijk_to_lps
    volume = user.loadVolume(phantom.image, ijk_to_ras, "phantom")
    every = recist_prompts(phantom, every=5).prompts
    areas = phantom.truth.sum(axis=(1, 2))
    largest = recist_prompts(phantom, every=1).prompts
    markers = every if args.markers == "every-5" else [p for p in largest if p.slice == int(np.argmax(areas))]

    def close_message_boxes():
        user.actions += len(user.dialogs.errors)  # each modal message box costs a click to close
        shown, user.dialogs.errors[:] = list(user.dialogs.errors), []
        return shown

    def wait_for_button(name):
        """The user waits (seconds, no action) for a button that is disabled while the module works."""
        user.waitUntil(lambda: getattr(widget.ui, name).enabled, 300, f"{name} to be enabled")

    start = time.monotonic()
    widget = user.openModule()
    user.actions += 1  # the module chosen in the module list
    messages = []
    if not widget.ui.placeRecistButton.enabled:  # a module that needs its segmentation chosen first
        user.selectNode("segmentSelector", slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode"))
    for prompt in markers:
        user.showSlice("Red", volume, 2, prompt.slice)
        user.moveMouse("Red")
        user.processEvents(LOOK_SECONDS)
        for line in (prompt.long_axis, prompt.short_axis):
            wait_for_button("placeRecistButton")
            user.click("placeRecistButton")
            user.place("Red", [slicer_harness.ras_of(volume, [x, y, prompt.slice]) for x, y in line])
            user.processEvents(0.3)  # the user looks at the line just drawn
            messages += close_message_boxes()
    wait_for_button("segmentVolumeButton")
    user.click("segmentVolumeButton")
    user.waitUntil(lambda: widget._job is not None or widget._loading is not None, 30, "the job to start")
    user.waitUntilIdle(900)
    user.waitUntil(lambda: bool(widget.ui.resultLabel.text), 60, "the result")
    seconds = time.monotonic() - start
    messages += close_message_boxes()
    to_result = user.actions
    p = widget._parameterNode
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(p.segmentationNode, p.segmentId, volume).astype(bool)
    dice = 2 * (mask & phantom.truth).sum() / (mask.sum() + phantom.truth.sum())

    # one hand edit (an Erase stroke on the largest slice): in the module's panel, or in the Segment Editor module
    edits = user.actions
    middle = int(np.argmax(areas))
    region = np.s_[middle, :, : int(phantom.centre[0])]
    if hasattr(widget.ui, "segmentEditorWidget"):
        user.actions += 2  # "Edit by hand" expanded, Erase chosen
        widget.ui.segmentEditorWidget.setActiveEffectByName("Erase")
        user.paint(volume, region, erase=True)
    else:
        user.actions += 1
        user.selectModule("SegmentEditor")
        user.actions += 4  # that module's segmentation and segment chosen (counted, not driven), Erase, the stroke
        erased = mask.copy()
        erased[region] = False
        slicer.util.updateSegmentBinaryLabelmapFromArray(erased.astype(np.uint8), p.segmentationNode, p.segmentId,
                                                         volume)
        user.actions += 1
        user.selectModule(slicer_harness.MODULE_NAME)
    edit_actions = user.actions - edits
    result = {"module": str(args.module_dir), "markers": args.markers, "marker_slices": [p.slice for p in markers],
              "actions_to_3d_result": to_result, "message_boxes": messages, "seconds_to_3d_result": round(seconds, 1),
              "dice": round(float(dice), 4), "slices_segmented": int(mask.any(axis=(1, 2)).sum()),
              "truth_slices": int(phantom.truth.any(axis=(1, 2)).sum()), "actions_for_one_hand_edit": edit_actions,
              "result_shown": widget.ui.resultLabel.text}
    user.quit()
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
