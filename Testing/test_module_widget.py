"""The widget's own code, driven headless: inputs, prompts, Segment volume polled to completion, Undo.

Qt widgets are ``FakeWidget`` stand-ins built from the real .ui file (see ``slicer_harness``); the
MRML scene, the logic and the engine are real, with the embedded LiteMedSAM.
"""

import time
import types

import numpy as np
import pytest

from MedSAMSlicerLib.errors import SettingsError
from MedSAMSlicerLib.evaluation.metrics import dice
from MedSAMSlicerLib.models import quantization
from slicer_harness import FakeApplication, install

MedSAMSlicer = install()
import slicer  # noqa: E402


@pytest.fixture
def scene_with_phantom():
    from MedSAMSlicerLib.files.sample_data import make_phantom, recist_prompts

    slicer.mrmlScene.Clear()
    phantom = make_phantom(size=(48, 40, 8), spacing=(0.8, 0.9, 2.5), radii_mm=(8.0, 7.0, 8.0))
    ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ phantom.geometry.ijk_to_lps
    volume = slicer.util.addVolumeFromArray(phantom.image, ijkToRAS=ijk_to_ras, name="phantom")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    view = slicer.vtkMRMLSliceNode()  # the Red view, axial, on the lesion's middle slice
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, 3] = (ijk_to_ras @ [20, 15, 4, 1.0])[:3]
    view.GetSliceToRAS().DeepCopy(slice_to_ras.ravel())
    slicer.app = FakeApplication(view)
    yield phantom, ijk_to_ras, volume, segmentation, recist_prompts(phantom, every=3)
    slicer.app = FakeApplication()


def choose(combo, text):
    """What a user's pick in a combo box does: the text changes and the box says so."""
    combo.currentText = text
    combo.emit("currentIndexChanged(int)", combo.items.index(text))


def poll_until_idle(widget, seconds=300):
    """Poll as the widget's timer does until no model is loading and no job runs."""
    deadline = time.monotonic() + seconds
    while (widget._job is not None or widget._loading is not None) and time.monotonic() < deadline:
        widget.onPoll()
        time.sleep(0.05)
    assert widget._job is None and widget._loading is None


def test_widget_segments_the_volume_from_recist_lines_and_undoes(scene_with_phantom):
    phantom, ijk_to_ras, volume, segmentation, prompts = scene_with_phantom
    widget = MedSAMSlicer.MedSAMSlicerWidget(types.SimpleNamespace(isEntered=True))
    widget.setup()
    try:
        drive_the_widget(widget, phantom, ijk_to_ras, volume, segmentation, prompts)
    finally:
        widget.cleanup()  # stops the embedding worker


def drive_the_widget(widget, phantom, ijk_to_ras, volume, segmentation, prompts):
    ui = widget.ui
    assert ui.modelComboBox.items[0] == "lite-medsam" and "as displayed" in ui.intensityComboBox.items
    assert not ui.segmentVolumeButton.enabled  # no segment, no prompts yet

    choose(ui.intensityComboBox, "soft-tissue")
    ui.inputVolumeSelector.setCurrentNode(volume)
    ui.inputVolumeSelector.emit("currentNodeChanged(vtkMRMLNode*)", volume)
    ui.segmentSelector.setCurrentNode(segmentation)
    ui.segmentSelector.emit("currentNodeChanged(vtkMRMLNode*)", segmentation)
    parameters = widget._parameterNode
    assert parameters.inputVolume is volume and parameters.segmentId  # the segment was created
    assert parameters.intensity == "soft-tissue"  # GUI to parameter node, through connectGui
    parameters.propagate = 2  # and back: the spin box follows the parameter node
    assert ui.propagateSpinBox.value == 2
    parameters.propagate = 0
    assert ui.modeComboBox.items == ["published", "refined"] and parameters.mode == "refined"  # refined by default
    choose(ui.modeComboBox, "published")
    assert parameters.mode == "published"
    choose(ui.modeComboBox, "refined")
    assert widget.currentSliceIndex() == (2, 4)

    for prompt in prompts.prompts:  # as the place buttons leave them: tagged Line nodes, points in RAS
        for line in (prompt.long_axis, prompt.short_axis):
            node = widget.logic.addPromptNode(segmentation, parameters.segmentId, "vtkMRMLMarkupsLineNode")
            for x, y in line:
                node.AddControlPoint((ijk_to_ras @ [x, y, prompt.slice, 1.0])[:3])
    widget.updatePromptTable()
    widget.updateButtonStates()
    assert ui.promptTable.rowCount() == 2 * len(prompts.prompts)
    assert ui.segmentVolumeButton.enabled and ui.segmentSliceButton.enabled and not ui.cancelButton.enabled

    widget.onSegmentVolume()  # the model loads off the main thread first, then the job starts
    assert widget._loading is not None and widget._job is None
    while widget._job is None:
        widget.onPoll()
        time.sleep(0.05)
    assert ui.cancelButton.enabled and not ui.segmentVolumeButton.enabled  # busy
    poll_until_idle(widget)
    segment_id = parameters.segmentId
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume).astype(bool)
    engine_mask, slices, axis = widget.logic.computeVolumeMask(*widget.modelArguments(), widget.promptNodes())
    np.testing.assert_array_equal(mask, engine_mask)  # the widget wrote exactly what the engine computed
    assert (slices, axis) == ([1, 2, 3, 4, 5, 6], 2)
    assert dice(phantom.truth, mask) >= 0.82  # measured 0.8313: LiteMedSAM over-segments this small (9 px radius) lesion
    assert " mL, longest diameter " in ui.resultLabel.text and ui.progressBar.value == ui.progressBar.maximum
    assert "slice embeddings cached" in ui.statusLabel.text and ", fp32)" in ui.statusLabel.text  # exact by default
    assert ui.undoButton.enabled and not ui.redoButton.enabled

    # the radiologist erases part of slice 3 by hand; Segment volume again keeps that slice
    edited = mask.copy()
    edited[3, :, :20] = False
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited.astype(np.uint8), segmentation, segment_id, volume)
    widget.onSegmentVolume()
    poll_until_idle(widget)
    assert ui.resultLabel.text.endswith("; 1 slice(s) edited by hand kept as they were")
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume), edited)
    ui.overwriteEditedCheckBox.checked = True  # unless the user asks for it
    ui.overwriteEditedCheckBox.emit("stateChanged(int)", 2)
    assert parameters.overwriteEdited
    widget.onSegmentVolume()
    poll_until_idle(widget)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume), mask)
    widget.onUndo()  # the hand edit comes back
    assert ui.resultLabel.text == "Undone on 1 slice(s)" and ui.redoButton.enabled
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume), edited)
    widget.onUndo()  # MedSAM's first result goes, the hand-edited slice stays
    assert ui.resultLabel.text == "Undone on 5 slice(s); 1 slice(s) edited by hand since were kept"
    remaining = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume).astype(bool)
    np.testing.assert_array_equal(remaining[3], edited[3])
    assert not remaining[[1, 2, 4, 5, 6]].any()
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.zeros_like(edited, np.uint8), segmentation, segment_id, volume)

    # moving a prompt on the slice in view (4, embedded already) re-segments that slice only, at once
    moved = [n for n in widget.promptNodes() if widget.logic.describePromptNode(volume, n)[0] == "4"][0]
    moved.SetNthControlPointPosition(0, (ijk_to_ras @ [14.0, 15.0, 4, 1.0])[:3])
    widget.onPromptModified(moved, slicer.vtkMRMLMarkupsNode.PointModifiedEvent)
    assert widget._job is not None
    poll_until_idle(widget)
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume).astype(bool)
    assert np.flatnonzero(mask.any(axis=(1, 2))).tolist() == [4]
    expected, _, _ = widget.logic.segmentSlicePrompts(*widget.modelArguments(), widget.promptNodes(), (2, 4))
    np.testing.assert_array_equal(mask, expected)
    assert mask[4].sum() != engine_mask[4].sum()  # the box grew to the left: so did the mask


@pytest.mark.skipif(quantization.int8_unavailable() is not None, reason="OpenVINO and NNCF are not installed")
def test_the_int8_choice_serves_the_refined_mode_and_the_published_mode_stays_fp32(scene_with_phantom):
    phantom, ijk_to_ras, volume, segmentation, prompts = scene_with_phantom
    widget = MedSAMSlicer.MedSAMSlicerWidget(types.SimpleNamespace(isEntered=True))
    widget.setup()
    try:
        ui, parameters = widget.ui, widget._parameterNode
        ui.inputVolumeSelector.setCurrentNode(volume)
        ui.inputVolumeSelector.emit("currentNodeChanged(vtkMRMLNode*)", volume)
        assert ui.precisionComboBox.items == ["fp32", "int8"] and parameters.precision == "fp32"
        choose(ui.precisionComboBox, "int8")
        assert parameters.precision == "int8" and widget.modelArguments()[4] == "int8"
        session = widget.logic.session(*widget.modelArguments())
        assert (session.model.precision, session.model.runtime) == ("int8", "openvino")
        mask, slices, _ = widget.logic.computeVolumeMask(*widget.modelArguments(), prompts, mode="refined")
        assert dice(phantom.truth, mask) >= 0.8 and slices == [1, 2, 3, 4, 5, 6]
        choose(ui.modeComboBox, "published")  # the published steps are fp32: another session, not int8 embeddings
        assert widget.modelArguments()[4] == "fp32"
        assert widget.logic.session(*widget.modelArguments()).model.precision == "fp32"
        with pytest.raises(SettingsError, match="int8 precision cannot be used in the published mode"):
            widget.logic.computeVolumeMask(volume, "lite-medsam", None, "cpu", "int8", "auto", prompts, mode="published")
    finally:
        widget.cleanup()


@pytest.fixture
def widget_without_packages(scene_with_phantom, monkeypatch):
    """The widget on a machine where MedSAM's packages are missing; pip is a fake that the test scripts."""
    from test_command_sequence import fake_pip
    from MedSAMSlicerLib.command_sequence import Step

    phantom, ijk_to_ras, volume, segmentation, prompts = scene_with_phantom
    widget = MedSAMSlicer.MedSAMSlicerWidget(types.SimpleNamespace(isEntered=True))
    widget.setup()
    installed, shown = [False], []
    monkeypatch.setattr(widget.logic, "dependenciesInstalled", lambda: installed[0])
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: True, raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: shown.append(text), raising=False)
    widget.ui.inputVolumeSelector.setCurrentNode(volume)
    widget.ui.inputVolumeSelector.emit("currentNodeChanged(vtkMRMLNode*)", volume)
    widget.ui.segmentSelector.setCurrentNode(segmentation)
    widget.ui.segmentSelector.emit("currentNodeChanged(vtkMRMLNode*)", segmentation)
    for prompt in prompts.prompts:
        node = widget.logic.addPromptNode(segmentation, widget._parameterNode.segmentId, "vtkMRMLMarkupsLineNode")
        for x, y in prompt.long_axis:
            node.AddControlPoint((ijk_to_ras @ [x, y, prompt.slice, 1.0])[:3])

    def script(*steps):
        monkeypatch.setattr(widget.logic, "installSteps", lambda: [Step(title, fake_pip(*lines, code=code, sleep=sleep))
                                                                   for title, lines, code, sleep in steps])

    yield widget, script, installed, shown
    widget.cleanup()


def poll_install(widget, seconds=60):
    deadline = time.monotonic() + seconds
    while widget._install is not None and time.monotonic() < deadline:
        widget.onPoll()
        time.sleep(0.02)
    assert widget._install is None


def test_installing_runs_in_the_background_shows_progress_and_then_segments(widget_without_packages):
    widget, script, installed, shown = widget_without_packages
    script(("PyTorch", ["Collecting torch", "Successfully installed torch"], 0, 0.5),
           ("MedSAM packages", ["Successfully installed segment-anything"], 0, 0.0))
    widget.updateButtonStates()
    widget.onSegmentVolume()  # returns at once: the install runs on its own thread
    assert widget._install is not None and widget._job is None
    assert widget.ui.cancelButton.enabled and not widget.ui.segmentVolumeButton.enabled  # actions wait for it
    assert not widget.ui.placeRecistButton.enabled
    texts = []
    deadline = time.monotonic() + 60
    while widget._install is not None and time.monotonic() < deadline:
        if widget._install.done:
            installed[0] = True  # the fake pip "installed" the packages
        widget.onPoll()
        texts.append(widget.ui.statusLabel.text)
        time.sleep(0.02)
    assert any(t.startswith("Installing PyTorch (step 1 of 2)") for t in texts)
    assert "Installing PyTorch (step 1 of 2): Successfully installed torch" in texts  # pip's latest line
    assert shown == []
    assert widget._loading is not None  # installed: the model loads, then the segmentation asked for starts
    poll_until_idle(widget)
    assert " mL, longest diameter " in widget.ui.resultLabel.text


def test_a_failed_install_shows_the_last_lines_and_the_log(widget_without_packages):
    widget, script, installed, shown = widget_without_packages
    script(("PyTorch", ["Collecting torch", "ERROR: No matching distribution found for torch"], 1, 0.0),
           ("MedSAM packages", ["never run"], 0, 0.0))
    widget.onSegmentVolume()
    log_path = widget._install.log_path
    poll_install(widget)
    assert len(shown) == 1
    assert shown[0].startswith("Installing PyTorch failed (step 1 of 2). Last lines:")
    assert "ERROR: No matching distribution found for torch" in shown[0] and str(log_path) in shown[0]
    assert widget._job is None and widget.ui.statusLabel.text.startswith("Installation failed; the log is in ")
    assert widget.ui.segmentVolumeButton.enabled  # the user can try again


def test_a_cancelled_install_stops_pip_and_says_so(widget_without_packages):
    widget, script, installed, shown = widget_without_packages
    script(("PyTorch", ["Downloading torch (2.1 GB)"], 0, 60.0), ("MedSAM packages", ["never run"], 0, 0.0))
    widget.onSegmentVolume()
    deadline = time.monotonic() + 30
    while not widget._install.tail() and time.monotonic() < deadline:
        time.sleep(0.02)
    widget.onCancel()
    poll_install(widget, seconds=20)
    assert widget.ui.statusLabel.text.startswith("Installation cancelled during PyTorch")
    assert widget._job is None and shown == [] and not installed[0]


def test_the_widget_follows_the_view_the_user_works_in_and_places_prompts_by_keyboard(scene_with_phantom):
    phantom, ijk_to_ras, volume, segmentation, prompts = scene_with_phantom
    widget = MedSAMSlicer.MedSAMSlicerWidget(types.SimpleNamespace(isEntered=True))
    widget.setup()
    try:
        ui = widget.ui
        ui.inputVolumeSelector.setCurrentNode(volume)
        ui.inputVolumeSelector.emit("currentNodeChanged(vtkMRMLNode*)", volume)
        ui.segmentSelector.setCurrentNode(segmentation)
        ui.segmentSelector.emit("currentNodeChanged(vtkMRMLNode*)", segmentation)
        widget.updateButtonStates()
        assert widget.currentSliceIndex() == (2, 4)  # the Red (axial) view, until the mouse goes elsewhere

        directions = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
        yellow = slicer.vtkMRMLSliceNode()  # a sagittal view through column i = 25
        slice_to_ras = np.eye(4)
        slice_to_ras[:3, 0], slice_to_ras[:3, 1], slice_to_ras[:3, 2] = directions[:, 1], directions[:, 2], directions[:, 0]
        slice_to_ras[:3, 3] = (ijk_to_ras @ [25, 15, 4, 1.0])[:3]
        yellow.GetSliceToRAS().DeepCopy(slice_to_ras.ravel())
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        crosshair.SetCursorPositionXYZ([40.0, 30.0, 0.0], yellow)  # the mouse moves into the Yellow view
        assert widget.currentSliceIndex() == (0, 25)

        shortcuts = {shortcut.keys: shortcut for shortcut in widget._shortcuts}
        assert set(shortcuts) == {"Ctrl+Shift+R", "Ctrl+Shift+B"}
        shortcuts["Ctrl+Shift+R"].press()  # place a RECIST line there, by keyboard
        [line] = widget.promptNodes()
        assert line.IsA("vtkMRMLMarkupsLineNode") and line.GetAttribute("MedSAMSlicer.Axis") == "0"
        interaction = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLInteractionNode")
        assert interaction.GetCurrentInteractionMode() == interaction.Place
        for j, k in ((10.0, 2.0), (20.0, 6.0)):  # the line the user draws in the Yellow view
            line.AddControlPoint((ijk_to_ras @ [25, j, k, 1.0])[:3])
        widget.updatePromptTable()
        assert [ui.promptTable.item(0, c).text for c in range(2)] == ["25", "RECIST"]  # the slice along I, not K

        segment_id = widget._parameterNode.segmentId
        widget.exit()  # other modules own the keys while this one is not shown
        shortcuts["Ctrl+Shift+B"].press()
        assert len(widget.logic.promptNodes(segmentation, segment_id)) == 1
        widget.enter()
        shortcuts["Ctrl+Shift+B"].press()
        assert [n.GetClassName() for n in widget.logic.promptNodes(segmentation, segment_id)] == [
            "vtkMRMLMarkupsLineNode", "vtkMRMLMarkupsROINode"]
    finally:
        widget.cleanup()
    assert widget._shortcuts == []
