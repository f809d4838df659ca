"""The numbers users hand in (prompt coordinates, slices, labels, label-map keys), parsed in one place.

JSON allows integers of any length, and Python turns them into exact integers: one of 5000 digits stops
Python's own conversion, and one of 400 overflows a float. Every value is checked here for what it must
be (a finite number, an integer in a range, a label) with a message that names it and shows it short
(``json_file`` refuses absurdly long integers while the JSON is parsed).
"""

import math
import re
from typing import Any, Optional

from ..errors import PromptError
from .json_file import MAX_DIGITS, shown

#: the largest label: what an int64 holds, as numpy and every label-image reader do
MAX_LABEL = 2 ** 63 - 1
#: the farthest a prompt's point may lie from the image, in voxels (lengths and boxes of such points stay finite)
MAX_COORDINATE = 1e9


def finite_number(value: Any, what: str) -> float:
    """``value`` as a float: a JSON number (not a boolean) whose float is finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PromptError(f"{what} must be a finite number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise PromptError(f"{what} must be a finite number, got {shown(value)}")
    return number


def coordinate(value: Any, what: str) -> float:
    """A voxel coordinate: a finite number within ``MAX_COORDINATE`` of the image's first voxel."""
    number = finite_number(value, what)
    if abs(number) > MAX_COORDINATE:
        raise PromptError(f"{what} must be a voxel coordinate (at most {MAX_COORDINATE:g} voxels from the image), "
                          f"got {shown(value)}")
    return number


def integer(value: Any, what: str, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` as an int: a JSON integer (not a boolean), within ``[low, high]`` where given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromptError(f"{what} must be an integer, got {shown(value)}")
    if low is not None and value < low:
        raise PromptError(f"{what} must be {low} or more, got {shown(value)}")
    if high is not None and value > high:
        raise PromptError(f"{what} must be at most {high}, got {shown(value)}")
    return value


def label_number(value: Any, what: str) -> int:
    """A label: an integer from 1 to ``MAX_LABEL``, or (a label-map key) a string of those ASCII digits."""
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,%d}" % MAX_DIGITS, value):
            raise PromptError(f"{what} must be a label number (digits 0-9), got {shown(value)}")
        value = int(value)
    return integer(value, what, 1, MAX_LABEL)
