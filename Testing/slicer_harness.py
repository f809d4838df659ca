"""A headless Slicer for tests: the real MRML scene and logics from ``slicer-core``, stand-ins for the Qt parts, and a
user who drives the module the way Slicer delivers what a user does.

``slicer-core`` (PyPI) has the real scene, volume, markups, segmentation, slice and interaction nodes and logics,
and ``slicer.util``; it has no Qt, so ``slicer.ScriptedLoadableModule`` and ``slicer.parameterNodeWrapper``
(which build on Qt) are replaced by minimal stand-ins that keep their interfaces, and Qt widgets by ``FakeWidget``
objects built from the module's .ui file, so the widget's own code runs. The stand-ins behave as the Qt classes do
where the module depends on it (read from Slicer's sources): a disabled button ignores clicks, ``blockSignals``
silences a widget, a segment selector given a node picks its first segment and says so before it says the node
changed, a node selector whose node is removed shows none, a timer fires until it is stopped.

``SlicerUser`` is the user: it opens the module (``setup`` then ``enter``), clicks buttons, presses keys, moves the
mouse into a slice view (the crosshair node learns which), places markups point by point as Slicer's markups widget
does (a preview point that follows the mouse, then the click that defines it, through the real markups display
node, so the node fires the events it fires in Slicer), drags points, paints in the Segment Editor, opens another
module (``exit``) while the timer keeps firing, and closes the scene. Every event reaches the module through a
real observer on a real node; no test calls a handler.
"""

import importlib.util
import logging
import sys
import time
import types
import typing
import unittest
import weakref
from pathlib import Path

import numpy as np
import vtk

import slicer
import slicer.util

MODULE_FILE = Path(__file__).resolve().parents[1] / "MedSAMSlicer" / "MedSAMSlicer.py"
MODULE_NAME = "MedSAMSlicer"


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent

    def setup(self):
        self.layout = FakeWidget("layout")

    def resourcePath(self, filename):
        return str(Path(sys.modules[MODULE_NAME].__file__).parent / "Resources" / filename)


# --- Qt stand-ins


class FakeWidget:
    """Stands in for any Qt widget: keeps the properties set on it and the slots connected to its signals."""

    def __init__(self, name, className="QWidget", properties=None):
        self.name, self.className, self._properties = name, className, dict(properties or {})
        self.enabled, self.visible, self.checked = True, True, False
        self.text, self.value, self.maximum, self.currentText, self.currentPath = "", 0, 100, "", ""
        self.items, self.slots, self._blocked = [], {}, False

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def disconnect(self, signal, slot):
        self.slots.get(signal, []).remove(slot)

    def blockSignals(self, block):
        was, self._blocked = self._blocked, bool(block)
        return was

    def emit(self, signal, *args):
        if not self._blocked:
            for slot in list(self.slots.get(signal, [])):
                slot(*args)

    def property(self, name):
        """A dynamic property from the .ui (e.g. ``SlicerParameterName``), or None."""
        return self._properties.get(name)

    def click(self):
        """QAbstractButton.click(): nothing happens on a disabled button."""
        if self.enabled:
            self.emit("clicked()")

    def clear(self):
        self.items, self.currentText = [], ""

    def addWidget(self, widget):
        pass

    def setMRMLScene(self, scene):
        pass

    def addItems(self, items):
        self.items.extend(items)
        self.currentText = self.currentText or items[0]


class FakeNodeComboBox(FakeWidget):
    """qMRMLNodeComboBox: says when its node changes. When that node is about to leave the scene, the node that takes
    its row is shown (the next of its class, else the previous; none when it was the only one): qMRMLSceneModel drops
    the row at NodeAboutToBeRemoved and QComboBox moves to its neighbour. While the scene closes the model ignores
    removals, and shows none once it has closed."""

    def __init__(self, *args):
        super().__init__(*args)
        self._node = None
        scene = slicer.mrmlScene
        scene.AddObserver(scene.NodeAboutToBeRemovedEvent, self._onNodeAboutToBeRemoved)
        scene.AddObserver(scene.EndCloseEvent, lambda *args: self.setCurrentNode(None))

    def nodeClass(self):
        return (self.property("nodeTypes") or ["vtkMRMLNode"])[0]

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def _onNodeAboutToBeRemoved(self, caller, event, node):
        if node is None or node is not self._node or caller.IsClosing():
            return
        nodes = list(slicer.util.getNodesByClass(self.nodeClass()))
        index = nodes.index(node)
        neighbours = nodes[index + 1:] + nodes[:index][::-1]
        self.setCurrentNode(neighbours[0] if neighbours else None)

    def setCurrentNode(self, node):
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)

    def currentNode(self):
        return self._node


class FakeSegmentSelector(FakeNodeComboBox):
    """qMRMLSegmentSelectorWidget (single selection, no 'None' item), as qMRMLSegmentSelectorWidget.cxx does it: a new
    node repopulates the segment list, and a current segment that is not in it is replaced by the first segment,
    announced (``currentSegmentChanged``) before the node change is; with no segment, the stale id is kept."""

    def __init__(self, *args):
        self._segment, self._observed = "", None
        super().__init__(*args)

    def nodeClass(self):
        return "vtkMRMLSegmentationNode"

    def setCurrentNode(self, node):
        if node is self._node:
            return
        if self._observed is not None:
            old, tags = self._observed
            for tag in tags:
                old.RemoveObserver(tag)
            self._observed = None
        self._node = node
        if node is not None:
            self._observed = (node, [node.AddObserver(event, lambda *a: self._populate()) for event in (
                slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved)])
        self._populate()
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)

    def _segments(self):
        segmentation = self._node.GetSegmentation() if self._node is not None else None
        return ([segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
                if segmentation else [])

    def _populate(self):
        segments = self._segments()
        if segments and self._segment not in segments:
            self._segment = segments[0]
            self.emit("currentSegmentChanged(QString)", self._segment)

    def setCurrentSegmentID(self, segmentId):
        if segmentId in self._segments() and segmentId != self._segment:
            self._segment = segmentId
            self.emit("currentSegmentChanged(QString)", segmentId)

    def currentSegmentID(self):
        return self._segment


class FakeTable(FakeWidget):
    """QTableWidget: rows of items; a click on a cell makes its row current and says which cell."""

    def __init__(self, *args):
        super().__init__(*args)
        self.rows, self._rowCount, self._currentRow = {}, 0, -1

    def setRowCount(self, count):
        self._rowCount = count
        self.rows = {key: item for key, item in self.rows.items() if key[0] < count}

    def rowCount(self):
        return self._rowCount

    def setItem(self, row, column, item):
        self.rows[(row, column)] = item

    def item(self, row, column):
        return self.rows.get((row, column))

    def currentRow(self):
        return self._currentRow

    def clickCell(self, row, column):
        self._currentRow = row
        self.emit("cellClicked(int,int)", row, column)


class FakeSegmentEditorWidget(FakeWidget):
    """qMRMLSegmentEditorWidget: its choices go to its real vtkMRMLSegmentEditorNode, as the widget's do. Its methods
    are those Python can call: slots and Q_INVOKABLE methods of qMRMLSegmentEditorWidget.h; a property whose setter
    is neither (``unorderedEffectsVisible``) is an attribute."""

    def __init__(self, *args):
        super().__init__(*args)
        self.editorNode, self.activeEffect, self.effectOrder, self.unorderedEffectsVisible = None, None, [], True
        self.shortcuts, self.keysPressed = [], []  # its live keyboard shortcuts; the keys that reached it

    def setMRMLSegmentEditorNode(self, node):
        self.editorNode = node

    def setSegmentationNode(self, node):
        self.editorNode.SetAndObserveSegmentationNode(node)

    def setSourceVolumeNode(self, node):
        self.editorNode.SetAndObserveSourceVolumeNode(node)

    def setCurrentSegmentID(self, segmentId):
        self.editorNode.SetSelectedSegmentID(segmentId)

    #: qMRMLSegmentEditorWidget::installKeyboardShortcuts, on Linux: effects 1-0 and Shift+1-0, Escape, Space, undo
    #: (Z and QKeySequence::Undo, Ctrl+Z), redo (Y and QKeySequence::Redo, whose first binding is Ctrl+Shift+Z on Linux
    #: and macOS), previous/next segment (Q W / * , . < >) and the intensity mask (I)
    EDITOR_KEYS = ([str(n % 10) for n in range(1, 11)] + [f"Shift+{n % 10}" for n in range(1, 11)]
                   + ["Esc", "Space", "Z", "Ctrl+Z", "Y", "Ctrl+Shift+Z", "Q", "W", "/", "*", ",", ".", ">", "<", "I"])

    def installKeyboardShortcuts(self, parent=None):
        self.uninstallKeyboardShortcuts()
        self.shortcuts = [_Shortcut(keys, parent or MAIN_WINDOW) for keys in self.EDITOR_KEYS]
        for shortcut in self.shortcuts:
            shortcut.connect("activated()", lambda keys=shortcut.keys: self.keysPressed.append(keys))

    def uninstallKeyboardShortcuts(self):
        for shortcut in getattr(self, "shortcuts", []):
            shortcut.setParent(None)
        self.shortcuts = []

    @property
    def shortcutsInstalled(self):
        return bool(self.shortcuts)

    def setActiveEffect(self, effect):
        self.activeEffect = effect

    def setActiveEffectByName(self, name):
        self.activeEffect = name

    def removeViewObservations(self):
        pass

    def setEffectNameOrder(self, names):
        self.effectOrder = list(names)

    def setSegmentationNodeSelectorVisible(self, visible):
        pass

    def setSourceVolumeNodeSelectorVisible(self, visible):
        pass


WIDGET_CLASSES = {"qMRMLNodeComboBox": FakeNodeComboBox, "qMRMLSegmentSelectorWidget": FakeSegmentSelector,
                  "QTableWidget": FakeTable, "qMRMLSegmentEditorWidget": FakeSegmentEditorWidget}


class _TableItem:
    def __init__(self, text):
        self.text, self._data = text, {}

    def setData(self, role, value):
        self._data[role] = value

    def data(self, role):
        return self._data.get(role)


class EventLoop:
    """Qt's event loop, as far as the module needs it: running timers fire when events are processed."""

    def __init__(self):
        self.timers = []

    def processEvents(self):
        for timer in list(self.timers):
            timer.fire()


EVENT_LOOP = EventLoop()
MAIN_WINDOW = types.SimpleNamespace(objectName="qSlicerMainWindow")


class _Timer:
    def __init__(self):
        self.interval, self.slots = 0, []

    def setInterval(self, msec):
        self.interval = msec

    def connect(self, signal, slot):
        self.slots.append(slot)

    def start(self):
        if self not in EVENT_LOOP.timers:
            EVENT_LOOP.timers.append(self)

    def stop(self):
        if self in EVENT_LOOP.timers:
            EVENT_LOOP.timers.remove(self)

    def isActive(self):
        return self in EVENT_LOOP.timers

    def fire(self):
        for slot in list(self.slots):
            slot()


def key_sequence(keys):
    """A key sequence's text as Qt reads it: modifiers in any order, letters in either case."""
    *modifiers, key = keys.split("+") if keys != "+" else [keys]
    order = ["Ctrl", "Shift", "Alt", "Meta"]
    return "+".join(sorted((m.capitalize() for m in modifiers), key=order.index) + [key.upper()])


class _Shortcut:
    """An application shortcut: its keys, whether it is enabled, and its activated() slots. It is live while it has a
    parent (the main window); ``SlicerUser.press`` finds it among the live ones, as Qt does."""

    live = weakref.WeakSet()

    def __init__(self, keys, parent=None):
        self.keys, self.enabled, self.parent, self.slots = key_sequence(keys), True, parent, []
        _Shortcut.live.add(self)

    def connect(self, signal, slot):
        self.slots.append(slot)

    def setParent(self, parent):
        self.parent = parent

    def activate(self):
        for slot in self.slots:
            slot()


class Dialogs:
    """What the module showed in message boxes, and the answers a user gives to questions and file dialogs. A message
    box is modal: Qt's event loop runs (its timers fire) until the user answers."""

    def __init__(self):
        self.errors, self.answer, self.savePath = [], True, ""

    def error(self, text, *args, **kwargs):
        logging.error(text)
        self.errors.append(text)
        EVENT_LOOP.processEvents()

    def confirm(self, text, *args, **kwargs):
        EVENT_LOOP.processEvents()
        return self.answer


DIALOGS = Dialogs()


class DICOMDatabase:
    """Slicer's DICOM database (``slicer.dicomDatabase``, a ctkDICOMDatabase) as far as the module uses it: open, and
    the file of a SOP instance UID, "" when it does not know the instance (as ``fileForInstance`` answers)."""

    def __init__(self):
        self.isOpen, self._files = True, {}

    def insert(self, path):
        import pydicom
        self._files[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = str(Path(path).resolve())

    def fileForInstance(self, uid):
        return self._files.get(uid, "")


def _fake_qt():
    qt = types.ModuleType("qt")
    qt.QTimer, qt.QTableWidgetItem, qt.QShortcut, qt.QKeySequence = _Timer, _TableItem, _Shortcut, str
    qt.Qt = types.SimpleNamespace(UserRole=32, WaitCursor=3)
    qt.QApplication = types.SimpleNamespace(setOverrideCursor=lambda cursor: None, restoreOverrideCursor=lambda: None)
    qt.QFileDialog = types.SimpleNamespace(getSaveFileName=lambda *args: DIALOGS.savePath)
    return qt


def _load_ui(path):
    """Every named widget of the .ui file, as stand-ins (by class) that are children of a fake root."""
    import xml.etree.ElementTree as ElementTree
    root = FakeWidget(MODULE_NAME)
    root.children = {}
    for widget in ElementTree.parse(path).iter("widget"):
        dynamic = {p.get("name"): p.find("string").text for p in widget.findall("property")
                   if p.get("stdset") == "0" and p.find("string") is not None}
        dynamic.update({p.get("name"): [item.text for item in p.iter("string")]
                        for p in widget.findall("property") if p.get("name") == "nodeTypes"})
        cls = WIDGET_CLASSES.get(widget.get("class"), FakeWidget)
        root.children[widget.get("name")] = cls(widget.get("name"), widget.get("class"), dynamic)
    return root


# --- the application


SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


class FakeApplication:
    """``slicer.app``: the event loop, and a layout of three slice views whose slice nodes are real scene nodes."""

    def __init__(self):
        self.sliceNodes = {}

    def processEvents(self):
        EVENT_LOOP.processEvents()

    def testingEnabled(self):
        return True

    def moduleManager(self):
        """The modules loaded: only this one, so ``module("PyTorchUtils")`` is None, as qSlicerModuleManager answers
        for a module it does not have."""
        return types.SimpleNamespace(module=lambda name: None)

    def topLevelWidgets(self):
        """Slicer's main window (``slicer.util.mainWindow()`` finds it by name): the parent of application
        shortcuts."""
        return [MAIN_WINDOW]

    def applicationLogic(self):
        scene = slicer.mrmlScene
        return types.SimpleNamespace(GetInteractionNode=lambda: scene.GetFirstNodeByClass("vtkMRMLInteractionNode"),
                                     GetSelectionNode=lambda: scene.GetFirstNodeByClass("vtkMRMLSelectionNode"))

    def layoutManager(self):
        def sliceWidget(name):
            return types.SimpleNamespace(mrmlSliceNode=lambda: self.sliceNodes[name])
        return types.SimpleNamespace(sliceWidget=sliceWidget, sliceViewNames=lambda: list(self.sliceNodes))


class ScriptedLoadableModuleLogic:
    """As Slicer's: the parameter node is the scene's singleton scripted-module node named after the module."""

    moduleName = MODULE_NAME

    def __init__(self, parent=None):
        pass

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            node = slicer.mrmlScene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        logging.info(message)


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


class _Connector:
    """One widget bound to one parameter, as Slicer's GUI connector for that widget class and value type."""

    SIGNALS = {"QCheckBox": "stateChanged(int)", "QSpinBox": "valueChanged(int)",
               "QDoubleSpinBox": "valueChanged(double)", "QComboBox": "currentIndexChanged(int)",
               "qMRMLNodeComboBox": "currentNodeChanged(vtkMRMLNode*)", "QLineEdit": "textChanged(QString)"}

    def __init__(self, widget, kind, annotations):
        if widget.className not in self.SIGNALS:
            raise RuntimeError(f"Unable to create GUI connector from datatype '{kind}' to widget type "
                               f"'{widget.className}'")
        self.widget, self.kind, self.callback = widget, kind, None
        choice = next((a for a in annotations if isinstance(a, Choice)), None)
        bounds = next((a for a in annotations if isinstance(a, WithinRange)), None)
        if widget.className == "QComboBox":
            if choice is None:
                raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
            self.choices = choice.choices
            widget.clear()
            widget.addItems([str(c) for c in self.choices])
        if bounds is not None:
            widget.minimum, widget.maximum = bounds.minimum, bounds.maximum

    def onChanged(self, callback):
        signal = self.SIGNALS[self.widget.className]
        if self.callback is not None:
            self.widget.disconnect(signal, self.callback)
        self.callback = (lambda *args: callback()) if callback else None
        if self.callback is not None:
            self.widget.connect(signal, self.callback)

    def read(self):
        widget = self.widget
        return {"QCheckBox": lambda: widget.checked,
                "QComboBox": lambda: self.choices[widget.items.index(widget.currentText)],
                "qMRMLNodeComboBox": lambda: widget.currentNode(), "QLineEdit": lambda: widget.text}.get(
            widget.className, lambda: widget.value)()

    def write(self, value):
        widget = self.widget
        if widget.className == "QCheckBox":
            widget.checked = value
        elif widget.className == "QComboBox":
            widget.currentText = str(value)
        elif widget.className == "qMRMLNodeComboBox":
            widget.setCurrentNode(value)
        elif widget.className == "QLineEdit":
            widget.text = value
        else:
            widget.value = value


def parameterNodeWrapper(cls):
    """Typed attributes stored in a ``vtkMRMLScriptedModuleNode`` (MRML nodes as references, the rest as text), and
    ``connectGui``/``disconnectGui`` binding widgets that carry a ``SlicerParameterName``."""
    hints = typing.get_type_hints(cls, include_extras=True)

    def split(hint):
        if typing.get_origin(hint) is typing.Annotated:
            kind, *annotations = typing.get_args(hint)
            return kind, annotations
        return hint, []

    def make_property(name, kind):
        default = getattr(cls, name, None)
        if isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode):
            return property(lambda self: self.parameterNode.GetNodeReference(name),
                            lambda self, node: self.parameterNode.SetNodeReferenceID(
                                name, node.GetID() if node else None))

        def getter(self):
            text = self.parameterNode.GetParameter(name)
            if text == "":
                return default if default is not None else kind()
            return text == "True" if kind is bool else kind(text)  # as Slicer's bool serializer: "True"/"False"

        return property(getter, lambda self, value: self.parameterNode.SetParameter(name, str(kind(value))))

    def init(self, parameterNode):
        self.parameterNode, self._guis, self._nextTag, self._writingGui = parameterNode, {}, 0, False

    def connectGui(self, ui):
        connectors = {}
        for widget in vars(ui).values():
            name = widget.property("SlicerParameterName")
            if name:
                if name not in hints:
                    raise ValueError(f"Cannot find a param with the given name: {name}")
                connectors[name] = _Connector(widget, *split(hints[name]))
        tag, self._nextTag = self._nextTag, self._nextTag + 1
        self._guis[tag] = connectors
        for name, connector in connectors.items():
            connector.write(getattr(self, name))
            connector.onChanged(lambda name=name, connector=connector: self._fromGui(name, connector))
        if not hasattr(self, "_observer"):  # through a weak reference: an observer must not keep its wrapper alive
            wrapper = weakref.ref(self)
            self._observer = self.parameterNode.AddObserver(
                vtk.vtkCommand.ModifiedEvent, lambda *a: wrapper() is not None and wrapper()._toGui())
        return tag

    def _fromGui(self, name, connector):
        if not self._writingGui:
            with slicer.util.NodeModify(self):
                setattr(self, name, connector.read())

    def _toGui(self):
        if self._writingGui:
            return
        self._writingGui = True
        try:
            for connectors in self._guis.values():
                for name, connector in connectors.items():
                    connector.write(getattr(self, name))
        finally:
            self._writingGui = False

    def disconnectGui(self, tag):
        for connector in self._guis.pop(tag, {}).values():
            connector.onChanged(None)
        if not self._guis and hasattr(self, "_observer"):
            self.parameterNode.RemoveObserver(self._observer)
            del self._observer

    namespace = {"__init__": init, "__doc__": cls.__doc__, "connectGui": connectGui, "disconnectGui": disconnectGui,
                 "_fromGui": _fromGui, "_toGui": _toGui,
                 "StartModify": lambda self: self.parameterNode.StartModify(),
                 "EndModify": lambda self, was: self.parameterNode.EndModify(was),
                 "AddObserver": lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
                     event, callback, priority),
                 "RemoveObserver": lambda self, tag: self.parameterNode.RemoveObserver(tag),
                 "Modified": lambda self: self.parameterNode.Modified()}
    namespace.update({name: make_property(name, split(hint)[0]) for name, hint in hints.items()})
    return type(cls.__name__, (), namespace)


def _add_singletons(scene):
    """What Slicer's application logic puts in every scene (and keeps through File > Close Scene)."""
    for cls in (slicer.vtkMRMLSelectionNode, slicer.vtkMRMLInteractionNode):
        if scene.GetFirstNodeByClass(cls.__name__) is None:
            node = cls()
            node.SetSingletonTag("Singleton")
            scene.AddNode(node)
    if scene.GetFirstNodeByClass("vtkMRMLCrosshairNode") is None:
        crosshair = slicer.vtkMRMLCrosshairNode()  # the "default" crosshair the slice logic adds
        crosshair.SetSingletonTag("default")
        scene.AddNode(crosshair)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    for name, orientation in SLICE_VIEWS.items():
        node = scene.GetSingletonNode(name, "vtkMRMLSliceNode")
        if node is None:
            node = scene.CreateNodeByClass("vtkMRMLSliceNode")  # with the scene's default orientation presets
            node.UnRegister(None)
            node.SetName(name)
            node.SetLayoutName(name)
            node.SetSingletonTag(name)
            node.SetDefaultOrientation(orientation)
            node.SetOrientation(orientation)
            node = scene.AddNode(node)
        slicer.app.sliceNodes[name] = node


def _setup_scene():
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    _add_singletons(scene)
    logics = {}
    for name, cls in (("colors", slicer.vtkSlicerColorLogic), ("volumes", slicer.vtkSlicerVolumesLogic),
                      ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("markups", slicer.vtkSlicerMarkupsLogic)):
        logic = cls()
        logic.SetMRMLScene(scene)
        logics[name] = logic
    slicer.modules = types.SimpleNamespace(**{name: types.SimpleNamespace(logic=(lambda bound=logic: bound))
                                             for name, logic in logics.items()})
    slicer._harness_logics = logics  # keep them alive with the scene


def install(module_file=MODULE_FILE):
    """Set up the headless application and return the imported ``MedSAMSlicer`` module file (this checkout's, or
    another's: ``benchmarks/first_hour.py`` drives an earlier version of the module the same way)."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    stand_in = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(stand_in, cls.__name__, cls)
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper, wrapper.Choice, wrapper.WithinRange = parameterNodeWrapper, Choice, WithinRange
    sys.modules[stand_in.__name__] = slicer.ScriptedLoadableModule = stand_in
    sys.modules[wrapper.__name__] = slicer.parameterNodeWrapper = wrapper
    sys.modules.setdefault("qt", _fake_qt())
    slicer.util.loadUI = _load_ui
    slicer.util.childWidgetVariables = lambda widget: types.SimpleNamespace(**widget.children)
    slicer.util.errorDisplay = DIALOGS.error
    slicer.util.confirmOkCancelDisplay = DIALOGS.confirm
    slicer.app = FakeApplication()
    slicer.dicomDatabase = DICOMDatabase()
    _setup_scene()
    spec = importlib.util.spec_from_file_location(MODULE_NAME, module_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


# --- the user


IDENTITY_ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


class SlicerUser:
    """A radiologist at a headless Slicer: every action goes through what Slicer itself would do to the scene."""

    def __init__(self):
        install()
        self.module = sys.modules[MODULE_NAME]
        self.widget, self.panel, self.shownModule = None, None, "Welcome"
        self.dialogs = DIALOGS
        DIALOGS.errors, DIALOGS.answer = [], True
        self.actions = 0  # what the user did: clicks, keys, points placed, drags, views shown (the first-hour count)

    # the application

    def openModule(self):
        """Select the MedSAM module: its widget is set up the first time, then entered (as Slicer does)."""
        if self.widget is None:
            self.panel = types.SimpleNamespace(isEntered=False)
            self.widget = self.module.MedSAMSlicerWidget(self.panel)
            self.widget.setup()
        self.selectModule(MODULE_NAME)
        return self.widget

    def selectModule(self, name):
        """Show another module (``exit`` of this one) or this one (``enter``)."""
        if self.shownModule == MODULE_NAME and name != MODULE_NAME and self.widget is not None:
            self.widget.exit()
            self.panel.isEntered = False
        elif name == MODULE_NAME and self.shownModule != MODULE_NAME:
            self.panel.isEntered = True
            self.widget.enter()
        self.shownModule = name

    def quit(self):
        """Slicer closes: the widget is cleaned up, and what it left running on threads (a model load cannot be
        stopped; an embedding worker ends after its current encode) is waited for, so that the next test's model load
        does not run beside it."""
        widget, self.widget = self.widget, None
        if widget is not None:
            running = [work for work in (widget._loading, widget._job and widget._job.background) if work is not None]
            session = widget.logic._session
            widget.cleanup()
            for work in running:
                work.wait(600)
            if session is not None:
                session.worker._thread.join(600)
        for shortcut in list(_Shortcut.live):  # the main window goes, and every shortcut on it
            shortcut.setParent(None)

    def closeScene(self):
        """File > Close Scene: StartClose, every node but the singletons removed, EndClose."""
        slicer.mrmlScene.Clear(0)
        _add_singletons(slicer.mrmlScene)

    def processEvents(self, seconds=0.0):
        """Let the event loop run: timers fire, for at least ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            slicer.app.processEvents()
            if time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def waitUntil(self, condition, seconds=300.0, what="the condition"):
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {seconds} s waiting for {what}")
            slicer.app.processEvents()
            time.sleep(0.02)

    def waitUntilIdle(self, seconds=300.0):
        """Until nothing of the module's runs: no install, model load, job, waiting request or measurement."""
        widget = self.widget
        self.waitUntil(lambda: widget._install is None and widget._loading is None and widget._job is None
                       and not getattr(widget, "_requests", None) and getattr(widget, "_measurement", None) is None,
                       seconds, "the module to be idle")

    # data

    def loadVolume(self, array, ijkToRAS, name="volume"):
        return slicer.util.addVolumeFromArray(array, ijkToRAS=ijkToRAS, name=name)

    def loadDicomSeries(self, folder, name="series"):
        """Import a single-frame series into the DICOM database and load it as Slicer's DICOM module does
        (DICOMScalarVolumePlugin): the files sorted along the slice normal, slice k from the k-th, and their SOP
        instance UIDs recorded on the node, space-separated in slice order, as ``DICOM.instanceUIDs``."""
        import pydicom
        from MedSAMSlicerLib.files.image_io import read_image
        for path in sorted(Path(folder).iterdir()):
            slicer.dicomDatabase.insert(path)
        image = read_image(folder)  # sorted along the normal, as DICOMUtils.getSortedImageFiles sorts
        node = self.loadVolume(image.array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.geometry.ijk_to_lps, name)
        uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in image.dicom_files]
        node.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
        return node

    # the panel

    @property
    def ui(self):
        return self.widget.ui

    def click(self, buttonName):
        self.actions += 1
        getattr(self.ui, buttonName).click()

    def press(self, keys):
        """Keys pressed in the main window: the one live, enabled shortcut for them fires; where two or more are, Qt
        fires none (activatedAmbiguously), and neither does this."""
        self.actions += 1
        matching = self.shortcutsFor(keys)
        if len(matching) == 1:
            matching[0].activate()

    @staticmethod
    def shortcutsFor(keys):
        """The live, enabled shortcuts that these keys would reach."""
        keys = key_sequence(keys)
        return [s for s in _Shortcut.live if s.parent is not None and s.enabled and s.keys == keys]

    def choose(self, comboName, text):
        """Pick an item of a combo box: its text changes and the box says so."""
        self.actions += 1
        combo = getattr(self.ui, comboName)
        combo.currentText = text
        combo.emit("currentIndexChanged(int)", combo.items.index(text))

    def selectNode(self, selectorName, node):
        self.actions += 1
        getattr(self.ui, selectorName).setCurrentNode(node)

    def typePath(self, pathEditName, path):
        """Type a file's path into a ctkPathLineEdit."""
        self.actions += 1
        edit = getattr(self.ui, pathEditName)
        edit.currentPath = str(path)
        edit.emit("currentPathChanged(QString)", str(path))

    def tick(self, checkBoxName, checked=True):
        self.actions += 1
        box = getattr(self.ui, checkBoxName)
        box.checked = checked
        box.emit("stateChanged(int)", 2 if checked else 0)

    def clickTableRow(self, row):
        self.actions += 1
        self.ui.promptTable.clickCell(row, 0)

    # the views

    def sliceNode(self, view):
        return slicer.app.sliceNodes[view]

    def showSlice(self, view, volumeNode, axis, index):
        """Scroll ``view`` to the volume's slice ``index`` along IJK ``axis``, the view aligned with that axis."""
        self.actions += 1
        matrix = np.eye(4)
        directions = volume_directions(volumeNode)
        others = [a for a in range(3) if a != axis]
        matrix[:3, 0], matrix[:3, 1], matrix[:3, 2] = (directions[:, others[0]], directions[:, others[1]],
                                                       directions[:, axis])
        centre = [index if a == axis else (volumeNode.GetImageData().GetDimensions()[a] - 1) / 2 for a in range(3)]
        matrix[:3, 3] = ras_of(volumeNode, centre)
        node = self.sliceNode(view)
        node.GetSliceToRAS().DeepCopy(matrix.ravel())
        node.UpdateMatrices()

    def moveMouse(self, view, ras=(0.0, 0.0, 0.0)):
        """The mouse moves in a slice view: the crosshair node knows where, and in which view."""
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        crosshair.SetCursorPositionRAS(ras)
        crosshair.SetCursorPositionXYZ([10.0, 10.0, 0.0], self.sliceNode(view))

    def place(self, view, points_ras):
        """Place the markup that Place mode is active for, one click per point, as vtkSlicerMarkupsWidget does: the
        mouse moves (a preview point follows it), the click defines the point; when the markup has its points,
        Place mode ends (place mode persistence is off)."""
        scene = slicer.mrmlScene
        interaction = scene.GetFirstNodeByClass("vtkMRMLInteractionNode")
        selection = scene.GetFirstNodeByClass("vtkMRMLSelectionNode")
        node = scene.GetNodeByID(selection.GetActivePlaceNodeID() or "")
        assert interaction.GetCurrentInteractionMode() == interaction.Place and node is not None, "not in Place mode"
        display = node.GetDisplayNode()
        event = slicer.vtkMRMLInteractionEventData()
        event.SetInteractionContextName("Mouse")
        viewId = self.sliceNode(view).GetID()
        for point in points_ras:
            point = np.asarray(point, dtype=float)
            index = -1
            for approach in (point + [6.0, -4.0, 0.0], point + [2.0, -1.0, 0.0], point):
                self.moveMouse(view, approach)
                event.SetWorldPosition(approach)
                index = display.UpdateActiveControlPointWorld(index, event, IDENTITY_ORIENTATION, viewId, "",
                                                              slicer.vtkMRMLMarkupsNode.PositionPreview)
            self.actions += 1  # the click
            display.UpdateActiveControlPointWorld(index, event, IDENTITY_ORIENTATION, viewId, "",
                                                  slicer.vtkMRMLMarkupsNode.PositionDefined)
            required = node.GetRequiredNumberOfControlPoints()
            if (node.GetNumberOfControlPoints() >= required and node.GetNumberOfUndefinedControlPoints() == 0
                    and not interaction.GetPlaceModePersistence()):
                interaction.SetCurrentInteractionMode(interaction.ViewTransform)
        return node

    def drag(self, view, node, index, to_ras, steps=4):
        """Drag control point ``index`` to ``to_ras``: an interaction start, moves, an interaction end."""
        self.actions += 1
        start = np.array(node.GetNthControlPointPositionWorld(index))
        self.moveMouse(view, start)
        node.InvokeCustomModifiedEvent(slicer.vtkMRMLMarkupsNode.PointStartInteractionEvent)
        for step in range(1, steps + 1):
            position = start + (np.asarray(to_ras, dtype=float) - start) * step / steps
            self.moveMouse(view, position)
            node.SetNthControlPointPositionWorld(index, position)
        node.InvokeCustomModifiedEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent)

    def clickPoint(self, view, node, index):
        """A click on control point ``index`` that moves nothing: the markups widget grabs and releases it, with the
        same interaction events as a drag."""
        self.actions += 1
        self.moveMouse(view, node.GetNthControlPointPositionWorld(index))
        node.InvokeCustomModifiedEvent(slicer.vtkMRMLMarkupsNode.PointStartInteractionEvent)
        node.InvokeCustomModifiedEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent)

    # hand edits, as the Segment Editor's effects make them

    def paint(self, volumeNode, region, erase=False):
        """A Paint (or Erase) stroke on ``region`` ([k, j, i] index tuple of the volume) of the segment selected in
        the module's embedded Segment Editor: the effect's modifier labelmap merged into the segment."""
        self.actions += 1
        editorNode = self.ui.segmentEditorWidget.editorNode
        segmentationNode, segmentId = editorNode.GetSegmentationNode(), editorNode.GetSelectedSegmentID()
        assert segmentationNode is not None and segmentId, "the Segment Editor has no segment selected"
        segment = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode).astype(bool)
        segment[region] = not erase
        slicer.util.updateSegmentBinaryLabelmapFromArray(segment.astype(np.uint8), segmentationNode, segmentId,
                                                         volumeNode)


def volume_directions(volumeNode):
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    array = slicer.util.arrayFromVTKMatrix(matrix)[:3, :3]
    return array / np.linalg.norm(array, axis=0)


def ras_of(volumeNode, ijk):
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return (slicer.util.arrayFromVTKMatrix(matrix) @ np.r_[np.asarray(ijk, dtype=float), 1.0])[:3]
