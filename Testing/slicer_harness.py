"""A headless Slicer for tests: the real MRML scene and logics from ``slicer-core``, stand-ins for the Qt parts.

``slicer-core`` (PyPI) has the real scene, volume, markups and segmentation nodes and logics, and
``slicer.util``; it has no Qt, so ``slicer.ScriptedLoadableModule`` and ``slicer.parameterNodeWrapper``
(which build on Qt) are replaced by minimal stand-ins that keep their interfaces, and Qt widgets by
``FakeWidget`` objects built from the module's .ui file, so the widget's own code runs. The wrapper's
``connectGui`` binds widgets by their ``SlicerParameterName`` as Slicer's GUI connectors do (same
widget classes, same change signals, combo boxes filled from the ``Choice`` annotation). ``install()``
sets up ``slicer.mrmlScene``, ``slicer.modules`` and the Colors, Volumes, Segmentations and
Markups logics, as the application does at start-up, then imports the module file unchanged.
"""

import importlib.util
import logging
import sys
import types
import typing
import unittest
import weakref
from pathlib import Path

import vtk

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

    def __init__(self, name, className="QWidget", properties=None):
        self.name, self.className, self._properties = name, className, dict(properties or {})
        self.enabled, self.visible, self.checked = True, True, False
        self.text, self.value, self.maximum, self.currentText, self.currentPath = "", 0, 100, "", ""
        self.items, self.rows, self.slots = [], {}, {}
        self._node, self._segment, self._rowCount, self._currentRow = None, "", 0, -1

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def disconnect(self, signal, slot):
        self.slots.get(signal, []).remove(slot)

    def property(self, name):
        """A dynamic property from the .ui (e.g. ``SlicerParameterName``), or None."""
        return self._properties.get(name)

    def clear(self):
        self.items, self.currentText = [], ""

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


class _Shortcut:
    """An application shortcut: its keys, whether it is enabled, and its activated() slots (a test presses it)."""

    def __init__(self, keys, parent=None):
        self.keys, self.enabled, self.parent, self.slots = keys, True, parent, []

    def connect(self, signal, slot):
        self.slots.append(slot)

    def setParent(self, parent):
        self.parent = parent

    def press(self):
        if self.enabled:
            for slot in self.slots:
                slot()


def _fake_qt():
    qt = types.ModuleType("qt")
    qt.QTimer, qt.QTableWidgetItem, qt.QShortcut, qt.QKeySequence = _Timer, _TableItem, _Shortcut, str
    qt.Qt = types.SimpleNamespace(UserRole=32, WaitCursor=3)
    qt.QApplication = types.SimpleNamespace(setOverrideCursor=lambda cursor: None, restoreOverrideCursor=lambda: None)
    return qt


def _load_ui(path):
    """Every named widget of the .ui file, as ``FakeWidget`` children of a fake root (class, dynamic properties)."""
    import xml.etree.ElementTree as ElementTree
    root = FakeWidget("MedSAMSlicer")
    root.children = {}
    for widget in ElementTree.parse(path).iter("widget"):
        dynamic = {p.get("name"): p.find("string").text for p in widget.findall("property")
                   if p.get("stdset") == "0" and p.find("string") is not None}
        root.children[widget.get("name")] = FakeWidget(widget.get("name"), widget.get("class"), dynamic)
    return root


class FakeApplication:
    """``slicer.app`` with one slice view (Red) whose slice node a test controls."""

    def __init__(self, sliceNode=None):
        self.sliceNode = sliceNode

    def processEvents(self):
        pass

    def topLevelWidgets(self):
        return []  # no main window: slicer.util.mainWindow() is None, as in a test without one

    def applicationLogic(self):
        scene = slicer.mrmlScene
        return types.SimpleNamespace(GetInteractionNode=lambda: scene.GetFirstNodeByClass("vtkMRMLInteractionNode"),
                                     GetSelectionNode=lambda: scene.GetFirstNodeByClass("vtkMRMLSelectionNode"))

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


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


class _Connector:
    """One widget bound to one parameter, as Slicer's GUI connector for that widget class and value type."""

    SIGNALS = {"QCheckBox": "stateChanged(int)", "QSpinBox": "valueChanged(int)", "QDoubleSpinBox": "valueChanged(double)",
               "QComboBox": "currentIndexChanged(int)", "qMRMLNodeComboBox": "currentNodeChanged(vtkMRMLNode*)",
               "QLineEdit": "textChanged(QString)"}

    def __init__(self, widget, kind, annotations):
        if widget.className not in self.SIGNALS:
            raise RuntimeError(f"Unable to create GUI connector from datatype '{kind}' to widget type '{widget.className}'")
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
        return {"QCheckBox": lambda: widget.checked, "QComboBox": lambda: self.choices[widget.items.index(widget.currentText)],
                "qMRMLNodeComboBox": widget.currentNode, "QLineEdit": lambda: widget.text}.get(
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
                            lambda self, node: self.parameterNode.SetNodeReferenceID(name, node.GetID() if node else None))

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


def _setup_scene():
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    selection = slicer.vtkMRMLSelectionNode()
    selection.SetSingletonTag("Singleton")
    scene.AddNode(selection)
    interaction = slicer.vtkMRMLInteractionNode()
    interaction.SetSingletonTag("Singleton")
    scene.AddNode(interaction)
    scene.AddNode(slicer.vtkMRMLCrosshairNode())  # the "default" crosshair the slice logic adds
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
    wrapper.parameterNodeWrapper, wrapper.Choice, wrapper.WithinRange = parameterNodeWrapper, Choice, WithinRange
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
