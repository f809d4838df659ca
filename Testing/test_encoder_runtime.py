"""The image encoder under OpenVINO or ONNX Runtime gives PyTorch's embeddings, and never stops segmentation."""

import numpy as np
import pytest
import torch

from MedSAMSlicerLib import encoder_runtime
from MedSAMSlicerLib.encoder_runtime import installed_runtimes, runtime_encoder
from MedSAMSlicerLib.errors import SettingsError


def prepared_slice(model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (90, 120)).astype(np.uint8)
    image[30:60, 40:90] += 150
    return model.prepare(image)[None]


@pytest.mark.parametrize("name", ["openvino", "onnxruntime"])
def test_runtime_embeddings_equal_pytorch(lite_model, name, tmp_path):
    if name not in installed_runtimes():
        pytest.skip(f"{name} is not installed")
    runner = runtime_encoder(lite_model.image_encoder, 256, lite_model.cache_id, name, folder=tmp_path)
    assert runner is not None and runner.name == name
    batch = np.concatenate([prepared_slice(lite_model)] * 2)
    with torch.inference_mode():
        expected = lite_model.image_encoder(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    got = runner(batch)
    assert got.shape == (2, 256, 64, 64) and got.dtype == torch.float32
    # Measured: max abs difference 3.4e-6 (OpenVINO) and 2.5e-6 (ONNX Runtime) on embeddings of magnitude ~1
    assert float((got - expected).abs().max()) < 1e-4
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1  # exported once, kept for the next load


def test_the_default_is_the_best_installed_runtime_else_pytorch(lite_model, monkeypatch, tmp_path):
    assert lite_model.runtime == (installed_runtimes() or ["torch"])[0]
    assert runtime_encoder(lite_model.image_encoder, 256, "x", "torch", folder=tmp_path) is None
    monkeypatch.setattr(encoder_runtime, "installed_runtimes", lambda: [])
    assert runtime_encoder(lite_model.image_encoder, 256, "x", "auto", folder=tmp_path) is None
    with pytest.raises(SettingsError, match="runtime openvino is not installed; pip install medsam-slicer\\[fast\\]"):
        runtime_encoder(lite_model.image_encoder, 256, "x", "openvino", folder=tmp_path)
    with pytest.raises(SettingsError, match="runtime 'tensorrt' is not one of auto, torch, openvino, onnxruntime"):
        runtime_encoder(lite_model.image_encoder, 256, "x", "tensorrt", folder=tmp_path)


def test_a_failed_export_falls_back_to_pytorch_with_a_warning(lite_model, monkeypatch, tmp_path):
    monkeypatch.setattr(encoder_runtime, "installed_runtimes", lambda: ["onnxruntime"])

    def broken(*args):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(encoder_runtime, "export_onnx", broken)
    with pytest.warns(RuntimeWarning, match="failed \\(RuntimeError: unsupported operator\\); running it in PyTorch"):
        assert runtime_encoder(lite_model.image_encoder, 256, "x", "auto", folder=tmp_path) is None
