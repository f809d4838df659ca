"""Reading the JSON files users hand in (prompt files, Slicer markups, label maps), with messages that name them.

Hand-made and exported files come with a UTF-8 byte-order mark now and then (accepted); a file
that is absurdly large or nested too deeply for the parser is refused by name, not with a
traceback.
"""

import json
from pathlib import Path
from typing import Any, Union

from ..errors import PromptError

#: larger than any prompt or markups file a person or Slicer makes (a thousand prompts take ~200 kB)
MAX_JSON_BYTES = 64 * 1024 ** 2


def read_json(path: Union[str, Path], what: str) -> Any:
    """The document in ``path``; ``what`` (e.g. "prompt file") names it in every error."""
    path = Path(path)
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
        return json.loads(text)
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
