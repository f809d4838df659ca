"""The cases of a labelled cohort folder (images/, labels/, labels.json), as the benchmarks read them.

``real_cohort.py`` and ``lesion_cohort.py`` write such folders. The engine is imported when the
cases are read, so that a benchmark can first choose which checkout's engine to import.
"""

import argparse
from pathlib import Path


def cohort_cases(cohort: Path):
    """``(case name, image, label image, names)`` for each image of ``cohort`` with its labels; ``names`` maps each
    label (as text) to its structure's name, from ``labels.json`` (empty without one)."""
    from MedSAMSlicerLib.files.image_io import paired_images, read_image, read_label_image
    from MedSAMSlicerLib.files.json_file import read_json

    names = read_json(cohort / "labels.json", "labels map") if (cohort / "labels.json").is_file() else {}
    for image_path, label_path in paired_images(cohort / "images", cohort / "labels"):
        yield image_path.name.split(".")[0], read_image(image_path), read_label_image(label_path), names


def cohort_parser(docstring: str) -> argparse.ArgumentParser:
    """The options every cohort benchmark takes: the cohort folders, markers every ``--every`` slices, ``-o``."""
    parser = argparse.ArgumentParser(description=docstring.split("\n\n")[0])
    parser.add_argument("cohorts", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=5, help="RECIST markers every K slices (default 5)")
    parser.add_argument("-o", "--output", type=Path, help="also write the table here")
    return parser
