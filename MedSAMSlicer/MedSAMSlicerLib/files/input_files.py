"""Every file an input consists of, and the check that each can be read to its end.

An image may be more than one file: a MetaImage (``.mhd``, or an ``.mha`` that does not hold its data) or
NRRD header (``.nhdr``, or a detached ``.nrrd``) names the data file(s) holding its voxels, one name, a
``LIST`` of them or a numbered pattern; an Analyze / NIfTI pair is a ``.hdr`` beside an ``.img``. An output
written onto any of them would destroy the input as surely as one written onto the header, so every
comparison of an output with the inputs goes through ``referenced_files``.

A named pipe (FIFO) or a device (``/dev/zero``) given as an input would be read forever, so each input
file must be a regular file (``check_regular_file``) before anything opens it.
"""

import os
import re
import stat
from pathlib import Path
from typing import List, Type, Union

from ..errors import ImageError, MedSAMError

PathLike = Union[str, Path]
#: bytes of a header read to find its data files (headers are text of a few kB; a LIST of slices is longer)
HEADER_BYTES, HEADER_BLOCK = 1 << 20, 1 << 16
#: files a numbered pattern may name
MAX_PATTERN_FILES = 100_000
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_regular_file(path: PathLike, what: str, error: Type[MedSAMError] = ImageError) -> Path:
    """``path`` as a ``Path`` if it is a regular file (links followed); else ``error`` naming it and what it is."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as failure:
        raise error(f"{what} {path} cannot be read ({failure.strerror or failure})") from None
    for test, kind in _KINDS:
        if test(mode):
            raise error(f"{what} {path} cannot be read: it is {kind}, not a file")
    return path


def check_input_files(path: PathLike, what: str = "image") -> None:
    """``path`` and every data file its header names exist and are regular files."""
    path = check_regular_file(path, what)
    for data in referenced_files(path)[1:]:
        if not os.path.lexists(data):
            raise ImageError(f"{what} {path} names the data file {data}, which does not exist")
        check_regular_file(data, f"{what} {path}: data file")


def referenced_files(path: PathLike) -> List[Path]:
    """``path`` followed by the data files its header names (which need not exist); a folder is itself only."""
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        return [path]
    if name.endswith((".nhdr", ".nrrd")):
        found = _data_field(_header_text(path).split("\n\n", 1)[0], r"^data ?file:\s*(.*)$")
    elif name.endswith((".mhd", ".mha")):
        found = _data_field(_header_text(path), r"^ElementDataFile\s*=\s*(.*)$")
    else:
        found = _analyze_partner(path)
    return [path] + [data if data.is_absolute() else path.parent / data for data in found]


def _header_text(path: Path) -> str:
    """The text at the start of ``path``: read block by block up to the first binary byte (the voxels of a file
    that holds them) or ``HEADER_BYTES``, so that a large image costs one block."""
    head = b""
    with open(path, "rb") as stream:
        while len(head) < HEADER_BYTES and b"\0" not in head:
            block = stream.read(HEADER_BLOCK)
            if not block:
                break
            head += block
    return head.split(b"\0", 1)[0].replace(b"\r\n", b"\n").decode("latin-1")


def _data_field(text: str, pattern: str) -> List[Path]:
    """The files a header's data file field names: one, a ``LIST`` (the lines after it) or a numbered pattern."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        found = re.match(pattern, line.strip(), re.IGNORECASE)
        if not found:
            continue
        value = found.group(1).strip()
        words = value.split()
        if not words or words[0].upper() == "LOCAL":
            return []
        if words[0].upper() == "LIST":
            return [Path(entry.strip()) for entry in lines[number + 1:] if entry.strip()]
        if "%" in words[0] and len(words) >= 4:
            return _numbered(words[0], words[1:4]) or [Path(value)]
        return [Path(value)]
    return []


def _numbered(pattern: str, bounds: List[str]) -> List[Path]:
    """``slice%03d.raw 1 10 1`` as the files it names; empty if the bounds are not a usable range."""
    try:
        first, last, step = (int(word) for word in bounds)
        indices = range(first, last + (1 if step > 0 else -1), step) if step else range(0)
        if len(indices) > MAX_PATTERN_FILES:
            return []
        return [Path(pattern % index) for index in indices]
    except (ValueError, TypeError, OverflowError):
        return []


def _analyze_partner(path: Path) -> List[Path]:
    """The ``.img`` of an Analyze / NIfTI-pair ``.hdr``, or the ``.hdr`` of an ``.img``."""
    for ours, theirs in ((".hdr", ".img"), (".img", ".hdr"), (".hdr.gz", ".img.gz"), (".img.gz", ".hdr.gz")):
        if path.name.lower().endswith(ours):
            return [path.with_name(path.name[:-len(ours)] + theirs)]
    return []
