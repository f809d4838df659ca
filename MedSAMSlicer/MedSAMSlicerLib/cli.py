"""The ``medsam-slicer`` command: RECIST markers or boxes in, a 3D segmentation out.

    medsam-slicer segment IMAGE --prompts PROMPTS.json -o OUTPUT.seg.nrrd
    medsam-slicer sample DIR          # write a phantom CT, its truth and RECIST prompts
    medsam-slicer evaluate --images DIR --labels DIR --protocol box-each -o REPORT
    medsam-slicer train --images DIR --labels DIR --epochs 10 -o RUN_DIR
    medsam-slicer models              # list the model ids

Bad input exits with status 2 and one line on stderr; no partial output file is left behind.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from .errors import MedSAMError, PromptError

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    from .encoder_runtime import RUNTIMES
    from .intensity import CT_PRESETS
    from .model_registry import DEFAULT_MODEL, MODELS

    parser = argparse.ArgumentParser(prog="medsam-slicer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment an image from a prompt file")
    segment.add_argument("image", help="image file SimpleITK reads (NIfTI, NRRD, MHA, ...) or a DICOM series folder")
    segment.add_argument("--prompts", required=True, help="prompt JSON (see README) or a Slicer .mrk.json")
    segment.add_argument("-o", "--output", required=True, help=".seg.nrrd, or a label image (.nii.gz, .nrrd, .mha)")
    segment.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS), help=f"default {DEFAULT_MODEL}")
    segment.add_argument("--checkpoint", help="model weights file (required for the ViT models)")
    segment.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    segment.add_argument("--runtime", default="auto", choices=RUNTIMES,
                         help="what runs the image encoder on the CPU (default auto: OpenVINO or ONNX Runtime when "
                              "installed, else PyTorch)")
    segment.add_argument("--window", default="auto",
                         help=f"intensity: {', '.join(CT_PRESETS)}, W,L (e.g. 400,40), percentile, or auto (default: "
                              "soft-tissue for CT, percentile otherwise)")
    segment.add_argument("--axis", type=int, choices=(0, 1, 2), help="slicing axis, IJK index (default: the prompt file's, else 2)")
    segment.add_argument("--propagate", type=int, default=0, metavar="N",
                         help="extend each target up to N slices beyond its annotated range (default 0: off)")
    segment.add_argument("--cache-dir", help="keep image embeddings here, to reuse across runs")
    segment.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="write a phantom CT with a known lesion and its RECIST prompts")
    sample.add_argument("directory")
    sample.add_argument("--every", type=int, default=5, help="RECIST markers on every N-th lesion slice (default 5)")

    from .evaluation import PROTOCOLS

    evaluate = commands.add_parser("evaluate", help="score models on labelled volumes under the published prompt protocols")
    evaluate.add_argument("--images", required=True, help="folder of images")
    evaluate.add_argument("--labels", required=True, help="folder of label volumes, named as the images")
    evaluate.add_argument("--labels-map", help='JSON file naming the labels, e.g. {"1": "liver", "2": "tumour"}')
    evaluate.add_argument("--model", action="append", metavar="ID[=CHECKPOINT]",
                          help=f"model to score (repeat to compare; default {DEFAULT_MODEL})")
    evaluate.add_argument("--protocol", action="append", choices=PROTOCOLS, help="prompt protocol (repeatable; default box-each)")
    evaluate.add_argument("--every", type=int, default=5, help="recist-sparse: markers every K slices (default 5)")
    evaluate.add_argument("--jitter", type=int, default=0, help="box protocols: move box sides by up to N px (default 0)")
    evaluate.add_argument("--clicks", type=int, default=5, help="iterative-points: clicks per slice (default 5)")
    evaluate.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm (default 2)")
    evaluate.add_argument("--window", default="auto", help="intensity, as for segment (default auto)")
    evaluate.add_argument("--axis", type=int, choices=(0, 1, 2), default=2, help="slicing axis (default 2)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--runtime", default="auto", choices=RUNTIMES, help="image encoder runtime, as for segment")
    evaluate.add_argument("-o", "--output", required=True, help="report folder (CSV, summary, PNG plots)")

    from .trainer import TRAIN_MODES, TrainingConfig

    defaults = TrainingConfig()
    train = commands.add_parser("train", help="fine-tune a model on labelled volumes (decoder only by default)")
    train.add_argument("--images", required=True, help="folder of images (NIfTI, NRRD, MHA; or 2D PNG/TIFF)")
    train.add_argument("--labels", required=True, help="folder of label images, named as the images")
    train.add_argument("--model", default=DEFAULT_MODEL, choices=("lite-medsam", "medsam-vit-b"),
                       help=f"default {DEFAULT_MODEL}")
    train.add_argument("--checkpoint", help="starting weights (required for medsam-vit-b)")
    train.add_argument("--train", default=defaults.train, choices=TRAIN_MODES,
                       help="what is trained: the mask decoder (default; embeddings computed once) or the image encoder too")
    train.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"slices per batch (default {defaults.batch_size})")
    train.add_argument("--accumulate", type=int, default=defaults.accumulate, help="batches per optimizer step (default 1)")
    train.add_argument("--lr", type=float, default=defaults.learning_rate, help="AdamW learning rate (default 1e-4)")
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay (default 0.01)")
    train.add_argument("--jitter", type=int, default=defaults.jitter, help="loosen box sides by 0..N px (default 20)")
    train.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction,
                       help="share of the cases held out to validate on (default 0.2; at least one case)")
    train.add_argument("--validation-case", action="append", default=[], metavar="FILE",
                       help="validate on this image file instead of a random share (repeatable)")
    train.add_argument("--seed", type=int, default=defaults.seed, help="split, shuffle and jitter seed (default 0)")
    train.add_argument("--window", default=defaults.window, help="intensity, as for segment (default auto)")
    train.add_argument("--axis", type=int, choices=(0, 1, 2), default=defaults.axis, help="slicing axis (default 2)")
    train.add_argument("--min-object-voxels", type=int, default=defaults.min_object_voxels,
                       help=f"drop ground-truth 3D objects smaller than this (default {defaults.min_object_voxels})")
    train.add_argument("--min-object-pixels", type=int, default=defaults.min_object_pixels,
                       help=f"drop ground-truth 2D objects smaller than this (default {defaults.min_object_pixels})")
    train.add_argument("--device", default="auto")
    train.add_argument("--no-amp", action="store_true", help="no mixed precision on the GPU")
    train.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    train.add_argument("-o", "--output", required=True, help="run folder: checkpoint, model.pth, log CSV, curves PNG")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    commands.add_parser("models", help="list the model ids")
    return parser


def _read_prompts(path: str, geometry, axis: Optional[int]):
    from .markups_file import read_markups_prompts
    from .prompt_file import read_prompt_file

    if path.lower().endswith(".mrk.json"):
        prompts = read_markups_prompts(path, geometry, axis=2 if axis is None else axis)
    else:
        prompts = read_prompt_file(path, axis)
    if not prompts.prompts:
        raise PromptError(f"prompt file {Path(path).name} holds no prompts")
    return prompts


def _segment(args) -> None:
    from tqdm import tqdm

    from .embedding_cache import EmbeddingCache
    from .image_io import check_output_path, read_image, write_segmentation
    from .intensity import IntensitySettings
    from .measurements import longest_diameter_in_volume_mm, volume_ml
    from .model_registry import load_model
    from .session import SegmentationSession

    output = check_output_path(args.output)
    if args.propagate < 0:
        raise PromptError(f"--propagate must be 0 or more, got {args.propagate}")
    image = read_image(args.image)
    prompts = _read_prompts(args.prompts, image.geometry, args.axis)
    prompts.key_boxes(image.array.shape)  # validate every prompt before the model is loaded
    intensity = IntensitySettings.parse(args.window, image.array, image.modality)
    model = load_model(args.model, args.checkpoint, args.device, args.runtime)
    started = time.perf_counter()
    with tqdm(desc="segmenting slices", unit="slice", disable=args.quiet, file=sys.stderr) as bar, \
            SegmentationSession(image.array, model, intensity, EmbeddingCache(directory=args.cache_dir)) as session:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        results = session.segment(prompts, propagate=args.propagate, progress=progress)
    write_segmentation(output, {label: r.mask for label, r in results.items()}, image.geometry)
    elapsed = time.perf_counter() - started
    for label, result in results.items():
        diameter, where = longest_diameter_in_volume_mm(result.mask, image.geometry, prompts.axis)
        print(f"label {label}: {len(result.slices)} slices, {volume_ml(result.mask, image.geometry):.2f} mL, "
              f"longest diameter {diameter:.1f} mm (slice {where})")
    print(f"wrote {output} ({args.model}, {intensity.key}, {model.device}/{model.runtime}, {elapsed:.1f} s)")


def _sample(args) -> None:
    from .sample_data import write_sample

    if args.every < 1:
        raise PromptError(f"--every must be 1 or more, got {args.every}")
    for path in write_sample(args.directory, args.every):
        print(f"wrote {path}")


def _evaluate(args) -> None:
    from tqdm import tqdm

    from .cohort_evaluation import EvaluationCase, EvaluationOptions, LabelledImage, evaluate_cohort
    from .evaluation_report import summary_lines, wilcoxon_lines
    from .image_io import paired_images, read_image

    def loader(image_path: Path, label_path: Path):
        def load() -> LabelledImage:
            image, labels = read_image(image_path), read_image(label_path)
            return LabelledImage(image.array, labels.array, tuple(reversed(image.geometry.spacing)), image.modality)
        return load

    options = EvaluationOptions(args.protocol or ["box-each"], args.window, args.axis, args.every, args.jitter,
                                args.clicks, args.tolerance, args.device, args.runtime)
    options.check()
    cases = [EvaluationCase(image.name, loader(image, label)) for image, label in paired_images(args.images, args.labels)]
    bars = {}

    def progress(what: str, done: int, total: int) -> None:
        bar = bars.setdefault(what, tqdm(desc=what, total=total, unit="case", file=sys.stderr))
        bar.update(done - bar.n)

    rows = evaluate_cohort(cases, args.model or ["lite-medsam"], Path(args.output), options,
                           _read_labels_map(args.labels_map), progress)
    for bar in bars.values():
        bar.close()
    print("\n".join(summary_lines(rows) + wilcoxon_lines(rows)))
    print(f"wrote {Path(args.output) / 'scores.csv'}, summary.txt, dsc_boxplot.png and overlays")


def _train(args) -> None:
    from tqdm import tqdm

    from .trainer import Distributed, TrainingConfig, train

    config = TrainingConfig(
        model=args.model, checkpoint=args.checkpoint, train=args.train, epochs=args.epochs, batch_size=args.batch_size,
        accumulate=args.accumulate, learning_rate=args.lr, weight_decay=args.weight_decay, jitter=args.jitter,
        validation_fraction=args.validation_fraction, validation_cases=tuple(args.validation_case), seed=args.seed,
        window=args.window, axis=args.axis, min_object_voxels=args.min_object_voxels,
        min_object_pixels=args.min_object_pixels, device=args.device, amp=not args.no_amp)
    bars = {}
    main_process = Distributed.from_environment().main  # under torchrun only the first process reports
    quiet = args.quiet or not main_process

    def progress(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(desc=stage, total=total, unit="slice" if "slice" in stage else "step",
                                     file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bars.pop(stage).close()

    result = train(config, args.images, args.labels, args.output, resume=args.resume, progress=progress,
                   log=lambda line: tqdm.write(line, file=sys.stdout))
    if not main_process:
        return
    start = result.history[0]["val_dsc"]
    print(f"validation DSC {start:.4f} at the start, best {result.best_dsc:.4f} at epoch {result.best_epoch}; "
          f"wrote {result.model_file} (load it with segment --model {config.model} --checkpoint), "
          f"training_log.csv and training_curves.png")


def _read_labels_map(path):
    if path is None:
        return {}
    import json
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PromptError(f"labels map {path} is not a readable JSON file ({error.__class__.__name__})") from None
    if not isinstance(document, dict) or not all(k.isdigit() and isinstance(v, str) for k, v in document.items()):
        raise PromptError(f'labels map {path} must map label values to names, e.g. {{"1": "liver"}}')
    return {int(k): v for k, v in document.items()}


def _models(args) -> None:
    from .model_registry import MODELS

    for spec in MODELS.values():
        needs = f"needs --checkpoint {spec.checkpoint_file}" if spec.checkpoint_file else "embedded weights"
        print(f"{spec.id:14s} {spec.description} ({needs})")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"segment": _segment, "sample": _sample, "evaluate": _evaluate, "train": _train,
         "models": _models}[args.command](args)
    except MedSAMError as error:
        print(f"medsam-slicer: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("medsam-slicer: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
