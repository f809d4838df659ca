"""The ``medsam-slicer`` command: RECIST markers or boxes in, a 3D segmentation out.

    medsam-slicer segment IMAGE --prompts PROMPTS.json -o OUTPUT.seg.nrrd
    medsam-slicer sample DIR          # write a phantom CT, its truth and RECIST prompts
    medsam-slicer evaluate --images DIR --labels DIR --protocol box-each -o REPORT
    medsam-slicer train --images DIR --labels DIR --epochs 10 -o RUN_DIR
    medsam-slicer batch --images DIR --prompts DIR -o OUT   # a cohort, resumable; torchrun shares it out
    medsam-slicer bench --model lite-medsam -o benchmark.json   # engine vs the naive published pipeline
    medsam-slicer models              # list the model ids

Bad input, and any file that cannot be read or written, exits with status 2 and one line on stderr,
checked before the model loads wherever it can be; no partial output file is left behind and no
input is ever written to. Ctrl+C and SIGTERM stop every command the same clean way (status 130 and
143; ``interrupts``). Warnings are one line each. An unexpected internal error exits with status 1
and one line (MEDSAM_SLICER_TRACEBACK=1 shows where it happened).
"""

import argparse
import os
import shutil
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

from .errors import MedSAMError, OutputError, PromptError, SettingsError

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsam-slicer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shared = _SharedOptions()
    for add_command in (_add_segment, _add_sample, _add_evaluate, _add_train, _add_batch, _add_bench):
        add_command(commands, shared)
    commands.add_parser("models", help="list the model ids")
    return parser


class _SharedOptions:
    """The options several subcommands take, each defined here once (name, type, choices, default, help), so that
    an option reads and behaves the same in every subcommand."""

    def __init__(self):
        from .models.inference_runtime import RUNTIMES
        from .models.model_registry import DEFAULT_MODEL, MODELS
        from .models.quantization import PRECISIONS
        from .volume.intensity import CT_PRESETS
        from .volume.refinement import DEFAULT_MODE, MODES

        self.definitions = {
            "--model": dict(default=DEFAULT_MODEL, choices=sorted(MODELS), help=f"default {DEFAULT_MODEL}"),
            "--checkpoint": dict(help="model weights file (required for the ViT models)"),
            "--device": dict(default="auto", help="auto (default), cpu, cuda or cuda:N"),
            "--runtime": dict(default="auto", choices=RUNTIMES,
                              help="what runs the networks on the CPU (default auto: OpenVINO or ONNX Runtime when "
                                   "installed, else PyTorch)"),
            "--window": dict(default="auto",
                             help=f"intensity: {', '.join(CT_PRESETS)}, W,L (e.g. 400,40), percentile, or auto "
                                  "(default: soft-tissue for CT, percentile otherwise)"),
            "--axis": dict(type=int, choices=(0, 1, 2), default=2, help="slicing axis, IJK index (default 2)"),
            "--propagate": dict(type=int, default=0, metavar="N",
                                help="extend each target beyond its annotated range, slice by slice, until the "
                                     "measured stopping rule finds it ended, at most N slices each way (default 0: "
                                     "off, as an unattended run cannot be looked at; 50 gives one marker a 3D result, "
                                     "see docs/propagation.md)"),
            "--mode": dict(default=DEFAULT_MODE, choices=MODES,
                           help="refined (default: zoomed inference, better on real scans) or published (exactly the "
                                "published MedSAM steps); see the README"),
            "--precision": dict(default="auto", choices=PRECISIONS,
                                help="the image encoder's arithmetic on the CPU: fp32, int8 (OpenVINO + NNCF; faster, "
                                     "masks change slightly, never with --mode published), or auto (default: int8 for "
                                     "weights whose accuracy gate passed, on a CPU with VNNI or AMX, in the refined "
                                     "mode; else fp32)"),
            "--quiet": dict(action="store_true", help="no progress bar"),
        }
        #: where the forms given once per model or mode to compare differ: a model may come with its checkpoint
        self.repeated = {"--model": dict(metavar="ID[=CHECKPOINT]", choices=None), "--mode": {}}

    def add(self, parser: argparse.ArgumentParser, *names: str, **changes) -> None:
        """The named options, in this order; ``changes`` (given with one name) are where a subcommand's use of that
        option differs."""
        for name in names:
            parser.add_argument(name, **{**self.definitions[name], **changes})

    def add_repeated(self, parser: argparse.ArgumentParser, name: str, purpose: str, note: str = "") -> None:
        """``--model`` (as ID or ID=CHECKPOINT) or ``--mode``, given once for each one to compare."""
        default = self.definitions[name]["default"]
        self.add(parser, name, action="append", default=None, **self.repeated[name],
                 help=f"{purpose} (repeat to compare; default {default}{note})")


def _add_segment(commands, shared: _SharedOptions) -> None:
    segment = commands.add_parser("segment", help="segment an image from a prompt file")
    segment.add_argument("image", help="image file SimpleITK reads (NIfTI, NRRD, MHA, ...) or a DICOM series folder")
    segment.add_argument("--prompts", required=True,
                         help="prompt JSON (see README), a Slicer .mrk.json, or a DICOM SR of RECIST lengths "
                              "(TID 1500) on the images of the DICOM series given as the image")
    segment.add_argument("-o", "--output", required=True,
                         help=".seg.nrrd, a label image (.nii.gz, .nrrd, .mha), or .dcm: a DICOM SEG "
                              "(DICOM series only)")
    segment.add_argument("--sr", metavar="REPORT.dcm",
                         help="also write the measurements as a DICOM SR (TID 1500: volume, longest diameter, the "
                              "RECIST lines used) referring to the SEG's segments (needs -o .dcm)")
    shared.add(segment, "--model", "--checkpoint", "--device", "--runtime", "--window")
    shared.add(segment, "--axis", default=None, help="slicing axis, IJK index (default: the prompt file's, else 2)")
    shared.add(segment, "--propagate", "--mode", "--precision")
    segment.add_argument("--cache-dir", help="keep image embeddings here, to reuse across runs")
    shared.add(segment, "--quiet")


def _add_sample(commands, shared: _SharedOptions) -> None:
    sample = commands.add_parser("sample", help="write a phantom CT with a known lesion and its RECIST prompts")
    sample.add_argument("directory")
    sample.add_argument("--every", type=int, default=5, help="RECIST markers on every N-th lesion slice (default 5)")


def _add_evaluate(commands, shared: _SharedOptions) -> None:
    from .evaluation.prompt_protocols import PROTOCOLS

    evaluate = commands.add_parser("evaluate",
                                   help="score models on labelled volumes under the published prompt protocols")
    evaluate.add_argument("--images", required=True, help="folder of images")
    evaluate.add_argument("--labels", required=True, help="folder of label volumes, named as the images")
    evaluate.add_argument("--labels-map", help='JSON file naming the labels, e.g. {"1": "liver", "2": "tumour"}')
    shared.add_repeated(evaluate, "--model", "model to score")
    evaluate.add_argument("--protocol", action="append", choices=PROTOCOLS,
                          help="prompt protocol (repeatable; default box-each)")
    shared.add_repeated(evaluate, "--mode", "pipeline mode to score")
    shared.add(evaluate, "--precision")
    evaluate.add_argument("--every", type=int, default=5, help="recist-sparse: markers every K slices (default 5)")
    evaluate.add_argument("--jitter", type=int, default=0,
                          help="box protocols: move box sides by up to N px (default 0)")
    evaluate.add_argument("--clicks", type=int, default=5, help="iterative-points: clicks per slice (default 5)")
    evaluate.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm (default 2)")
    evaluate.add_argument("--corrections", type=int, default=0, metavar="N",
                          help="recist-sparse: simulate the annotation study, fixing the worst slice with a box from "
                               "the truth up to N times (default 0: off)")
    evaluate.add_argument("--target-dsc", type=float, default=0.90, help="the study's stopping DSC (default 0.90)")
    shared.add(evaluate, "--window", "--axis", "--device", "--runtime")
    evaluate.add_argument("-o", "--output", required=True, help="report folder (CSV, summary, PNG plots)")


def _add_train(commands, shared: _SharedOptions) -> None:
    from .training.training_config import TRAIN_MODES, TrainingConfig

    defaults = TrainingConfig()
    train = commands.add_parser("train", help="fine-tune a model on labelled volumes (decoder only by default)")
    train.add_argument("--images", required=True, help="folder of images (NIfTI, NRRD, MHA; or 2D PNG/TIFF)")
    train.add_argument("--labels", required=True, help="folder of label images, named as the images")
    shared.add(train, "--model", choices=("lite-medsam", "medsam-vit-b"))
    shared.add(train, "--checkpoint", help="starting weights (required for medsam-vit-b)")
    train.add_argument("--train", default=defaults.train, choices=TRAIN_MODES,
                       help="what is trained: the mask decoder (default; embeddings computed once) or the image "
                            "encoder too")
    train.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help=f"slices per batch (default {defaults.batch_size})")
    train.add_argument("--accumulate", type=int, default=defaults.accumulate,
                       help="batches per optimizer step (default 1)")
    train.add_argument("--lr", type=float, default=defaults.learning_rate, help="AdamW learning rate (default 1e-4)")
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                       help="AdamW weight decay (default 0.01)")
    train.add_argument("--jitter", type=int, default=defaults.jitter, help="loosen box sides by 0..N px (default 20)")
    train.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction,
                       help="share of the cases held out to validate on (default 0.2; at least one case)")
    train.add_argument("--validation-case", action="append", default=[], metavar="FILE",
                       help="validate on this image file instead of a random share (repeatable)")
    train.add_argument("--seed", type=int, default=defaults.seed, help="split, shuffle and jitter seed (default 0)")
    shared.add(train, "--window", "--axis")
    train.add_argument("--min-object-voxels", type=int, default=defaults.min_object_voxels,
                       help=f"drop ground-truth 3D objects smaller than this (default {defaults.min_object_voxels})")
    train.add_argument("--min-object-pixels", type=int, default=defaults.min_object_pixels,
                       help=f"drop ground-truth 2D objects smaller than this (default {defaults.min_object_pixels})")
    shared.add(train, "--device")
    train.add_argument("--no-amp", action="store_true", help="no mixed precision on the GPU")
    train.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    train.add_argument("-o", "--output", required=True, help="run folder: checkpoint, model.pth, log CSV, curves PNG")
    shared.add(train, "--quiet")


def _add_batch(commands, shared: _SharedOptions) -> None:
    batch = commands.add_parser("batch", help="RECIST-to-volume for a cohort: many (image, prompts) cases, resumable")
    source = batch.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="CSV with columns image, prompts (and optionally case)")
    source.add_argument("--images", help="folder of images (or DICOM series folders); prompts from --prompts")
    batch.add_argument("--prompts", help="with --images: folder of NAME.json or NAME.mrk.json prompt files")
    batch.add_argument("-o", "--output", required=True, help="folder for the segmentations, case JSONs and summary.csv")
    batch.add_argument("--format", default=".seg.nrrd", choices=(".seg.nrrd", ".nii.gz", ".nrrd", ".mha", ".dcm"),
                       help="segmentation file type (default .seg.nrrd; .dcm: a DICOM SEG and SR per case, "
                            "CASE.seg.dcm and CASE.sr.dcm, for DICOM series)")
    batch.add_argument("--shard", metavar="I/N", help="take every N-th case starting at the I-th (default: this "
                                                      "process's share under torchrun, else all)")
    shared.add(batch, "--model", "--checkpoint", "--device", "--runtime", "--window", "--propagate", "--mode",
               "--precision", "--quiet")


def _add_bench(commands, shared: _SharedOptions) -> None:
    bench = commands.add_parser("bench", help="time the engine against the naive published pipeline, side by side")
    shared.add_repeated(bench, "--model", "model to time",
                        note="; a ViT model without a checkpoint gets seeded random weights, for its speed")
    bench.add_argument("--slices", type=int, default=8, help="slices timed on both paths (default 8)")
    bench.add_argument("--volume-slices", type=int, default=300,
                       help="slices of the 512x512 CT of the RECIST-to-volume run (default 300)")
    bench.add_argument("--prompts", type=int, default=50, help="prompts timed on a cached slice (default 50)")
    shared.add(bench, "--device", "--runtime")
    bench.add_argument("--no-processes", dest="processes", action="store_false",
                       help="skip the whole-process timings (start-up; the RECIST volume as `segment` runs it in "
                            "each mode and precision): minutes for the ViT models on a CPU")
    bench.add_argument("-o", "--output", default="benchmark.json", help="results JSON (the table goes beside it, .txt)")


def _segment(args) -> None:
    from .cases.file_segmentation import check_dicom_outputs, read_case, segment_case
    from .files.image_io import check_output_path
    from .files.output_files import check_output_folder, same_file
    from .models.model_registry import load_model
    from .models.quantization import check_precision
    from .volume.embedding_cache import EmbeddingCache

    if args.propagate < 0:
        raise SettingsError(f"--propagate must be 0 or more, got {args.propagate}")
    # everything that can be refused is refused before the model loads
    check_precision(args.precision, args.mode)
    case = read_case(args.image, args.prompts, args.window, args.axis)
    inputs = [path for path in (args.image, args.prompts, args.checkpoint) if path is not None]
    dicom_series = bool(case.image.dicom_files)
    output = check_output_path(args.output, inputs, case.prompts.labels, dicom_series)
    report = None if args.sr is None else check_output_path(args.sr, inputs, (), dicom_series, "--sr")
    if report is not None and same_file(report, output):
        raise OutputError(f"--sr {report} is the -o file; the SR and the SEG are two files")
    check_dicom_outputs(case, output, report)
    if args.cache_dir is not None:
        check_output_folder(args.cache_dir, inputs, "--cache-dir")
        if same_file(Path(args.cache_dir), output):
            raise OutputError(f"--cache-dir {args.cache_dir} is the output file {output}; give the cache a folder "
                              "of its own")
    cache = None if args.cache_dir is None else EmbeddingCache(directory=args.cache_dir)  # else the session's own
    model = load_model(args.model, args.checkpoint, args.device, args.runtime, args.precision, args.mode)
    with _progress_bar(desc="segmenting slices", unit="box", disable=args.quiet) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = segment_case(case, output, model, args.propagate, cache, progress, args.mode, report)
    _say(*(f"label {target.label}: {target.slices} slices, {target.volume_ml:.2f} mL, "
           f"longest diameter {target.longest_diameter_mm:.1f} mm (slice {target.diameter_slice})"
           for target in result.targets),
         f"wrote {output}{'' if report is None else f' and {report}'} ({args.model}, {args.mode} mode, "
         f"{result.intensity}, {model.device}/{model.runtime}/{model.precision}, {result.seconds:.1f} s)")


def _sample(args) -> None:
    from .files.output_files import check_output_folder
    from .files.sample_data import write_sample

    if args.every < 1:
        raise SettingsError(f"--every must be 1 or more, got {args.every}")
    check_output_folder(args.directory)
    for path in write_sample(args.directory, args.every):
        _say(f"wrote {path}")


def _evaluate(args) -> None:
    from .evaluation.cohort_evaluation import EvaluationCase, EvaluationOptions, LabelledImage, evaluate_cohort
    from .files.image_io import paired_images, read_image, read_label_image
    from .files.output_files import check_output_folder

    def loader(image_path: Path, label_path: Path):
        def load() -> LabelledImage:
            image, labels = read_image(image_path), read_label_image(label_path)
            return LabelledImage(image.array, labels.array, tuple(reversed(image.geometry.spacing)), image.modality)
        return load

    options = EvaluationOptions(
        protocols=args.protocol or ["box-each"], window=args.window, axis=args.axis, every=args.every,
        jitter=args.jitter, clicks=args.clicks, tolerance_mm=args.tolerance, device=args.device, runtime=args.runtime,
        corrections=args.corrections, target_dsc=args.target_dsc, modes=args.mode or EvaluationOptions.modes,
        precision=args.precision)
    pairs = paired_images(args.images, args.labels)
    check_output_folder(args.output, [path for pair in pairs for path in pair])
    cases = [EvaluationCase(image.name, loader(image, label)) for image, label in pairs]
    with _stage_bars(quiet=False) as progress:
        evaluate_cohort(cases, args.model or ["lite-medsam"], Path(args.output), options,
                        _read_labels_map(args.labels_map), progress)
    _say((Path(args.output) / "summary.txt").read_text(encoding="utf-8").rstrip("\n"),
         f"wrote {Path(args.output) / 'scores.csv'}, summary.txt, dsc_boxplot.png and overlays"
         + (", corrections.csv and correction_curve.png" if args.corrections else ""))


def _train(args) -> None:
    from tqdm import tqdm

    from .files.image_io import paired_images
    from .files.output_files import check_output_folder
    from .training.distributed import Distributed
    from .training.trainer import TrainingConfig, train

    check_output_folder(args.output, [path for pair in paired_images(args.images, args.labels) for path in pair])
    config = TrainingConfig(
        model=args.model, checkpoint=args.checkpoint, train=args.train, epochs=args.epochs, batch_size=args.batch_size,
        accumulate=args.accumulate, learning_rate=args.lr, weight_decay=args.weight_decay, jitter=args.jitter,
        validation_fraction=args.validation_fraction, validation_cases=tuple(args.validation_case), seed=args.seed,
        window=args.window, axis=args.axis, min_object_voxels=args.min_object_voxels,
        min_object_pixels=args.min_object_pixels, device=args.device, amp=not args.no_amp)
    main_process = Distributed.from_environment().main  # under torchrun only the first process reports
    with _stage_bars(quiet=args.quiet or not main_process) as progress:
        result = train(config, args.images, args.labels, args.output, resume=args.resume, progress=progress,
                       log=lambda line: tqdm.write(line, file=sys.stdout))
    if not main_process:
        return
    start = result.history[0]["val_dsc"]
    _say(f"validation DSC {start:.4f} at the start, best {result.best_dsc:.4f} at epoch {result.best_epoch}; "
         f"wrote {result.model_file} (load it with segment --model {config.model} --checkpoint), "
         f"training_log.csv and training_curves.png")


def _batch(args) -> None:
    from .cases.cohort_segmentation import cases_from_csv, cases_from_folders, parse_shard, segment_cohort
    from .files.output_files import check_output_folder
    from .models.model_registry import load_model
    from .training.distributed import Distributed

    if args.images is not None and args.prompts is None:
        raise SettingsError("--images needs --prompts (the folder of prompt files)")
    cases = cases_from_csv(Path(args.csv)) if args.csv else cases_from_folders(Path(args.images), Path(args.prompts))
    inputs = [path for case in cases for path in case.inputs] + [p for p in (args.csv, args.checkpoint) if p]
    check_output_folder(args.output, inputs)
    place = Distributed.from_environment()
    shard = parse_shard(args.shard, place.rank, place.world)
    model = load_model(args.model, args.checkpoint, place.device(args.device), args.runtime, args.precision, args.mode)
    with _progress_bar(unit="case", disable=args.quiet) as bar:
        def progress(stage: str, done: int, total: int) -> None:
            bar.set_description(stage)
            bar.total = total
            bar.update(done - bar.n)

        outcome = segment_cohort(cases, model, Path(args.output), args.format, shard, args.window, args.propagate,
                                 progress, args.mode)
    _say(f"shard {shard[0] + 1}/{shard[1]}: {len(outcome.done)} segmented, {len(outcome.skipped)} already done, "
         f"{len(outcome.failed)} failed; summary in {Path(args.output) / 'summary.csv'}")
    if outcome.failed:
        raise MedSAMError(f"{len(outcome.failed)} case(s) failed, reasons in their .error.txt files: "
                          + ", ".join(outcome.failed[:5]) + (" ..." if len(outcome.failed) > 5 else ""))


def _bench(args) -> None:
    from .evaluation.benchmark import run_benchmark, summary_table, write_report
    from .files.output_files import check_writable_folder
    from .models.model_registry import parse_model_choice

    if args.slices < 1 or args.prompts < 1 or args.volume_slices < 48:
        raise SettingsError("--slices and --prompts must be 1 or more, --volume-slices 48 or more "
                            "(the target spans 40)")
    models = [parse_model_choice(text) for text in (args.model or ["lite-medsam"])]
    check_writable_folder(Path(args.output).parent, f"output {args.output}: folder")
    report = run_benchmark(models, args.device, args.runtime, args.slices, args.volume_slices, args.prompts,
                           args.processes)
    table = write_report(Path(args.output), report)
    _say(*summary_table(report), f"wrote {args.output} and {table}")


@contextmanager
def _stage_bars(quiet: bool):
    """A ``progress(stage, done, total)`` callback drawing one progress bar per stage; every bar is closed on the
    way out, so an error is printed on a line of its own."""
    bars = {}

    def progress(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = _progress_bar(desc=stage, total=total)
        bar.update(done - bar.n)
        if done >= total:
            bars.pop(stage).close()
    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()


def _read_labels_map(path):
    """The label names ``--labels-map`` gives; a map that cannot be read or used is a bad option value."""
    if path is None:
        return {}
    from .files.json_file import read_json
    from .files.numbers import label_number

    try:
        document = read_json(path, "labels map")
        if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
            raise SettingsError(f'labels map {path} must map label values to names, e.g. {{"1": "liver"}}')
        return {label_number(key, f"labels map {path}: key"): name for key, name in document.items()}
    except PromptError as error:  # what the JSON and label readers say of a prompt file holds for the map too
        raise SettingsError(str(error)) from None


def _models(args) -> None:
    from .models.model_registry import MODELS

    for spec in MODELS.values():
        needs = f"needs --checkpoint {spec.checkpoint_file}" if spec.checkpoint_file else "embedded weights"
        _say(f"{spec.id:14s} {spec.description} ({needs})")


def main(argv: Optional[List[str]] = None) -> int:
    from .interrupts import exit_status, interrupt_message, signals_as_interrupts

    args = _parser().parse_args(argv)
    with warnings.catch_warnings(), signals_as_interrupts():
        warnings.showwarning = _warning_line
        try:
            {"segment": _segment, "sample": _sample, "evaluate": _evaluate, "train": _train,
             "batch": _batch, "bench": _bench, "models": _models}[args.command](args)
            _say()  # flushed: a report that cannot be written is an error, now
        except MedSAMError as error:
            return _fail(str(error), EXIT_BAD_INPUT)
        except OSError as error:  # a file that could not be read or written, wherever it surfaced
            where = f"{error.filename}: " if error.filename else ""
            return _fail(f"{where}{error.strerror or error}", EXIT_BAD_INPUT)
        except KeyboardInterrupt as interrupt:  # Ctrl+C, or SIGTERM from a scheduler (interrupts)
            return _fail(interrupt_message(interrupt), exit_status(interrupt))
        except Exception as error:
            if os.environ.get("MEDSAM_SLICER_TRACEBACK"):
                traceback.print_exc()
            return _fail(f"internal error ({error.__class__.__name__}: {error}); please report it", 1,
                         "set MEDSAM_SLICER_TRACEBACK=1 to see where")
    return 0


def _say(*lines: str) -> None:
    """``lines`` on standard output, then flushed. What the output's encoding cannot hold (a file name that is not
    UTF-8) is escaped; an output that cannot be written (a full disk) is an error that says it is standard output."""
    stream = sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        for line in lines:
            stream.write(line.encode(encoding, "backslashreplace").decode(encoding) + "\n")
        stream.flush()
    except OSError as error:
        raise OutputError(f"cannot write to standard output: {error.strerror or error}") from None


_bars_shown = False  # whether a progress bar has been drawn on stderr by this process


def _progress_bar(**options):
    """A progress bar on stderr that leaves nothing behind when it closes."""
    from tqdm import tqdm

    global _bars_shown
    _bars_shown = _bars_shown or not options.get("disable", False)
    return tqdm(file=sys.stderr, leave=False, **options)


def _fail(message: str, status: int, hint: str = "") -> int:
    """One line on stderr, whatever the message holds, on a line of its own.

    A bar interrupted while it was being drawn is never closed, so its text may still be on the
    line: it is blanked first, as tqdm blanks a closed bar.
    """
    line = " ".join(message.split())
    if _bars_shown:
        sys.stderr.write("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r")
    print(f"medsam-slicer: error: {line}" + (f" ({hint})" if hint else ""), file=sys.stderr)
    return status


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, above any progress bar."""
    from tqdm import tqdm

    tqdm.write(f"medsam-slicer: warning: {' '.join(str(message).split())}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
