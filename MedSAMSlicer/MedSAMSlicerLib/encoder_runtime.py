"""The image encoder run by an optimised CPU inference runtime: the same network and weights, about twice as fast.

On a CPU the image encoder is nearly the whole cost of a slice. Exported once to ONNX (kept in a
cache folder, keyed by the weights), it runs under OpenVINO or ONNX Runtime, both optional
extras (``pip install medsam-slicer[fast]``). Measured on two AVX2 cores: LiteMedSAM 1.26 s per
slice in PyTorch, 0.59 s in ONNX Runtime, 0.53 s in OpenVINO; MedSAM ViT-B 12.6 s, 6.8 s and 6.3 s.
Embeddings agree with PyTorch's to about 1e-5 (OpenVINO is held to fp32: it would otherwise use
bf16 where the CPU has it), so the masks are the same; the tests and the benchmark check that.
Without a runtime, or when the export fails, PyTorch runs the encoder.
"""

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch
from torch import nn

#: ``auto`` takes the first installed of OpenVINO and ONNX Runtime, else PyTorch
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
_MODULES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}


def installed_runtimes() -> List[str]:
    """The optimised runtimes importable here, in order of preference (the ONNX export also needs onnxscript)."""
    if importlib.util.find_spec("onnxscript") is None:
        return []
    return [name for name, module in _MODULES.items() if importlib.util.find_spec(module) is not None]


def cache_folder() -> Path:
    """Where exported encoders are kept: ``$MEDSAM_SLICER_CACHE``, else ``~/.cache/medsam-slicer``."""
    return Path(os.environ.get("MEDSAM_SLICER_CACHE") or Path.home() / ".cache" / "medsam-slicer")


def export_onnx(encoder: nn.Module, input_size: int, path: Path) -> Path:
    """Export ``encoder`` (batch 1, fp32) to ``path`` once; a complete file is reused."""
    from .image_io import atomic_output

    if path.is_file():
        return path
    example = torch.zeros(1, 3, input_size, input_size)
    with atomic_output(path) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(encoder.cpu().eval(), (example,), str(temporary), input_names=["image"],
                              output_names=["embedding"], dynamo=True, external_data=False, verbose=False)
    return path


class RuntimeEncoder:
    """Calls an exported encoder one slice at a time; returns embeddings ``(B, 256, 64, 64)`` float32 on the CPU."""

    def __init__(self, name: str, run_one: Callable[[np.ndarray], np.ndarray]):
        self.name = name
        self._run_one = run_one

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return torch.from_numpy(np.concatenate([self._run_one(batch[n:n + 1]) for n in range(len(batch))]))


def _openvino(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                               "PERFORMANCE_HINT": "LATENCY"})
    return lambda image: np.asarray(compiled(image)[0])


def _onnxruntime(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda image: session.run(None, {"image": image})[0]


def runtime_encoder(encoder: nn.Module, input_size: int, weights_id: str, choice: str = "auto",
                    folder: Optional[Path] = None) -> Optional[RuntimeEncoder]:
    """The encoder under ``choice`` (or the best installed runtime for ``auto``); None means PyTorch runs it."""
    from .errors import SettingsError

    if choice not in RUNTIMES:
        raise SettingsError(f"runtime {choice!r} is not one of {', '.join(RUNTIMES)}")
    installed = installed_runtimes()
    if choice == "torch" or (choice == "auto" and not installed):
        return None
    if choice != "auto" and choice not in installed:
        raise SettingsError(f"runtime {choice} is not installed; pip install medsam-slicer[fast] (or choose torch)")
    name = installed[0] if choice == "auto" else choice
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in weights_id)
    path = (folder or cache_folder()) / "onnx" / f"{safe_id}-{input_size}-torch{torch.__version__.split('+')[0]}.onnx"
    try:
        export_onnx(encoder, input_size, path)
        return RuntimeEncoder(name, {"openvino": _openvino, "onnxruntime": _onnxruntime}[name](path))
    except Exception as error:  # an export or runtime failure must never stop segmentation: PyTorch still works
        warnings.warn(f"image encoder under {name} failed ({error.__class__.__name__}: {str(error)[:200]}); "
                      "running it in PyTorch", RuntimeWarning)
        return None
