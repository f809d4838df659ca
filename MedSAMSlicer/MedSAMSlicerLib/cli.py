"""The ``medsam-slicer`` command: RECIST markers or boxes in, a 3D segmentation out.

    medsam-slicer segment IMAGE --prompts PROMPTS.json -o OUTPUT.seg.nrrd
    medsam-slicer sample DIR          # write a phantom CT, its truth and RECIST prompts
    medsam-slicer evaluate --images DIR --labels DIR --protocol box-each -o REPORT
    medsam-slicer models              # list the model ids

Bad input exits with status 2 and one line on stderr; no partial output file is left behind.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from .errors import ImageError, MedSAMError, PromptError

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
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
    evaluate.add_argument("-o", "--output", required=True, help="report folder (CSV, summary, PNG plots)")

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
    model = load_model(args.model, args.checkpoint, args.device)
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
    print(f"wrote {output} ({args.model}, {intensity.key}, {model.device}, {elapsed:.1f} s)")


def _sample(args) -> None:
    from .sample_data import write_sample

    if args.every < 1:
        raise PromptError(f"--every must be 1 or more, got {args.every}")
    for path in write_sample(args.directory, args.every):
        print(f"wrote {path}")


def _evaluate(args) -> None:
    from tqdm import tqdm

    from .evaluation import evaluate_case
    from .evaluation_report import Row, plot_dsc, plot_overlay, summary_lines, wilcoxon_lines, write_csv
    from .geometry import take_slice
    from .image_io import read_image
    from .intensity import IntensitySettings
    from .model_registry import load_model
    from .session import SegmentationSession

    cases = _paired_cases(Path(args.images), Path(args.labels))
    names = _read_labels_map(args.labels_map)
    models = [_model_choice(text) for text in (args.model or ["lite-medsam"])]
    if args.every < 1 or args.clicks < 1 or args.jitter < 0 or args.tolerance < 0:
        raise PromptError("--every and --clicks must be 1 or more, --jitter and --tolerance 0 or more")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rows, overlaid = [], set()
    for model_id, checkpoint in models:
        model = load_model(model_id, checkpoint, args.device)
        tag = model_id if checkpoint is None else f"{model_id}={Path(checkpoint).name}"
        for image_path, label_path in tqdm(cases, desc=f"evaluating {tag}", unit="case", file=sys.stderr):
            image, labels = read_image(image_path), read_image(label_path)
            if labels.array.shape != image.array.shape:
                raise ImageError(f"labels {label_path.name} have shape {labels.array.shape}, "
                                 f"the image {image.array.shape}")
            spacing_kji = tuple(reversed(image.geometry.spacing))
            intensity = IntensitySettings.parse(args.window, image.array, image.modality)
            with SegmentationSession(image.array, model, intensity) as session:
                for evaluation in evaluate_case(session, labels.array, spacing_kji, args.protocol or ["box-each"],
                                                axis=args.axis, every=args.every, jitter=args.jitter, clicks=args.clicks,
                                                tolerance_mm=args.tolerance):
                    label = evaluation.result.label
                    name = names.get(label, f"label {label}")
                    rows.append(Row(image_path.name, tag, name, evaluation.result))
                    if label not in overlaid:  # one example per label: its largest slice
                        overlaid.add(label)
                        truth = labels.array == label
                        index = max(evaluation.prompts, key=lambda i: take_slice(truth, args.axis, i).sum())
                        plot_overlay(output / f"overlay_label{label}.png", take_slice(session.volume_u8, args.axis, index),
                                     take_slice(truth, args.axis, index),
                                     take_slice(evaluation.prediction, args.axis, index), evaluation.prompts[index],
                                     f"{image_path.name}, {name}, slice {index}, {evaluation.result.protocol} ({tag})")
    if not rows:
        raise ImageError("no labelled voxels in any case: nothing to evaluate")
    write_csv(output / "scores.csv", rows)
    lines = summary_lines(rows) + wilcoxon_lines(rows)
    (output / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_dsc(output / "dsc_boxplot.png", rows)
    print("\n".join(lines))
    print(f"wrote {output / 'scores.csv'}, summary.txt, dsc_boxplot.png and {len(overlaid)} overlay(s)")


IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def _paired_cases(images: Path, labels: Path):
    """(image, label) file pairs matched by file name; every image needs its label volume."""
    for folder, what in ((images, "--images"), (labels, "--labels")):
        if not folder.is_dir():
            raise ImageError(f"{what} {folder} is not a folder")
    pairs = []
    for image in sorted(p for p in images.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)):
        label = labels / image.name
        if not label.is_file():
            raise ImageError(f"image {image.name} has no label volume {label}")
        pairs.append((image, label))
    if not pairs:
        raise ImageError(f"--images {images} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return pairs


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


def _model_choice(text: str):
    """``ID`` or ``ID=CHECKPOINT``."""
    from .model_registry import model_spec

    model_id, _, checkpoint = text.partition("=")
    model_spec(model_id)
    return model_id, checkpoint or None


def _models(args) -> None:
    from .model_registry import MODELS

    for spec in MODELS.values():
        needs = f"needs --checkpoint {spec.checkpoint_file}" if spec.checkpoint_file else "embedded weights"
        print(f"{spec.id:14s} {spec.description} ({needs})")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"segment": _segment, "sample": _sample, "evaluate": _evaluate, "models": _models}[args.command](args)
    except MedSAMError as error:
        print(f"medsam-slicer: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("medsam-slicer: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
