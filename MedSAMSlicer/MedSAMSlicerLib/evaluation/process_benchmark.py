"""Whole ``medsam-slicer segment`` processes, timed as a user runs them: start-up, and RECIST to volume.

An in-process timing leaves out what a user waits for first: importing, finding the weights,
compiling the networks, reading the image, normalising the volume, writing the result. Here each
figure is a fresh process, with the model's exports already cached (a first, untimed run makes
them), and its peak resident memory is the process's own high-water mark (Linux).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Tuple

import numpy as np

from ..files.image_io import read_label_image, write_image
from ..files.prompt_file import write_prompt_file
from ..files.sample_data import Phantom, recist_prompts
from ..prompts.geometry import ImageGeometry
from ..prompts.prompt_simulation import bounding_box
from ..prompts.prompt_types import BoxPrompt, PromptSet
from .metrics import dice

#: the package's parent folder: the child process imports the engine from where this one did
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
#: start-up runs, of which the median is reported (a single run is at the mercy of the machine's load)
STARTUP_RUNS = 3
#: ``python -m MedSAMSlicerLib`` that also writes its peak resident memory (KiB) to the file named first. Read from
#: /proc at exit: the operating system's rusage of a child would count the memory of the process that spawned it.
_PEAK_REPORTING_MAIN = """
import atexit, runpy, sys
peak_file = sys.argv.pop(1)

def write_peak():
    try:
        with open("/proc/self/status") as status:
            peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return
    with open(peak_file, "w") as out:
        out.write(peak)

atexit.register(write_peak)
sys.argv[0] = "medsam-slicer"
runpy.run_module("MedSAMSlicerLib", run_name="__main__")
"""


@dataclass
class ProcessRun:
    """One ``segment`` process: its wall time, its peak resident memory and its result's Dice against the truth."""

    seconds: float
    peak_resident_mib: float
    dice: float


def run_segment(image: Path, prompts: Path, output: Path, options: List[str]) -> Tuple[float, float]:
    """Run ``medsam-slicer segment`` in a fresh process; its wall seconds and peak resident MiB (NaN where the
    system does not tell it: Linux only)."""
    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak"
        command = [sys.executable, "-c", _PEAK_REPORTING_MAIN, str(peak_file), "segment", str(image),
                   "--prompts", str(prompts), "-o", str(output), "--quiet", *options]
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(_PACKAGE_PARENT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        started = time.perf_counter()
        finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
        seconds = time.perf_counter() - started
        if finished.returncode != 0:
            raise RuntimeError(f"medsam-slicer segment {' '.join(options)} failed ({finished.returncode}): "
                               f"{finished.stderr.decode(errors='replace').strip()}")
        text = peak_file.read_text(encoding="utf-8") if peak_file.is_file() else ""
    return seconds, int(text) / 1024 if text else float("nan")


def write_case(folder: Path, name: str, image: np.ndarray, geometry: ImageGeometry,
               prompts: PromptSet) -> Tuple[Path, Path]:
    """An image and its prompts as the files a user passes; their paths."""
    paths = folder / f"{name}.nrrd", folder / f"{name}.json"
    write_image(paths[0], image, geometry)
    write_prompt_file(paths[1], prompts)
    return paths


def recist_volume_run(folder: Path, phantom: Phantom, options: List[str], every: int = 5) -> ProcessRun:
    """RECIST markers every ``every`` slices to a volume, as ``segment`` does it: one fresh process, timed."""
    image, prompts = folder / "recist.nrrd", folder / "recist.json"
    if not image.is_file():
        write_case(folder, "recist", phantom.image, phantom.geometry, recist_prompts(phantom, every))
    output = folder / "recist-result.nii.gz"
    seconds, resident = run_segment(image, prompts, output, options)
    return ProcessRun(seconds, resident, dice(phantom.truth, read_label_image(output).array == 1))


def startup_seconds(folder: Path, phantom: Phantom, options: List[str], runs: int = STARTUP_RUNS) -> float:
    """Median wall seconds of a process that segments one box on one slice of an 8-slice cut of ``phantom``:
    start-up to the first slice, exports cached (the first run, which may export them, is not counted)."""
    index = int(np.flatnonzero(phantom.truth.any(axis=(1, 2))).mean().round())
    low = max(0, index - 4)
    image, truth = phantom.image[low:low + 8], phantom.truth[index]
    geometry = replace(phantom.geometry, size=(image.shape[2], image.shape[1], image.shape[0]))
    box = bounding_box(truth) + [-5.0, -5.0, 5.0, 5.0]
    paths = write_case(folder, "startup", image, geometry, PromptSet([BoxPrompt(index - low, tuple(box))]))
    output = folder / "startup-result.nii.gz"
    run_segment(*paths, output, options)
    return statistics.median(run_segment(*paths, output, options)[0] for _ in range(runs))
