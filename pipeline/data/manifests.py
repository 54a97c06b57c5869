"""Build, write, load and check datalists: the paired X-ray/MRI manifests the bundle trains on.

A datalist is MONAI decathlon-style JSON (``data_manifests/schema.json`` documents it)::

    {"description": "...", "training": [item, ...], "validation": [...], "test": [...]}
    item = {"subject": "SYN0003", "side": "L", "xray": "SYN0003/SYN0003_xray.dcm",
            "mri": "SYN0003/SYN0003_mri.nii.gz", "labels": "...", "grade": 2, "visit": "V00"}

Paths are relative to a base directory given at run time (:func:`load_datalist`). Splits are
made by subject, so no subject is ever in two splits, and stratified by Kellgren-Lawrence grade
when the items carry one. Where the items come from is a *source*: a synthetic cohort folder
(:func:`build_from_cohort`) or a CSV of pairs (:func:`build_from_csv`); a new source only has to
produce a list of items and hand it to :func:`make_datalist`.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xray2mri.pipeline.atomic import atomic_file
from xray2mri.transforms.errors import InputError

#: The three split names, in the order their fractions are given.
SPLITS: tuple[str, str, str] = ("training", "validation", "test")
#: Default fractions of subjects in (training, validation, test).
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
#: Item keys that hold file paths relative to the base directory (joined by :func:`load_datalist`).
PATH_KEYS: tuple[str, ...] = ("xray", "mri", "labels", "joint_labels")
#: Item keys in the order they are written; required ones first.
REQUIRED_KEYS: tuple[str, ...] = ("subject", "side", "xray", "mri")
OPTIONAL_KEYS: tuple[str, ...] = ("labels", "joint_labels", "grade", "visit")
#: Allowed values of ``side`` (laterality of the knee, patient's left or right).
SIDES: tuple[str, str] = ("L", "R")
#: Kellgren-Lawrence grades.
KL_GRADES: tuple[int, ...] = (0, 1, 2, 3, 4)

#: The datalist JSON schema (draft 2020-12). This dict is the one source of truth;
#: ``data_manifests/schema.json`` is its committed copy (a test keeps the two equal).
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:xray2mri:datalist:1",
    "title": "xray2mri datalist",
    "description": (
        "Paired knee radiograph / MRI datalist in MONAI decathlon style. Each split is a list of "
        "items; paths are relative to a base directory given at run time. Splits are by subject: "
        "a subject appears in one split only. Other top-level keys (decathlon metadata such as "
        "name, reference, licence) and other item keys (e.g. fold) are allowed and passed through."
    ),
    "type": "object",
    "required": list(SPLITS),
    "properties": {
        "description": {
            "type": "string",
            "description": "What the data are; says SYNTHETIC when generated, and how it was split.",
        },
        "training": {"type": "array", "items": {"$ref": "#/$defs/pair"}},
        "validation": {"type": "array", "items": {"$ref": "#/$defs/pair"}},
        "test": {"type": "array", "items": {"$ref": "#/$defs/pair"}},
    },
    "$defs": {
        "path": {
            "type": "string",
            "minLength": 1,
            "description": "File (or DICOM series folder) relative to the base directory, '/'-separated.",
        },
        "pair": {
            "type": "object",
            "required": list(REQUIRED_KEYS),
            "properties": {
                "subject": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Pseudonymous subject id; the unit of splitting.",
                },
                "side": {
                    "enum": list(SIDES),
                    "description": "Knee laterality, patient's L or R; left knees are mirrored to R.",
                },
                "xray": {
                    "$ref": "#/$defs/path",
                    "description": "Radiograph: one DICOM file, Modality DX, CR or RG.",
                },
                "mri": {
                    "$ref": "#/$defs/path",
                    "description": "MRI: a 3-D NIfTI, a DICOM series folder or an (enhanced) MR DICOM file.",
                },
                "labels": {
                    "$ref": "#/$defs/path",
                    "description": "Optional tissue label map on the MRI grid (NIfTI).",
                },
                "joint_labels": {
                    "$ref": "#/$defs/path",
                    "description": (
                        "Optional tissue label map of a box around the joint line (NIfTI, integer labels): "
                        "the MRI's voxel centres across, finer rows S->I; the target of the joint-region head."
                    ),
                },
                "grade": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 4,
                    "description": "Optional Kellgren-Lawrence grade 0-4; splits are stratified by it.",
                },
                "visit": {
                    "type": ["string", "integer"],
                    "description": "Optional visit id (e.g. V00 or months since baseline).",
                },
            },
        },
    },
}


class ManifestError(InputError):
    """A datalist or a source of pairs (CSV, cohort folder) that cannot be used; names the file."""


# --------------------------------------------------------------------------------------------
# splitting


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(f < 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be three non-negative numbers (training, validation, test) summing to 1; "
            f"got {tuple(fractions)}"
        )
    return values  # type: ignore[return-value]


def _stratum_order(value: Any) -> tuple[int, float, str]:
    """Sort key putting numbers first (numerically), then strings, then the missing stratum."""
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _subject_stratum(items: list[dict], key: str | None) -> Any:
    """The stratum of one subject: the highest value of ``key`` over its items (the worse knee/visit)."""
    if key is None:
        return None
    values = [item[key] for item in items if item.get(key) is not None]
    if not values:
        return None
    return max(values, key=_stratum_order)


def _allocate(n: int, fractions: Sequence[float], carry: list[float]) -> list[int]:
    """Split ``n`` into three counts by largest remainder, carrying the rounding over strata.

    Carrying the fractional remainders from one stratum to the next keeps the overall split sizes
    within one subject of the requested fractions, while each stratum is split in proportion.
    """
    desired = [n * f + c for f, c in zip(fractions, carry)]
    counts = [max(0, int(d)) for d in desired]
    while sum(counts) > n:  # can happen only through a negative carry; take from the most over-served
        i = min(range(3), key=lambda j: (desired[j] - counts[j], -j))
        counts[i] -= 1
    order = sorted(range(3), key=lambda j: (-(desired[j] - counts[j]), j))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    for j in range(3):
        carry[j] = desired[j] - counts[j]
    return counts


def _item_order(item: dict) -> tuple[str, str, str, str]:
    return (str(item.get("subject", "")), str(item.get("visit", "")), str(item.get("side", "")),
            str(item.get("xray", "")))


def split_by_subject(
    items: list[dict],
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    stratify_key: str | None = "grade",
) -> dict[str, list[dict]]:
    """Split items into training/validation/test so that all items of one subject share a split.

    Subjects (not items) are divided in the given fractions. When items carry ``stratify_key``
    (Kellgren-Lawrence ``grade`` by default) each stratum is split in those fractions, so every
    split sees the same mix of grades; a subject with several items (visits, knees) is placed by
    its highest value. Subjects without the key form a stratum of their own. The result depends
    only on the items and ``seed`` (not on the order of ``items``), and with three or more subjects
    and non-zero fractions no split is empty.

    Args:
        items: dicts with at least ``subject``; they are copied, not modified.
        fractions: (training, validation, test) fractions of subjects, summing to 1.
        seed: seed of the shuffle; the same seed gives the same split.
        stratify_key: item key to stratify by, or ``None`` for a plain random split.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, each list sorted by
        (subject, visit, side, xray).

    Raises:
        ValueError: bad fractions, or an item without a ``subject``.
    """
    fractions = _check_fractions(fractions)
    by_subject: dict[str, list[dict]] = defaultdict(list)
    for index, item in enumerate(items):
        subject = item.get("subject")
        if subject is None or str(subject) == "":
            raise ValueError(f"item {index} has no 'subject'; cannot split by subject: {item}")
        by_subject[str(subject)].append(dict(item))

    strata: dict[Any, list[str]] = defaultdict(list)
    for subject in sorted(by_subject):
        strata[_subject_stratum(by_subject[subject], stratify_key)].append(subject)

    assigned: dict[str, list[str]] = {name: [] for name in SPLITS}
    carry = [0.0, 0.0, 0.0]
    for stratum in sorted(strata, key=_stratum_order):
        subjects = list(strata[stratum])
        # one generator per stratum: adding subjects of one grade does not reshuffle the others
        random.Random(f"xray2mri-split:{seed}:{stratum!r}").shuffle(subjects)
        counts = _allocate(len(subjects), fractions, carry)
        start = 0
        for name, count in zip(SPLITS, counts):
            assigned[name].extend(subjects[start : start + count])
            start += count

    # no empty split when there are enough subjects: take one from the largest split
    wanted = [name for name, f in zip(SPLITS, fractions) if f > 0]
    if len(by_subject) >= len(wanted):
        for name in wanted:
            if not assigned[name]:
                donor = max(SPLITS, key=lambda s: (len(assigned[s]), -SPLITS.index(s)))
                assigned[name].append(assigned[donor].pop())

    return {
        name: sorted((item for s in assigned[name] for item in by_subject[s]), key=_item_order)
        for name in SPLITS
    }


# --------------------------------------------------------------------------------------------
# sources of items


def _ordered_item(item: dict) -> dict:
    """The item with known keys first (readability of the JSON only; writing sorts keys anyway)."""
    known = [k for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if k in item]
    return {**{k: item[k] for k in known}, **{k: v for k, v in item.items() if k not in known}}


def make_datalist(
    items: Iterable[dict],
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    stratify_key: str | None = "grade",
    description: str = "",
) -> dict:
    """Split items by subject and wrap them as a datalist, with a description of how it was made.

    Every source of pairs ends here: a new source (another cohort layout, a PACS export) only
    builds its list of items and calls this.

    Args:
        items: dicts with ``subject``, ``side``, ``xray``, ``mri`` and optional ``labels``,
            ``joint_labels``, ``grade``, ``visit`` (other keys pass through).
        seed, fractions, stratify_key: as in :func:`split_by_subject`.
        description: what the data are (say SYNTHETIC when they are); the split is appended.

    Returns:
        ``{"description": ..., "training": [...], "validation": [...], "test": [...]}``.
    """
    items = [_ordered_item(item) for item in items]
    splits = split_by_subject(items, fractions=fractions, seed=seed, stratify_key=stratify_key)
    n_subjects = len({item["subject"] for item in items})
    how = (
        f"{len(items)} pairs of {n_subjects} subjects split by subject "
        f"(training/validation/test fractions {'/'.join(f'{f:g}' for f in fractions)}, seed {seed}"
        + (f", stratified by {stratify_key}" if stratify_key and any(stratify_key in i for i in items) else "")
        + "); paths relative to the base directory."
    )
    return {"description": f"{description.rstrip('. ')}. {how}" if description else how, **splits}


def build_from_cohort(
    cohort_dir: str | os.PathLike,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    base_dir: str | os.PathLike | None = None,
) -> dict:
    """Datalist of a synthetic cohort folder written by ``xray2mri synth``.

    Reads every ``DIR/SUBJ/SUBJ_meta.json`` (fields ``subject``, ``side``, ``grade``, ``visit``)
    and pairs it with ``SUBJ_xray.dcm``, ``SUBJ_mri.nii.gz`` and, when present,
    ``SUBJ_labels.nii.gz`` and ``SUBJ_joint_labels.nii.gz`` beside it. Paths in the items are relative to ``base_dir`` (default
    ``cohort_dir``), the folder the datalist is then used with. The description says
    SYNTHETIC when any meta file has ``"synthetic": true``.

    Raises:
        ManifestError: no subject in the folder, unreadable meta file, or a missing X-ray/MRI.
    """
    root = Path(cohort_dir)
    base = Path(base_dir) if base_dir is not None else root
    metas = sorted(root.glob("*/*_meta.json"))
    if not metas:
        raise ManifestError(root, "no SUBJ/SUBJ_meta.json found; is this a cohort folder made by `xray2mri synth`?")
    items, synthetic = [], False
    for meta_path in metas:
        try:
            meta = json.loads(meta_path.read_text())
            subject = str(meta["subject"])
            side = _parse_side(meta["side"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ManifestError(meta_path, f"unreadable subject meta file ({err!r}); expected JSON with subject and side") from err
        synthetic = synthetic or bool(meta.get("synthetic", False))
        folder = meta_path.parent
        item: dict[str, Any] = {"subject": subject, "side": side}
        for key, suffix, required in (("xray", "_xray.dcm", True), ("mri", "_mri.nii.gz", True),
                                      ("labels", "_labels.nii.gz", False),
                                      ("joint_labels", "_joint_labels.nii.gz", False)):
            path = folder / f"{subject}{suffix}"
            if path.is_file():
                item[key] = Path(os.path.relpath(path, base)).as_posix()
            elif required:
                raise ManifestError(path, f"missing {key} file of subject {subject} (listed in {meta_path.name})")
        if meta.get("grade") is not None:
            item["grade"] = _parse_grade(meta["grade"], meta_path)
        if meta.get("visit") is not None:
            item["visit"] = meta["visit"]
        items.append(item)
    what = "SYNTHETIC paired knee cohort made by xray2mri synth (not patient data)" if synthetic \
        else f"Paired knee cohort from {root.name}"
    return make_datalist(items, seed=seed, fractions=fractions, description=what)


def _parse_side(value: Any) -> str:
    side = str(value).strip().upper()
    side = {"LEFT": "L", "RIGHT": "R"}.get(side, side)
    if side not in SIDES:
        raise ValueError(f"side must be L or R (or left/right), got {value!r}")
    return side


def _parse_grade(value: Any, source: str | os.PathLike) -> int:
    try:
        number = float(value)
        grade = int(number)
        if grade != number or grade not in KL_GRADES:
            raise ValueError
    except (TypeError, ValueError) as err:
        raise ManifestError(source, f"grade must be a Kellgren-Lawrence grade 0-4, got {value!r}") from err
    return grade


# --------------------------------------------------------------------------------------------
# writing and validating


def write_datalist(datalist: dict, path: str | os.PathLike) -> None:
    """Write a datalist as stable JSON, atomically (temp file in the same folder, then rename).

    Keys are sorted and the layout fixed, so the same datalist gives the same bytes. A missing
    ``description`` is filled in. The datalist is validated against the schema first, so an
    invalid datalist is never written; an existing file is replaced only once the new one is
    complete.

    Raises:
        ManifestError: the datalist does not match the schema.
    """
    path = Path(path)
    datalist = dict(datalist)
    datalist.setdefault("description", "xray2mri paired knee datalist; paths relative to the base directory.")
    validate_datalist(datalist, filename=path)
    text = json.dumps(datalist, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def schema_problems(obj: Any) -> list[str]:
    """Every way ``obj`` breaks the datalist schema, one message each (empty when valid).

    Uses ``jsonschema`` when it is installed (a dev dependency) and otherwise a small validator of
    the schema keywords :data:`SCHEMA` uses, so checking works in a bare runtime install too.
    """
    try:
        import jsonschema
    except ImportError:
        return [f"{where}: {what}" for where, what in _mini_validate(obj, SCHEMA, "$")]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    problems = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append(f"{where}: {error.message}")
    return problems


def validate_datalist(obj: Any, filename: str | os.PathLike | None = None) -> None:
    """Raise :class:`ManifestError` listing every schema violation of a datalist; return if valid."""
    problems = schema_problems(obj)
    if problems:
        raise ManifestError(filename, "not a valid datalist: " + "; ".join(problems))


_JSON_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool,
}


def _mini_validate(obj: Any, schema: dict, where: str) -> list[tuple[str, str]]:
    """Validate against the subset of JSON Schema that :data:`SCHEMA` uses ($ref to #/$defs, type,
    enum, required, properties, items, minLength, minimum, maximum)."""
    problems: list[tuple[str, str]] = []
    if "$ref" in schema:
        problems += _mini_validate(obj, SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[-1]], where)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(isinstance(obj, _JSON_TYPES[t]) and not (isinstance(obj, bool) and t != "boolean")
                   for t in types):
            return problems + [(where, f"{obj!r} is not of type {' or '.join(repr(t) for t in types)}")]
    if "enum" in schema and obj not in schema["enum"]:
        problems.append((where, f"{obj!r} is not one of {schema['enum']!r}"))
    if isinstance(obj, str) and len(obj) < schema.get("minLength", 0):
        problems.append((where, f"{obj!r} is too short"))
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if "minimum" in schema and obj < schema["minimum"]:
            problems.append((where, f"{obj!r} is less than the minimum of {schema['minimum']}"))
        if "maximum" in schema and obj > schema["maximum"]:
            problems.append((where, f"{obj!r} is greater than the maximum of {schema['maximum']}"))
    if isinstance(obj, dict):
        for key in schema.get("required", []):
            if key not in obj:
                problems.append((where, f"{key!r} is a required property"))
        for key, sub in schema.get("properties", {}).items():
            if key in obj:
                problems += _mini_validate(obj[key], sub, f"{where}.{key}")
    if isinstance(obj, list) and "items" in schema:
        for index, element in enumerate(obj):
            problems += _mini_validate(element, schema["items"], f"{where}[{index}]")
    return problems


# --------------------------------------------------------------------------------------------
# CSV of pairs (the OAI-style source)

#: Columns a CSV of pairs must have, and the optional ones that are read when present.
CSV_REQUIRED: tuple[str, ...] = ("subject", "visit", "side", "xray", "mri")
CSV_OPTIONAL: tuple[str, ...] = ("labels", "joint_labels", "grade")


def build_from_csv(
    csv_path: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    stratify_key: str | None = "grade",
    description: str | None = None,
) -> dict:
    """Datalist from a CSV of X-ray/MRI pairs, one row per knee and visit (the OAI-style case).

    Columns (header names are case-insensitive, other columns are ignored): ``subject``,
    ``visit``, ``side`` (L/R or left/right), ``xray`` (a DICOM file), ``mri`` (NIfTI file, DICOM
    series folder or MR DICOM file), optional ``labels``, ``joint_labels`` and ``grade`` (KL 0-4,
    empty = unknown).
    Relative paths are copied unchanged: they are relative to the base directory given when the
    datalist is used. Absolute paths are made relative to ``base_dir`` when it is given.
    Subjects are split as in :func:`split_by_subject` (stratified by grade when present).

    Raises:
        ManifestError: the CSV is missing, lacks a required column, or a row has an empty field,
            a bad side or a bad grade; the message names the CSV and the line.
    """
    from xray2mri.pipeline.csv_table import read_csv_table

    csv_path = Path(csv_path)
    rows = read_csv_table(csv_path, CSV_REQUIRED, "the CSV of pairs",
                          f"a CSV of pairs needs {', '.join(CSV_REQUIRED)} (optional: {', '.join(CSV_OPTIONAL)})",
                          error=ManifestError)
    if not rows:
        raise ManifestError(csv_path, "no rows of pairs below the header")

    items = []
    for line, cells in rows:
        where = f"{csv_path}:{line}"
        for column in CSV_REQUIRED:
            if not cells.get(column, ""):
                raise ManifestError(where, f"empty {column!r}")
        try:
            side = _parse_side(cells.get("side", ""))
        except ValueError as err:
            raise ManifestError(where, str(err)) from err
        item: dict[str, Any] = {"subject": cells.get("subject", ""), "side": side, "visit": cells.get("visit", "")}
        for key in PATH_KEYS:
            if cells.get(key, ""):
                item[key] = _relative_path(cells.get(key, ""), base_dir)
        if cells.get("grade", ""):
            item["grade"] = _parse_grade(cells.get("grade", ""), where)
        items.append(item)
    what = description if description is not None else f"Paired knee X-ray/MRI datalist built from {csv_path.name}"
    return make_datalist(items, seed=seed, fractions=fractions, stratify_key=stratify_key, description=what)


def _relative_path(path: str, base_dir: str | os.PathLike | None) -> str:
    """``path`` made relative to ``base_dir`` when absolute (and a base is given), '/'-separated."""
    if base_dir is not None and os.path.isabs(path):
        path = os.path.relpath(path, base_dir)
    return Path(path).as_posix()


# --------------------------------------------------------------------------------------------
# loading


def load_datalist(
    path: str | os.PathLike, split: str = "training", base_dir: str | os.PathLike | None = None
) -> list[dict]:
    """Items of one split with their path keys (:data:`PATH_KEYS`) joined to ``base_dir``.

    ``base_dir`` defaults to the datalist's folder. Only ``xray``, ``mri``, ``labels`` and
    ``joint_labels`` are joined; ``subject``, ``visit`` and the rest are returned as written. (MONAI's
    ``load_decathlon_datalist`` also reads these files, but it joins keys other than
    ``image``/``label`` only when the joined path exists: a missing file stays silently
    relative, and a ``subject`` such as ``SYN0003`` becomes a path when the base directory has a
    folder of that name, which a synthetic cohort folder does. Use this function instead.)

    Raises:
        ManifestError: the file is missing, not JSON, or has no list named ``split``.
    """
    path = Path(path)
    datalist = _read_json(path)
    if not isinstance(datalist, dict) or not isinstance(datalist.get(split), list):
        raise ManifestError(path, f"no list {split!r} in the datalist (expected one of {', '.join(SPLITS)})")
    base = Path(base_dir) if base_dir is not None else path.parent
    items = []
    for item in datalist[split]:
        item = dict(item)
        for key in PATH_KEYS:
            if isinstance(item.get(key), str):
                item[key] = os.path.normpath(os.path.join(base, item[key]))
        items.append(item)
    return items


def load_description(path: str | os.PathLike) -> str:
    """The datalist's top-level ``description`` (what the data are; ``""`` when it has none).

    Raises:
        ManifestError: the file is missing or not JSON.
    """
    datalist = _read_json(Path(path))
    value = datalist.get("description") if isinstance(datalist, dict) else None
    return value if isinstance(value, str) else ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ManifestError(path, "datalist file does not exist") from err
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ManifestError(path, f"cannot read the datalist as JSON ({err})") from err


# --------------------------------------------------------------------------------------------
# checking

#: Radiograph modalities accepted as they are: digital radiography, computed radiography,
#: conventional radiographic imaging.
XRAY_MODALITIES: tuple[str, ...] = ("DX", "CR", "RG")
#: Modalities that may hold a radiograph but usually do not (secondary capture of a film,
#: fluoroscopy, angiography): reported as a warning, not an error.
XRAY_MODALITIES_DOUBTFUL: tuple[str, ...] = ("OT", "RF", "XA")
#: File name endings read with nibabel rather than pydicom.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".hdr", ".img", ".mgh", ".mgz")
#: How many files of a DICOM series folder are opened to find one DICOM header.
SERIES_PROBE_FILES: int = 8


class Problem:
    """One thing wrong with a datalist, printed as one line.

    Attributes:
        kind: ``schema``, ``missing``, ``unreadable``, ``modality``, ``shape``, ``dtype``,
            ``duplicate``, ``leak``, ``side`` or ``empty``.
        where: the item (``training[3] SYN0003``) or the datalist file.
        message: what is wrong, naming the file.
        severity: ``error`` (the check fails) or ``warning`` (printed; the check still passes).
    """

    __slots__ = ("kind", "where", "message", "severity")

    def __init__(self, kind: str, where: str, message: str, severity: str = "error") -> None:
        self.kind, self.where, self.message, self.severity = kind, where, message, severity

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.kind}: {self.where}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({self.kind!r}, {self.where!r}, {self.message!r}, {self.severity!r})"


def _read_dicom_header(path: str):
    """Header of a DICOM file without its pixels, or raise (works with pydicom 2.4 and 3)."""
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def _dicom_error(path: str, err: Exception) -> tuple[str, str]:
    from pydicom.errors import InvalidDicomError

    if isinstance(err, InvalidDicomError):
        return ("unreadable", f"{path} is not a DICOM file (no DICM preamble)")
    return ("unreadable", f"{path}: cannot read the DICOM header ({type(err).__name__}: {err})")


def _check_xray(path: str) -> tuple[list[tuple[str, str, str]], str | None]:
    """Problems of a radiograph file as (kind, message, severity), and its DICOM laterality."""
    if not os.path.exists(path):
        return [("missing", f"{path} does not exist", "error")], None
    if os.path.isdir(path):
        return [("modality", f"{path} is a folder; a radiograph is one DICOM file", "error")], None
    try:
        ds = _read_dicom_header(path)
    except Exception as err:  # any failure to parse is the finding we report
        kind, message = _dicom_error(path, err)
        return [(kind, message, "error")], None
    problems = []
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in XRAY_MODALITIES_DOUBTFUL:
        problems.append(("modality", f"{path} has Modality {modality}; radiographs are usually "
                                     f"{'/'.join(XRAY_MODALITIES)}", "warning"))
    elif modality not in XRAY_MODALITIES:
        problems.append(("modality", f"{path} has Modality {modality or 'missing'}; a radiograph must be "
                                     f"{', '.join(XRAY_MODALITIES)}", "error"))
    if "Rows" not in ds or "Columns" not in ds:
        problems.append(("modality", f"{path} has no image (no Rows/Columns)", "error"))
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        problems.append(("modality", f"{path} is colour (SamplesPerPixel {ds.SamplesPerPixel}); a radiograph "
                                     "is greyscale", "error"))
    # the laterality transforms import MONAI: loaded when a radiograph is read, not with the manifest commands
    from xray2mri.transforms.laterality import dicom_laterality

    return problems, dicom_laterality(ds)


def _nifti_shape(path: str) -> tuple[list[tuple[str, str, str]], tuple[int, ...] | None]:
    import nibabel

    try:
        image = nibabel.load(path)  # header only: the voxels stay on disk
        shape = tuple(int(n) for n in image.shape)
    except Exception as err:  # any failure to parse is the finding we report
        return [("unreadable", f"{path}: cannot read the image header ({type(err).__name__}: {err})",
                 "error")], None
    spatial = shape
    while len(spatial) > 3 and spatial[-1] == 1:
        spatial = spatial[:-1]
    if len(spatial) > 3:
        return [("shape", f"{path} is {len(spatial)}-D {shape}; an MRI must be one 3-D volume", "error")], shape
    if len(spatial) < 3 or min(spatial) < 2:
        return [("shape", f"{path} has shape {shape}; an MRI must be a 3-D volume, not a slice", "error")], shape
    return [], spatial


def _check_mri(path: str) -> tuple[list[tuple[str, str, str]], tuple[int, ...] | None]:
    """Problems of an MRI (NIfTI, DICOM series folder or MR DICOM file), and its shape if NIfTI."""
    if not os.path.exists(path):
        return [("missing", f"{path} does not exist", "error")], None
    if os.path.isdir(path):
        files = sorted(e.path for e in os.scandir(path) if e.is_file() and not e.name.startswith("."))
        for name in files[:SERIES_PROBE_FILES]:
            try:
                ds = _read_dicom_header(name)
            except Exception:  # not DICOM (a DICOMDIR or notes file): try the next one
                continue
            return _mr_modality(path, ds), None
        return [("unreadable", f"{path}: no DICOM file among the first {SERIES_PROBE_FILES} of the folder",
                 "error")], None
    if path.lower().endswith(NIFTI_SUFFIXES):
        return _nifti_shape(path)
    try:
        ds = _read_dicom_header(path)
    except Exception as err:  # not DICOM: maybe another nibabel format
        problems, shape = _nifti_shape(path)
        if problems and problems[0][0] == "unreadable":
            kind, message = _dicom_error(path, err)
            return [(kind, f"{message}; nor a NIfTI image", "error")], None
        return problems, shape
    problems = _mr_modality(path, ds)
    if int(ds.get("NumberOfFrames", 1) or 1) < 2:
        problems.append(("shape", f"{path} is one 2-D DICOM slice; give the series folder", "error"))
    return problems, None


def _mr_modality(path: str, ds) -> list[tuple[str, str, str]]:
    modality = str(ds.get("Modality", "") or "").upper()
    if modality != "MR":
        return [("modality", f"{path} has Modality {modality or 'missing'}; an MRI must be MR", "error")]
    return []


def _check_labels(path: str) -> tuple[list[tuple[str, str, str]], tuple[int, ...] | None]:
    if not os.path.exists(path):
        return [("missing", f"{path} does not exist", "error")], None
    return _nifti_shape(path)


def _check_joint_labels(path: str) -> tuple[list[tuple[str, str, str]], tuple[int, ...] | None]:
    """Problems of a joint-region label map: those of a label map, and a non-integer voxel type.

    Its grid is not the MRI's (finer rows, a smaller box), so its shape is not compared with the MRI's.
    """
    problems, shape = _check_labels(path)
    if not problems:
        import nibabel

        image = nibabel.load(path)  # header only
        dtype, slope, inter = image.get_data_dtype(), image.dataobj.slope, image.dataobj.inter
        if dtype.kind not in "iu" or (slope, inter) != (1.0, 0.0):
            problems.append(("dtype", f"{path} stores {dtype} voxels (scaled by {slope}, {inter}); a label map "
                                      "holds integer labels", "error"))
    return problems, shape


def check_datalist(
    path: str | os.PathLike, base_dir: str | os.PathLike | None = None, jobs: int = 1, progress: bool = False
) -> list[Problem]:
    """Everything wrong with a datalist and the files it names, reading file headers only.

    Reports schema violations; missing or unreadable files; a radiograph that is not a greyscale
    DICOM of Modality DX, CR or RG (OT, RF, XA: warning); an MRI that is not a 3-D NIfTI, an MR
    DICOM series folder or an MR multi-frame DICOM file; a label map whose shape differs from its
    NIfTI MRI; a joint-region label map (``joint_labels``) that does not store integers; an item
    side that contradicts the radiograph's laterality (warning); duplicates (the same MRI twice,
    the same radiograph with the same side twice, or the same subject, visit and side twice);
    subjects in more than one split; an empty split (warning). Pixel data are not read, so a file
    truncated inside its pixels passes.

    Args:
        path: the datalist JSON.
        base_dir: the folder the paths are relative to; defaults to the datalist's folder.
        jobs: threads reading headers (helps on network file systems).
        progress: show a tqdm bar (on stderr) over the files whose headers are read.

    Returns:
        The problems in a stable order; the datalist is usable when none is an error.
    """
    path = Path(path)
    name = str(path)
    try:
        datalist = _read_json(path)
    except ManifestError as err:
        return [Problem("missing" if not path.exists() else "unreadable", name, err.reason)]
    problems = [Problem("schema", name, message) for message in schema_problems(datalist)]
    if not isinstance(datalist, dict):
        return problems
    base = Path(base_dir) if base_dir is not None else path.parent

    entries = []  # (where, split, item) of every item that is a dict
    for split in SPLITS:
        items = datalist.get(split)
        if not isinstance(items, list):
            continue
        if not items:
            problems.append(Problem("empty", name, f"split {split!r} has no items", "warning"))
        for index, item in enumerate(items):
            if isinstance(item, dict):
                entries.append((f"{split}[{index}] {item.get('subject', '?')}", split, item))

    def resolve(value: Any) -> str | None:
        return os.path.normpath(os.path.join(base, value)) if isinstance(value, str) and value else None

    checks = {"xray": _check_xray, "mri": _check_mri, "labels": _check_labels, "joint_labels": _check_joint_labels}
    todo = sorted({(key, p) for _, _, item in entries for key in checks if (p := resolve(item.get(key)))})
    with tqdm(total=len(todo), desc="manifest check", unit="file", disable=not progress) as bar:
        def check(kp: tuple[str, str]) -> tuple:
            result = checks[kp[0]](kp[1])
            bar.update()
            return result

        if jobs > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(jobs) as pool:
                results = dict(zip(todo, pool.map(check, todo)))
        else:
            results = {kp: check(kp) for kp in todo}

    seen: dict[tuple, str] = {}
    subject_splits: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for where, split, item in entries:
        xray, mri, labels, joint = (resolve(item.get(k)) for k in ("xray", "mri", "labels", "joint_labels"))
        for key, file in (("xray", xray), ("mri", mri), ("labels", labels), ("joint_labels", joint)):
            if file is not None:
                problems += [Problem(kind, where, message, severity) for kind, message, severity in results[(key, file)][0]]
        laterality = results[("xray", xray)][1] if xray else None
        if laterality in SIDES and item.get("side") in SIDES and laterality != item["side"]:
            problems.append(Problem("side", where, f"side is {item['side']} but {xray} says laterality {laterality}",
                                    "warning"))
        mri_shape = results[("mri", mri)][1] if mri else None
        labels_shape = results[("labels", labels)][1] if labels else None
        if mri_shape and labels_shape and mri_shape != labels_shape:
            problems.append(Problem("shape", where, f"labels {labels} has shape {labels_shape} but the MRI "
                                                    f"{mri} has {mri_shape}"))
        keys = {"same mri": mri, "same xray and side": (xray, item.get("side")) if xray else None,
                "same subject, visit and side": (item.get("subject"), item.get("visit"), item.get("side"))
                if item.get("visit") is not None else None}
        shared = {}
        for label, key in keys.items():
            if key is None:
                continue
            if (label, key) in seen:
                shared.setdefault(seen[(label, key)], []).append(label)
            else:
                seen[(label, key)] = where
        for first, labels_shared in shared.items():
            problems.append(Problem("duplicate", where, f"repeats {first} ({', '.join(labels_shared)})"))
        if isinstance(item.get("subject"), str):
            subject_splits[item["subject"]][split] += 1

    for subject in sorted(subject_splits):
        splits = subject_splits[subject]
        if len(splits) > 1:
            places = " and ".join(f"{s} ({n} item{'s' * (n > 1)})" for s, n in splits.items())
            problems.append(Problem("leak", name, f"subject {subject} is in {places}; split by subject"))
    return problems


def summarise(path: str | os.PathLike) -> str:
    """One line saying how many items and subjects each split of a (readable) datalist holds."""
    datalist = _read_json(Path(path))
    counts = {s: len(datalist.get(s) or []) for s in SPLITS}
    subjects = {i.get("subject") for s in SPLITS for i in datalist.get(s) or [] if isinstance(i, dict)}
    return (f"{sum(counts.values())} items of {len(subjects)} subjects ("
            + ", ".join(f"{s} {n}" for s, n in counts.items()) + ")")
