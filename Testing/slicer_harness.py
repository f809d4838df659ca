"""A headless Slicer for tests: the real MRML scene and logics from ``slicer-core``, stand-ins for the Qt parts.

``slicer-core`` (PyPI) has the real scene, volume, markups and segmentation nodes and logics, and
``slicer.util``; it has no Qt, so ``slicer.ScriptedLoadableModule`` and ``slicer.parameterNodeWrapper``
(which build on Qt) are replaced by minimal stand-ins that keep their interfaces, and Qt widgets by
``FakeWidget`` objects built from the module's .ui file, so the widget's own code runs. ``install()``
sets up ``slicer.mrmlScene``, ``slicer.modules`` and the Colors, Volumes, Segmentations and
Markups logics, as the application does at start-up, then imports the module file unchanged.
"""

import importlib.util
import logging
import sys
import types
import unittest
from pathlib import Path

import slicer
import slicer.util

MODULE_FILE = Path(__file__).resolve().parents[1] / "MedSAMSlicer" / "MedSAMSlicer.py"


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent

    def setup(self):
        self.layout = FakeWidget("layout")

    def resourcePath(self, filename):
        return str(MODULE_FILE.parent / "Resources" / filename)


class FakeWidget:
    """Stands in for any Qt widget: keeps the properties set on it and the slots connected to it."""

    def __init__(self, name):
        self.name, self.enabled, self.visible, self.checked = name, True, True, False
        self.text, self.value, self.maximum, self.currentText, self.currentPath = "", 0, 100, "", ""
        self.items, self.rows, self.slots = [], {}, {}
        self._node, self._segment, self._rowCount, self._currentRow = None, "", 0, -1

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in self.slots.get(signal, []):
            slot(*args)

    def addWidget(self, widget):
        pass

    def setMRMLScene(self, scene):
        pass

    def addItems(self, items):
        self.items.extend(items)
        self.currentText = self.currentText or items[0]

    def setCurrentNode(self, node):
        self._node = node

    def currentNode(self):
        return self._node

    def setCurrentSegmentID(self, segmentId):
        self._segment = segmentId

    def currentSegmentID(self):
        return self._segment

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


class _TableItem:
    def __init__(self, text):
        self.text, self._data = text, {}

    def setData(self, role, value):
        self._data[role] = value

    def data(self, role):
        return self._data.get(role)


class _Timer:
    """No event loop here: tests call the widget's poll slot themselves."""

    def setInterval(self, msec):
        pass

    def connect(self, signal, slot):
        pass

    def start(self):
        pass

    def stop(self):
        pass


def _fake_qt():
    qt = types.ModuleType("qt")
    qt.QTimer, qt.QTableWidgetItem = _Timer, _TableItem
    qt.Qt = types.SimpleNamespace(UserRole=32, WaitCursor=3)
    qt.QApplication = types.SimpleNamespace(setOverrideCursor=lambda cursor: None, restoreOverrideCursor=lambda: None)
    return qt


def _load_ui(path):
    """Every named widget of the .ui file, as ``FakeWidget`` children of a fake root."""
    import xml.etree.ElementTree as ElementTree
    root = FakeWidget("MedSAMSlicer")
    root.children = {w.get("name"): FakeWidget(w.get("name")) for w in ElementTree.parse(path).iter("widget")}
    return root


class FakeApplication:
    """``slicer.app`` with one slice view (Red) whose slice node a test controls."""

    def __init__(self, sliceNode=None):
        self.sliceNode = sliceNode

    def processEvents(self):
        pass

    def layoutManager(self):
        if self.sliceNode is None:
            return None
        view = types.SimpleNamespace(mrmlSliceNode=lambda: self.sliceNode)
        return types.SimpleNamespace(sliceWidget=lambda name: view)


class ScriptedLoadableModuleLogic:
    """As Slicer's: the parameter node is the scene's singleton scripted-module node named after the module."""

    moduleName = "MedSAMSlicer"

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


def parameterNodeWrapper(cls):
    """Typed attributes stored in a ``vtkMRMLScriptedModuleNode``: MRML nodes as references, the rest as text."""
    annotations = dict(cls.__annotations__)

    def make_property(name, kind):
        default = getattr(cls, name, None)
        if isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode):
            return property(lambda self: self.parameterNode.GetNodeReference(name),
                            lambda self, node: self.parameterNode.SetNodeReferenceID(name, node.GetID() if node else None))

        def getter(self):
            text = self.parameterNode.GetParameter(name)
            if text == "":
                return default if default is not None else kind()
            return text == "True" if kind is bool else kind(text)  # as Slicer's bool serializer: "True"/"False"

        return property(getter, lambda self, value: self.parameterNode.SetParameter(name, str(kind(value))))

    namespace = {"__init__": lambda self, parameterNode: setattr(self, "parameterNode", parameterNode),
                 "__doc__": cls.__doc__}
    namespace.update({name: make_property(name, kind) for name, kind in annotations.items()})
    return type(cls.__name__, (), namespace)


def _setup_scene():
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    selection = slicer.vtkMRMLSelectionNode()
    selection.SetSingletonTag("Singleton")
    scene.AddNode(selection)
    interaction = slicer.vtkMRMLInteractionNode()
    interaction.SetSingletonTag("Singleton")
    scene.AddNode(interaction)
    logics = {}
    for name, cls in (("colors", slicer.vtkSlicerColorLogic), ("volumes", slicer.vtkSlicerVolumesLogic),
                      ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("markups", slicer.vtkSlicerMarkupsLogic)):
        logic = cls()
        logic.SetMRMLScene(scene)
        logics[name] = logic
    slicer.modules = types.SimpleNamespace(**{name: types.SimpleNamespace(logic=(lambda l=logic: l))
                                             for name, logic in logics.items()})
    slicer._harness_logics = logics  # keep them alive with the scene


def install():
    """Set up the headless application and return the imported ``MedSAMSlicer`` module file."""
    if "MedSAMSlicer" in sys.modules:
        return sys.modules["MedSAMSlicer"]
    stand_in = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(stand_in, cls.__name__, cls)
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = parameterNodeWrapper
    sys.modules[stand_in.__name__] = slicer.ScriptedLoadableModule = stand_in
    sys.modules[wrapper.__name__] = slicer.parameterNodeWrapper = wrapper
    sys.modules.setdefault("qt", _fake_qt())
    slicer.util.loadUI = _load_ui
    slicer.util.childWidgetVariables = lambda widget: types.SimpleNamespace(**widget.children)
    slicer.app = FakeApplication()
    _setup_scene()
    spec = importlib.util.spec_from_file_location("MedSAMSlicer", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["MedSAMSlicer"] = module
    spec.loader.exec_module(module)
    return module
