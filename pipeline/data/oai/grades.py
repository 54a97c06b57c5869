"""Kellgren-Lawrence grades from the OAI ``kxr_sq_bu`` files (central X-ray readings).

``kxr_sq_bu00.txt`` (baseline; ``01``, ``03``, ``05``, ``06``, ``08``, ``10`` for later visits)
is pipe-separated with one row per participant and knee: ``ID``, ``SIDE`` (1 = right,
2 = left) and, among many readings, the grade in ``V00XRKL`` (the prefix names the visit).
OAI writes missing values as codes starting with a dot (``.P`` prosthesis, ``.T`` technical,
``.A`` not expected, ...): they are kept as *missing* (the code is remembered so a report can
say why), never turned into grade 0.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from . import layout
from .index import OaiIndexError

#: Grade key: (participant, visit months, side "L"/"R").
GradeKey = tuple[str, int, str]


@dataclass(frozen=True)
class Grade:
    """One knee's Kellgren-Lawrence reading: ``value`` 0-4, or None with the OAI ``code`` saying why."""

    value: int | None
    code: str = ""
    source: str = ""

    @property
    def reason(self) -> str:
        """Words for a missing grade's code (empty when the grade is known)."""
        if self.value is not None:
            return ""
        return layout.MISSING_CODES.get(self.code, f"missing ({self.code or 'empty'})")


def grade_files(path: str | os.PathLike) -> list[Path]:
    """The grade files named by ``path``: the file itself, or every ``kxr_sq_bu??.txt`` in a folder.

    Raises:
        OaiIndexError: nothing there, or a folder without grade files.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if layout.GRADES_FILE_PATTERN.match(p.name))
        if files:
            return files
        raise OaiIndexError(path, "no kxr_sq_bu??.txt grade file in this folder")
    raise OaiIndexError(path, "grade file or folder does not exist")


def read_grades_file(path: str | os.PathLike) -> dict[GradeKey, Grade]:
    """Grades of one ``kxr_sq_bu`` file, for every visit whose ``V..XRKL`` column it holds.

    When a knee has several rows (several reading projects), a known grade wins over a missing
    one and, among known grades, the last row in the file wins.

    Raises:
        OaiIndexError: unreadable file, no ``ID``/``SIDE`` or ``V..XRKL`` column, a bad side
            code, or a grade that is neither 0-4 nor a missing code (names the file and line).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter="|")
            header = [name.strip().upper() for name in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise OaiIndexError(path, f"cannot read the grade file ({err})") from err
    id_col, side_col = layout.GRADES_ID_COLUMN, layout.GRADES_SIDE_COLUMN
    if id_col not in header or side_col not in header:
        raise OaiIndexError(path, f"no {id_col} and {side_col} columns; is this a pipe-separated kxr_sq_bu file?")
    kl_cols = {}
    for i, name in enumerate(header):
        prefix = name[: -len(layout.GRADES_KL_SUFFIX)]
        if name.endswith(layout.GRADES_KL_SUFFIX) and prefix in layout.PREFIX_VISIT:
            kl_cols[i] = layout.PREFIX_VISIT[prefix]
    if not kl_cols:
        raise OaiIndexError(path, f"no V..{layout.GRADES_KL_SUFFIX} (Kellgren-Lawrence) column")
    i_id, i_side = header.index(id_col), header.index(side_col)

    grades: dict[GradeKey, Grade] = {}
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) < len(header):
            raise OaiIndexError(where, f"{len(row)} fields where the header has {len(header)}")
        participant = row[i_id].strip()
        side = layout.GRADES_SIDE_CODES.get(row[i_side].strip())
        if side is None:
            raise OaiIndexError(where, f"SIDE {row[i_side].strip()!r} is not 1 (right) or 2 (left)")
        for i, visit in kl_cols.items():
            grade = _parse_kl(row[i].strip(), where)
            key = (participant, visit, side)
            old = grades.get(key)
            if old is None or grade.value is not None or old.value is None:
                grades[key] = grade
    return grades


def _parse_kl(text: str, where: str) -> Grade:
    if text == "" or text.startswith("."):
        return Grade(None, text.split(":")[0].strip(), where)
    try:
        number = float(text.split(":")[0])
    except ValueError:
        raise OaiIndexError(where, f"grade {text!r} is neither 0-4 nor an OAI missing code (.A, .P, .T ...)") from None
    if number != int(number) or int(number) not in range(5):
        raise OaiIndexError(where, f"grade {text!r} is not a Kellgren-Lawrence grade 0-4")
    return Grade(int(number), "", where)


def read_grades(path: str | os.PathLike) -> dict[GradeKey, Grade]:
    """Grades of every ``kxr_sq_bu`` file named by ``path`` (a file or a folder), merged."""
    grades: dict[GradeKey, Grade] = {}
    for file in grade_files(path):
        for key, grade in read_grades_file(file).items():
            if key not in grades or grade.value is not None:
                grades[key] = grade
    return grades
