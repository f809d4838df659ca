"""The third-party packages the engine needs, read from one place for both ways it is installed.

``pyproject.toml`` takes the wheel's dependencies and its ``fast`` extra from ``data/requirements.txt`` and
``data/requirements-fast.txt``; the Slicer module, which ships the engine as files rather than installing the
wheel, installs and checks the same two lists. Slicer's users are on laptop CPUs, so the module installs the fast
runtime too (OpenVINO: about 0.55 s per slice embedding instead of 1.3 s on 2 cores, and the int8 encoder).
"""

import importlib.metadata
import re
from pathlib import Path
from typing import Iterable, List

DATA = Path(__file__).parent / "data"
ENGINE_REQUIREMENTS = DATA / "requirements.txt"
FAST_REQUIREMENTS = DATA / "requirements-fast.txt"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def read_requirements(path: Path) -> List[str]:
    """The requirement lines of a requirements file (``name>=version``), comments and blank lines left out."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def slicer_requirements() -> List[str]:
    """What the Slicer module installs: the engine's requirements and the fast CPU runtime's."""
    return read_requirements(ENGINE_REQUIREMENTS) + read_requirements(FAST_REQUIREMENTS)


def distribution_name(requirement: str) -> str:
    """The distribution a requirement names (``scikit-image`` of ``scikit-image>=0.22``)."""
    return _NAME.match(requirement).group(0)


def missing_requirements(requirements: Iterable[str]) -> List[str]:
    """The requirements whose distribution is not installed (versions are pip's business: it is told the lines)."""
    missing = []
    for requirement in requirements:
        try:
            importlib.metadata.version(distribution_name(requirement))
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing
