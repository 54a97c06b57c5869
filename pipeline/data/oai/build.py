"""Turn an OAI image release into datalist items: pairs, crop boxes, sides, grades.

The steps, each in its own module: read the indexes (:mod:`.index`), pair radiographs with
MRI series (:mod:`.pairing`), place each knee on its radiograph (a user CSV of centres, else
the knee finder of :mod:`xray2mri.transforms.locate_knee`), join the grades (:mod:`.grades`), split by participant
(:func:`xray2mri.pipeline.data.manifests.make_datalist`). Only index files and DICOM headers are
read, except by the knee finder, which needs the radiograph's pixels.

Items carry, besides the manifest's ``subject``, ``side``, ``xray``, ``mri``, ``visit`` and
``grade``: ``crop_box`` (``[row_start, col_start, row_end, col_end]`` in the stored
radiograph's pixels, read by :class:`xray2mri.transforms.knee_crop.CropKneed`),
``crop_flip_columns`` (only when the stored columns run patient left -> right),
``release``, ``days_apart`` (MRI date minus radiograph date), ``centre_source``
(``"csv"`` or ``"localiser"``), ``grade_project`` (the ``READPRJ`` of the reading the grade
came from) and, for a knee whose grade is missing, ``grade_missing`` (the OAI code, e.g.
``".T"``). The datalist's top-level ``grade_source`` records the grade files and the reading
project chosen (:data:`GRADE_SOURCE_KEY`). The manifest schema passes extra keys through.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xray2mri.pipeline.atomic import atomic_file
from xray2mri.pipeline.csv_table import read_csv_table
from xray2mri.pipeline.data import manifests
from xray2mri.transforms.knee_crop import crop_box_for
from xray2mri.transforms.laterality import normalise_side

from . import layout, pairing
from .grades import (
    ANY_PROJECT,
    CENTRAL_READING_PROJECT,
    READING_PROJECT_ORDER,
    Grade,
    choose_grade,
    describe_reading_project,
    grade_files,
    parse_reading_project,
    read_readings,
)
from .grades import REASONS as GRADE_REASONS
from .index import OaiIndexError, SeriesRecord, read_indexes
from .pairing import Pair, PairingResult, Unpaired

#: Columns of a CSV of joint centres (e.g. the output of an existing knee localiser).
CENTRES_COLUMNS: tuple[str, ...] = ("participant", "visit", "side", "row", "col")
#: Top-level datalist key recording where the grades came from: ``{"files": [...],
#: "reading_project": 15 or "any", "fallback_order": [15, 37, 42] (with "any")}``.
GRADE_SOURCE_KEY: str = "grade_source"


@dataclass
class OaiBuild:
    """What :func:`build_oai_datalist` made: the datalist and everything that did not pair."""

    datalist: dict
    pairing: PairingResult
    items: list[dict] = field(default_factory=list)
    grade_problems: list[Unpaired] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        """Counts: items, participants, unpaired per reason, ignored series, grade problems per reason."""
        counts = self.pairing.summary
        counts["pairs"] = len(self.items)
        counts["participants"] = len({i["subject"] for i in self.items})
        counts["items without grade"] = sum("grade" not in i for i in self.items)
        reasons = [p.reason for p in self.grade_problems]
        counts.update({f"grades: {reason}": reasons.count(reason) for reason in GRADE_REASONS})
        return counts


def read_centres(path: str | os.PathLike) -> dict[tuple[str, int, str], tuple[float, float]]:
    """Joint centres from a CSV with columns participant, visit, side, row, col (pixels of the stored image).

    ``visit`` may be ``12m``, ``12`` or ``V01``; ``side`` L/R or left/right.

    Raises:
        OaiIndexError: unreadable file, a missing column or a bad value (names the line).
    """
    rows = read_csv_table(path, CENTRES_COLUMNS, "the centres CSV",
                          f"a centres CSV has {', '.join(CENTRES_COLUMNS)}", error=OaiIndexError)
    centres = {}
    for line, cell in rows:
        try:
            side = normalise_side(cell["side"])
            if side is None:
                raise ValueError(f"side {cell['side']!r} is not L or R")
            key = (cell["participant"], layout.parse_visit(cell["visit"]), side)
            centres[key] = (float(cell["row"]), float(cell["col"]))
        except ValueError as err:
            raise OaiIndexError(f"{path}:{line}", str(err)) from err
    return centres


@dataclass(frozen=True)
class _Radiograph:
    file: str  # relative to the root
    rows: int
    cols: int
    spacing: tuple[float, float]
    columns_left_to_right: bool  # PatientOrientation row direction R


def _radiograph_header(root: Path, record: SeriesRecord) -> _Radiograph | str:
    """Geometry of a radiograph from its header, or the reason it cannot be used."""
    import pydicom

    from xray2mri.transforms.xray import spacing_from_header  # the loader's spacing rule, one place

    folder = root / record.path
    file = folder / layout.XRAY_FILE_NAME
    if not file.is_file():
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        if len(files) != 1:
            return f"{record.path}: no radiograph file {layout.XRAY_FILE_NAME} in the series folder"
        file = files[0]
    try:
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as err:  # any failure to parse is the finding reported
        return f"{file.relative_to(root).as_posix()}: cannot read the DICOM header ({type(err).__name__}: {err})"
    spacing, _, _, problems = spacing_from_header(ds)
    if spacing is None:
        return f"{file.relative_to(root).as_posix()}: no pixel spacing ({'; '.join(problems)})"
    orientation = [str(v).upper() for v in (ds.get("PatientOrientation") or [])]
    return _Radiograph(file.relative_to(root).as_posix(), rows, cols, (float(spacing[0]), float(spacing[1])),
                       bool(orientation) and orientation[0].startswith("R"))


def _localise(root: Path, xray: _Radiograph, bilateral: bool) -> dict[str, tuple[tuple[float, float] | None, str]]:
    """side -> (centre or None, reason) from the knee finder the bundle uses (:class:`LocateKnee`).

    A bilateral radiograph's knees get their sides from the image (PatientOrientation, position);
    a single-knee radiograph's one knee serves the side its series was indexed for.
    """
    from xray2mri.transforms.locate_knee import LocateKnee
    from xray2mri.transforms.xray import LoadXray

    try:
        image = LoadXray()(root / xray.file)
        knees = LocateKnee()(image)
    except manifests.InputError as err:
        return {side: (None, err.reason) for side in ("R", "L")}
    if not bilateral and len(knees) == 1:
        return {side: (knees[0].centre, "") for side in ("R", "L")}
    found = {k.side: (k.centre, "") for k in knees if k.side}
    return {side: found.get(side, (None, f"no {side} knee found on the radiograph")) for side in ("R", "L")}


def _mri_problem(root: Path, record: SeriesRecord) -> str:
    folder = root / record.path
    try:
        with os.scandir(folder) as entries:
            if any(e.is_file() for e in entries):
                return ""
    except OSError:
        return f"{record.path}: series folder does not exist"
    return f"{record.path}: series folder holds no file"


def build_items(
    root: str | os.PathLike,
    pairs: Iterable[Pair],
    centres: dict[tuple[str, int, str], tuple[float, float]] | None = None,
    size_mm: float = layout.CROP_SIZE_MM,
    localise: bool = True,
    progress: bool = False,
) -> tuple[list[dict], list[Unpaired]]:
    """Datalist items of the pairs (no grades yet: :func:`join_grades`), and the pairs dropped
    (unreadable files, knees not placed). ``progress`` shows a tqdm bar over the radiographs."""
    root = Path(root)
    by_xray: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        by_xray[p.xray.path].append(p)
    items, dropped = [], []
    for xray_path in tqdm(sorted(by_xray), desc="manifest build", unit="radiograph", disable=not progress):
        group = by_xray[xray_path]
        header = _radiograph_header(root, group[0].xray)
        located = None
        for p in group:
            key = (p.participant, p.visit, p.side)

            def drop(kind, path, reason, detail, _p=p):
                dropped.append(Unpaired(_p.participant, _p.visit, _p.side, kind, path, reason, detail))

            if isinstance(header, str):
                drop("xray", p.xray.path, pairing.UNREADABLE, header)
                continue
            problem = _mri_problem(root, p.mri)
            if problem:
                drop("mri", p.mri.path, pairing.UNREADABLE, problem)
                continue
            if centres is not None and key in centres:
                centre, source = centres[key], "csv"
            elif localise:
                if located is None:
                    located = _localise(root, header, p.bilateral)
                centre, reason = located[p.side]
                source = "localiser"
                if centre is None:
                    drop("xray", p.xray.path, pairing.NOT_PLACED, reason)
                    continue
            else:
                drop("xray", p.xray.path, pairing.NOT_PLACED, "no centre for this knee in the centres CSV")
                continue
            item: dict[str, Any] = {
                "subject": p.participant, "side": p.side, "xray": header.file, "mri": p.mri.path,
                "visit": layout.visit_prefix(p.visit),
                "crop_box": crop_box_for(centre, header.spacing, size_mm),
                "release": p.xray.release, "days_apart": p.days_apart, "centre_source": source,
            }
            if header.columns_left_to_right:
                item["crop_flip_columns"] = True
            items.append(item)
    return items, dropped


def join_grades(
    items: Iterable[dict],
    readings: dict[tuple[str, int, str], list[Grade]],
    reading_project: int | str = CENTRAL_READING_PROJECT,
) -> list[Unpaired]:
    """Set each item's ``grade`` (or ``grade_missing``) and ``grade_project`` from its knee's readings.

    The grade of each knee is chosen by :func:`.grades.choose_grade`; every knee whose readings
    disagree, or that the chosen project did not read, is returned as a problem (kind
    ``"grade"``, the grade files as path) for the report, never resolved silently.
    """
    problems = []
    for item in items:
        visit = layout.parse_visit(item["visit"])
        knee = readings.get((item["subject"], visit, item["side"]))
        if not knee:
            continue
        choice = choose_grade(knee, reading_project)
        grade = choice.grade
        if grade is not None and grade.value is not None:
            item["grade"] = grade.value
        elif grade is not None:
            item["grade_missing"] = grade.code or "empty"
        if grade is not None and grade.project is not None:
            item["grade_project"] = grade.project
        if choice.problem:
            files = sorted({g.source.rsplit(":", 1)[0] for g in knee})
            problems.append(Unpaired(item["subject"], visit, item["side"], "grade", "; ".join(files),
                                     choice.problem, choice.detail))
    return problems


def grade_source(grades: str | os.PathLike, reading_project: int | str) -> dict[str, Any]:
    """The datalist's record of where its grades came from (:data:`GRADE_SOURCE_KEY`)."""
    source: dict[str, Any] = {"files": [p.name for p in grade_files(grades)], "reading_project": reading_project}
    if reading_project == ANY_PROJECT:
        source["fallback_order"] = list(READING_PROJECT_ORDER)
    return source


def _is_synthetic(root: Path) -> bool:
    try:
        return bool(json.loads((root / "oai_truth.json").read_text()).get("synthetic"))
    except (OSError, ValueError):
        return False


def build_oai_datalist(
    root: str | os.PathLike,
    grades: str | os.PathLike | None = None,
    sequence: str = layout.DEFAULT_SEQUENCE,
    visits: Iterable[int | str] | None = None,
    window_days: int = pairing.DEFAULT_WINDOW_DAYS,
    centres: str | os.PathLike | None = None,
    size_mm: float = layout.CROP_SIZE_MM,
    seed: int = 0,
    fractions: tuple[float, float, float] = manifests.DEFAULT_FRACTIONS,
    localise: bool = True,
    reading_project: int | str = CENTRAL_READING_PROJECT,
    progress: bool = False,
) -> OaiBuild:
    """Datalist of an OAI image release, paths relative to ``root``, split by participant.

    Args:
        root: folder holding the timepoint folders (``00m``, ``12m``...) and their ``contents.csv``.
        grades: a ``kxr_sq_bu`` file or a folder of them; None: no grades.
        sequence: MRI SeriesDescription without ``_LEFT``/``_RIGHT``.
        visits: visits to use (``"00m"``, ``12``, ``"V01"``...); None: all.
        window_days: largest gap between a pair's radiograph and MRI dates.
        centres: CSV of joint centres (:data:`CENTRES_COLUMNS`); knees not in it are localised
            (unless ``localise`` is False).
        size_mm: side of the square crop around each joint centre.
        seed, fractions: of the split by participant (stratified by grade).
        localise: run the built-in localiser for knees without a given centre.
        reading_project: the ``READPRJ`` whose grades are used (default 15, the central
            reading), or ``"any"`` for the fallback order of :mod:`.grades`.
        progress: show a tqdm bar (on stderr) over the radiographs whose headers are read.

    Returns:
        :class:`OaiBuild` (datalist, pairing result with every unpaired candidate, items).

    Raises:
        OaiIndexError: no index under ``root``, an unreadable index, grade or centres file.
        ManifestError: nothing paired.
    """
    root = Path(root)
    reading_project = parse_reading_project(reading_project)
    months = None if visits is None else sorted({layout.parse_visit(v) for v in visits})
    records, problems = read_indexes(root)
    result = pairing.pair_series(records, sequence=sequence, visits=months, window_days=window_days,
                                 problems=problems)
    readings = read_readings(grades) if grades is not None else None
    centre_table = read_centres(centres) if centres is not None else None
    items, dropped = build_items(root, result.pairs, centre_table, size_mm, localise, progress)
    result.unpaired += dropped
    grade_problems = join_grades(items, readings, reading_project) if readings is not None else []
    if not items:
        raise manifests.ManifestError(root, "no knee radiograph paired with an MRI series; "
                                            f"summary: {json.dumps(result.summary)}")
    what = ("SYNTHETIC OAI-layout tree made by xray2mri (not patient data)" if _is_synthetic(root)
            else "OAI image release")
    description = (f"{what}: PA knee radiographs paired with {sequence} MRI of the same knee and visit "
                   f"(dates within {window_days} days, last rescan wins), knees cropped at load time to "
                   f"{size_mm:g} mm around the joint centre (crop_box), left knees mirrored by the loading chain")
    if readings is not None:
        description += (f"; Kellgren-Lawrence grades from {describe_reading_project(reading_project)} "
                        f"of the kxr_sq_bu files (grade_source, grade_project)")
    datalist = manifests.make_datalist(items, seed=seed, fractions=fractions, stratify_key="grade",
                                       description=description)
    if readings is not None:
        datalist[GRADE_SOURCE_KEY] = grade_source(grades, reading_project)
    return OaiBuild(datalist, result, items, grade_problems)


def write_unpaired_report(build: OaiBuild, path: str | os.PathLike) -> Path:
    """Write every unpaired candidate and every grade problem (kind ``"grade"``), one row each
    (participant, visit, side, kind, path, reason, detail)."""
    path = Path(path)
    rows = build.pairing.unpaired + build.grade_problems
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["participant", "visit", "side", "kind", "path", "reason", "detail"])
        writer.writeheader()
        for u in sorted(rows, key=lambda u: (u.participant, u.visit or 0, u.side, u.kind, u.path)):
            writer.writerow(u.as_row())
    return path
