"""What every bad-input test checks: the exit status, one line on stderr, no partial output, inputs untouched.

``Workspace`` copies a small set of inputs (a tiny phantom CT as NIfTI and as a DICOM series, its
RECIST prompts as JSON and as Slicer markups, its truth as a label volume) into a test's own
folder and takes the SHA-256 and mode of every input file; ``check`` then proves that none of
them changed and that no ``.partial-*`` file is left anywhere. ``Cli`` runs ``medsam-slicer``
in-process (fast enough for a hundred cases) and counts model loads, so a test can show that bad
input was refused before the model was loaded. ``EngineProcess`` runs it in a process of its own, for
what only a real process shows: signals, and what native libraries print on the standard error.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from dicom_writer import write_dicom_series
from MedSAMSlicerLib import cli
from MedSAMSlicerLib.files.image_io import write_image
from MedSAMSlicerLib.files.prompt_file import write_prompt_file
from MedSAMSlicerLib.files.sample_data import make_phantom, recist_prompts
from MedSAMSlicerLib.models import model_registry

ERROR_PREFIX = "medsam-slicer: error: "
ENGINE_DIR = Path(__file__).resolve().parents[1] / "MedSAMSlicer"


def make_inputs(root: Path) -> None:
    """The shared inputs, written once per test module into ``root``."""
    phantom = make_phantom(size=(48, 40, 6), spacing=(0.8, 0.9, 2.5), radii_mm=(8.0, 7.0, 6.0))
    write_image(root / "ct.nii.gz", phantom.image, phantom.geometry)
    write_image(root / "truth.nii.gz", phantom.truth.astype(np.uint8), phantom.geometry)
    prompts = recist_prompts(phantom, every=2)
    write_prompt_file(root / "prompts.json", prompts)
    markups = []
    for prompt in prompts.prompts:
        for name, line in (("long", prompt.long_axis), ("short", prompt.short_axis)):
            ijk = np.c_[[[x, y, prompt.slice] for x, y in line], np.ones(2)]
            lps = (phantom.geometry.ijk_to_lps @ ijk.T).T[:, :3]
            markups.append({"type": "Line", "name": f"{name} {prompt.slice}", "coordinateSystem": "LPS",
                            "controlPoints": [{"position": list(p)} for p in lps]})
    (root / "lesion.mrk.json").write_text(json.dumps({"markups": markups}), encoding="utf-8")
    write_dicom_series(root / "dicom", phantom.image[:4], (0.8, 0.9), 2.5)
    (root / "dicom_prompts.json").write_text(json.dumps({"prompts": [
        {"type": "box", "slice": 1, "box": [18, 10, 34, 26]}, {"type": "box", "slice": 2, "box": [18, 10, 34, 26]}]}),
        encoding="utf-8")


def fingerprint(folder: Path) -> Dict[str, Tuple[str, int]]:
    """SHA-256 and mode of every file under ``folder``, by relative path."""
    return {str(path.relative_to(folder)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
            for path in sorted(folder.rglob("*")) if path.is_file()}


class Workspace:
    """A test's copy of the inputs (``inputs``), a folder for its outputs (``out``), and their fingerprint."""

    def __init__(self, master: Path, root: Path):
        self.root, self.inputs, self.out = root, root / "inputs", root / "out"
        shutil.copytree(master, self.inputs)
        self.out.mkdir()
        self.before = fingerprint(self.inputs)

    def input(self, name: str) -> Path:
        return self.inputs / name

    def add(self, name: str, content) -> Path:
        """A further input file (text or bytes), fingerprinted like the others."""
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        self.before = fingerprint(self.inputs)
        return path

    def refresh(self) -> None:
        """Fingerprint the inputs again, after a test made further inputs in place (a folder, a pipe, a link)."""
        self.before = fingerprint(self.inputs)

    def check(self) -> None:
        """No input file changed (bytes or mode), none appeared or vanished, and no partial file is left anywhere."""
        assert fingerprint(self.inputs) == self.before, "an input file was changed, added or removed"
        partial = [str(p) for p in self.root.rglob(".partial-*")]
        assert not partial, f"partial files left: {partial}"


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    model_loads: int

    @property
    def error_lines(self) -> List[str]:
        return [line for line in self.stderr.splitlines() if ERROR_PREFIX in line]

    @property
    def warning_lines(self) -> List[str]:
        return [line.split("\r")[-1] for line in self.stderr.splitlines() if "medsam-slicer: warning: " in line]

    @property
    def message(self) -> str:
        """The one error line (asserted to be one, and to begin a line once progress bars are cleared)."""
        lines = self.error_lines
        assert len(lines) == 1, f"expected one error line, got: {self.stderr!r}"
        line = lines[0].split("\r")[-1]
        assert line.startswith(ERROR_PREFIX), f"error not on a line of its own: {lines[0]!r}"
        return line[len(ERROR_PREFIX):]


class Cli:
    """Runs ``medsam-slicer`` in-process; the embedded LiteMedSAM is the tests' already loaded one."""

    def __init__(self, capsys, monkeypatch, lite_model, cache: Path):
        self.capsys, self.cache, self.loads = capsys, cache, 0
        real_load = model_registry.load_model

        def load_model(model_id="lite-medsam", checkpoint=None, device="auto", runtime="auto", precision="fp32",
                       mode="refined"):
            self.loads += 1
            if model_id == "lite-medsam" and checkpoint is None and precision in ("fp32", "auto"):
                return lite_model  # auto is fp32 for it (its int8 gate failed: test_quantization)
            return real_load(model_id, checkpoint, device, runtime, precision, mode)

        monkeypatch.setattr(model_registry, "load_model", load_model)

    def __call__(self, *argv) -> Outcome:
        argv = [str(a) for a in argv]
        if argv[0] == "segment" and "--cache-dir" not in argv:
            argv += ["--cache-dir", str(self.cache)]  # embeddings shared across tests: reruns cost only decodes
        self.capsys.readouterr()
        self.loads = 0
        code = cli.main(argv)
        captured = self.capsys.readouterr()
        return Outcome(code, captured.out, captured.err, self.loads)


class EngineProcess:
    """``medsam-slicer`` in a process of its own, to receive real signals; ``patch`` is Python run before it (e.g. a
    writer that touches a marker file and sleeps, so that a signal can be sent while a partial file exists)."""

    def __init__(self, argv, patch: str = ""):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ENGINE_DIR), os.environ.get("PYTHONPATH", "")]))
        code = (f"{patch}\nimport sys\nfrom MedSAMSlicerLib.cli import main\n"
                f"sys.exit(main({[str(a) for a in argv]!r}))\n")
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=env)
        self.seen = b""

    def wait_for_stderr(self, text: bytes) -> None:
        while text not in self.seen:
            chunk = self.process.stderr.read1(256)
            assert chunk, f"the process ended first: {self.seen!r}"
            self.seen += chunk

    def wait_for_file(self, path: Path, timeout: float = 300) -> None:
        stop = time.monotonic() + timeout
        while not path.exists():
            assert self.process.poll() is None, f"the process ended first: {self.process.stderr.read()!r}"
            assert time.monotonic() < stop, "the process never got there"
            time.sleep(0.05)

    def signal(self, *numbers: int, gap: float = 0.1) -> None:
        for n, number in enumerate(numbers):
            if n:
                time.sleep(gap)
            if self.process.poll() is None:
                self.process.send_signal(number)

    def finish(self) -> Tuple[int, str]:
        """The exit status and the whole standard error."""
        _, rest = self.process.communicate(timeout=120)
        return self.process.returncode, (self.seen + rest).decode("utf-8", "backslashreplace")


def stalling_patch(module: str, function: str, marker: Path, when: str = "True", first: bool = False) -> str:
    """Python that makes ``module.function`` (where ``when``, an expression of its ``args``, holds) touch ``marker``
    and wait to be stopped: after doing its work, or with ``first`` before it."""
    work = "real(*args, **kwargs)"
    return (f"import time, pathlib, {module} as target\n"
            f"real = target.{function}\n"
            f"def stalled(*args, **kwargs):\n"
            f"    done = None if {first} else {work}\n"
            f"    if {when}:\n"
            f"        pathlib.Path({str(marker)!r}).touch()\n"
            f"        time.sleep(300)\n"
            f"    return {work} if {first} else done\n"
            f"target.{function} = stalled\n")


STOP_SIGNALS = {"SIGINT": (signal.SIGINT, 130, "interrupted"), "SIGTERM": (signal.SIGTERM, 143, "stopped by SIGTERM")}
