"""RECIST-to-volume for a cohort: one command over hundreds of (image, prompts) cases, resumable and shareable.

Cases come from a CSV (columns ``image`` and ``prompts``; relative paths are taken from the CSV's
folder) or from two folders matched by name (``case.nii.gz`` or a DICOM series folder ``case`` with
``case.json``, ``case.mrk.json`` or a DICOM SR ``case.dcm``). Each case leaves, atomically, its
segmentation (with ``.dcm``: a DICOM SEG ``case.seg.dcm`` and SR ``case.sr.dcm``) and a JSON of its
measurements in the output folder; a case whose JSON exists is skipped, so a stopped run
resumes where it stopped. Processes share a cohort by taking every N-th case: under ``torchrun``
each process (one per GPU) takes its rank's share, and on a CPU ``--shard I/N`` does the same for
processes started by hand. Whatever goes wrong with one case (bad input or an unexpected error)
is recorded in ``case.error.txt`` and in the summary, and the others go on; only an interrupt
stops the cohort. Each process rewrites ``summary.csv`` from all the case JSONs and error files
when it stops. Case names are file names inside the output folder (never paths), unique, and
the output folder holds none of the inputs, so no result can land outside it or on an input.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..errors import ImageError, MedSAMError, SettingsError
from ..files.image_io import IMAGE_SUFFIXES
from ..files.input_files import check_regular_file
from ..files.output_files import atomic_output, write_text_file
from ..models.slice_model import SliceModel
from ..volume.refinement import DEFAULT_MODE
from .case_names import case_stem
from .file_segmentation import check_dicom_outputs, read_case, segment_case

#: prompt files a case may have, in the order they are looked for
PROMPT_SUFFIXES = (".json", ".mrk.json", ".dcm")
SUMMARY_COLUMNS = ["case", "label", "slices", "volume_ml", "longest_diameter_mm", "diameter_slice", "seconds", "error"]


@dataclass(frozen=True)
class CohortCase:
    name: str
    image: Path
    prompts: Path

    @property
    def inputs(self) -> tuple:
        return self.image, self.prompts


@dataclass
class CohortOutcome:
    done: List[str]
    skipped: List[str]
    failed: List[str]


def case_name(image: Path) -> str:
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if image.name.lower().endswith(suffix):
            return image.name[:-len(suffix)]
    return image.name  # a DICOM folder


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; a name too long to exist is not one (``Path.is_file`` raises on it)."""
    try:
        return path.is_file()
    except OSError:
        return False


def cases_from_folders(images: Path, prompts: Path) -> List[CohortCase]:
    """Images (files, or DICOM series folders) paired by name with ``NAME.json``, ``NAME.mrk.json`` or ``NAME.dcm``
    (a DICOM SR) prompts."""
    for folder, what in ((images, "--images"), (prompts, "--prompts")):
        if not Path(folder).is_dir():
            raise ImageError(f"{what} {folder} is not a folder")
    cases, seen = [], {}
    for image in sorted(Path(images).iterdir()):
        if not (image.is_dir() or image.name.lower().endswith(IMAGE_SUFFIXES)):
            continue
        name = case_name(image)
        if name in seen:
            raise ImageError(f"images {seen[name].name} and {image.name} in {images} have the same case name {name!r}; "
                             "rename one (each case needs its own results)")
        seen[name] = image
        found = [Path(prompts) / f"{name}{suffix}" for suffix in PROMPT_SUFFIXES]
        found = [path for path in found if _is_file(path)]
        if not found:
            raise ImageError(f"image {image.name} has no prompt file {name}.json, {name}.mrk.json or {name}.dcm in "
                             f"{prompts}")
        cases.append(CohortCase(name, image, found[0]))
    if not cases:
        raise ImageError(f"--images {images} holds no image")
    return cases


def cases_from_csv(path: Path) -> List[CohortCase]:
    """Cases listed in a CSV with ``image`` and ``prompts`` columns (and an optional ``case`` name)."""
    path = check_regular_file(path, "cases file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:  # Excel's "CSV UTF-8" starts with a BOM
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ImageError(f"cases file {path} is not a readable CSV ({error.__class__.__name__})") from None
    if not rows or not {"image", "prompts"} <= set(rows[0]):
        raise ImageError(f"cases file {path} needs a header with the columns image and prompts, and one row per case")
    cases, names = [], set()
    for number, row in enumerate(rows, start=2):
        if not row.get("image") or not row.get("prompts"):
            raise ImageError(f"cases file {path}, line {number}: image and prompts must both be given")
        image, prompts = (path.parent / row[column] for column in ("image", "prompts"))
        name = row.get("case") or case_name(image)
        if name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
            raise ImageError(f"cases file {path}, line {number}: case name {name!r} must be a plain file name "
                             "(no folder, no leading or trailing spaces): results are written under it in the "
                             "output folder")
        if name in names:
            raise ImageError(f"cases file {path}, line {number}: case name {name!r} is used twice")
        names.add(name)
        cases.append(CohortCase(name, image, prompts))
    return cases


def parse_shard(text: Optional[str], rank: int = 0, world: int = 1) -> tuple:
    """``(index, count)`` from ``I/N`` (1-based I), else this process's place under torchrun."""
    if text is None:
        return rank, world
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise SettingsError(f"--shard must look like I/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= index <= count:
        raise SettingsError(f"--shard {text}: I must be between 1 and N")
    return index - 1, count


def segment_cohort(cases: Sequence[CohortCase], model: SliceModel, output: Path, suffix: str = ".seg.nrrd",
                   shard: tuple = (0, 1), window: str = "auto", propagate: int = 0,
                   progress: Optional[Callable[[str, int, int], None]] = None,
                   mode: str = DEFAULT_MODE) -> CohortOutcome:
    """Segment this shard's cases into ``output``; cases already done are skipped; failures are recorded."""
    index, count = shard
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    mine = list(cases)[index::count]
    outcome = CohortOutcome([], [], [])
    try:
        for number, case in enumerate(mine, start=1):
            stem = output / case_stem(case.name, output)
            record, error_file = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".error.txt")
            if record.is_file():
                outcome.skipped.append(case.name)
            else:
                try:
                    prepared = read_case(case.image, case.prompts, window)
                    if suffix == ".dcm":  # a DICOM SEG and its SR
                        outputs = stem.with_name(stem.name + ".seg.dcm"), stem.with_name(stem.name + ".sr.dcm")
                        check_dicom_outputs(prepared, *outputs)
                    else:
                        outputs = stem.with_name(stem.name + suffix), None
                    result = segment_case(prepared, outputs[0], model, propagate, mode=mode, report=outputs[1])
                    write_text_file(record, json.dumps({
                        "case": case.name, "image": str(case.image), "prompts": str(case.prompts),
                        "model": model.cache_id, "mode": mode, "intensity": result.intensity, "seconds": result.seconds,
                        "targets": [t.as_dict() for t in result.targets]}, indent=2) + "\n")
                except Exception as error:  # any failure is this case's, never the cohort's
                    reason = str(error) if isinstance(error, MedSAMError) else f"{error.__class__.__name__}: {error}"
                    write_text_file(error_file, " ".join(reason.split()) + "\n")
                    outcome.failed.append(case.name)
                else:
                    error_file.unlink(missing_ok=True)
                    outcome.done.append(case.name)
            if progress is not None:
                progress(f"cases (shard {index + 1}/{count})", number, len(mine))
    finally:  # an interrupted run still leaves the summary of what is done
        write_summary(output)
    return outcome


def write_summary(output: Path) -> Path:
    """``summary.csv``: one row per case and target from every case JSON in ``output`` (all shards'), and one
    row per failed case with its reason."""
    rows = []
    for record in sorted(output.glob("*.json")):
        try:
            document = json.loads(record.read_text(encoding="utf-8"))
            targets, case, seconds = document["targets"], document["case"], document["seconds"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a case record of ours
        rows.extend({"case": case, "seconds": seconds, **target} for target in targets)
    for failure in sorted(output.glob("*.error.txt")):
        try:
            reason = failure.read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            continue
        rows.append({"case": failure.name[:-len(".error.txt")], "error": reason})
    rows.sort(key=lambda row: str(row["case"]))  # stable: a case's targets keep their order
    path = output / "summary.csv"
    with atomic_output(path) as temporary, open(temporary, "w", newline="", encoding="utf-8",
                                                errors="backslashreplace") as stream:
        writer = csv.DictWriter(stream, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
