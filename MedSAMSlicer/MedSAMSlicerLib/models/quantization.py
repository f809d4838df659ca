"""An int8 image encoder: post-training quantization calibrated on real CT and MR slices, behind an accuracy gate.

The encoder is nearly the whole cost of a slice. OpenVINO's NNCF quantizes the matrix products of
its exported fp32 network to int8 (weights and activations; the convolutions, softmax, layer norms
and GELUs stay in float), with the activation ranges measured on the real slices in
``data/calibration_slices.npz`` (``benchmarks/calibration_set.py``). The result is cached beside
the fp32 export, keyed by the weights and the calibration set.

int8 changes the masks a little, so it is never used silently: ``--precision int8`` asks for it,
and ``auto`` uses it only for weights whose accuracy gate passed (``INT8_GATE_PASSED``: measured
by ``benchmarks/int8_gate.py`` against the truth on every real cohort, per target: mean 3D Dice
change at least -0.005, no target below -0.03), on CPUs with int8 dot-product instructions (where
it was measured faster: ``int8_pays_here``), and never in the published mode, which stays the
published fp32 steps. Without OpenVINO and NNCF, int8 falls back to fp32 with one line saying why.
Its float operations stay fp32: in bf16 (``bf16_pays_here``) the encoder was 1.3x faster but failed
the gate on one target (docs/int8_gate.md).
"""

import contextlib
import hashlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

PRECISIONS = ("auto", "fp32", "int8")
CALIBRATION_FILE = Path(__file__).parents[1] / "data" / "calibration_slices.npz"
#: kept in float: int8 convolutions doubled the embeddings' error (0.10 -> 0.20 relative) for 0.03 s of 0.24 per slice
FLOAT_OPERATIONS = ("Convolution", "GroupConvolution")
#: weights (SHA-256) whose int8 encoder passed the accuracy gate: the embedded LiteMedSAM (docs/int8_gate.md)
INT8_GATE_PASSED: frozenset = frozenset({"79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"})
#: CPU features with int8 dot-product instructions (numpy's names, then Linux's): on AVX-512 VNNI the int8 encoder
#: measured 1.55x fp32; on AVX2 alone OpenVINO emulates int8 and it gave nothing (docs/int8_gate.md)
INT8_CPU_FEATURES = ("AVX512VNNI", "avx512_vnni", "avx_vnni", "amx_int8")
#: CPU features with bfloat16 dot-product instructions (Linux's names), where OpenVINO can run float operations in bf16
BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16")


def int8_unavailable() -> Optional[str]:
    """Why int8 cannot run here, or None when it can."""
    missing = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None]
    if missing:
        return f"int8 needs {' and '.join(missing)} (pip install medsam-slicer[fast])"
    return None


def int8_pays_here() -> bool:
    """Whether this CPU has int8 dot-product instructions (VNNI or AMX)."""
    return not _cpu_features().isdisjoint(INT8_CPU_FEATURES)


def bf16_pays_here() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX). The int8 encoder with its float
    operations in bf16 was measured there and not adopted: faster, but below the accuracy gate (docs/int8_gate.md)."""
    return not _cpu_features().isdisjoint(BF16_CPU_FEATURES)


def _cpu_features() -> frozenset:
    """The CPU's features, from numpy's CPU detection (every system) and Linux's CPU flags."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x, as some Slicer releases bundle
        from numpy.core._multiarray_umath import __cpu_features__ as features
    found = {name for name, present in features.items() if present}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            found.update(next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []))
    return frozenset(found)


def check_precision(choice: str, mode: str) -> None:
    """Refuse an unknown precision, and int8 in the published mode (checked before any model loads)."""
    from ..errors import SettingsError

    if choice not in PRECISIONS:
        raise SettingsError(f"precision {choice!r} is not one of {', '.join(PRECISIONS)}")
    if choice == "int8" and mode == "published":
        raise SettingsError("int8 precision cannot be used in the published mode, which is the published fp32 "
                            "steps; use the refined mode")


def choose_precision(choice: str, fingerprint: str, mode: str, runtime: Optional[str]) -> str:
    """``fp32`` or ``int8`` for a ``--precision`` choice, the weights' SHA-256, the pipeline mode and the runtime."""
    check_precision(choice, mode)
    if choice == "fp32" or (choice == "auto" and (mode == "published" or fingerprint not in INT8_GATE_PASSED
                                                  or not int8_pays_here())):
        return "fp32"
    reason = int8_unavailable() or (None if runtime == "openvino" else "int8 runs under OpenVINO only")
    if reason is not None:
        if choice == "int8":  # asked for: say why it is not used; auto stays quiet and exact
            warnings.warn(f"{reason}; running the encoder in fp32", RuntimeWarning)
        return "fp32"
    return "int8"


def calibration_id() -> str:
    """A short content hash of the calibration set (part of the int8 export's name)."""
    return hashlib.sha256(CALIBRATION_FILE.read_bytes()).hexdigest()[:12]


def calibration_inputs(prepare: Callable[[np.ndarray], np.ndarray]) -> List[np.ndarray]:
    """The calibration slices as the model's inputs ``(1, 3, S, S)`` float32."""
    with np.load(CALIBRATION_FILE, allow_pickle=False) as stored:
        return [np.ascontiguousarray(prepare(stored[name])[None], dtype=np.float32) for name in sorted(stored.files)]


def quantized_encoder(fp32_export: Path, prepare: Callable[[np.ndarray], np.ndarray]) -> Path:
    """The int8 OpenVINO model (``.xml`` with its ``.bin``) of an fp32 encoder export; made once, then reused."""
    target = fp32_export.with_name(f"{fp32_export.stem}-int8-{calibration_id()}.xml")
    if target.is_file() and target.with_suffix(".bin").is_file():
        os.utime(target)
        return target
    import nncf
    import openvino

    nncf.set_log_level(logging.ERROR)
    with warnings.catch_warnings(), open(os.devnull, "w") as quiet, \
            contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # NNCF's progress bars
        warnings.simplefilter("ignore")
        inputs = calibration_inputs(prepare)
        quantized = nncf.quantize(openvino.Core().read_model(str(fp32_export)), nncf.Dataset(inputs),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(inputs),
                                  ignored_scope=nncf.IgnoredScope(types=list(FLOAT_OPERATIONS)))
    partial = target.with_name(f".partial-{os.getpid()}-{target.name}")
    try:
        openvino.save_model(quantized, str(partial))
        os.replace(partial.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(partial, target)  # the .xml last: its presence means both files are complete
    finally:
        partial.unlink(missing_ok=True)
        partial.with_suffix(".bin").unlink(missing_ok=True)
    return target
