"""Reading images and writing segmentations, always in the input's geometry and never half-written.

Images are whatever SimpleITK reads (NIfTI, NRRD, MHA, ...) or a folder holding one DICOM series.
Segmentations are written as a Slicer ``.seg.nrrd`` (one named, coloured segment per label) or as
a label image in a one-file format SimpleITK writes. Output goes to a temporary file beside the
target, is read back and compared with what was meant, and only then renamed into place
(``output_files.atomic_output``).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import ImageError, OutputError
from ..prompts.geometry import ImageGeometry, check_geometry
from .dicom_series import read_dicom_series
from .input_files import check_input_files
from .itk_bridge import itk_failure, read_itk_image, write_itk_image
from .nifti_length import check_nifti_length
from .output_files import atomic_output, check_not_an_input, check_writable_folder

PathLike = Union[str, Path]

#: Colours of the first segments, as Slicer's generic anatomy colour table starts.
SEGMENT_COLORS = [(0.5, 0.68, 0.5), (0.94, 0.84, 0.57), (0.69, 0.48, 0.4), (0.44, 0.72, 0.83),
                  (0.85, 0.4, 0.62), (0.86, 0.96, 0.08), (0.55, 0.35, 0.8), (0.26, 0.51, 0.96)]


@dataclass
class LoadedImage:
    array: np.ndarray  # [k, j, i]
    geometry: ImageGeometry
    modality: Optional[str] = None  # DICOM modality (CT, MR, ...) when known
    dicom_files: Tuple[Path, ...] = ()  # a DICOM series' files, that of slice k the k-th


def geometry_of(image: sitk.Image) -> ImageGeometry:
    return ImageGeometry(size=tuple(int(v) for v in image.GetSize()), spacing=tuple(image.GetSpacing()),
                         origin=tuple(image.GetOrigin()), direction=tuple(image.GetDirection()))


def read_image(path: PathLike) -> LoadedImage:
    """Read a scalar 2D or 3D image (a 2D image becomes one slice along K): a file, or a folder holding one DICOM
    series (``dicom_series``). Refused, naming the file: a missing, unreadable, incomplete, 4D, colour or complex
    image, an absurd geometry, and one without a single finite voxel."""
    path = Path(path)
    dicom_files: Tuple[Path, ...] = ()
    if path.is_dir():
        image, modality, dicom_files = read_dicom_series(path)
    else:
        check_input_files(path)
        check_nifti_length(path)
        try:
            image = read_itk_image(path)
        except RuntimeError as error:
            raise ImageError(f"cannot read image {path}: {itk_failure(error)}") from None
        modality = (image.GetMetaData("0008|0060").strip() if image.HasMetaDataKey("0008|0060") else "") or None
    image = _scalar_volume(image, path)
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).any():
        raise ImageError(f"image {path} holds no finite voxel (all NaN or infinite)")
    return LoadedImage(array, geometry_of(image), modality, dicom_files)


def _scalar_volume(image: sitk.Image, path: Path) -> sitk.Image:
    """``image`` as a 3D volume of real scalars with a usable geometry, or ``ImageError`` naming ``path``."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"image {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "a scalar (grey) image is needed")
    if "complex" in image.GetPixelIDTypeAsString():
        raise ImageError(f"image {path} holds complex numbers; a real-valued (grey) image is needed")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise ImageError(f"image {path} is {image.GetDimension()}D; a 2D or 3D image is needed")
    check_geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), f"image {path}")
    return image


def read_label_image(path: PathLike) -> LoadedImage:
    """Read a label volume: label numbers, so integers; a float file is accepted only where every value is whole."""
    labels = read_image(path)
    if not np.issubdtype(labels.array.dtype, np.integer):
        if not np.array_equal(labels.array, np.round(labels.array)):  # NaN fails this too
            raise ImageError(f"labels {Path(path).name} hold non-integer values; a label volume holds label numbers")
        labels.array = labels.array.astype(np.int64)
    return labels


#: Label-image formats the output may take besides ``.seg.nrrd``. Two-file formats (.mhd, .nhdr) are not offered:
#: a header and its data file cannot be renamed into place as one, so they could be left half-written.
LABEL_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
#: label-image voxel types, smallest first; a label above the last one's range cannot be stored
LABEL_TYPES = (np.uint8, np.uint16, np.uint32)


def is_seg_nrrd(path: PathLike) -> bool:
    return str(path).lower().endswith(".seg.nrrd")


def is_dicom_output(path: PathLike) -> bool:
    """Whether ``path`` names a DICOM file (a SEG or SR, written by ``dicom``)."""
    return str(path).lower().endswith(".dcm")


def check_output_path(path: PathLike, inputs: Iterable[PathLike] = (), labels: Iterable[int] = (),
                      dicom_series: bool = False, what: str = "output") -> Path:
    """Refuse, before any work, an output no writer handles, one that would replace an input, or one not writable.

    ``labels`` are the label numbers to be written: a label image must be able to hold them. A DICOM file
    (``.dcm``) is written only where the image is a DICOM series (``dicom_series``).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    if str(path).lower().endswith((".mhd", ".nhdr")):
        raise OutputError(f"{what} {path}: header + data file formats (.mhd, .nhdr) cannot be written safely; "
                          "use .mha or .nrrd (one file, same content)")
    if is_dicom_output(path) and not dicom_series:
        raise OutputError(f"{what} {path}: a DICOM SEG or SR refers to the images of a DICOM series, and the image "
                          "is not one; write .seg.nrrd or a label image")
    if not (is_seg_nrrd(path) or is_dicom_output(path) or str(path).lower().endswith(LABEL_IMAGE_SUFFIXES)):
        raise OutputError(f"{what} {path} must end in .seg.nrrd, .dcm (DICOM SEG) or one of "
                          f"{', '.join(LABEL_IMAGE_SUFFIXES)}")
    check_not_an_input(path, inputs)
    if not (is_seg_nrrd(path) or is_dicom_output(path)):
        label_image_type(path, max(labels, default=0))
    check_writable_folder(path.parent, f"{what} {path}: folder")
    return path


def label_image_type(path: PathLike, top: int) -> type:
    """The smallest voxel type of ``LABEL_TYPES`` that holds label ``top``; raises if none does."""
    for dtype in LABEL_TYPES:
        if top <= np.iinfo(dtype).max:
            return dtype
    raise OutputError(f"output {path}: label {top} does not fit a label image (at most "
                      f"{np.iinfo(LABEL_TYPES[-1]).max}); use .seg.nrrd")


def write_segmentation(path: PathLike, masks: Dict[int, np.ndarray], geometry: ImageGeometry,
                       names: Optional[Dict[int, str]] = None) -> Dict[int, np.ndarray]:
    """Write per-label ``[k, j, i]`` masks to ``path`` (``.seg.nrrd`` or a label image) in ``geometry``; returns the
    masks as the file holds them, to be measured: a ``.seg.nrrd`` keeps overlapping segments, a label image
    gives each voxel one label (the higher wins), so a target may lose voxels to another or vanish."""
    names = names or {}
    if is_seg_nrrd(path):
        import slicerio
        segmentation = slicerio.create_segmentation(geometry.size, geometry.ijk_to_lps)
        for n, (label, mask) in enumerate(sorted(masks.items())):
            slicerio.add_segment(segmentation, mask.transpose(2, 1, 0), {
                "id": f"Segment_{label}", "name": names.get(label, f"label {label}"),
                "color": list(SEGMENT_COLORS[n % len(SEGMENT_COLORS)]),
            })

        def verify(written: Path) -> None:
            try:
                voxels = slicerio.read_segmentation(str(written))["voxels"]
            except Exception:  # any failure to parse means the file on disk is not what was meant
                voxels = None
            _check_read_back(path, voxels, segmentation["voxels"])

        with atomic_output(path, verify) as temporary:
            slicerio.write_segmentation(str(temporary), segmentation)
        return dict(masks)
    labels = np.zeros(geometry.shape_kji, dtype=label_image_type(path, max(masks, default=0)))
    for label, mask in sorted(masks.items()):  # where targets overlap, the higher label wins
        labels[mask] = label
    write_image(path, labels, geometry)
    return {label: labels == label for label in masks}


def write_image(path: PathLike, array: np.ndarray, geometry: ImageGeometry) -> None:
    """Write a ``[k, j, i]`` array as an image with ``geometry``, atomically, and check that it reads back the same."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)

    def verify(written: Path) -> None:
        try:
            read = read_itk_image(written)
        except RuntimeError:
            read = None
        _check_read_back(path, None if read is None else sitk.GetArrayViewFromImage(read), array)  # a view: no copy

    with atomic_output(path, verify) as temporary:
        try:
            write_itk_image(image, temporary)
        except RuntimeError as error:
            raise OutputError(f"cannot write {path}: {itk_failure(error, writing=True)}") from None


def _check_read_back(path: PathLike, written: Optional[np.ndarray], meant: np.ndarray) -> None:
    """SimpleITK reports no error for some failed writes (a full disk): what is on disk must be what was meant.

    Compared slice by slice, so that checking a large volume needs no volume-sized temporary."""
    if written is None or written.shape != meant.shape or not all(
            np.array_equal(ours, theirs, equal_nan=True) for ours, theirs in zip(written, meant)):
        raise OutputError(f"cannot write {path}: the file written does not read back as written (is the disk full?)")


#: Image files a folder of cases may hold
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff")


def paired_images(images: PathLike, labels: PathLike) -> List[Tuple[Path, Path]]:
    """(image, label) file pairs matched by file name; every image needs its label file."""
    images, labels = Path(images), Path(labels)
    for folder, what in ((images, "--images"), (labels, "--labels")):
        if not folder.is_dir():
            raise ImageError(f"{what} {folder} is not a folder")
    pairs = []
    for image in sorted(p for p in images.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)):
        label = labels / image.name
        if not label.is_file():
            raise ImageError(f"image {image.name} has no label file {label}")
        pairs.append((image, label))
    if not pairs:
        raise ImageError(f"--images {images} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return pairs
