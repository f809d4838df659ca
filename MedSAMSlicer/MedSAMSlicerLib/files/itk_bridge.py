"""Every call into ITK (SimpleITK) that takes a file name goes through here: ITK cannot take every name Python
can, prints on the process's standard error, and speaks in its own terms.

- A file name that is not valid UTF-8 (a Latin-1 name from an older hospital system, which Python holds
  with lone surrogates) aborts the whole process inside ITK's C++. Such a name is handed to ITK through an
  ASCII alias: a symbolic link, in a temporary folder, to the file's folder (so that a header still finds
  its data files beside it), or to the file itself where its own name is the problem.
- ITK and the libraries below it (libpng, MetaImage, GDCM) write warnings and errors straight to the
  standard error, around the one line the command prints: they are silenced while ITK runs.
- ITK's exceptions name its classes, addresses and source lines: ``itk_failure`` says what went wrong in
  the user's words.
"""

import os
import re
import sys
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, List, Sequence, Union

import SimpleITK as sitk

PathLike = Union[str, Path]
_QUIET = threading.Lock()
#: ITK's reader classes by the names of the formats they read
_FORMATS = {"Meta": "MetaImage", "Nifti": "NIfTI", "GDCM": "DICOM", "NRRD": "NRRD", "PNG": "PNG", "TIFF": "TIFF"}


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextmanager
def itk_names(paths: Sequence[PathLike]) -> Iterator[List[str]]:
    """Names ITK can take for ``paths``: each path itself, or an ASCII alias where it is not valid UTF-8.

    The aliases (symbolic links in a temporary folder) live as long as the block."""
    names: List[str] = []
    with ExitStack() as stack:
        folder = None
        for number, path in enumerate(map(Path, paths)):
            if _encodable(str(path)):
                names.append(str(path))
                continue
            if folder is None:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medsam-itk-")))
            if _encodable(path.name):  # link the folder: a header's data files are found beside it
                (folder / f"d{number}").symlink_to(path.parent.absolute(), target_is_directory=True)
                names.append(str(folder / f"d{number}" / path.name))
            else:
                suffix = "".join(s for s in path.suffixes if _encodable(s) and s.isascii())
                (folder / f"f{number}{suffix}").symlink_to(path.absolute())
                names.append(str(folder / f"f{number}{suffix}"))
        yield names


@contextmanager
def quiet_native_output() -> Iterator[None]:
    """The process's standard error (file descriptor 2) sent to /dev/null for the block: C and C++ libraries
    write there directly, past Python's ``sys.stderr``. One block at a time (a lock), so that two threads
    cannot put each other's /dev/null back for good."""
    with _QUIET:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no standard error to silence
            yield
            return
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def itk_failure(error: Exception, writing: bool = False) -> str:
    """What an ITK exception means for the user, in one short phrase (no class names, addresses or source lines)."""
    text = str(error)
    found = re.search(r"ITK ERROR: (\w+?)ImageIO\b", text)
    io = _FORMATS.get(found.group(1), found.group(1)) if found else None
    if writing:
        return f"the {io or 'image'} writer failed"
    if "does not exist" in text:
        return "the file does not exist"
    if "Unable to determine ImageIO" in text:
        return "not an image format that can be read (NIfTI, NRRD, MetaImage, DICOM, PNG, TIFF, ...)"
    return "the file is damaged or incomplete" + (f" (the {io} reader failed)" if io else "")


def read_itk_image(path: PathLike) -> sitk.Image:
    """The image in ``path``, read by SimpleITK quietly; raises ``RuntimeError`` as SimpleITK does."""
    with itk_names([path]) as (name,), quiet_native_output():
        return sitk.ReadImage(name)


def read_itk_information(path: PathLike, image_io: str = "") -> sitk.ImageFileReader:
    """A reader that has read ``path``'s header (size, spacing, metadata) but no voxel; raises ``RuntimeError``."""
    reader = sitk.ImageFileReader()
    if image_io:
        reader.SetImageIO(image_io)
    with itk_names([path]) as (name,), quiet_native_output():
        reader.SetFileName(name)
        reader.ReadImageInformation()
    return reader


def read_itk_series(paths: Sequence[PathLike]) -> sitk.Image:
    """The slices in ``paths`` (in that order) read as one volume; raises ``RuntimeError`` as SimpleITK does."""
    reader = sitk.ImageSeriesReader()
    with itk_names(paths) as names, quiet_native_output():
        reader.SetFileNames(names)
        return reader.Execute()


def write_itk_image(image: sitk.Image, path: PathLike) -> None:
    """Write ``image`` to ``path`` (compressed where the format allows), quietly; raises ``RuntimeError``."""
    with itk_names([path]) as (name,), quiet_native_output():
        sitk.WriteImage(image, name, useCompression=True)
