"""The Qt Designer file is well-formed and holds every widget the module code looks up (no Qt needed)."""

import re
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "MedSAMSlicer"
UI_PATH = MODULE_DIR / "Resources" / "UI" / "MedSAMSlicer.ui"
MODULE_PATH = MODULE_DIR / "MedSAMSlicer.py"

SCENE_SIGNAL = "mrmlSceneChanged(vtkMRMLScene*)"
SCENE_SLOT = "setMRMLScene(vtkMRMLScene*)"

# Object name -> widget class, as the module code and the tests expect them.
REQUIRED = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "inputVolumeSelector": "qMRMLNodeComboBox",
    "segmentSelector": "qMRMLSegmentSelectorWidget",
    "advancedCollapsibleButton": "ctkCollapsibleButton",
    "modelComboBox": "QComboBox",
    "checkpointLabel": "QLabel",
    "checkpointPathLineEdit": "ctkPathLineEdit",
    "deviceComboBox": "QComboBox",
    "intensityComboBox": "QComboBox",
    "windowLabel": "QLabel",
    "windowWidthSpinBox": "QDoubleSpinBox",
    "windowLevelSpinBox": "QDoubleSpinBox",
    "promptsCollapsibleButton": "ctkCollapsibleButton",
    "placeBoxButton": "QPushButton",
    "placeRecistButton": "QPushButton",
    "promptTable": "QTableWidget",
    "deletePromptButton": "QPushButton",
    "segmentCollapsibleButton": "ctkCollapsibleButton",
    "propagateSpinBox": "QSpinBox",
    "modeComboBox": "QComboBox",
    "precisionComboBox": "QComboBox",
    "segmentSliceButton": "QPushButton",
    "segmentVolumeButton": "QPushButton",
    "cancelButton": "QPushButton",
    "undoButton": "QPushButton",
    "redoButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "resultLabel": "QLabel",
    "cacheStatusLabel": "QLabel",
    "editCollapsibleButton": "ctkCollapsibleButton",
    "segmentEditorWidget": "qMRMLSegmentEditorWidget",
    "exportCollapsibleButton": "ctkCollapsibleButton",
    "exportPromptsButton": "QPushButton",
    "exportSegmentationButton": "QPushButton",
}

REQUIRED_CUSTOM_WIDGETS = {
    "ctkCollapsibleButton", "ctkPathLineEdit", "qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget", "qMRMLWidget",
    "qMRMLSegmentEditorWidget",
}


@pytest.fixture(scope="module")
def ui():
    try:
        return ElementTree.parse(UI_PATH).getroot()
    except ElementTree.ParseError as error:
        pytest.fail(f"{UI_PATH} is not well-formed XML: {error}")


@pytest.fixture(scope="module")
def widgets(ui):
    """Object name -> class of every widget in the file, the root included."""
    return {w.get("name"): w.get("class") for w in ui.iter("widget")}


def _is_custom(widget_class):
    """Qt's own widgets are QSomething; ctk*, qMRML* and qSlicer* classes must be declared."""
    return not widget_class.startswith("Q")


def test_ui_is_well_formed_designer_xml(ui):
    assert ui.tag == "ui" and ui.get("version") == "4.0"
    assert ui.findtext("class") == "MedSAMSlicer"


def test_root_is_a_qmrml_widget_named_after_the_module(ui):
    root = ui.find("widget")
    assert (root.get("class"), root.get("name")) == ("qMRMLWidget", "MedSAMSlicer")
    assert root.find("layout").get("class") == "QVBoxLayout"


def test_object_names_are_unique(ui):
    names = Counter(w.get("name") for w in ui.iter("widget"))
    names.update(layout.get("name") for layout in ui.iter("layout"))
    assert not [name for name, count in names.items() if count > 1]


def test_every_custom_widget_is_declared_with_a_header(ui, widgets):
    declared = {c.findtext("class"): c.findtext("header") for c in ui.iter("customwidget")}
    assert not REQUIRED_CUSTOM_WIDGETS - set(declared)
    used_custom = {cls for cls in widgets.values() if _is_custom(cls)}
    assert not used_custom - set(declared), "custom widget classes used but not declared in <customwidgets>"
    assert all(header == f"{cls}.h" for cls, header in declared.items())


def test_every_mrml_widget_gets_the_scene(ui, widgets):
    root_name = ui.find("widget").get("name")
    connected = {c.findtext("receiver") for c in ui.iter("connection")
                 if (c.findtext("sender"), c.findtext("signal"), c.findtext("slot"))
                 == (root_name, SCENE_SIGNAL, SCENE_SLOT)}
    mrml = {name for name, cls in widgets.items() if cls.startswith("qMRML") and name != root_name}
    assert mrml >= {"inputVolumeSelector", "segmentSelector", "segmentEditorWidget"}
    assert not mrml - connected, "qMRML widgets without a mrmlSceneChanged -> setMRMLScene connection"
    assert not connected - set(widgets), "connections to widgets that do not exist"


def test_required_widgets_are_present_with_their_classes(widgets):
    missing = sorted(set(REQUIRED) - set(widgets))
    assert not missing, f"missing object names: {missing}"
    wrong = {name: (widgets[name], cls) for name, cls in REQUIRED.items() if widgets[name] != cls}
    assert not wrong, f"object name: (class in .ui, expected class): {wrong}"


def test_every_name_the_module_looks_up_exists(widgets):
    if not MODULE_PATH.exists():
        pytest.fail(f"{MODULE_PATH} does not exist: cannot check the self.ui.<name> look-ups against the .ui")
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PATH.read_text(encoding="utf-8")))
    assert used, f"{MODULE_PATH.name} looks up no self.ui.<name>"
    missing = sorted(used - set(widgets))
    assert not missing, f"{MODULE_PATH.name} uses self.ui names missing from {UI_PATH.name}: {missing}"


def test_every_widget_the_state_rules_drive_exists(widgets):
    from MedSAMSlicerLib.module_state import WidgetFacts, enabled_actions

    assert not set(enabled_actions(WidgetFacts())) - set(widgets)


def _property(widget, name):
    prop = widget.find(f"property[@name='{name}']")
    assert prop is not None, f"{widget.get('name')} has no {name} property"
    value = prop[0]
    if value.tag == "stringlist":
        return [s.text for s in value]
    return value.text or ""


def test_key_properties(ui):
    by_name = {w.get("name"): w for w in ui.iter("widget")}
    volume = by_name["inputVolumeSelector"]
    assert _property(volume, "nodeTypes") == ["vtkMRMLScalarVolumeNode"]
    assert (_property(volume, "noneEnabled"), _property(volume, "addEnabled"), _property(volume, "removeEnabled")) == (
        "true", "false", "false")
    assert "drive.google.com" in _property(by_name["modelComboBox"], "toolTip")
    assert "drive.google.com" in _property(by_name["checkpointPathLineEdit"], "toolTip")
    assert _property(by_name["checkpointPathLineEdit"], "nameFilters") == ["PyTorch checkpoint (*.pth *.pt)"]
    assert float(_property(by_name["windowWidthSpinBox"], "minimum")) == 1
    assert float(_property(by_name["windowWidthSpinBox"], "maximum")) == 10000
    assert float(_property(by_name["windowLevelSpinBox"], "minimum")) == -5000
    assert float(_property(by_name["windowLevelSpinBox"], "maximum")) == 5000
    assert (_property(by_name["propagateSpinBox"], "maximum"),
            _property(by_name["propagateSpinBox"], "value")) == ("100", "0")
    headers = [c.findtext("property/string") for c in by_name["promptTable"].findall("column")]
    assert headers == ["Slice", "Type", "Size (mm)"]
    assert _property(by_name["exportCollapsibleButton"], "collapsed") == "true"


def _sections(ui):
    """The panel's collapsible sections, top to bottom: (name, collapsed, names of the widgets inside)."""
    layout = ui.find("widget").find("layout")
    sections = []
    for item in layout.findall("item"):
        widget = item.find("widget")
        if widget is not None and widget.get("class") == "ctkCollapsibleButton":
            collapsed = widget.find("property[@name='collapsed']")
            sections.append((widget.get("name"), collapsed is not None and collapsed[0].text == "true",
                             {w.get("name") for w in widget.iter("widget")}))
    return sections


def test_the_main_path_comes_first_and_the_settings_wait_in_a_collapsed_section(ui):
    sections = _sections(ui)
    assert [name for name, _, _ in sections] == ["inputsCollapsibleButton", "promptsCollapsibleButton",
                                                 "segmentCollapsibleButton", "editCollapsibleButton",
                                                 "advancedCollapsibleButton", "exportCollapsibleButton"]
    shown = {name: (collapsed, inside) for name, collapsed, inside in sections}
    assert not any(shown[name][0] for name in ("inputsCollapsibleButton", "promptsCollapsibleButton",
                                               "segmentCollapsibleButton"))
    assert {"placeRecistButton", "placeBoxButton"} <= shown["promptsCollapsibleButton"][1]
    assert {"segmentVolumeButton", "resultLabel", "statusLabel"} <= shown["segmentCollapsibleButton"][1]
    settings = {"modelComboBox", "checkpointPathLineEdit", "deviceComboBox", "intensityComboBox", "windowWidthSpinBox",
                "windowLevelSpinBox", "modeComboBox", "precisionComboBox", "propagateSpinBox",
                "overwriteEditedCheckBox"}
    collapsed, inside = shown["advancedCollapsibleButton"]
    assert collapsed and settings <= inside
    before_prompts = set().union(*(inside for name, _, inside in sections[:1]))
    assert not settings & before_prompts  # nothing to set before the first prompt button


def test_each_buttons_tooltip_names_its_key(ui):
    import ast

    tree = ast.parse(MODULE_PATH.read_text())
    shortcuts = next(ast.literal_eval(node.value) for node in tree.body
                     if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SHORTCUTS")
    by_name = {w.get("name"): w for w in ui.iter("widget")}
    for name, keys in shortcuts.items():
        assert _property(by_name[name], "toolTip").endswith(f"({keys})"), name
