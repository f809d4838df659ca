"""The JSON prompt file (DESIGN.md section 3): read with messages that name the problem, and write.

    {"axis": 2, "prompts": [
        {"type": "box", "slice": 40, "box": [x0, y0, x1, y1], "label": 1},
        {"type": "recist", "slice": 44, "long_axis": [[x, y], [x, y]], "short_axis": [[x, y], [x, y]], "label": 1}]}
"""

import json
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import PromptError
from ..prompts.prompt_types import BoxPrompt, Prompt, PromptSet, RecistPrompt, check_prompt_count
from .json_file import read_json, shown
from .numbers import coordinate, integer, label_number
from .output_files import atomic_output

PathLike = Union[str, Path]


def _points(value: Any, what: str):
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise PromptError(f"{what} must be two points [[x, y], [x, y]], got {shown(value)}")
    return tuple((coordinate(p[0], what), coordinate(p[1], what)) for p in value)


def parse_prompt(entry: Any, name: str) -> Prompt:
    if not isinstance(entry, dict):
        raise PromptError(f"{name} must be an object, got {shown(entry)}")
    kind = entry.get("type")
    slice_index = integer(entry.get("slice"), f"{name}: 'slice'")
    label = label_number(entry.get("label", 1), f"{name}: 'label'")
    name = f"{name} ({str(kind)[:20]} on slice {slice_index})"
    if kind == "box":
        box = entry.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise PromptError(f"{name}: 'box' must be [x0, y0, x1, y1], got {shown(box)}")
        return BoxPrompt(slice_index, tuple(coordinate(v, f"{name}: 'box'") for v in box), label, name)
    if kind == "recist":
        if "long_axis" not in entry:
            raise PromptError(f"{name}: 'long_axis' is required")
        long_axis = _points(entry["long_axis"], f"{name}: 'long_axis'")
        short_axis = entry.get("short_axis")
        if short_axis is not None:
            short_axis = _points(short_axis, f"{name}: 'short_axis'")
        return RecistPrompt(slice_index, long_axis, short_axis, label, name)
    raise PromptError(f"{name}: 'type' must be 'box' or 'recist', got {shown(kind)}")


def parse_prompt_document(document: Any, source: str = "prompt file", axis: Optional[int] = None) -> PromptSet:
    """Parse a prompt document; ``axis``, when given, must agree with the document's own ``axis`` (if any)."""
    if not isinstance(document, dict):
        raise PromptError(f"{source}: expected a JSON object with a 'prompts' list")
    entries = document.get("prompts")
    if not isinstance(entries, list) or not entries:
        raise PromptError(f"{source}: 'prompts' must be a non-empty list")
    check_prompt_count(len(entries), source)  # before parsing them: a huge list is refused at once
    own_axis = document.get("axis", 2 if axis is None else axis)
    if isinstance(own_axis, bool) or own_axis not in (0, 1, 2):
        raise PromptError(f"{source}: 'axis' must be 0, 1 or 2, got {shown(own_axis)}")
    if axis is not None and own_axis != axis:
        raise PromptError(f"{source}: its 'axis' is {own_axis} but axis {axis} was asked for")
    axis = own_axis
    return PromptSet([parse_prompt(entry, f"{source}: prompt {n + 1}") for n, entry in enumerate(entries)], axis)


def read_prompt_file(path: PathLike, axis: Optional[int] = None) -> PromptSet:
    return parse_prompt_document(read_json(path, "prompt file"), f"prompt file {Path(path).name}", axis)


def prompt_document(prompts: PromptSet) -> dict:
    """The JSON-ready form of ``prompts``, which ``parse_prompt_document`` reads back unchanged."""
    entries = []
    for prompt in prompts.prompts:
        if isinstance(prompt, BoxPrompt):
            entries.append({"type": "box", "slice": prompt.slice, "box": [float(v) for v in prompt.box],
                            "label": prompt.label})
        else:
            entry = {"type": "recist", "slice": prompt.slice,
                     "long_axis": [list(map(float, p)) for p in prompt.long_axis],
                     "label": prompt.label}
            if prompt.short_axis is not None:
                entry["short_axis"] = [list(map(float, p)) for p in prompt.short_axis]
            entries.append(entry)
    return {"axis": prompts.axis, "prompts": entries}


def write_prompt_file(path: PathLike, prompts: PromptSet) -> None:
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(prompt_document(prompts), indent=2) + "\n", encoding="utf-8")
