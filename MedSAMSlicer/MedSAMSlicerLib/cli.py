"""The ``medsam-slicer`` command: RECIST markers or boxes in, a 3D segmentation out.

    medsam-slicer segment IMAGE --prompts PROMPTS.json -o OUTPUT.seg.nrrd
    medsam-slicer sample DIR          # write a phantom CT, its truth and RECIST prompts
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


def _models(args) -> None:
    from .model_registry import MODELS

    for spec in MODELS.values():
        needs = f"needs --checkpoint {spec.checkpoint_file}" if spec.checkpoint_file else "embedded weights"
        print(f"{spec.id:14s} {spec.description} ({needs})")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"segment": _segment, "sample": _sample, "models": _models}[args.command](args)
    except MedSAMError as error:
        print(f"medsam-slicer: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("medsam-slicer: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
