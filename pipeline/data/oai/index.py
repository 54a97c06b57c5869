"""Read the ``contents.csv`` index of each OAI image release (never the DICOM files).

An index row names one series::

    "2.D.2/9000798/20060303/10876803","9000798","20060303","10876803","OAI^MR^18 MONTH^RIGHT ","SAG_3D_DESS_RIGHT"

Values are quoted and some carry trailing spaces; both are handled by the ``csv`` module
and stripping. ``Folder`` starts with the release folder, so it is relative to the folder
that holds the release: the index's own folder, or its parent when the index lies inside
the release folder. A row that cannot be used (wrong number of fields, a date that is not
``yyyymmdd``, an unknown release, a series folder that is not 8 digits) is returned as an
:class:`IndexProblem`, so that the pairing reports it as unreadable instead of failing.
"""

from __future__ import annotations

import csv
import datetime
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from xray2mri.pipeline.data.manifests import ManifestError

from . import layout


class OaiIndexError(ManifestError):
    """An OAI root or index file that cannot be used at all; names the file and the reason."""


@dataclass(frozen=True)
class SeriesRecord:
    """One series of an OAI release, as its index row states it.

    Attributes:
        path: the series folder relative to the OAI root, '/'-separated.
        participant: ParticipantID (7 digits in OAI).
        visit: months since baseline (from the release folder).
        release: release folder name, e.g. ``"1.C.2"``.
        study_date: StudyDate.
        series: the 8-digit series folder name.
        barcode: Barcode column.
        kind: ``"xray"`` or ``"mri"`` (first digit of the series folder).
        study_description, series_description: as in the index, outer spaces removed.
        source: ``index_file:line`` of the row (for reports).
    """

    path: str
    participant: str
    visit: int
    release: str
    study_date: datetime.date
    series: str
    barcode: str
    kind: str
    study_description: str
    series_description: str
    source: str


@dataclass(frozen=True)
class IndexProblem:
    """An index row that could not be used; reported once as unreadable."""

    source: str
    folder: str
    participant: str
    reason: str


def find_indexes(root: str | os.PathLike) -> list[Path]:
    """Every ``contents.csv`` at most three levels below ``root`` (sorted).

    Raises:
        OaiIndexError: ``root`` is not a folder or holds no index.
    """
    root = Path(root)
    if not root.is_dir():
        raise OaiIndexError(root, "the OAI root is not a folder")
    found = sorted(
        {p for pattern in ("", "*/", "*/*/", "*/*/*/") for p in root.glob(f"{pattern}{layout.CONTENTS_NAME}")}
    )
    if not found:
        raise OaiIndexError(
            root, f"no {layout.CONTENTS_NAME} found up to three folders deep; point --oai-root at the folder "
                  "holding the timepoint folders (00m, 12m, ...) of an OAI image release"
        )
    return found


def _parse_date(text: str) -> datetime.date:
    return datetime.datetime.strptime(text, "%Y%m%d").date()


def read_index(index_file: str | os.PathLike, root: str | os.PathLike) -> tuple[list[SeriesRecord], list[IndexProblem]]:
    """The series of one ``contents.csv``, with paths relative to ``root``.

    Raises:
        OaiIndexError: the file cannot be read or lacks one of :data:`~.layout.CONTENTS_COLUMNS`.
    """
    index_file = Path(index_file)
    root = Path(root)
    try:
        with open(index_file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            missing = [c for c in layout.CONTENTS_COLUMNS if c not in header]
            if missing:
                raise OaiIndexError(
                    index_file, f"missing column(s) {', '.join(missing)}; an OAI index has "
                                f"{', '.join(layout.CONTENTS_COLUMNS)}, found {', '.join(header) or 'no header'}"
                )
            col = {name: header.index(name) for name in layout.CONTENTS_COLUMNS}
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise OaiIndexError(index_file, f"cannot read the index ({err})") from err

    records: list[SeriesRecord] = []
    problems: list[IndexProblem] = []
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        source = f"{index_file}:{line}"
        if len(row) != len(header):
            problems.append(IndexProblem(source, row[0].strip() if row else "", "",
                                         f"{len(row)} fields where the header has {len(header)}"))
            continue
        cell = {name: row[i].strip() for name, i in col.items()}
        folder, participant = cell["Folder"], cell["ParticipantID"]
        parts = PurePosixPath(folder.replace("\\", "/")).parts
        problem = None
        if len(parts) != 4:
            problem = f"Folder {folder!r} is not <release>/<participant>/<yyyymmdd>/<series>"
        elif layout.release_visit(parts[0]) is None:
            problem = f"unknown release folder {parts[0]!r}"
        elif layout.series_kind(parts[3]) is None:
            problem = f"series folder {parts[3]!r} is not 8 digits starting with 0 (radiograph) or 1 (MRI)"
        elif parts[1] != participant:
            problem = f"Folder names participant {parts[1]} but ParticipantID is {participant}"
        if problem is None:
            try:
                study_date = _parse_date(cell["StudyDate"] or parts[2])
            except ValueError:
                problem = f"StudyDate {cell['StudyDate']!r} is not yyyymmdd"
        if problem is not None:
            problems.append(IndexProblem(source, folder, participant, problem))
            continue
        base = index_file.parent.parent if index_file.parent.name == parts[0] else index_file.parent
        path = (base / Path(*parts)).relative_to(root).as_posix() if base.is_relative_to(root) else \
            Path(os.path.relpath(base / Path(*parts), root)).as_posix()
        records.append(SeriesRecord(
            path=path, participant=participant, visit=layout.RELEASE_VISIT[parts[0]], release=parts[0],
            study_date=study_date, series=parts[3], barcode=cell["Barcode"], kind=layout.series_kind(parts[3]),
            study_description=cell["StudyDescription"], series_description=cell["SeriesDescription"],
            source=source,
        ))
    return records, problems


def read_indexes(root: str | os.PathLike) -> tuple[list[SeriesRecord], list[IndexProblem]]:
    """Every series listed by the indexes under an OAI root (:func:`find_indexes`)."""
    records: list[SeriesRecord] = []
    problems: list[IndexProblem] = []
    for index_file in find_indexes(root):
        r, p = read_index(index_file, root)
        records += r
        problems += p
    return records, problems
