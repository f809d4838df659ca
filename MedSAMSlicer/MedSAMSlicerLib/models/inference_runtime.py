"""The image encoder and the box decoder run by an optimised CPU inference runtime: same networks, about 2x faster.

On a CPU the image encoder is nearly the whole cost of a slice, and the mask decoder the whole
cost of a prompt. Exported once to ONNX (kept in a cache folder, keyed by the weights), both run
under OpenVINO or ONNX Runtime, optional extras (``pip install medsam-slicer[fast]``). Measured on
two AVX2 cores: the LiteMedSAM encoder takes 1.26 s per slice in PyTorch, 0.59 s in ONNX Runtime
and 0.53 s in OpenVINO (MedSAM ViT-B: 12.6 s, 6.8 s, 5.5 s); the box decoder 68 ms in PyTorch and
33 ms in OpenVINO. Outputs agree with PyTorch's to about 1e-5 (OpenVINO is held to fp32: it would
otherwise use bf16 where the CPU has it), so masks are the same; the tests and the benchmark
check that. Without a runtime, or when an export fails, PyTorch runs the network. With the exports
cached, nothing here imports PyTorch.
"""

import contextlib
import importlib.metadata
import importlib.util
import os
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from .slice_model import SliceModel

#: ``auto`` takes the first installed of OpenVINO and ONNX Runtime, else PyTorch
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
#: exports kept on disk, least recently used dropped first: 5 ViT-B models (384 MB each) or 45 LiteMedSAMs (45 MB)
EXPORT_BUDGET_BYTES = 2 * 1024 ** 3
#: a ``.partial-`` export this old was left by a killed export; a younger one may be another process's, still running
PARTIAL_EXPORT_MAX_AGE_S = 3600
_MODULES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}
#: what an export is made of: ONNX files, the OpenVINO model and weights of an int8 encoder, and OpenVINO's
#: compiled networks (its model cache, kept beside the exports; a missing or corrupt one is compiled again)
EXPORT_SUFFIXES = (".onnx", ".xml", ".bin", ".blob")
#: the arithmetic a network's float operations can run in (``bf16`` under OpenVINO only)
FLOATS = ("fp32", "bf16")


def installed_runtimes() -> List[str]:
    """The optimised runtimes importable here, in order of preference (the ONNX export also needs onnxscript)."""
    if importlib.util.find_spec("onnxscript") is None:
        return []
    return [name for name, module in _MODULES.items() if importlib.util.find_spec(module) is not None]


def choose_runtime(choice: str) -> Optional[str]:
    """The runtime ``choice`` names (``auto``: the best installed one), or None for PyTorch."""
    from ..errors import SettingsError

    if choice not in RUNTIMES:
        raise SettingsError(f"runtime {choice!r} is not one of {', '.join(RUNTIMES)}")
    installed = installed_runtimes()
    if choice == "torch" or (choice == "auto" and not installed):
        return None
    if choice != "auto" and choice not in installed:
        raise SettingsError(f"runtime {choice} is not installed; pip install medsam-slicer[fast] (or choose torch)")
    return installed[0] if choice == "auto" else choice


def cache_folder() -> Path:
    """Where exported networks are kept: ``$MEDSAM_SLICER_CACHE``, else ``~/.cache/medsam-slicer``."""
    return Path(os.environ.get("MEDSAM_SLICER_CACHE") or Path.home() / ".cache" / "medsam-slicer")


def export_onnx(module: Callable[[], "nn.Module"], examples: Sequence[np.ndarray], names: Sequence[str],
                path: Path) -> Path:
    """Export the network ``module()`` gives (fixed shapes, fp32, ``examples`` its inputs) to ``path`` once; a
    complete file is reused without calling ``module`` (building the PyTorch network, and importing PyTorch, are
    most of a cached run's start-up)."""
    from ..files.image_io import atomic_output

    if path.is_file():
        with contextlib.suppress(OSError):  # a read-only cache still serves its exports
            os.utime(path)  # its time is its last use, for trim_exports
        return path
    import torch

    network = module()
    inputs = tuple(torch.from_numpy(np.asarray(example, dtype=np.float32)) for example in examples)
    with atomic_output(path) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(network.cpu().eval(), inputs, str(temporary), input_names=list(names),
                              output_names=["output"], dynamo=True, external_data=False, verbose=False)
    return path


def torch_version() -> str:
    """The installed PyTorch's release (``2.14.1``), part of an export's name, read without importing PyTorch."""
    return importlib.metadata.version("torch").split("+")[0]


def trim_exports(folder: Path, budget: int, keep: Sequence[Path] = ()) -> List[Path]:
    """Delete the least recently used exports in ``folder`` until they fit ``budget`` bytes; never ``keep``.

    Each fine-tuned checkpoint has weights of its own and so exports of its own: without this the
    cache would grow by hundreds of MB with every training run. The ``.partial-`` files of exports
    killed midway are deleted too once an hour old (a younger one may be an export that another
    process is writing right now). Returns the deleted files.
    """
    deleted, stale = [], time.time() - PARTIAL_EXPORT_MAX_AGE_S
    for partial in folder.glob(".partial-*"):
        with contextlib.suppress(FileNotFoundError):  # its export may just have finished, or another trim deleted it
            if partial.stat().st_mtime < stale:
                partial.unlink()
                deleted.append(partial)
    kept = {Path(path).resolve() for path in keep}
    exports = sorted((path for path in folder.iterdir()
                      if path.suffix in EXPORT_SUFFIXES and not path.name.startswith(".")),
                     key=lambda path: path.stat().st_mtime)
    total = sum(path.stat().st_size for path in exports)
    for path in exports:
        if total <= budget:
            break
        if path.resolve() not in kept:
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted


def _precision_hint(runtime: str, floats: str) -> str:
    """OpenVINO's name for the arithmetic ``floats``; ``ValueError`` for one that ``runtime`` cannot run."""
    hints = dict(zip(FLOATS, ("f32", "bf16"))) if runtime == "openvino" else {"fp32": "f32"}
    if floats not in hints:
        raise ValueError(f"{runtime} runs networks in {' or '.join(hints)}, not {floats}")
    return hints[floats]


class CompiledNetwork:
    """An exported network under a runtime: numpy inputs in, the first output out; one call at a time.

    ``floats`` is the arithmetic of its float operations: ``fp32``, or ``bf16`` (OpenVINO only, on a CPU with bfloat16
    dot products; measured for the int8 encoder and not adopted, docs/int8_gate.md).
    """

    def __init__(self, runtime: str, path: Path, names: Sequence[str], floats: str = "fp32"):
        self.name, self._names, self._lock = runtime, list(names), threading.Lock()
        hint = _precision_hint(runtime, floats)
        if runtime == "openvino":
            import openvino
            # The compiled network is cached beside the export (compiling it again costs 0.2-0.4 s a run). It is
            # compiled from the model read, not from the path: OpenVINO keys a path by its file's time, which
            # trim_exports moves on every use.
            core = openvino.Core()
            compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                                               "PERFORMANCE_HINT": "LATENCY",
                                                                               "CACHE_DIR": str(path.parent)})
            self._run = lambda inputs: np.asarray(compiled(inputs)[0])
        else:
            import onnxruntime
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._run = lambda inputs: session.run(None, dict(zip(self._names, inputs)))[0]

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._run([np.ascontiguousarray(x, dtype=np.float32) for x in inputs])


class RuntimeNetworks:
    """A model's encoder (``encode``) and box decoder (``decode_boxes``) under one runtime.

    ``box_decoder`` is set to None while the decoder is being trained (its exported copy would be stale).
    """

    def __init__(self, name: str, encoder: CompiledNetwork, box_decoder: Optional[CompiledNetwork],
                 precision: str = "fp32", floats: str = "fp32"):
        self.name, self._encoder, self.box_decoder = name, encoder, box_decoder
        #: the encoder's matrix products: ``fp32``, or ``int8`` (``quantization``; its embeddings are cached apart)
        self.precision = precision
        #: the arithmetic of the networks' float operations: ``fp32``, or ``bf16`` (``compile_networks``)
        self.floats = floats

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings ``(B, 256, 64, 64)`` float32 for prepared inputs ``(B, 3, S, S)``, one slice per call."""
        return np.concatenate([self._encoder(batch[n:n + 1]) for n in range(len(batch))])

    def decode_boxes(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Low-resolution logits ``(N, 1, 256, 256)`` for ``N`` boxes in model space on one embedding."""
        embedding = np.asarray(embedding, dtype=np.float32)[None]
        return np.concatenate([self.box_decoder(embedding, box[None]) for box in boxes])


def compiled_export(runtime: str, module: Callable[[], "nn.Module"], examples: Sequence[np.ndarray],
                    names: Sequence[str], path: Path, floats: str = "fp32") -> CompiledNetwork:
    """``module()`` exported to ``path`` (unless cached) and compiled under ``runtime``.

    A cached export that does not compile (truncated, corrupt) is deleted and exported again once:
    reused as it is, it would leave every later run in PyTorch. A fresh export that fails is not retried.
    """
    cached = path.is_file()
    export_onnx(module, examples, names, path)
    try:
        return CompiledNetwork(runtime, path, names, floats)
    except Exception:
        if not cached:
            raise
    path.unlink(missing_ok=True)
    export_onnx(module, examples, names, path)
    return CompiledNetwork(runtime, path, names, floats)


def _box_decoder(model: "SliceModel") -> "nn.Module":
    """The model's box decoder as one PyTorch network (imports PyTorch, builds the model's network)."""
    from .box_decoder import BoxDecoder
    return BoxDecoder(model.prompt_encoder, model.mask_decoder)


def compile_networks(model: "SliceModel", choice: str = "auto", folder: Optional[Path] = None,
                     int8: bool = False, floats: str = "fp32") -> Optional[RuntimeNetworks]:
    """The model's encoder and box decoder under ``choice`` (``auto``: the best installed runtime); None means
    PyTorch runs them. Exports are keyed by ``model.cache_id`` (the weights); the PyTorch network is built only
    to export what is not cached, so a checkpoint that does not fit its model raises here (``MedSAMError``).

    With ``int8`` the encoder is the int8 one (``quantization``, calibrated through the model's ``prepare``);
    the caller has checked that OpenVINO and NNCF are here. ``floats`` is the arithmetic of both networks' float
    operations (``bf16``: OpenVINO only; what the int8 gate measured and did not adopt, docs/int8_gate.md).
    """
    from ..errors import MedSAMError, OutputError

    runtime = choose_runtime(choice)
    if runtime is None:
        return None
    _precision_hint(runtime, floats)  # refused here: an export or compile failure below falls back to PyTorch
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.cache_id)
    input_size = model.input_size
    stem = (folder or cache_folder()) / "onnx" / f"{safe_id}-{input_size}-torch{torch_version()}"
    encoder_path = stem.with_name(stem.name + "-encoder.onnx")
    decoder_path = stem.with_name(stem.name + "-box-decoder.onnx")
    try:
        image = [np.zeros((1, 3, input_size, input_size), dtype=np.float32)]
        kept = [encoder_path, decoder_path]
        if not int8:
            encoder = compiled_export(runtime, lambda: model.image_encoder, image, ["image"], encoder_path, floats)
        else:  # the fp32 export is only what is quantized: it is never compiled
            from .quantization import quantized_encoder
            int8_path = quantized_encoder(export_onnx(lambda: model.image_encoder, image, ["image"], encoder_path),
                                          model.prepare)
            encoder = CompiledNetwork(runtime, int8_path, ["image"], floats)
            kept += [int8_path, int8_path.with_suffix(".bin")]
        decoder = compiled_export(runtime, lambda: _box_decoder(model),
                                  [np.zeros((1, 256, 64, 64), dtype=np.float32),
                                   np.array([[0.0, 0.0, 8.0, 8.0]], dtype=np.float32)],
                                  ["embedding", "box"], decoder_path, floats)
        trim_exports(stem.parent, EXPORT_BUDGET_BYTES, keep=kept)
        return RuntimeNetworks(runtime, encoder, decoder, "int8" if int8 else "fp32", floats)
    except OutputError as error:  # a read-only or full cache folder: the model in memory still runs
        warnings.warn(f"network export folder {stem.parent} cannot be written ({str(error).rsplit(': ', 1)[-1]}); "
                      "the networks run in PyTorch", RuntimeWarning)
        return None
    except MedSAMError:  # the checkpoint itself is wrong: PyTorch would fail on it too
        raise
    except Exception as error:  # an export or runtime failure must never stop segmentation: PyTorch still works
        warnings.warn(f"networks under {runtime} failed ({error.__class__.__name__}: {str(error)[:200]}); "
                      "running them in PyTorch", RuntimeWarning)
        return None

