"""The int8 encoder: when it is used, what falls back to fp32 and says so, and that its embeddings are cached apart."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from MedSAMSlicerLib.errors import SettingsError
from MedSAMSlicerLib.evaluation.metrics import dice
from MedSAMSlicerLib.files.sample_data import make_phantom, recist_prompts
from MedSAMSlicerLib.models import quantization
from MedSAMSlicerLib.models.inference_runtime import CompiledNetwork
from MedSAMSlicerLib.models.model_registry import LITE_MEDSAM_SHA256, load_model
from MedSAMSlicerLib.models.quantization import choose_precision
from MedSAMSlicerLib.volume.intensity import IntensitySettings
from MedSAMSlicerLib.volume.refinement import REFINED
from MedSAMSlicerLib.volume.session import SegmentationSession


def test_auto_is_int8_only_for_gated_weights_in_the_refined_mode_on_a_cpu_with_int8_instructions(monkeypatch):
    assert LITE_MEDSAM_SHA256 in quantization.INT8_GATE_PASSED  # the embedded weights passed (docs/int8_gate.md)
    monkeypatch.setattr(quantization, "int8_pays_here", lambda: True)
    assert choose_precision("auto", LITE_MEDSAM_SHA256, "refined", "openvino") == "int8"
    assert choose_precision("auto", LITE_MEDSAM_SHA256, "published", "openvino") == "fp32"
    assert choose_precision("auto", "another checkpoint", "refined", "openvino") == "fp32"
    assert choose_precision("fp32", LITE_MEDSAM_SHA256, "refined", "openvino") == "fp32"
    assert choose_precision("auto", LITE_MEDSAM_SHA256, "refined", "onnxruntime") == "fp32"  # quietly: not asked for
    monkeypatch.setattr(quantization, "int8_pays_here", lambda: False)  # AVX2 only: int8 emulated, no faster
    assert choose_precision("auto", LITE_MEDSAM_SHA256, "refined", "openvino") == "fp32"
    assert choose_precision("int8", LITE_MEDSAM_SHA256, "refined", "openvino") == "int8"  # asked for: given


def test_the_int8_instructions_are_named_as_numpy_and_linux_name_them():
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_features__
    assert "AVX512VNNI" in __cpu_features__ and "AVX512VNNI" in quantization.INT8_CPU_FEATURES
    assert {"avx512_vnni", "avx_vnni", "amx_int8"} <= set(quantization.INT8_CPU_FEATURES)  # /proc/cpuinfo's flags
    assert isinstance(quantization.int8_pays_here(), bool)


def test_int8_with_the_published_mode_or_an_unknown_precision_is_refused():
    with pytest.raises(SettingsError, match="int8 precision cannot be used in the published mode"):
        choose_precision("int8", LITE_MEDSAM_SHA256, "published", "openvino")
    with pytest.raises(SettingsError, match="precision 'int4' is not one of auto, fp32, int8"):
        choose_precision("int4", LITE_MEDSAM_SHA256, "refined", "openvino")


def test_int8_asked_for_where_it_cannot_run_falls_back_to_fp32_with_one_line(monkeypatch):
    with pytest.warns(RuntimeWarning, match="int8 runs under OpenVINO only; running the encoder in fp32"):
        assert choose_precision("int8", LITE_MEDSAM_SHA256, "refined", "onnxruntime") == "fp32"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nncf" else real_find_spec(name, *a))
    with pytest.warns(RuntimeWarning, match=r"int8 needs nncf \(pip install medsam-slicer\[fast\]\)"):
        assert choose_precision("int8", LITE_MEDSAM_SHA256, "refined", "openvino") == "fp32"


def test_the_calibration_set_is_real_ct_and_mr_slices_as_the_encoder_sees_them():
    with np.load(quantization.CALIBRATION_FILE) as stored:
        names = sorted(stored.files)
        assert all(stored[name].dtype == np.uint8 and stored[name].ndim == 2 for name in names)
    assert sum(name.startswith("mr_") for name in names) >= 12 and sum(name.startswith("ct_") for name in names) >= 3
    assert any(name.endswith("_crop") for name in names)  # the refined mode's zoomed crops too


def test_bf16_is_offered_only_on_cpus_with_bfloat16_dot_products_and_only_under_openvino(monkeypatch):
    for flags, expected in (({"AVX512VNNI", "avx512_vnni", "avx512_bf16"}, True), ({"amx_int8", "amx_bf16"}, True),
                            ({"AVX512VNNI", "avx512_vnni"}, False), ({"AVX2", "avx2"}, False)):
        monkeypatch.setattr(quantization, "_cpu_features", lambda: frozenset(flags))
        assert quantization.bf16_pays_here() is expected, flags
    with pytest.raises(ValueError, match="onnxruntime runs networks in fp32, not bf16"):
        CompiledNetwork("onnxruntime", Path("never-read.onnx"), ["image"], "bf16")
    with pytest.raises(ValueError, match="openvino runs networks in fp32 or bf16, not fp16"):
        CompiledNetwork("openvino", Path("never-read.onnx"), ["image"], "fp16")


@pytest.mark.slow
@pytest.mark.skipif(quantization.int8_unavailable() is not None, reason="OpenVINO and NNCF are not installed")
@pytest.mark.parametrize("floats", ["fp32", "bf16"])
def test_the_int8_encoder_is_cached_keyed_apart_and_close_to_fp32(lite_model, export_cache, floats):
    if floats == "bf16" and not quantization.bf16_pays_here():
        pytest.skip("this CPU has no bfloat16 dot products")
    model = load_model("lite-medsam", device="cpu", runtime="openvino", precision="int8", floats=floats)
    arithmetic = "int8" if floats == "fp32" else "int8+bf16"  # the gate's variant (docs/int8_gate.md)
    assert model.precision == "int8" and model.arithmetic == arithmetic
    assert model.cache_id == lite_model.cache_id + "+" + arithmetic  # int8+bf16 embeddings are not int8's either
    exports = sorted(path.name for path in (export_cache / "onnx").glob("*int8*"))
    assert len(exports) == 2 and exports[0].endswith(".bin") and exports[1].endswith(".xml")  # keyed by calibration
    assert quantization.calibration_id() in exports[1]
    phantom = make_phantom(size=(96, 80, 16), spacing=(0.8, 0.9, 2.5), radii_mm=(12.0, 10.0, 15.0))
    prompts = recist_prompts(phantom, every=5)
    masks = {}
    for name, used in (("fp32", lite_model), ("int8", model)):
        with SegmentationSession(phantom.image, used, IntensitySettings.preset("soft-tissue")) as session:
            masks[name] = session.segment(prompts, refinement=REFINED)[1].mask
            assert all(key.model == used.cache_id for key in session.cache._entries)
    assert dice(masks["fp32"], masks["int8"]) > 0.95 and dice(phantom.truth, masks["int8"]) > 0.9
