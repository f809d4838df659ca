"""One list of third-party packages: the wheel's metadata and the Slicer module's install both come from
``MedSAMSlicerLib/data/requirements*.txt``, and it holds every package the engine imports, on every path the
module's logic offers (segmenting, the fast runtime, int8, DICOM, training and evaluation reports)."""

import importlib.metadata
import re
import sys

from slicer_harness import install
from test_layout import ENGINE, imported_modules

from MedSAMSlicerLib.requirements import (ENGINE_REQUIREMENTS, FAST_REQUIREMENTS, distribution_name,
                                          missing_requirements, read_requirements, slicer_requirements)

MedSAMSlicer = install()


def canonical(name):
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(folder):
    """The top-level names of the packages imported anywhere under ``folder``, inside functions too."""
    names = {name.split(".")[0] for path in folder.rglob("*.py") for name in imported_modules(path)}
    return {name for name in names if name not in sys.stdlib_module_names and name != "MedSAMSlicerLib"}


def test_the_wheel_declares_exactly_the_requirement_files():
    """pyproject.toml reads the same files (setuptools' dynamic dependencies): its installed metadata says so."""
    declared = importlib.metadata.requires("medsam-slicer")
    assert [line for line in declared if "extra ==" not in line] == read_requirements(ENGINE_REQUIREMENTS)
    assert [line.split(";")[0].strip() for line in declared if re.search(r"extra\s*==\s*.fast.", line)] \
        == read_requirements(FAST_REQUIREMENTS)


def test_the_module_installs_every_package_the_engine_imports():
    distributions = importlib.metadata.packages_distributions()
    listed = {canonical(distribution_name(line)) for line in slicer_requirements()}
    imported = third_party_imports(ENGINE)
    assert {"torch", "openvino", "nncf", "matplotlib", "highdicom"} <= imported  # the scan sees the lazy imports
    unlisted = {name: distributions.get(name) for name in imported
                if not {canonical(d) for d in distributions.get(name, [name])} & listed}
    assert unlisted == {}, "imported by the engine but installed by nobody"


def test_the_module_installs_the_lists_as_one_pip_step():
    logic = MedSAMSlicer.MedSAMSlicerLogic()
    steps = logic.installSteps()
    logic.close()
    assert steps[-1].title == "MedSAM packages"
    assert steps[-1].command[-len(slicer_requirements()):] == slicer_requirements()
    assert {"openvino>=2024.0", "nncf>=2.10", "matplotlib>=3.7"} <= set(slicer_requirements())


def test_a_missing_package_is_seen_and_the_answer_kept_until_an_install(monkeypatch, tmp_path):
    """The check reads every package's metadata (about 20 ms): asked on each poll, it runs once, and again only
    after an install started."""
    real_version, asked = importlib.metadata.version, []

    def version(name):
        asked.append(name)
        if name == "nncf":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert missing_requirements(["numpy>=1.24", "nncf>=2.10"]) == ["nncf>=2.10"]
    logic = MedSAMSlicer.MedSAMSlicerLogic()
    monkeypatch.setattr(logic, "installSteps", lambda: [])
    asked.clear()
    assert not logic.dependenciesInstalled() and not logic.dependenciesInstalled()
    assert len(asked) == len(slicer_requirements())
    logic.installDependencies(tmp_path / "install.log").wait()
    monkeypatch.setattr(importlib.metadata, "version", real_version)
    assert logic.dependenciesInstalled()
    logic.close()


def test_pytorch_comes_through_pytorch_utils_when_slicer_has_it(monkeypatch):
    """Without PyTorch, the module asks Slicer's module manager for PyTorch Utils: with it, light-the-torch picks the
    CUDA build for the driver; without it, pip installs PyTorch's default build. Then the lists, as one step."""
    import importlib.util
    import types

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "light_the_torch") else real_find_spec(name, *a))
    logic = MedSAMSlicer.MedSAMSlicerLogic()
    assert [step.title for step in logic.installSteps()] == ["PyTorch", "MedSAM packages"]
    modules = {"PyTorchUtils": object()}
    monkeypatch.setattr(MedSAMSlicer.slicer.app, "moduleManager",
                        lambda: types.SimpleNamespace(module=modules.get))
    steps = logic.installSteps()
    assert [step.title for step in steps] == ["light-the-torch (PyTorch Utils)", "PyTorch for this GPU driver",
                                              "MedSAM packages"]
    assert steps[1].command[-4:] == ["light_the_torch", "install", "torch", "torchvision"]
    logic.close()
