"""How fast the engine is, measured against the naive published pipeline on the same slices in the same run.

For each model: the naive reference path (``reference_pipeline``: per slice the published
preprocessing, one encoder call, one decoder call, nothing reused) and the engine's path (the
background worker, the optimised encoder runtime, the cache) segment the same slices with the same
boxes; their masks must agree (IoU >= 0.99 per slice) and the ratio of their times is the speed-up.
Where int8 can run, the int8 encoder (``quantization``) is a third path in the same loop. Then:
prompt-to-mask latency on a cached slice (mask written into the volume's label array included),
RECIST-to-volume time for a 40-slice target with markers every 5 slices in a 512x512x300 CT, the
encoder's share of the machine's measured matmul peak (fp32, and int8 for the int8 encoder), and
peak resident memory. Last, as a user runs it (``process_benchmark``): start-up to the first
slice, and the whole ``segment`` process for that RECIST volume in each mode and precision, against
the naive pipeline's time for the same slices. Absolute times are labelled with the device they
came from; on shared CPUs compare the ratios, which are measured side by side.
"""

import math
import platform
import resource
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..files.sample_data import Phantom, make_phantom, recist_prompts
from ..models.model_registry import build_network, load_model, model_spec
from ..models.quantization import choose_precision, int8_unavailable
from ..models.slice_model import SliceModel
from ..prompts.geometry import occupied_slices
from ..prompts.prompt_simulation import bounding_box
from ..volume.embedding_cache import EmbeddingCache
from ..volume.intensity import IntensitySettings
from ..volume.refinement import DEFAULT_MODE
from ..volume.session import SegmentationSession
from .metrics import dice, iou
from .process_benchmark import ProcessRun, recist_volume_run, startup_seconds
from .reference_pipeline import reference_mask

Log = Callable[[str], None]
MASK_IOU_REQUIRED = 0.99
#: the phantom CT's intensity, as `segment --window auto` chooses it for a CT (the whole-process runs use that)
PHANTOM_WINDOW = IntensitySettings.preset("soft-tissue")


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
    # the int8 encoder, timed in the same loop (NaN where int8 cannot run)
    int8_engine_seconds_per_slice: float = float("nan")
    int8_encoder_slices_per_second: float = float("nan")
    int8_encoder_share_of_int8_peak: float = float("nan")
    int8_min_mask_iou: float = float("nan")  # against the naive pipeline's masks, as the fp32 engine's
    int8_mean_mask_iou: float = float("nan")
    # whole processes (process_benchmark), exports cached
    startup_seconds: float = float("nan")
    naive_volume_seconds: float = float("nan")  # the naive pipeline's seconds per slice times the target's slices
    processes: Dict[str, ProcessRun] = field(default_factory=dict)  # "published fp32", ..., "default: refined int8"


@dataclass
class BenchmarkReport:
    device: str
    cpu: str
    threads: int
    torch_version: str
    matmul_peak_gflops: float
    int8_matmul_peak_gops: float
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


def int8_matmul_peak_gops(device: torch.device, repeats: int = 5) -> float:
    """The best int8 matrix-multiply rate (int32 accumulation) over a few sizes, or NaN where PyTorch has none."""
    best = 0.0
    for size in (1024, 2048, 3072):
        a = torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device)
        b = torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device)
        try:
            torch._int_mm(a, b)
        except (AttributeError, RuntimeError, NotImplementedError):
            return float("nan")
        for _ in range(repeats):
            _synchronise(device)
            started = time.perf_counter()
            torch._int_mm(a, b)
            _synchronise(device)
            best = max(best, 2 * size ** 3 / (time.perf_counter() - started) / 1e9)
    return best


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_gflop(model: SliceModel) -> float:
    """FLOPs of one encoder call (PyTorch's own counter on the network)."""
    from torch.utils.flop_counter import FlopCounterMode

    example = torch.zeros(1, 3, model.input_size, model.input_size, device=model.torch_device)
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


@dataclass(frozen=True)
class BenchmarkRun:
    """What every model of one run is measured on: the device and runtime asked for, the phantom CT, how many slices
    and prompts, the machine's matmul peaks (fp32, int8), whether to time whole processes, and where progress goes."""
    device: str
    runtime: str
    phantom: Phantom
    slices: int
    prompts: int
    peaks: Tuple[float, float]
    processes: bool
    log: Log


@dataclass(frozen=True)
class _LoadedModel:
    """A model as the benchmark loaded it: the engines it times, which weights, and how long loading took."""
    model: SliceModel
    int8: Optional[SliceModel]  # the same weights with the int8 encoder, where it can run
    weights: str
    setup_seconds: float

    def engines(self) -> Dict[str, SliceModel]:
        return {"fp32": self.model} if self.int8 is None else {"fp32": self.model, "int8": self.int8}


class _Stopwatch:
    """The seconds of each ``with`` block it times (its laps): one timer for every loop, so they time alike."""

    def __init__(self) -> None:
        self.laps: List[float] = []

    def __enter__(self) -> "_Stopwatch":
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.laps.append(time.perf_counter() - self._started)

    @property
    def seconds(self) -> float:
        return sum(self.laps)


@dataclass(frozen=True)
class _SameSlices:
    """The slices every path segments, spread over the lesion 2 slices in from its ends, each with the RECIST
    convention's box (the lesion's extent plus 5 px)."""
    chosen: List[int]
    boxes: Dict[int, np.ndarray]

    @classmethod
    def of(cls, phantom: Phantom, count: int) -> "_SameSlices":
        lesion = occupied_slices(phantom.truth, 2)
        chosen = [int(i) for i in np.linspace(lesion[0] + 2, lesion[-1] - 2, count).round()]
        return cls(chosen, {index: bounding_box(phantom.truth[index]) + [-5.0, -5.0, 5.0, 5.0] for index in chosen})


@dataclass
class _PathTiming:
    """One path on the same slices: its masks, its time to the mask, and (an engine's) its encoder's time within."""
    masks: Dict[int, np.ndarray] = field(default_factory=dict)
    total: _Stopwatch = field(default_factory=_Stopwatch)
    encoder: _Stopwatch = field(default_factory=_Stopwatch)


@dataclass(frozen=True)
class _EngineFigures:
    """An engine path's figures on the same slices, its masks against the naive pipeline's."""
    seconds_per_slice: float
    encoder_slices_per_second: float
    share_of_peak: float  # of the matmul peak at the encoder's precision; NaN without one
    ious: List[float]  # per chosen slice


@dataclass
class _SameSliceTimings:
    """The naive pipeline's and each engine's timings on the same slices, one encoder call's GFLOP, and the prompt
    latency on a cached slice (p50, p95 ms)."""
    slices: _SameSlices
    gflop: float
    reference: _PathTiming = field(default_factory=_PathTiming)
    engines: Dict[str, _PathTiming] = field(default_factory=dict)
    prompt_latency_ms: Tuple[float, float] = (float("nan"), float("nan"))

    def reference_seconds_per_slice(self) -> float:
        return self.reference.total.seconds / len(self.slices.chosen)

    def engine(self, name: str, peak: float) -> _EngineFigures:
        count, timing = len(self.slices.chosen), self.engines[name]
        return _EngineFigures(
            seconds_per_slice=timing.total.seconds / count,
            encoder_slices_per_second=count / timing.encoder.seconds,
            share_of_peak=self.gflop / (timing.encoder.seconds / count) / peak if peak else float("nan"),
            ious=[iou(self.reference.masks[i], timing.masks[i]) for i in self.slices.chosen])


def benchmark_model(model_id: str, checkpoint: Optional[str], run: BenchmarkRun) -> ModelBenchmark:
    """One model's figures in ``run``; a model whose trained weights are a separate file, given none, is timed with
    seeded random weights of its architecture."""
    weights = "embedded" if checkpoint is None else Path(checkpoint).name
    with tempfile.TemporaryDirectory() as folder:
        if checkpoint is None and model_spec(model_id).checkpoint_file:
            checkpoint, weights = random_checkpoint(model_id, Path(folder)), "random"
        started = time.perf_counter()
        model = load_model(model_id, checkpoint, run.device, run.runtime)
        setup = time.perf_counter() - started
        int8 = _int8_model(model_id, checkpoint, model, run.runtime)
        result = _same_slices(_LoadedModel(model, int8, weights, setup), run)
        _recist_volume(model, run.phantom, result, run.log)
        if run.processes:
            options = ["--model", model_id, "--device", str(model.device), "--runtime", model.runtime]
            default = (f"default: {DEFAULT_MODE} "
                       f"{choose_precision('auto', model.fingerprint, DEFAULT_MODE, model.runtime)}")
            _whole_processes(Path(folder), run.phantom,
                             options + (["--checkpoint", str(checkpoint)] if checkpoint else []),
                             int8 is not None, default, result, run.log)
    return result


def _int8_model(model_id: str, checkpoint: Optional[str], model: SliceModel, runtime: str) -> Optional[SliceModel]:
    """The same weights with the int8 encoder, where it can run (CPU, OpenVINO, NNCF); else None."""
    if model.runtime != "openvino" or int8_unavailable() is not None:
        return None
    return load_model(model_id, checkpoint, str(model.device), runtime, precision="int8")


def _same_slices(loaded: _LoadedModel, run: BenchmarkRun) -> ModelBenchmark:
    """The naive pipeline, the engine and the int8 engine on the same slices; then prompt latency on a cached slice."""
    model, shape = loaded.model, run.phantom.image.shape
    slices = _SameSlices.of(run.phantom, run.slices)
    run.log(f"{model.model_id}: {model.device}/{model.runtime}, setup {loaded.setup_seconds:.1f} s; {run.slices} "
            f"slices of {shape[1]}x{shape[2]}")
    timings = _SameSliceTimings(slices, encoder_gflop(model))  # also a warm-up call
    with ExitStack() as open_sessions:
        sessions = {name: open_sessions.enter_context(
                        SegmentationSession(run.phantom.image, engine, PHANTOM_WINDOW, EmbeddingCache()))
                    for name, engine in loaded.engines().items()}
        _time_same_slices(timings, model, sessions)
        fp32, reference_seconds = timings.engine("fp32", run.peaks[0]), timings.reference_seconds_per_slice()
        run.log(f"  reference path: {reference_seconds:.3f} s per slice")
        run.log(f"  engine path:    {fp32.seconds_per_slice:.3f} s per slice "
                f"({reference_seconds / fp32.seconds_per_slice:.2f}x), masks IoU >= {min(fp32.ious):.4f}")
        timings.prompt_latency_ms = _prompt_latency_ms(sessions["fp32"], slices, run.prompts)
        run.log(f"  prompt on a cached slice: p50 {timings.prompt_latency_ms[0]:.1f} ms, "
                f"p95 {timings.prompt_latency_ms[1]:.1f} ms")
    result = _fp32_result(loaded, run, timings, fp32)
    if loaded.int8 is not None:
        _add_int8(result, timings, run)
    return result


def _time_same_slices(timings: _SameSliceTimings, model: SliceModel, sessions: Dict[str, SegmentationSession]) -> None:
    """The naive pipeline, then each engine, slice by slice, so that the machine's load changes hit them alike."""
    timings.engines = {name: _PathTiming() for name in sessions}
    for index in timings.slices.chosen:
        box = timings.slices.boxes[index]
        with timings.reference.total:
            timings.reference.masks[index] = reference_mask(model, sessions["fp32"].volume_u8[index], box)
        for name, session in sessions.items():
            _time_engine(timings.engines[name], session, index, box)


def _time_engine(timing: _PathTiming, session: SegmentationSession, index: int, box: np.ndarray) -> None:
    """One slice through the engine: the encoder (its prefetch), timed alone too, then the mask."""
    with timing.total:
        with timing.encoder:
            session.prefetch([index])[index].result()
        timing.masks[index] = session.segment_slice(index, [box])


def _prompt_latency_ms(session: SegmentationSession, slices: _SameSlices, prompts: int) -> Tuple[float, float]:
    """p50 and p95 from prompt to mask of a user dragging a box on a cached slice, the mask written into the
    volume's label array included."""
    labels = np.zeros(session.volume_u8.shape, dtype=np.uint8)
    rng = np.random.default_rng(0)
    stopwatch = _Stopwatch()
    for n in range(prompts):
        index = slices.chosen[n % len(slices.chosen)]
        box = slices.boxes[index] + rng.uniform(-3, 3, 4)
        with stopwatch:
            labels[index] = session.segment_slice(index, [box])
    p50, p95 = (float(np.percentile(stopwatch.laps, q)) * 1000 for q in (50, 95))
    return p50, p95


def _fp32_result(loaded: _LoadedModel, run: BenchmarkRun, timings: _SameSliceTimings,
                 fp32: _EngineFigures) -> ModelBenchmark:
    """The model's result: the fp32 engine against the naive pipeline, and its prompt latency."""
    model, reference_seconds = loaded.model, timings.reference_seconds_per_slice()
    return ModelBenchmark(
        model=model.model_id, weights=loaded.weights, runtime=model.runtime, device=str(model.device),
        slices=run.slices, slice_shape=list(run.phantom.image.shape[1:]), setup_seconds=loaded.setup_seconds,
        reference_seconds_per_slice=reference_seconds, engine_seconds_per_slice=fp32.seconds_per_slice,
        speedup=reference_seconds / fp32.seconds_per_slice, encoder_slices_per_second=fp32.encoder_slices_per_second,
        encoder_gflop_per_slice=timings.gflop, encoder_share_of_matmul_peak=fp32.share_of_peak,
        min_mask_iou=min(fp32.ious), masks_equal=min(fp32.ious) >= MASK_IOU_REQUIRED,
        prompt_latency_ms_p50=timings.prompt_latency_ms[0], prompt_latency_ms_p95=timings.prompt_latency_ms[1])


def _add_int8(result: ModelBenchmark, timings: _SameSliceTimings, run: BenchmarkRun) -> None:
    """The int8 engine's figures, timed in the same loop, against the naive pipeline and the fp32 encoder."""
    int8 = timings.engine("int8", run.peaks[1])
    result.int8_engine_seconds_per_slice = int8.seconds_per_slice
    result.int8_encoder_slices_per_second = int8.encoder_slices_per_second
    result.int8_encoder_share_of_int8_peak = int8.share_of_peak
    result.int8_min_mask_iou, result.int8_mean_mask_iou = min(int8.ious), float(np.mean(int8.ious))
    encoders = timings.engines["fp32"].encoder.seconds / timings.engines["int8"].encoder.seconds
    run.log(f"  int8 engine:    {int8.seconds_per_slice:.3f} s per slice "
            f"({result.reference_seconds_per_slice / int8.seconds_per_slice:.2f}x), encoder "
            f"{encoders:.2f}x fp32's; masks IoU against the naive pipeline's: "
            f"mean {result.int8_mean_mask_iou:.4f}, min {result.int8_min_mask_iou:.4f}")


def _recist_volume(model: SliceModel, phantom: Phantom, result: ModelBenchmark, log: Log) -> None:
    """RECIST to volume in this process (model loaded), and on a GPU every slice of the CT embedded."""
    recist = recist_prompts(phantom, every=5)
    cache = EmbeddingCache()
    seconds = time.perf_counter()
    with SegmentationSession(phantom.image, model, PHANTOM_WINDOW, cache) as session:
        mask = session.segment(recist)[1].mask
    result.volume_seconds = time.perf_counter() - seconds
    result.volume_shape = list(phantom.image.shape)
    result.volume_target_slices = int(len(occupied_slices(mask, 2)))
    result.volume_dice = dice(phantom.truth, mask)
    result.cache_bytes, result.cache_budget_bytes = cache.nbytes, cache.max_bytes
    if model.device.type == "cuda":  # on a CPU this would take minutes per model
        seconds = time.perf_counter()
        with SegmentationSession(phantom.image, model, PHANTOM_WINDOW, EmbeddingCache(max_bytes=8 << 30)) as session:
            for future in session.prefetch(range(phantom.image.shape[0])).values():
                future.result()
        result.whole_volume_embedding_seconds = time.perf_counter() - seconds
        log(f"  all {phantom.image.shape[0]} slices embedded in {result.whole_volume_embedding_seconds:.1f} s")
    log(f"  RECIST to volume: {result.volume_target_slices} slices of a "
        f"{'x'.join(map(str, phantom.image.shape[::-1]))} "
        f"CT in {result.volume_seconds:.1f} s (Dice {result.volume_dice:.3f} against the phantom's lesion)")


def _whole_processes(folder: Path, phantom: Phantom, options: List[str], int8: bool, default: str,
                     result: ModelBenchmark, log: Log) -> None:
    """Start-up, and the RECIST volume as whole ``segment`` processes, against the naive pipeline's time: in each mode
    and precision, then with neither option given (``default`` names what that runs)."""
    result.startup_seconds = startup_seconds(folder, phantom, options)
    log(f"  start-up to the first slice (a whole process, exports cached): {result.startup_seconds:.2f} s")
    result.naive_volume_seconds = result.reference_seconds_per_slice * result.volume_target_slices
    runs = {f"{mode} {precision}": ["--mode", mode, "--precision", precision]
            for mode, precision in ([("published", "fp32"), ("refined", "fp32")]
                                    + ([("refined", "int8")] if int8 else []))}
    for name, chosen in {**runs, default: []}.items():
        run = recist_volume_run(folder, phantom, options + chosen)
        result.processes[name] = run
        log(f"  RECIST to volume, whole process, {name}: {run.seconds:.1f} s "
            f"({result.naive_volume_seconds / run.seconds:.2f}x the naive pipeline's "
            f"{result.naive_volume_seconds:.1f} s), "
            f"Dice {run.dice:.3f}, peak resident {run.peak_resident_mib:.0f} MiB")


def run_benchmark(models: List[Tuple[str, Optional[str]]], device: str = "auto", runtime: str = "auto",
                  slices: int = 8, volume_slices: int = 300, prompts: int = 50, processes: bool = True,
                  log: Log = print) -> BenchmarkReport:
    """Benchmark each of ``models`` (``(id, checkpoint or None)``); see the module docstring. ``processes``: also
    time whole ``segment`` processes (start-up, RECIST volume per mode and precision)."""
    from ..models.device import resolve_device

    torch_device = torch.device(str(resolve_device(device)))
    peaks = matmul_peak_gflops(torch_device), int8_matmul_peak_gops(torch_device)
    if peaks[1] < peaks[0]:  # an emulated int8 product (no VNNI, no int8 GPU kernel): no yardstick for int8
        peaks = peaks[0], float("nan")
    report = BenchmarkReport(device_label(torch_device), platform.machine(), torch.get_num_threads(),
                             torch.__version__, *peaks)
    log(f"{report.device}: dense matmul peak {peaks[0]:.0f} GFLOP/s fp32, {peaks[1]:.0f} GOP/s int8")
    run = BenchmarkRun(device, runtime, phantom_ct(volume_slices), slices, prompts, peaks, processes, log)
    for model_id, checkpoint in models:  # one phantom CT for every model
        report.models.append(benchmark_model(model_id, checkpoint, run))
    report.peak_resident_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def summary_table(report: BenchmarkReport) -> List[str]:
    lines = [f"device: {report.device}; torch {report.torch_version}; matmul peak {report.matmul_peak_gflops:.0f} "
             f"GFLOP/s fp32, {report.int8_matmul_peak_gops:.0f} GOP/s int8; "
             f"peak resident memory {report.peak_resident_mib:.0f} MiB",
             f"{'model':<14} {'weights':<9} {'runtime':<12} {'reference s/slice':>17} {'engine s/slice':>14} "
             f"{'speed-up':>8} {'enc. slices/s':>13} {'% peak':>6} {'mask IoU':>8} {'prompt p95':>10} {'volume s':>8}"]
    for m in report.models:
        lines.append(f"{m.model:<14} {m.weights[:9]:<9} {m.runtime:<12} {m.reference_seconds_per_slice:>17.3f} "
                     f"{m.engine_seconds_per_slice:>14.3f} {m.speedup:>7.2f}x {m.encoder_slices_per_second:>13.2f} "
                     f"{100 * m.encoder_share_of_matmul_peak:>5.0f}% {m.min_mask_iou:>8.4f} "
                     f"{m.prompt_latency_ms_p95:>8.1f}ms {m.volume_seconds:>8.1f}")
    for m in report.models:
        if not math.isnan(m.int8_engine_seconds_per_slice):
            lines.append(f"{m.model}: int8 engine {m.int8_engine_seconds_per_slice:.3f} s/slice "
                         f"({m.reference_seconds_per_slice / m.int8_engine_seconds_per_slice:.2f}x), encoder "
                         f"{m.int8_encoder_slices_per_second:.2f} slices/s "
                         f"({100 * m.int8_encoder_share_of_int8_peak:.0f}% of the int8 peak), mask IoU against "
                         f"the naive pipeline mean {m.int8_mean_mask_iou:.4f}, min {m.int8_min_mask_iou:.4f}")
        if m.processes:
            lines.append(f"{m.model}: whole process, exports cached: start-up to the first slice "
                         f"{m.startup_seconds:.2f} s; RECIST to a {m.volume_target_slices}-slice volume, naive "
                         f"pipeline {m.naive_volume_seconds:.1f} s, then " + "; ".join(
                             f"{name} {run.seconds:.1f} s ({m.naive_volume_seconds / run.seconds:.2f}x, Dice "
                             f"{run.dice:.3f}, {run.peak_resident_mib:.0f} MiB)" for name, run in m.processes.items()))
    return lines


def write_report(path: Path, report: BenchmarkReport) -> Path:
    """The results as JSON at ``path`` and the table beside it (``.txt``); returns the table's path."""
    import json

    from ..files.output_files import atomic_output

    path = Path(path)
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    table = path.with_suffix(".txt")
    with atomic_output(table) as temporary:
        temporary.write_text("\n".join(summary_table(report)) + "\n", encoding="utf-8")
    return table
