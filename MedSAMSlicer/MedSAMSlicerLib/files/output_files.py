"""Where results may be written, and how: never onto an input, never half-written, never claimed unwritten.

Every file the engine writes goes through ``atomic_output``: a temporary file in the target's
folder (created with the mode the umask gives, as any new file), flushed to disk with fsync,
checked (not empty, and by the caller's ``verify`` where the format can be read back), and only
then renamed onto the target. A full disk, a read-only folder or a writer that fails silently
therefore leaves no file at all and raises ``OutputError`` naming the target. The ``check_*``
functions refuse, before any model work, an output that would replace an input (by resolved
path or inode, so symlinks, hard links and ``./`` tricks are caught) or a folder that cannot be
written.
"""

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

from ..errors import OutputError

PathLike = Union[str, Path]
#: prefix of the temporary files ``atomic_output`` writes beside their targets
PARTIAL_PREFIX = ".partial-"


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file or folder: the same resolved path, or the same inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_not_an_input(output: Path, inputs: Iterable[PathLike]) -> None:
    """Refuse an output file that is one of ``inputs`` or lies inside an input folder (a DICOM series)."""
    for source in map(Path, inputs):
        if source.is_dir():
            if _inside(output.parent, source):
                raise OutputError(f"output {output} would be written inside the input folder {source}; "
                                  "choose a file outside it")
        elif same_file(output, source):
            raise OutputError(f"output {output} is the input file {source}; choose another output name")


def check_writable_folder(folder: PathLike, what: str) -> Path:
    """``folder`` (which need not exist yet) can be created and written in; checked by writing a probe file."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what} {folder}: {existing} is a file, not a folder")
    probe = existing / f"{PARTIAL_PREFIX}probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        probe.unlink()
    except OSError as error:
        raise OutputError(f"{what} {folder} cannot be written ({error.strerror or error})") from None
    return folder


def check_output_folder(folder: PathLike, inputs: Iterable[PathLike] = (), what: str = "output folder") -> Path:
    """A folder to write results into: writable, and holding none of ``inputs`` (nor inside an input folder)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file; give a folder")
    check_writable_folder(folder, what)
    for source in map(Path, inputs):
        if _inside(folder, source) if source.is_dir() else same_file(folder, source.parent):
            raise OutputError(f"{what} {folder} holds the input {source}; choose a new or empty folder")
    return folder


def _inside(place: Path, folder: Path) -> bool:
    """True when ``place`` is ``folder`` or lies somewhere below it."""
    return any(same_file(step, folder) for step in (place, *place.resolve().parents))


@contextmanager
def atomic_output(path: PathLike, verify: Optional[Callable[[Path], None]] = None) -> Iterator[Path]:
    """A temporary path with ``path``'s suffixes, moved onto ``path`` only if the block completes and it is on disk.

    ``verify(temporary)`` may check the written file (e.g. read it back) and raise ``OutputError``.
    """
    path = Path(path)
    temporary = path.parent / f"{PARTIAL_PREFIX}{secrets.token_hex(6)}{''.join(path.suffixes) or '.tmp'}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask decides the mode
        yield temporary
        _flush_to_disk(temporary)
        if temporary.stat().st_size == 0:
            raise OutputError(f"cannot write {path}: nothing was written (is the disk full?)")
        if verify is not None:
            verify(temporary)
        os.replace(temporary, path)
        _flush_to_disk(path.parent)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _flush_to_disk(path: Path) -> None:
    """fsync a file or folder: a full disk or an I/O error surfaces here, not after success was reported."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
