"""The Qt Designer file is well-formed and holds every widget the module code looks up."""

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "MedSAMSlicer"
UI = ElementTree.parse(ROOT / "Resources" / "UI" / "MedSAMSlicer.ui").getroot()
WIDGETS = {w.get("name"): w.get("class") for w in UI.iter("widget")}


def test_root_is_a_qmrml_widget_named_after_the_module():
    root = UI.find("widget")
    assert (root.get("class"), root.get("name")) == ("qMRMLWidget", "MedSAMSlicer")


def test_every_name_the_module_looks_up_exists():
    used = set(re.findall(r"self\.ui\.(\w+)", (ROOT / "MedSAMSlicer.py").read_text()))
    assert used and not used - set(WIDGETS)


def test_every_button_the_state_rules_drive_exists():
    from MedSAMSlicerLib.module_state import WidgetFacts, enabled_actions

    assert not set(enabled_actions(WidgetFacts())) - set(WIDGETS)


def test_custom_widgets_are_declared_and_mrml_widgets_get_the_scene():
    standard = {"QLabel", "QPushButton", "QComboBox", "QDoubleSpinBox", "QSpinBox", "QTableWidget", "QProgressBar"}
    declared = {c.findtext("class") for c in UI.iter("customwidget")}
    assert not set(WIDGETS.values()) - standard - declared
    connected = {c.findtext("receiver") for c in UI.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {name for name, cls in WIDGETS.items() if cls.startswith("qMRML") and name != "MedSAMSlicer"}
    assert mrml and mrml == connected
