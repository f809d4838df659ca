"""Reading the JSON files users hand in (prompt files, Slicer markups, label maps), with messages that name them.

Hand-made and exported files come with a UTF-8 byte-order mark now and then (accepted); a file
that is absurdly large, nested too deeply for the parser or holds an integer of absurd length, or a
path that is not a file (a pipe, ``/dev/zero``), is refused by name, not with a traceback or a hang.
"""

import json
from pathlib import Path
from typing import Any, Union

from ..errors import PromptError
from .input_files import check_regular_file

#: larger than any prompt or markups file a person or Slicer makes (a thousand prompts take ~200 kB)
MAX_JSON_BYTES = 64 * 1024 ** 2
#: digits an integer may have (coordinates and labels need a handful; Python refuses to convert 4300 and more)
MAX_DIGITS = 30


class NumberTooLong(ValueError):
    """A JSON integer of more than ``MAX_DIGITS`` digits, refused while parsing, before the number is made."""


def _json_integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise NumberTooLong(f"an integer of {len(text.lstrip('-'))} digits ({text[:12]}...)")
    return int(text)


def read_json(path: Union[str, Path], what: str) -> Any:
    """The document in ``path``; ``what`` (e.g. "prompt file") names it in every error."""
    path = check_regular_file(path, what, PromptError)  # a pipe or a device would be read forever
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise PromptError(f"{what} {path} is larger than {MAX_JSON_BYTES // 1024 ** 2} MB; is it a {what}?")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PromptError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error.__class__.__name__
        raise PromptError(f"{what} {path} cannot be read ({reason})") from None
    try:
        return json.loads(text, parse_int=_json_integer)
    except NumberTooLong as error:
        raise PromptError(f"{what} {path} holds {error}; no value in a {what} is that long") from None
    except json.JSONDecodeError as error:
        raise PromptError(f"{what} {path} is not valid JSON: {error.msg} at line {error.lineno} "
                          f"column {error.colno}") from None
    except RecursionError:
        raise PromptError(f"{what} {path} is nested too deeply to be a {what}") from None


def shown(value: Any) -> str:
    """``repr(value)`` cut short: an error message stays one readable line whatever the file holds."""
    try:
        text = repr(value)
    except RecursionError:
        text = "(a deeply nested value)"
    return text if len(text) <= 80 else text[:77] + "..."
