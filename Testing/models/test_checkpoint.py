"""Checkpoints are untrusted files: they load without running pickled code, every way they can be
wrong gives a CheckpointError that names the file and the problem, and each model id only accepts
weights of its own architecture. Device choices resolve or are refused with a clear SettingsError.
"""

import hashlib
import io
import os
import pickle
import re
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from MedSAMSlicerLib.errors import CheckpointError, SettingsError
from MedSAMSlicerLib.models import device, model_registry
from MedSAMSlicerLib.models.checkpoint import file_sha256, load_strict, read_state_dict
from MedSAMSlicerLib.models.device import CPU, resolve_device
from MedSAMSlicerLib.models.lite_medsam import LiteMedSamSliceModel
from MedSAMSlicerLib.models.medsam_vit import MedSamVitSliceModel


class Payload:
    """An arbitrary Python object: a checkpoint holding one must be refused."""

    def __init__(self):
        self.command = "echo pwned"


class Command:
    """Calls ``function(*arguments)`` when unpickled, as a malicious checkpoint would."""

    def __init__(self, function, *arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def code_payloads(marker) -> dict:
    """Pickled objects and the global each imports; those that run code would create ``marker``."""
    return {
        "class-instance": (Payload(), f"{Payload.__module__}.Payload"),
        "os-system": (Command(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),  # posix.system
        "eval": (Command(eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
        "subprocess-popen": (Command(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
    }


def save_torch(content, path):
    torch.save(content, path)


def save_torch_legacy(content, path):
    torch.save(content, path, _use_new_zipfile_serialization=False)


def save_pickle(protocol):
    def save(content, path):
        with open(path, "wb") as handle:
            pickle.dump(content, handle, protocol=protocol)
    return save


SAVERS = {"torch.save": save_torch, "torch.save-legacy": save_torch_legacy,
          "pickle-protocol-0": save_pickle(0), "pickle-protocol-2": save_pickle(2), "pickle-protocol-5": save_pickle(5)}


def opcode_pickles(command: bytes) -> dict:
    """Hand-written pickles calling os.system(command), each through a different opcode."""
    return {
        "GLOBAL-REDUCE": b"cos\nsystem\n(V" + command + b"\ntR.",
        "INST": b"(V" + command + b"\nios\nsystem\n.",
        "OBJ": b"\x80\x01(cos\nsystem\nV" + command + b"\no.",
        "STACK_GLOBAL": b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(command)]) + command + b"\x85R.",
    }


REFUSED_START = "holds Python objects besides tensors ("
REFUSED_END = "); they were not run and the file is refused for safety"


def refused_globals(message: str, path) -> list:
    """The globals a refusal names (up to three), after checking that the message names ``path`` and says it refused."""
    assert message.startswith(f"checkpoint {path} {REFUSED_START}"), message
    assert message.endswith(REFUSED_END), message
    named = message[len(f"checkpoint {path} {REFUSED_START}"):-len(REFUSED_END)]
    return re.sub(r" and \d+ more$", "", named).split(", ")


def small_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def assert_same_state(got: dict, expected: dict):
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name


# --- read_state_dict ---------------------------------------------------------------------------------

def test_a_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere" / "medsam_vit_b.pth"
    with pytest.raises(CheckpointError, match="does not exist") as error:
        read_state_dict(path)
    assert str(path) in str(error.value)


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="cannot be read: it is a folder, not a file"):
        read_state_dict(tmp_path)


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    """What a diverged fine-tuning run saves: a training checkpoint, DDP-prefixed, one tensor infinite."""
    state = {f"module.{key}": value for key, value in small_network().state_dict().items()}
    name = next(key for key, value in state.items() if value.is_floating_point())
    state[name] = torch.full_like(state[name], float("inf"))
    torch.save({"model": state, "epoch": 3}, tmp_path / "diverged.pth")
    with pytest.raises(CheckpointError, match=rf"tensor '{name[len('module.'):]}' holds NaN or infinite weights"):
        read_state_dict(tmp_path / "diverged.pth")


def _truncated_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save(small_network().state_dict(), buffer)
    data = buffer.getvalue()
    return data[: len(data) // 2]


GARBAGE = {
    "empty": b"",
    "zeros": bytes(4096),
    "truncated": _truncated_checkpoint(),
    # what a browser saves when a Google Drive download is refused: the likeliest wrong file in practice
    "html-page": b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
                 b"<body>Google Drive can't scan this file for viruses.</body></html>\n",
    "text": b"this is not a checkpoint\n" * 10,
    "random-bytes": np.random.default_rng(0).bytes(4096),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_a_garbage_file_is_not_a_readable_checkpoint(name, tmp_path):
    path = tmp_path / f"{name}.pth"
    path.write_bytes(GARBAGE[name])
    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)
    message = str(error.value)
    assert str(path) in message
    assert "not a readable PyTorch checkpoint" in message
    assert "refused" not in message  # it holds no Python objects; calling it unsafe would mislead


def test_a_pickled_python_object_is_refused_for_safety(tmp_path):
    path, marker = tmp_path / "trojan.pth", tmp_path / "marker"
    torch.save({"weight": torch.ones(2), "payload": Command(os.system, f"touch {marker}")}, path)
    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)
    assert str(error.value) == (f"checkpoint {path} holds Python objects besides tensors "
                                f"({os.system.__module__}.system); "
                                "they were not run and the file is refused for safety")
    assert not marker.exists()


@pytest.mark.parametrize("beside_a_tensor", [False, True], ids=["alone", "beside-a-tensor"])
@pytest.mark.parametrize("saver", list(SAVERS))
@pytest.mark.parametrize("payload", ["class-instance", "os-system", "eval", "subprocess-popen"])
def test_code_in_any_pickle_format_is_refused_for_safety_and_never_run(payload, saver, beside_a_tensor, tmp_path):
    path, marker = tmp_path / "trojan.pth", tmp_path / "marker"
    content, imported = code_payloads(marker)[payload]
    SAVERS[saver]({"weight": torch.ones(2), "payload": content} if beside_a_tensor else content, path)
    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)
    assert imported in refused_globals(str(error.value), path)
    assert not marker.exists()


@pytest.mark.parametrize("opcodes", ["GLOBAL-REDUCE", "INST", "OBJ", "STACK_GLOBAL"])
def test_code_called_through_any_opcode_is_refused_for_safety_and_never_run(opcodes, tmp_path):
    path, marker = tmp_path / "trojan.pth", tmp_path / "marker"
    path.write_bytes(opcode_pickles(f"touch {marker}".encode())[opcodes])
    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)
    assert refused_globals(str(error.value), path) == ["os.system"]
    assert not marker.exists()


def test_a_pickled_module_is_refused_naming_its_first_classes(tmp_path):
    path = tmp_path / "whole-model.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Linear(4, 2)), path)
    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)
    assert str(error.value) == (
        f"checkpoint {path} holds Python objects besides tensors (torch.nn.modules.container.Sequential, "
        "torch.nn.modules.conv.Conv2d, torch.nn.modules.batchnorm.BatchNorm2d and 2 more); "
        "they were not run and the file is refused for safety")


def test_a_tensor_checkpoint_torch_cannot_read_is_not_called_unsafe(tmp_path):
    path = tmp_path / "protocol-4.pth"
    torch.save(small_network().state_dict(), path, pickle_protocol=4)  # torch's safe loader reads protocol 2 only
    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)
    assert str(error.value) == f"checkpoint {path} is not a readable PyTorch checkpoint (UnpicklingError)"


@pytest.mark.parametrize("content", [[torch.ones(2)], {"epoch": 3}, {}, {"model": {}}, torch.ones(3),
                                     {"model": {"weight": [1.0, 2.0]}}],
                         ids=["list", "no-tensors", "empty", "empty-model", "tensor", "model-of-lists"])
def test_safe_content_that_is_not_a_state_dict_is_refused(content, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="not a state dict of tensors") as error:
        read_state_dict(path)
    assert str(path) in str(error.value)


def test_a_plain_state_dict_loads(tmp_path):
    state = small_network().state_dict()
    path = tmp_path / "plain.pth"
    torch.save(state, path)
    assert_same_state(read_state_dict(path), state)


def test_a_training_checkpoint_with_optimizer_state_loads(tmp_path):
    network = small_network()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network(torch.ones(5, 3)).sum().backward()
    optimizer.step()
    state = network.state_dict()
    path = tmp_path / "training.pth"
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "epoch": 3, "loss": 0.25}, path)
    assert isinstance(optimizer.state_dict()["param_groups"][0]["params"], list)  # ints and lists inside
    assert_same_state(read_state_dict(path), state)


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "in-model"])
def test_the_distributed_module_prefix_is_removed(wrapped, tmp_path):
    state = small_network().state_dict()
    prefixed = {f"module.{name}": value for name, value in state.items()}
    path = tmp_path / "ddp.pth"
    torch.save({"model": prefixed, "epoch": 1} if wrapped else prefixed, path)
    assert_same_state(read_state_dict(path), state)


def test_a_prefix_on_only_some_keys_is_kept(tmp_path):
    state = {"module.a": torch.ones(1), "b": torch.zeros(1)}
    path = tmp_path / "mixed.pth"
    torch.save(state, path)
    assert_same_state(read_state_dict(path), state)


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "data.bin"
    data = np.random.default_rng(0).integers(0, 256, (3 << 20) + 17, dtype=np.uint8).tobytes()  # > one 1 MiB block
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


# --- load_strict -------------------------------------------------------------------------------------

def test_load_strict_loads_a_matching_state():
    source, target = small_network(), nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    load_strict(target, source.state_dict(), "weights.pth", "toy")
    assert_same_state(target.state_dict(), source.state_dict())


@pytest.mark.parametrize("problem, expected", [
    ("missing", "1 missing key(s), e.g. 2.bias"),
    ("unexpected", "1 unexpected key(s), e.g. 3.weight"),
    ("wrong-shape", "1 wrong-shape key(s), e.g. 0.weight"),
])
def test_load_strict_names_the_file_the_architecture_and_the_misfit(problem, expected, tmp_path):
    state = dict(small_network().state_dict())
    if problem == "missing":
        del state["2.bias"]
    elif problem == "unexpected":
        state["3.weight"] = torch.zeros(2, 2)
    else:
        state["0.weight"] = torch.zeros(5, 3)
    target = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {name: value.clone() for name, value in target.state_dict().items()}
    path = tmp_path / "weights.pth"
    with pytest.raises(CheckpointError) as error:
        load_strict(target, state, path, "toy-net")
    message = str(error.value)
    assert str(path) in message
    assert "is not a toy-net checkpoint" in message
    assert expected in message
    assert_same_state(target.state_dict(), before)  # nothing was half-loaded


def test_load_strict_reports_every_kind_of_misfit_at_once():
    state = dict(small_network().state_dict())
    del state["0.bias"]
    del state["2.bias"]
    state["extra"] = torch.zeros(1)
    state["2.weight"] = torch.zeros(2, 5)
    with pytest.raises(CheckpointError) as error:
        load_strict(small_network(), state, "other.pth", "toy-net")
    message = str(error.value)
    assert "2 missing key(s), e.g. 0.bias" in message
    assert "1 unexpected key(s), e.g. extra" in message
    assert "1 wrong-shape key(s), e.g. 2.weight" in message
    assert "other.pth" in message


# --- model_registry ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite_model():
    return model_registry.load_model("lite-medsam", device="cpu")


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    """A randomly initialised segment-anything ViT-B, saved as a DDP training checkpoint (~375 MB)."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    state = sam_model_registry["vit_b"](checkpoint=None).state_dict()
    path = tmp_path_factory.mktemp("vit_b") / "medsam_vit_b.pth"
    torch.save({"model": {f"module.{name}": value for name, value in state.items()}, "epoch": 7}, path)
    probes = {name: state[name].clone() for name in
              ("image_encoder.patch_embed.proj.weight", "image_encoder.blocks.11.mlp.lin2.bias",
               "mask_decoder.iou_prediction_head.layers.2.weight", "prompt_encoder.point_embeddings.0.weight")}
    del state
    return path, probes


def test_an_unknown_model_id_is_a_settings_error():
    with pytest.raises(SettingsError, match="medsam-vit-z") as error:
        model_registry.load_model("medsam-vit-z", device="cpu")
    assert "lite-medsam" in str(error.value)  # the valid choices are listed


@pytest.mark.parametrize("model_id, file_name", [("medsam-vit-b", "medsam_vit_b.pth"),
                                                 ("sam-vit-h", "sam_vit_h_4b8939.pth")])
def test_a_vit_model_without_a_checkpoint_names_the_file_to_bring(model_id, file_name):
    with pytest.raises(CheckpointError, match=file_name) as error:
        model_registry.load_model(model_id, device="cpu")
    assert "--checkpoint" in str(error.value)


def test_a_missing_checkpoint_path_is_named(tmp_path):
    path = tmp_path / "medsam_vit_b.pth"
    with pytest.raises(CheckpointError, match="does not exist") as error:
        model_registry.load_model("medsam-vit-b", checkpoint=path, device="cpu")
    assert str(path) in str(error.value)


def test_the_embedded_lite_checkpoint_is_verified():
    path = model_registry.embedded_lite_checkpoint()
    assert path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model_registry.LITE_MEDSAM_SHA256


def test_the_embedded_lite_medsam_loads_with_its_weights(lite_model):
    assert isinstance(lite_model, LiteMedSamSliceModel)
    assert lite_model.model_id == "lite-medsam"
    assert lite_model.device == CPU and str(lite_model.device) == "cpu"
    assert lite_model.fingerprint == model_registry.LITE_MEDSAM_SHA256
    assert lite_model.cache_id == "lite-medsam@" + model_registry.LITE_MEDSAM_SHA256[:16]
    stored = read_state_dict(model_registry.embedded_lite_checkpoint())
    for part in ("image_encoder", "prompt_encoder", "mask_decoder"):
        loaded = getattr(lite_model, part).state_dict()
        expected = {name[len(part) + 1:]: value for name, value in stored.items() if name.startswith(part + ".")}
        assert_same_state(loaded, expected)
    assert all(not module.training for module in (lite_model.image_encoder, lite_model.mask_decoder))


def test_the_lite_checkpoint_is_not_a_medsam_vit_b_checkpoint():
    path = model_registry.embedded_lite_checkpoint()
    with pytest.raises(CheckpointError, match="is not a medsam-vit-b") as error:
        model_registry.load_model("medsam-vit-b", checkpoint=path, device="cpu")
    message = str(error.value)
    assert str(path) in message
    assert "missing key(s)" in message and "unexpected key(s)" in message


@pytest.mark.slow
def test_a_ddp_training_checkpoint_of_vit_b_loads_as_medsam_vit_b(vit_b_checkpoint):
    path, probes = vit_b_checkpoint
    model = model_registry.load_model("medsam-vit-b", checkpoint=path, device="cpu")
    assert isinstance(model, MedSamVitSliceModel)
    assert model.model_id == "medsam-vit-b"
    assert model.fingerprint == file_sha256(path)
    assert model.cache_id == "medsam-vit-b@" + file_sha256(path)[:16]
    parts = {"image_encoder": model.image_encoder, "mask_decoder": model.mask_decoder,
             "prompt_encoder": model.prompt_encoder}
    for name, expected in probes.items():
        part, rest = name.split(".", 1)
        assert torch.equal(parts[part].state_dict()[rest], expected), name


def test_a_vit_b_checkpoint_is_not_a_lite_medsam_checkpoint(vit_b_checkpoint):
    path, _ = vit_b_checkpoint
    with pytest.raises(CheckpointError, match="is not a lite-medsam") as error:
        model_registry.load_model("lite-medsam", checkpoint=path, device="cpu")
    assert str(path) in str(error.value)


# --- device --------------------------------------------------------------------------------------------

@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def a_driver(monkeypatch):
    """As if the NVIDIA driver were installed: PyTorch is asked whether a GPU is there."""
    monkeypatch.setattr(device, "cuda_driver_present", lambda: True)


@pytest.mark.parametrize("choice", ["cpu", "CPU", " cpu "])
def test_cpu_resolves_to_the_cpu(choice):
    assert resolve_device(choice) == CPU


@pytest.mark.parametrize("choice", ["auto", "", None])
def test_auto_is_the_cpu_without_a_gpu(choice, no_gpu, a_driver):
    assert resolve_device(choice) == CPU


def test_auto_is_the_cpu_on_this_machine():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert resolve_device("auto") == CPU
    assert resolve_device() == CPU


def test_auto_picks_cuda_when_present(monkeypatch, a_driver):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == device.Device("cuda")
    assert str(resolve_device("auto")) == "cuda"


def test_auto_without_the_cuda_driver_is_the_cpu_without_asking_pytorch(monkeypatch):
    """No NVIDIA driver library, no GPU for PyTorch either: ``auto`` answers without importing PyTorch."""
    def asked():
        raise AssertionError("PyTorch was asked")

    monkeypatch.setattr(device, "CUDA_DRIVER", "libcuda-that-is-not-here.so.1")
    monkeypatch.setattr(torch.cuda, "is_available", asked)
    assert not device.cuda_driver_present()
    assert resolve_device("auto") == CPU


@pytest.mark.parametrize("choice", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_a_gpu_is_a_settings_error(choice, no_gpu):
    with pytest.raises(SettingsError, match="no CUDA GPU") as error:
        resolve_device(choice)
    assert choice.lower() in str(error.value)


def test_a_cuda_index_beyond_the_devices_is_a_settings_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == device.Device("cuda", 0) and str(resolve_device("cuda:0")) == "cuda:0"
    with pytest.raises(SettingsError, match="does not exist"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("choice", ["gpu", "mps", "cuda:", "cuda:x", "cpu0", "auto cpu"])
def test_an_unknown_device_is_a_settings_error(choice):
    with pytest.raises(SettingsError, match="not one of auto, cpu, cuda, cuda:N"):
        resolve_device(choice)


def test_device_errors_reach_load_model(no_gpu):
    with pytest.raises(SettingsError, match="no CUDA GPU"):
        model_registry.load_model("lite-medsam", device="cuda")
    with pytest.raises(SettingsError):
        model_registry.load_model("lite-medsam", device="gpu")
