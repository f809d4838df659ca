"""How fast the engine is, measured against the naive published pipeline on the same slices in the same run.

For each model: the naive reference path (``reference_pipeline``: per slice the published
preprocessing, one encoder call, one decoder call, nothing reused) and the engine's path (the
background worker, the optimised encoder runtime, the cache) segment the same slices with the same
boxes; their masks must agree (IoU >= 0.99 per slice) and the ratio of their times is the speed-up.
Then: prompt-to-mask latency on a cached slice (mask written into the volume's label array
included), RECIST-to-volume time for a 40-slice target with markers every 5 slices in a
512x512x300 CT, the encoder's share of the machine's measured matmul peak, and peak resident
memory. Absolute times are labelled with the device they came from; on shared CPUs compare the
ratios, which are measured side by side.
"""

import math
import platform
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .embedding_cache import EmbeddingCache
from .geometry import occupied_slices
from .intensity import IntensitySettings
from .metrics import dice, iou
from .model_registry import build_network, load_model, model_spec
from .prompt_simulation import bounding_box
from .reference_pipeline import reference_mask
from .sample_data import Phantom, make_phantom, recist_prompts
from .session import SegmentationSession
from .slice_model import SliceModel

Log = Callable[[str], None]
MASK_IOU_REQUIRED = 0.99


@dataclass
class ModelBenchmark:
    model: str
    weights: str  # "embedded", a checkpoint file name, or "random" (the architecture's shape only)
    runtime: str
    device: str
    slices: int
    slice_shape: List[int]
    setup_seconds: float  # loading the model, exporting its encoder for the runtime (once per weights)
    reference_seconds_per_slice: float
    engine_seconds_per_slice: float
    speedup: float
    encoder_slices_per_second: float
    encoder_gflop_per_slice: float
    encoder_share_of_matmul_peak: float
    min_mask_iou: float
    masks_equal: bool
    prompt_latency_ms_p50: float
    prompt_latency_ms_p95: float
    volume_shape: List[int] = field(default_factory=list)
    volume_target_slices: int = 0
    volume_seconds: float = float("nan")
    volume_dice: float = float("nan")
    cache_bytes: int = 0
    cache_budget_bytes: int = 0
    whole_volume_embedding_seconds: float = float("nan")  # every slice of the CT, on a GPU only


@dataclass
class BenchmarkReport:
    device: str
    cpu: str
    threads: int
    torch_version: str
    matmul_peak_gflops: float
    models: List[ModelBenchmark] = field(default_factory=list)
    peak_resident_mib: float = 0.0

    def as_dict(self) -> Dict:
        """Plain values for JSON; a figure not measured (NaN) becomes null."""
        def plain(value):
            if isinstance(value, dict):
                return {key: plain(item) for key, item in value.items()}
            if isinstance(value, list):
                return [plain(item) for item in value]
            return None if isinstance(value, float) and math.isnan(value) else value
        return plain(asdict(self))


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name} ({torch.get_num_threads()} threads)"


def matmul_peak_gflops(device: torch.device, repeats: int = 5) -> float:
    """The best dense fp32 matrix-multiply rate over a few sizes: the yardstick for the encoder's share."""
    best = 0.0
    for size in (1024, 2048, 3072):
        a, b = torch.rand(size, size, device=device), torch.rand(size, size, device=device)
        a @ b
        for _ in range(repeats):
            _synchronise(device)
            started = time.perf_counter()
            a @ b
            _synchronise(device)
            best = max(best, 2 * size ** 3 / (time.perf_counter() - started) / 1e9)
    return best


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_gflop(model: SliceModel) -> float:
    """FLOPs of one encoder call (PyTorch's own counter on the network)."""
    from torch.utils.flop_counter import FlopCounterMode

    example = torch.zeros(1, 3, model.input_size, model.input_size, device=model.device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.image_encoder(example)
    return counter.get_total_flops() / 1e9


def phantom_ct(slices: int = 300, size: int = 512):
    """A ``size`` x ``size`` x ``slices`` phantom CT whose lesion spans 40 slices (2.5 mm apart) along K."""
    return make_phantom(size=(size, size, slices), spacing=(0.7, 0.7, 2.5), radii_mm=(45.0, 35.0, 49.9))


def random_checkpoint(model_id: str, folder: Path) -> Path:
    """Seeded random weights of ``model_id``'s architecture: its speed without its (unreachable) trained weights."""
    torch.manual_seed(0)
    path = folder / f"{model_id}-random.pth"
    torch.save(build_network(model_spec(model_id)).state_dict(), path)
    return path


def benchmark_model(model_id: str, checkpoint: Optional[str], device: str, runtime: str, phantom: Phantom,
                    slices: int, prompts: int, peak_gflops: float, log: Log) -> ModelBenchmark:
    weights = "embedded" if checkpoint is None else Path(checkpoint).name
    with tempfile.TemporaryDirectory() as folder:
        if checkpoint is None and model_spec(model_id).checkpoint_file:
            checkpoint, weights = random_checkpoint(model_id, Path(folder)), "random"
        started = time.perf_counter()
        model = load_model(model_id, checkpoint, device, runtime)
    setup = time.perf_counter() - started
    intensity = IntensitySettings.preset("soft-tissue")
    lesion = occupied_slices(phantom.truth, 2)
    chosen = [int(i) for i in np.linspace(lesion[0] + 2, lesion[-1] - 2, slices).round()]
    # the RECIST convention's box: the lesion's extent plus 5 px
    boxes = {index: bounding_box(phantom.truth[index]) + [-5.0, -5.0, 5.0, 5.0] for index in chosen}
    log(f"{model_id}: {model.device}/{model.runtime}, setup {setup:.1f} s; {slices} slices of "
        f"{phantom.image.shape[1]}x{phantom.image.shape[2]}")
    gflop = encoder_gflop(model)  # also a warm-up call

    with SegmentationSession(phantom.image, model, intensity, EmbeddingCache()) as session:
        # the two paths alternate slice by slice, so that the machine's load changes hit both alike
        reference, engine = {}, {}
        reference_total = engine_total = encoded = 0.0
        for index in chosen:
            seconds = time.perf_counter()
            reference[index] = reference_mask(model, session.volume_u8[index], boxes[index])
            reference_total += time.perf_counter() - seconds
            seconds = time.perf_counter()
            session.prefetch([index])[index].result()
            encoded += time.perf_counter() - seconds
            engine[index] = session.segment_slice(index, [boxes[index]])
            engine_total += time.perf_counter() - seconds
        reference_seconds, engine_seconds = reference_total / slices, engine_total / slices
        log(f"  reference path: {reference_seconds:.3f} s per slice")
        ious = [iou(reference[i], engine[i]) for i in chosen]
        log(f"  engine path:    {engine_seconds:.3f} s per slice ({reference_seconds / engine_seconds:.2f}x), "
            f"masks IoU >= {min(ious):.4f}")

        labels = np.zeros(phantom.image.shape, dtype=np.uint8)
        rng = np.random.default_rng(0)
        latencies = []
        for n in range(prompts):  # a user dragging a box on a cached slice
            index = chosen[n % len(chosen)]
            box = boxes[index] + rng.uniform(-3, 3, 4)
            seconds = time.perf_counter()
            labels[index] = session.segment_slice(index, [box])
            latencies.append(time.perf_counter() - seconds)
        p50, p95 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 95))
        log(f"  prompt on a cached slice: p50 {p50:.1f} ms, p95 {p95:.1f} ms")

    result = ModelBenchmark(
        model_id, weights, model.runtime, str(model.device), slices, list(phantom.image.shape[1:]), setup, reference_seconds,
        engine_seconds, reference_seconds / engine_seconds, slices / encoded, gflop,
        gflop / (encoded / slices) / peak_gflops if peak_gflops else float("nan"), min(ious),
        min(ious) >= MASK_IOU_REQUIRED, p50, p95)

    recist = recist_prompts(phantom, every=5)
    cache = EmbeddingCache()
    seconds = time.perf_counter()
    with SegmentationSession(phantom.image, model, intensity, cache) as session:
        mask = session.segment(recist)[1].mask
    result.volume_seconds = time.perf_counter() - seconds
    result.volume_shape = list(phantom.image.shape)
    result.volume_target_slices = int(len(occupied_slices(mask, 2)))
    result.volume_dice = dice(phantom.truth, mask)
    result.cache_bytes, result.cache_budget_bytes = cache.nbytes, cache.max_bytes
    if model.device.type == "cuda":  # on a CPU this would take minutes per model
        seconds = time.perf_counter()
        with SegmentationSession(phantom.image, model, intensity, EmbeddingCache(max_bytes=8 << 30)) as session:
            for future in session.prefetch(range(phantom.image.shape[0])).values():
                future.result()
        result.whole_volume_embedding_seconds = time.perf_counter() - seconds
        log(f"  all {phantom.image.shape[0]} slices embedded in {result.whole_volume_embedding_seconds:.1f} s")
    log(f"  RECIST to volume: {result.volume_target_slices} slices of a {'x'.join(map(str, phantom.image.shape[::-1]))} "
        f"CT in {result.volume_seconds:.1f} s (Dice {result.volume_dice:.3f} against the phantom's lesion)")
    return result


def run_benchmark(models: List[Tuple[str, Optional[str]]], device: str = "auto", runtime: str = "auto",
                  slices: int = 8, volume_slices: int = 300, prompts: int = 50, log: Log = print) -> BenchmarkReport:
    """Benchmark each of ``models`` (``(id, checkpoint or None)``); see the module docstring."""
    from .device import resolve_device

    torch_device = resolve_device(device)
    peak = matmul_peak_gflops(torch_device)
    report = BenchmarkReport(device_label(torch_device), platform.machine(), torch.get_num_threads(),
                             torch.__version__, peak)
    log(f"{report.device}: dense fp32 matmul peak {peak:.0f} GFLOP/s")
    phantom = phantom_ct(volume_slices)  # one CT for every model
    for model_id, checkpoint in models:
        report.models.append(benchmark_model(model_id, checkpoint, device, runtime, phantom, slices, prompts, peak,
                                             log))
    report.peak_resident_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def summary_table(report: BenchmarkReport) -> List[str]:
    lines = [f"device: {report.device}; torch {report.torch_version}; matmul peak {report.matmul_peak_gflops:.0f} GFLOP/s; "
             f"peak resident memory {report.peak_resident_mib:.0f} MiB",
             f"{'model':<14} {'weights':<9} {'runtime':<12} {'reference s/slice':>17} {'engine s/slice':>14} {'speed-up':>8} "
             f"{'enc. slices/s':>13} {'% peak':>6} {'mask IoU':>8} {'prompt p95':>10} {'volume s':>8}"]
    for m in report.models:
        lines.append(f"{m.model:<14} {m.weights[:9]:<9} {m.runtime:<12} {m.reference_seconds_per_slice:>17.3f} "
                     f"{m.engine_seconds_per_slice:>14.3f} {m.speedup:>7.2f}x {m.encoder_slices_per_second:>13.2f} "
                     f"{100 * m.encoder_share_of_matmul_peak:>5.0f}% {m.min_mask_iou:>8.4f} "
                     f"{m.prompt_latency_ms_p95:>8.1f}ms {m.volume_seconds:>8.1f}")
    return lines


def write_report(path: Path, report: BenchmarkReport) -> Path:
    """The results as JSON at ``path`` and the table beside it (``.txt``); returns the table's path."""
    import json

    from .output_files import atomic_output

    path = Path(path)
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    table = path.with_suffix(".txt")
    with atomic_output(table) as temporary:
        temporary.write_text("\n".join(summary_table(report)) + "\n", encoding="utf-8")
    return table
