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
from .input_files import referenced_files

PathLike = Union[str, Path]
#: prefix of the temporary files ``atomic_output`` writes beside their targets
PARTIAL_PREFIX = ".partial-"


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file or folder: the same resolved path, or the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):  # never raises, not even on a symbolic link loop
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_not_an_input(output: Path, inputs: Iterable[PathLike]) -> None:
    """Refuse an output file that is one of ``inputs``, a data file one of them names, or lies inside an input
    folder (a DICOM series)."""
    for source in map(Path, inputs):
        if source.is_dir():
            if _inside(output.parent, source):
                raise OutputError(f"output {output} would be written inside the input folder {source}; "
                                  "choose a file outside it")
            continue
        header, *data = referenced_files(source)
        if same_file(output, header):
            raise OutputError(f"output {output} is the input file {source}; choose another output name")
        for part in data:
            if same_file(output, part):
                raise OutputError(f"output {output} is the data file {part} of the input {source}; "
                                  "choose another output name")


def check_writable_folder(folder: PathLike, what: str) -> Path:
    """``folder`` (which need not exist yet) can be created and written in; checked by writing a probe file."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if os.path.lexists(existing):
            raise OutputError(f"{what} {folder}: {existing} is a symbolic link that leads nowhere (broken, or a loop)")
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
        parts = [source] if source.is_dir() else referenced_files(source)
        if any(_inside(folder, part) if part.is_dir() else same_file(folder, part.parent) for part in parts):
            raise OutputError(f"{what} {folder} holds the input {source}; choose a new or empty folder")
    return folder


def _inside(place: Path, folder: Path) -> bool:
    """True when ``place`` is ``folder`` or lies somewhere below it."""
    return any(same_file(step, folder) for step in (place, *Path(os.path.realpath(place)).parents))


@contextmanager
def atomic_output(path: PathLike, verify: Optional[Callable[[Path], None]] = None) -> Iterator[Path]:
    """A temporary path with ``path``'s format suffix, moved onto ``path`` only if the block completes and it is
    on disk.

    ``verify(temporary)`` may check the written file (e.g. read it back) and raise ``OutputError``. The
    temporary file takes only the suffix that decides the format (``.nii.gz`` of ``scan.nii.nii.gz``): writers
    derive their own file names from longer ones (ITK's NIfTI writer makes ``x.nii.gz`` of ``x.nii.nii.gz``,
    and a ``.hdr`` of ``x.img.nii``). Whatever else a writer put beside it under the temporary name is deleted.
    """
    path = Path(path)
    token = f"{PARTIAL_PREFIX}{secrets.token_hex(6)}"
    temporary = path.parent / f"{token}{format_suffix(path) or '.tmp'}"
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
        for left in path.parent.glob(f"{token}*") if path.parent.is_dir() else ():
            left.unlink(missing_ok=True)


def format_suffix(path: PathLike) -> str:
    """The suffix that decides a file's format: the last one, with the one before it for a compressed file."""
    suffixes = Path(path).suffixes
    return "".join(suffixes[-2:]) if suffixes and suffixes[-1].lower() == ".gz" else "".join(suffixes[-1:])


def write_text_file(path: PathLike, text: str) -> None:
    """``text`` written atomically as UTF-8; what UTF-8 cannot hold (the lone surrogates of a file name that was
    not UTF-8) is written as a backslash escape, never an error."""
    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8", errors="backslashreplace")


def _flush_to_disk(path: Path) -> None:
    """fsync a file or folder: a full disk or an I/O error surfaces here, not after success was reported."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
