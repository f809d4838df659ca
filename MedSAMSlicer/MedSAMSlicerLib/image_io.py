"""Reading images and writing segmentations, always in the input's geometry and never half-written.

Images are whatever SimpleITK reads (NIfTI, NRRD, MHA, ...) or a folder holding one DICOM series.
Segmentations are written as a Slicer ``.seg.nrrd`` (one named, coloured segment per label) or as
a label image in any format SimpleITK writes. Output goes to a temporary file beside the target
that is renamed into place only when complete.
"""

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .errors import ImageError
from .geometry import ImageGeometry

PathLike = Union[str, Path]

#: Colours of the first segments, as Slicer's generic anatomy colour table starts.
SEGMENT_COLORS = [(0.5, 0.68, 0.5), (0.94, 0.84, 0.57), (0.69, 0.48, 0.4), (0.44, 0.72, 0.83),
                  (0.85, 0.4, 0.62), (0.86, 0.96, 0.08), (0.55, 0.35, 0.8), (0.26, 0.51, 0.96)]


@dataclass
class LoadedImage:
    array: np.ndarray  # [k, j, i]
    geometry: ImageGeometry
    modality: Optional[str] = None  # DICOM modality (CT, MR, ...) when known


def geometry_of(image: sitk.Image) -> ImageGeometry:
    return ImageGeometry(size=tuple(int(v) for v in image.GetSize()), spacing=tuple(image.GetSpacing()),
                         origin=tuple(image.GetOrigin()), direction=tuple(image.GetDirection()))


def read_image(path: PathLike) -> LoadedImage:
    """Read a scalar 2D or 3D image (a 2D image becomes one slice along K)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image {path} does not exist")
    modality = None
    try:
        if path.is_dir():
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise ImageError(f"folder {path} holds no DICOM series")
            if len(series) > 1:
                raise ImageError(f"folder {path} holds {len(series)} DICOM series; give a folder with one")
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
            reader.MetaDataDictionaryArrayUpdateOn()
            image = reader.Execute()
            if reader.HasMetaDataKey(0, "0008|0060"):
                modality = reader.GetMetaData(0, "0008|0060").strip() or None
        else:
            image = sitk.ReadImage(str(path))
            if image.HasMetaDataKey("0008|0060"):
                modality = image.GetMetaData("0008|0060").strip() or None
    except RuntimeError as error:
        message = str(error).strip().splitlines()
        raise ImageError(f"cannot read image {path}: {message[-1] if message else 'unknown format'}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"image {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar (grey) image is needed")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise ImageError(f"image {path} is {image.GetDimension()}D; a 2D or 3D image is needed")
    return LoadedImage(sitk.GetArrayFromImage(image), geometry_of(image), modality)


@contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """A temporary path with ``path``'s suffixes, moved onto ``path`` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=suffix)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


#: Label-image formats the output may take besides ``.seg.nrrd``
LABEL_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_seg_nrrd(path: PathLike) -> bool:
    return str(path).lower().endswith(".seg.nrrd")


def check_output_path(path: PathLike) -> Path:
    """Reject an output name no writer handles, before any work is done."""
    path = Path(path)
    if not (is_seg_nrrd(path) or str(path).lower().endswith(LABEL_IMAGE_SUFFIXES)):
        raise ImageError(f"output {path} must end in .seg.nrrd or one of {', '.join(LABEL_IMAGE_SUFFIXES)}")
    if path.is_dir():
        raise ImageError(f"output {path} is a folder; give a file name")
    return path


def write_segmentation(path: PathLike, masks: Dict[int, np.ndarray], geometry: ImageGeometry,
                       names: Optional[Dict[int, str]] = None) -> None:
    """Write per-label ``[k, j, i]`` masks to ``path`` (``.seg.nrrd`` or a label image) in ``geometry``."""
    names = names or {}
    with atomic_output(path) as temporary:
        if is_seg_nrrd(path):
            import slicerio
            segmentation = slicerio.create_segmentation(geometry.size, geometry.ijk_to_lps)
            for n, (label, mask) in enumerate(sorted(masks.items())):
                slicerio.add_segment(segmentation, mask.transpose(2, 1, 0), {
                    "id": f"Segment_{label}", "name": names.get(label, f"label {label}"),
                    "color": list(SEGMENT_COLORS[n % len(SEGMENT_COLORS)]),
                })
            slicerio.write_segmentation(str(temporary), segmentation)
        else:
            labels = np.zeros(geometry.shape_kji, dtype=np.uint16 if max(masks, default=0) > 255 else np.uint8)
            for label, mask in sorted(masks.items()):  # where targets overlap, the higher label wins
                labels[mask] = label
            _write_array(temporary, labels, geometry)


def write_image(path: PathLike, array: np.ndarray, geometry: ImageGeometry) -> None:
    """Write a ``[k, j, i]`` array as an image with ``geometry``, atomically."""
    with atomic_output(path) as temporary:
        _write_array(temporary, array, geometry)


def _write_array(path: Path, array: np.ndarray, geometry: ImageGeometry) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(path), useCompression=True)


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
