"""Prompts from the RECIST lines and ROI boxes a user drew in 3D Slicer, saved as ``.mrk.json``.

Slicer stores markups in world millimetres (LPS or RAS), not voxels, so each markup is mapped
through the image geometry to IJK and onto a slice along the slicing axis. Line markups become
RECIST axes (two lines on one slice are a long and short axis), ROI markups become boxes; any
other markup type is refused rather than silently ignored.
"""

from itertools import product
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from ..errors import PromptError
from ..prompts.geometry import ImageGeometry, check_axis, in_plane_axes
from ..prompts.prompt_types import BoxPrompt, Prompt, PromptSet, RecistPrompt, Segment, check_prompt_count
from .json_file import read_json, shown
from .numbers import MAX_COORDINATE

MAX_SLICE_OFFSET = 0.5  # voxels a line's endpoints may differ along the axis and still share a slice


def read_markups_prompts(path: Union[str, Path], geometry: ImageGeometry, axis: int = 2,
                         label: int = 1) -> PromptSet:
    """Read a Slicer markups file into prompts on slices along ``axis``, all with ``label``."""
    path = Path(path)
    return prompts_from_markups(_load_markups(path), geometry, axis, label, f"markups file {path.name}")


def prompts_from_markups(markups: List[dict], geometry: ImageGeometry, axis: int = 2, label: int = 1,
                         source: str = "markups") -> PromptSet:
    """Prompts from markups in the ``.mrk.json`` form (the Slicer module passes its scene's markups this way)."""
    axis = check_axis(axis)
    prompts: List[Prompt] = []
    lines: Dict[int, List[Tuple[str, np.ndarray]]] = {}
    for index, markup in enumerate(markups):
        kind = markup.get("type")
        title = markup.get("name")
        what = f"{kind} " + (repr(title) if title else f"#{index + 1}")
        name = f"{source}: {what}"
        if kind == "Line":
            slice_index, ijk = _line_ijk(markup, name, geometry, axis)
            lines.setdefault(slice_index, []).append((what, ijk))
        elif kind == "ROI":
            slice_index, box = _roi_box(markup, name, geometry, axis)
            prompts.append(BoxPrompt(slice=slice_index, box=box, label=label, name=name))
        else:
            raise PromptError(f"{name}: a {shown(kind)} markup is not a prompt; use Line (RECIST) or ROI (box) markups")
    for slice_index, group in lines.items():
        prompts.append(_recist(slice_index, group, source, geometry, axis, label))
    return PromptSet(prompts=prompts, axis=axis)


def _load_markups(path: Path) -> List[dict]:
    document = read_json(path, "markups file")
    markups = document.get("markups") if isinstance(document, dict) else None
    if not isinstance(markups, list) or not all(isinstance(m, dict) for m in markups):
        raise PromptError(f"markups file {path}: has no \"markups\" list of objects; is it a Slicer .mrk.json file?")
    check_prompt_count(len(markups), f"markups file {path.name}")
    return markups


def _vector(value, length: int, what: str, name: str) -> np.ndarray:
    try:
        vector = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        vector = np.empty(0)
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise PromptError(f"{name}: {what} must be {length} numbers, got {shown(value)}")
    return vector


def _to_ijk(points: np.ndarray, markup: dict, name: str, geometry: ImageGeometry) -> np.ndarray:
    units = markup.get("coordinateUnits", "mm")
    if (units[0] if isinstance(units, list) and units else units) != "mm":
        raise PromptError(f"{name}: coordinate units {shown(units)} are not mm")
    system = markup.get("coordinateSystem", "LPS")
    if system not in ("LPS", "RAS"):
        raise PromptError(f"{name}: coordinate system {shown(system)} is not LPS or RAS")
    with np.errstate(over="ignore", invalid="ignore"):
        ijk = geometry.lps_to_ijk(points) if system == "LPS" else geometry.ras_to_ijk(points)
    if not np.all(np.abs(ijk) <= MAX_COORDINATE):  # NaN fails too
        raise PromptError(f"{name}: lies far outside the image (more than {MAX_COORDINATE:g} voxels away)")
    return ijk


def _line_ijk(markup: dict, name: str, geometry: ImageGeometry, axis: int) -> Tuple[int, np.ndarray]:
    points = markup.get("controlPoints")
    if not isinstance(points, list) or len(points) != 2:
        count = len(points) if isinstance(points, list) else 0
        raise PromptError(f"{name}: has {count} control points; a RECIST line needs exactly 2")
    world = np.array([
        _vector(p.get("position") if isinstance(p, dict) else None, 3, f"control point {n + 1} position", name)
        for n, p in enumerate(points)])
    ijk = _to_ijk(world, markup, name, geometry)
    start, end = ijk[:, axis]
    if abs(start - end) > MAX_SLICE_OFFSET:
        raise PromptError(f"{name}: endpoints lie at slice coordinates {start:.2f} and {end:.2f} along axis {axis}; "
                          "a RECIST line must lie in one slice")
    return int(round((start + end) / 2)), ijk


def _roi_box(markup: dict, name: str, geometry: ImageGeometry,
             axis: int) -> Tuple[int, Tuple[float, float, float, float]]:
    for key in ("center", "size"):
        if key not in markup:
            raise PromptError(f"{name}: ROI has no \"{key}\"")
    center = _vector(markup["center"], 3, "center", name)
    half_size = _vector(markup["size"], 3, "size", name) / 2
    directions = _vector(markup.get("orientation", np.eye(3).ravel()), 9, "orientation", name).reshape(3, 3)
    signs = np.array(list(product((-1.0, 1.0), repeat=3)))
    with np.errstate(over="ignore", invalid="ignore"):  # an ROI the size of the universe: refused by _to_ijk
        corners = center + (signs * half_size) @ directions.T
    corners = _to_ijk(corners, markup, name, geometry)
    x_axis, y_axis = in_plane_axes(axis)
    low, high = corners.min(axis=0), corners.max(axis=0)
    slice_index = int(round(_to_ijk(center, markup, name, geometry)[0, axis]))
    return slice_index, (float(low[x_axis]), float(low[y_axis]), float(high[x_axis]), float(high[y_axis]))


def _recist(slice_index: int, group: List[Tuple[str, np.ndarray]], source: str, geometry: ImageGeometry,
            axis: int, label: int) -> RecistPrompt:
    """One RECIST prompt from the lines on a slice; the longer in-plane (in mm) is the long axis."""
    if len(group) > 2:
        names = ", ".join(what for what, _ in group)
        raise PromptError(f"{source}: {len(group)} lines ({names}) on slice {slice_index} along axis "
                          f"{axis}; a slice takes one RECIST long axis and at most one short axis")
    plane = list(in_plane_axes(axis))
    spacing = np.asarray(geometry.in_plane_spacing(axis))
    segments = sorted(((what, ijk[:, plane]) for what, ijk in group),
                      key=lambda item: np.linalg.norm((item[1][1] - item[1][0]) * spacing), reverse=True)
    (long_what, long_axis), *short = segments
    name = f"{source}: {long_what}" + (f" with short axis {short[0][0]}" if short else "")
    return RecistPrompt(slice=slice_index, long_axis=_segment(long_axis),
                        short_axis=_segment(short[0][1]) if short else None, label=label, name=name)


def _segment(points: np.ndarray) -> Segment:
    (x0, y0), (x1, y1) = points.tolist()
    return (x0, y0), (x1, y1)
