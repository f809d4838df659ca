"""The file name a cohort case's results take in the output folder.

A case leaves ``NAME.json``, ``NAME.error.txt`` and ``NAME`` with the segmentation's suffix. A file name
holds at most ``NAME_MAX`` bytes (255 on every common file system), and a case named after a long image
file (names that carry a study's description run to hundreds of characters) would fail on its own files,
and then on the file recording that failure, stopping the cohort. Such a name is shortened to fit: its
start is kept and a digest of the whole name added, so the stem stays unique and is the same on every
rerun (which finds the case done by its JSON). The case's JSON keeps the full name.
"""

import hashlib
import os
from pathlib import Path

#: the longest suffix a case's file takes (the segmentation's, at most ``.seg.nrrd``, is shorter)
LONGEST_SUFFIX = ".error.txt"
#: hexadecimal digits of the name's SHA-256 that a shortened stem ends with
DIGEST_CHARS = 12
#: NAME_MAX where the file system does not say
DEFAULT_NAME_MAX = 255


def case_stem(name: str, folder: Path) -> str:
    """``name``, or where a file named after it would not fit in ``folder``, its start + ``~`` + a digest."""
    limit = _name_max(folder) - len(LONGEST_SUFFIX)
    try:
        encoded = os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate that no file name's bytes gave: written as its escape
        name = name.encode("utf-8", "backslashreplace").decode("utf-8")
        encoded = os.fsencode(name)
    if len(encoded) <= limit:
        return name
    start = name
    while len(os.fsencode(start)) > limit - DIGEST_CHARS - 1:
        start = start[:-1]
    return f"{start}~{hashlib.sha256(encoded).hexdigest()[:DIGEST_CHARS]}"


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):  # the folder does not exist yet, or the system does not say
        return DEFAULT_NAME_MAX
