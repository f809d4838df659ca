"""A CT-like phantom with a known lesion, and RECIST markers drawn on it, for demos, tests and benchmarks.

The volume is soft tissue (about 40 HU) with noise inside an elliptic body surrounded by air, and
an enhancing ellipsoidal lesion (about 140 HU). Spacing is anisotropic and the direction is an
LPS flip, as in many clinical files, so geometry mistakes show. Every answer is known: the
lesion mask is the truth, and the RECIST markers are the axes of the lesion's cross-sections.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Tuple, Union

import numpy as np

from ..prompts.geometry import ImageGeometry, in_plane_axes, occupied_slices
from ..prompts.prompt_types import PromptSet, RecistPrompt


@dataclass
class Phantom:
    image: np.ndarray  # [k, j, i] int16, HU
    truth: np.ndarray  # [k, j, i] bool, the lesion
    geometry: ImageGeometry
    centre: Tuple[float, float, float]  # lesion centre, voxels (i, j, k)
    radii: Tuple[float, float, float]  # lesion semi-axes, voxels (i, j, k)


def make_phantom(size: Tuple[int, int, int] = (128, 112, 40), spacing=(0.8, 0.9, 2.5),
                 radii_mm=(22.0, 15.0, 40.0), seed: int = 0) -> Phantom:
    """A phantom of ``size`` voxels (i, j, k) with the lesion centred slightly off the middle."""
    rng = np.random.default_rng(seed)
    ni, nj, nk = size
    j, i = np.ogrid[:nj, :ni]
    body = ((i - ni / 2) / (0.45 * ni)) ** 2 + ((j - nj / 2) / (0.42 * nj)) ** 2 <= 1
    centre = (ni * 0.55, nj * 0.45, (nk - 1) / 2)
    radii = tuple(r / s for r, s in zip(radii_mm, spacing))
    in_plane = ((i - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2
    truth = np.zeros((nk, nj, ni), dtype=bool)
    image = np.zeros((nk, nj, ni), dtype=np.int16)
    for k in range(nk):  # slice by slice: a 512x512x300 phantom stays within a few hundred MB
        truth[k] = in_plane + ((k - centre[2]) / radii[2]) ** 2 <= 1
        values = np.where(body, 40.0, -1000.0) + np.where(truth[k], 100.0, 0.0)
        image[k] = np.round(values + rng.normal(0, 12, (nj, ni)) * body)
    geometry = ImageGeometry(size=tuple(size), spacing=tuple(spacing), origin=(60.0, 45.0, -50.0),
                             direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    return Phantom(image, truth, geometry, centre, radii)


def recist_prompts(phantom: Phantom, every: int = 5, axis: int = 2, label: int = 1) -> PromptSet:
    """RECIST markers (the axes of the lesion's cross-section) on every ``every``-th lesion slice along ``axis``."""
    x_axis, y_axis = in_plane_axes(axis)
    centre, radii = phantom.centre, phantom.radii
    occupied = occupied_slices(phantom.truth, axis).tolist()
    keys = occupied[::every]
    if keys[-1] != occupied[-1]:
        keys.append(occupied[-1])
    prompts = []
    for index in keys:
        scale = np.sqrt(max(0.0, 1 - ((index - centre[axis]) / radii[axis]) ** 2))
        a, b = radii[x_axis] * scale, radii[y_axis] * scale
        cx, cy = centre[x_axis], centre[y_axis]
        horizontal = ((cx - a, cy), (cx + a, cy))
        vertical = ((cx, cy - b), (cx, cy + b))
        long_axis, short_axis = (horizontal, vertical) if a >= b else (vertical, horizontal)
        prompts.append(RecistPrompt(index, long_axis, short_axis, label, f"phantom RECIST on slice {index}"))
    return PromptSet(prompts, axis=axis)


def write_sample(directory: Union[str, Path], every: int = 5) -> Tuple[Path, Path, Path]:
    """Write ``phantom.nrrd``, ``truth.nrrd`` and ``prompts.json`` into ``directory``; returns their paths."""
    from .image_io import write_image
    from .prompt_file import write_prompt_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom()
    paths = directory / "phantom.nrrd", directory / "truth.nrrd", directory / "prompts.json"
    write_image(paths[0], phantom.image, phantom.geometry)
    write_image(paths[1], phantom.truth.astype(np.uint8), phantom.geometry)
    write_prompt_file(paths[2], recist_prompts(phantom, every))
    return paths
