"""The networks under OpenVINO or ONNX Runtime give PyTorch's outputs, and a runtime failure never stops
segmentation."""

import os
import re
import shutil
import time
import warnings

import numpy as np
import pytest
import torch

from MedSAMSlicerLib.errors import CheckpointError, SettingsError
from MedSAMSlicerLib.evaluation.metrics import iou
from MedSAMSlicerLib.models import inference_runtime
from MedSAMSlicerLib.models.inference_runtime import compile_networks, installed_runtimes, trim_exports
from MedSAMSlicerLib.models.model_registry import embedded_lite_checkpoint, load_model

pytestmark = pytest.mark.slow  # real models on whole volumes: CI runs it, the inner loop (-m "not slow") does not


def compiled(model, choice, folder):
    return compile_networks(model, choice, folder)


def prepared_slice(model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (90, 120)).astype(np.uint8)
    image[30:60, 40:90] += 150
    return model.prepare(image)[None]


@pytest.mark.parametrize("name", ["openvino", "onnxruntime"])
def test_runtime_outputs_equal_pytorch(lite_model, name, tmp_path):
    if name not in installed_runtimes():
        pytest.skip(f"{name} is not installed")
    networks = compiled(lite_model, name, tmp_path)
    assert networks is not None and networks.name == name
    batch = np.concatenate([prepared_slice(lite_model)] * 2)
    boxes = np.array([[40.0, 60.0, 190.0, 170.0], [10.0, 12.0, 90.0, 100.0]])
    with torch.inference_mode():
        expected = lite_model.image_encoder(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        expected_logits, _ = lite_model.logits(expected[0], boxes=torch.as_tensor(boxes, dtype=torch.float))
    expected, expected_logits = expected.numpy(), expected_logits.numpy()
    embeddings = networks.encode(batch)
    assert embeddings.shape == (2, 256, 64, 64) and embeddings.dtype == np.float32
    # Measured: max abs difference 3.4e-6 (OpenVINO) and 2.5e-6 (ONNX Runtime) on embeddings of magnitude ~1
    assert float(np.abs(embeddings - expected).max()) < 1e-4
    logits = networks.decode_boxes(expected[0], boxes)
    assert logits.shape == (2, 1, 256, 256)
    # Measured: 2.3e-5 on logits of magnitude ~10
    assert float(np.abs(logits - expected_logits).max()) < 1e-3
    for ours, theirs in zip(logits > 0, expected_logits > 0):
        assert iou(ours, theirs) >= 0.999
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2  # exported once, kept for the next load



def test_a_model_served_by_cached_exports_is_never_built_in_pytorch(lite_model, export_cache):
    """The start-up saving: with both exports cached, loading reads no weights and builds no network."""
    if lite_model.runtime_networks is None:
        pytest.skip("no optimised runtime is installed")
    assert lite_model.network_loaded  # the session's first load exported the networks from it
    model = load_model("lite-medsam", device="cpu")  # the same export cache (the session's)
    assert model.runtime == lite_model.runtime and not model.network_loaded
    if model.runtime == "openvino":  # OpenVINO's compiled networks are cached beside the exports
        assert len(list((export_cache / "onnx").glob("*.blob"))) >= 2
    batch = prepared_slice(model)
    embedding = model.encode(batch)[0]
    assert np.array_equal(embedding, lite_model.encode(batch)[0])
    box = np.array([[40.0, 30.0, 90.0, 60.0]])
    mask = model.decode(embedding, box, (90, 120))
    assert np.array_equal(mask, lite_model.decode(embedding, box, (90, 120))) and mask.sum() > 500
    assert not model.network_loaded
    click = embedding, np.array([[60.0, 45.0]]), np.array([1]), (90, 120)
    masks, _ = model.decode_points(*click)  # clicks run in PyTorch: the network is built now, with the same weights
    assert model.network_loaded and np.array_equal(masks, lite_model.decode_points(*click)[0])


def test_a_checkpoint_changed_after_loading_is_refused_when_the_network_is_built(lite_model, tmp_path):
    """The lazily built network must be the weights the exports and the cache keys were made from."""
    if lite_model.runtime_networks is None:
        pytest.skip("no optimised runtime is installed")
    copy = tmp_path / "weights.pth"
    shutil.copy(embedded_lite_checkpoint(), copy)  # the same bytes: the session's cached exports serve it
    model = load_model("lite-medsam", copy, device="cpu")
    assert not model.network_loaded and model.fingerprint == lite_model.fingerprint
    torch.save({"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(1)}, copy)  # overwritten meanwhile
    with pytest.raises(CheckpointError, match=f"checkpoint {re.escape(str(copy))} has changed since the model was "
                                              "loaded; load it again"):
        model.network
    assert not model.network_loaded

def test_the_default_is_the_best_installed_runtime_else_pytorch(lite_model, monkeypatch, tmp_path):
    assert lite_model.runtime == (installed_runtimes() or ["torch"])[0]
    assert compiled(lite_model, "torch", tmp_path) is None
    monkeypatch.setattr(inference_runtime, "installed_runtimes", lambda: [])
    assert compiled(lite_model, "auto", tmp_path) is None
    with pytest.raises(SettingsError, match="runtime openvino is not installed; pip install medsam-slicer\\[fast\\]"):
        compiled(lite_model, "openvino", tmp_path)
    with pytest.raises(SettingsError, match="runtime 'tensorrt' is not one of auto, torch, openvino, onnxruntime"):
        compiled(lite_model, "tensorrt", tmp_path)


def test_a_failed_export_falls_back_to_pytorch_with_a_warning(lite_model, monkeypatch, tmp_path):
    monkeypatch.setattr(inference_runtime, "installed_runtimes", lambda: ["onnxruntime"])

    def broken(*args):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(inference_runtime, "export_onnx", broken)
    with pytest.warns(RuntimeWarning, match="failed \\(RuntimeError: unsupported operator\\); running them in PyTorch"):
        assert compiled(lite_model, "auto", tmp_path) is None


@pytest.mark.parametrize("damage", [b"garbage, not a protobuf" * 100, b""], ids=["garbage", "empty"])
def test_a_corrupt_cached_export_is_exported_again(lite_model, damage, tmp_path):
    if compiled(lite_model, "auto", tmp_path) is None:
        pytest.skip("no optimised runtime is installed")
    encoder_path, = (tmp_path / "onnx").glob("*-encoder.onnx")
    encoder_path.write_bytes(damage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        networks = compiled(lite_model, "auto", tmp_path)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert networks is not None and networks.name == installed_runtimes()[0]
    assert encoder_path.stat().st_size > 1 << 20  # exported again: the LiteMedSAM encoder is 28 MB
    batch = prepared_slice(lite_model)
    with torch.inference_mode():
        expected = lite_model.image_encoder(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    assert float(np.abs(networks.encode(batch) - expected.numpy()).max()) < 1e-4


def test_only_a_cached_export_that_does_not_compile_is_exported_again_once(lite_model, monkeypatch, tmp_path):
    monkeypatch.setattr(inference_runtime, "installed_runtimes", lambda: ["onnxruntime"])
    exports = []

    def export(module, examples, names, path):
        exports.append((path.name.rsplit("-", 1)[-1], path.is_file()))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not onnx")
        return path

    def unreadable(runtime, path, names, floats="fp32"):
        raise RuntimeError(f"cannot read {path.name}")

    monkeypatch.setattr(inference_runtime, "export_onnx", export)
    monkeypatch.setattr(inference_runtime, "CompiledNetwork", unreadable)
    failed = "failed \\(RuntimeError: cannot read .*-encoder.onnx\\); running them in PyTorch"
    with pytest.warns(RuntimeWarning, match=failed):
        assert compiled(lite_model, "auto", tmp_path) is None
    assert exports == [("encoder.onnx", False)]  # a fresh export is not retried
    exports.clear()
    with pytest.warns(RuntimeWarning, match=failed):
        assert compiled(lite_model, "auto", tmp_path) is None
    assert exports == [("encoder.onnx", True), ("encoder.onnx", False)]  # the cached one was deleted and redone once


def test_exports_beyond_the_budget_are_dropped_least_recently_used_first(tmp_path):
    for age, name in enumerate(["newest", "kept-despite-age", "middle", "oldest"]):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1e9 - age * 1000, 1e9 - age * 1000))
    (tmp_path / ".partial-being-written.onnx").write_bytes(b"x" * 1000)  # another process's export
    deleted = trim_exports(tmp_path, budget=250, keep=[tmp_path / "kept-despite-age.onnx"])
    assert [path.name for path in deleted] == ["oldest.onnx", "middle.onnx"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [".partial-being-written.onnx",
                                                                 "kept-despite-age.onnx", "newest.onnx"]
    assert trim_exports(tmp_path, budget=250) == []


def test_partial_exports_older_than_an_hour_are_deleted(tmp_path):
    killed, running = tmp_path / ".partial-killed.onnx", tmp_path / ".partial-running.onnx"
    for path in (killed, running):
        path.write_bytes(b"")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(killed, (two_hours_ago, two_hours_ago))
    assert trim_exports(tmp_path, budget=1 << 30) == [killed]
    assert [path.name for path in tmp_path.iterdir()] == [".partial-running.onnx"]  # may be another process's export


def test_reusing_an_export_marks_it_recently_used(lite_model, tmp_path):
    networks = compiled(lite_model, "auto", tmp_path)
    if networks is None:
        pytest.skip("no optimised runtime is installed")
    exports = sorted((tmp_path / "onnx").glob("*.onnx"))
    for path in exports:
        os.utime(path, (1e9, 1e9))
    compiled(lite_model, "auto", tmp_path)
    assert all(path.stat().st_mtime > 1e9 for path in exports)
