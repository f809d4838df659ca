"""The benchmark's own checks (masks equal to the reference path, a RECIST target measured, results written).

Its speed figures are reported, never asserted here: these machines are shared and noisy (the README
holds the measured table).
"""

import json
import math

import pytest

from MedSAMSlicerLib.cli import main
from MedSAMSlicerLib.evaluation.benchmark import run_benchmark, summary_table, write_report
from MedSAMSlicerLib.models import quantization

pytestmark = pytest.mark.slow  # real models on whole volumes: CI runs it, the inner loop (-m "not slow") does not


def test_benchmark_compares_the_paths_on_the_same_slices_and_writes_its_report(tmp_path):
    lines = []
    report = run_benchmark([("lite-medsam", None)], device="cpu", slices=2, volume_slices=48, prompts=10,
                           log=lines.append)
    [result] = report.models
    assert result.masks_equal and result.min_mask_iou >= 0.99
    assert result.slices == 2 and result.slice_shape == [512, 512] and result.weights == "embedded"
    assert result.reference_seconds_per_slice > 0 and result.speedup == pytest.approx(
        result.reference_seconds_per_slice / result.engine_seconds_per_slice)
    assert result.encoder_gflop_per_slice == pytest.approx(75, rel=0.1)  # LiteMedSAM: about 75 GFLOP per slice
    assert 0 < result.encoder_share_of_matmul_peak < 2
    assert result.prompt_latency_ms_p50 <= result.prompt_latency_ms_p95
    assert result.volume_shape == [48, 512, 512] and result.volume_target_slices == 40
    assert result.volume_dice > 0.95  # measured 0.994: RECIST every 5 slices on a smooth phantom lesion
    assert result.cache_bytes <= result.cache_budget_bytes
    assert report.peak_resident_mib > 0 and report.matmul_peak_gflops > 0
    if result.runtime == "openvino" and quantization.int8_unavailable() is None:  # the int8 encoder, same slices
        assert 0.9 <= result.int8_mean_mask_iou <= 1 and result.int8_min_mask_iou <= result.int8_mean_mask_iou
        assert result.int8_engine_seconds_per_slice > 0
        if math.isnan(report.int8_matmul_peak_gops):  # this CPU's int8 product is emulated, slower than fp32's
            assert math.isnan(result.int8_encoder_share_of_int8_peak)
        else:
            assert report.int8_matmul_peak_gops > 0 and 0 < result.int8_encoder_share_of_int8_peak < 2
    # whole processes, as a user runs them: each one's result is read back and scored
    assert result.startup_seconds > 0 and result.naive_volume_seconds == pytest.approx(
        result.reference_seconds_per_slice * 40)
    int8_here = result.int8_mean_mask_iou > 0
    default = "default: refined " + ("int8" if int8_here and quantization.int8_pays_here() else "fp32")
    assert list(result.processes) == ["published fp32", "refined fp32"] + (["refined int8"] if int8_here else []) + [
        default]  # the last: segment with neither --mode nor --precision, as a user runs it
    published = result.processes["published fp32"]
    assert published.dice == pytest.approx(result.volume_dice, abs=1e-6)  # the same steps as the in-process run
    assert all(run.dice > 0.95 and run.seconds > 0 and run.peak_resident_mib > 100 for run in result.processes.values())
    table = write_report(tmp_path / "bench.json", report)
    stored = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert stored["models"][0]["speedup"] == pytest.approx(result.speedup)
    assert table.read_text(encoding="utf-8").splitlines() == summary_table(report)
    assert any("reference path" in line for line in lines) and any("RECIST to volume" in line for line in lines)
    assert stored["models"][0]["processes"]["published fp32"]["dice"] == pytest.approx(published.dice)
    whole = "lite-medsam: whole process, exports cached: start-up"
    assert any(line.startswith(whole) for line in summary_table(report))


def test_bench_refuses_a_volume_too_short_for_its_target(tmp_path, capsys):
    assert main(["bench", "--volume-slices", "20", "-o", str(tmp_path / "b.json")]) == 2
    assert "--volume-slices 48 or more" in capsys.readouterr().err
