"""Kellgren-Lawrence grades from the OAI ``kxr_sq_bu`` files (central X-ray readings).

``kxr_sq_bu00.txt`` (baseline; ``01``, ``03``, ``05``, ``06``, ``08``, ``10`` for later visits)
holds one row per participant, knee and reading project: ``ID``, ``SIDE`` (1 = right,
2 = left), ``READPRJ`` (the reading project) and, among many readings, the grade in
``V00XRKL`` (the prefix names the visit).

Both forms the files circulate in are read, as the file says:

- values as plain codes (``1``, ``2``, ``.T``) or as labelled codes (``1: Right``, ``2: 2``,
  ``.: Missing Form/Incomplete Workbook``, ``.A: Not Expected``): the code is what comes
  before the first ``:``;
- ``|`` or ``,`` between the fields (taken from the header line), values quoted or not,
  column names in any case.

OAI writes missing values as codes starting with a dot (``.`` missing form, ``.P``
prosthesis, ``.T`` technical, ``.A`` not expected, ...): they are kept as *missing* (the code
is remembered so a report can say why), never turned into grade 0.

**Reading projects.** The central reading is project 15 (:data:`CENTRAL_READING_PROJECT`);
other projects re-read subsets of the knees, and their grades may differ. Every reading is
kept (:func:`read_readings`), and one grade per knee is chosen by :func:`choose_grade`:

- a project number (default 15): that project's reading only. A knee it did not read gets no
  grade, and is reported (:data:`NO_CHOSEN_GRADE`), as is a knee it read as missing (a code)
  that another project graded;
- ``"any"``: the first project in :data:`READING_PROJECT_ORDER` (15, 37, 42), then any other
  project in ascending number, that gives the knee a known grade. This order is ours, not
  OAI's: the central reading first, then the other projects by number (OAI's notes, as quoted
  in public OAI code, also say that some knees coded 42 belong to project 37).

Whatever the choice, a knee whose readings give different grades is reported
(:data:`DISAGREE`, with every project's value and which one was used): never resolved silently.
A file without a ``READPRJ`` column is one reading per knee and needs no choice.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import layout
from .index import OaiIndexError

#: Grade key: (participant, visit months, side "L"/"R").
GradeKey = tuple[str, int, str]

#: The central reading of the OAI knee radiographs (``READPRJ`` 15), the default choice.
CENTRAL_READING_PROJECT: int = layout.GRADES_CENTRAL_PROJECT
#: ``--reading-project any``: the projects tried in this order (then others, ascending).
READING_PROJECT_ORDER: tuple[int, ...] = (15, 37, 42)
#: The value of ``reading_project`` that means "any project, in :data:`READING_PROJECT_ORDER`".
ANY_PROJECT: str = "any"
#: Fields a grade file may be split by; the header line says which one the file uses.
DELIMITERS: tuple[str, ...] = ("|", ",")

#: Reasons a knee's grade is reported with (the unpaired/problems report's ``reason``).
DISAGREE = "readings disagree"
NO_CHOSEN_GRADE = "no grade from the chosen project"
REASONS: tuple[str, ...] = (DISAGREE, NO_CHOSEN_GRADE)


@dataclass(frozen=True)
class Grade:
    """One reading of one knee: ``value`` 0-4, or None with the OAI ``code`` saying why.

    ``source`` is ``file:line``; ``project`` the ``READPRJ`` (None when the file has no such column).
    """

    value: int | None
    code: str = ""
    source: str = ""
    project: int | None = None

    @property
    def reason(self) -> str:
        """Words for a missing grade's code (empty when the grade is known)."""
        if self.value is not None:
            return ""
        return layout.MISSING_CODES.get(self.code, f"missing ({self.code or 'empty'})")

    @property
    def shown(self) -> str:
        """The value as a report shows it: the grade, or the missing code."""
        return str(self.value) if self.value is not None else (self.code or "empty")


@dataclass(frozen=True)
class GradeChoice:
    """The grade chosen for one knee (None: none usable) and, when there is one, the problem to report."""

    grade: Grade | None
    problem: str = ""  # one of REASONS, or ""
    detail: str = ""


def parse_reading_project(text: str | int) -> int | str:
    """``"15"`` -> 15, ``"any"`` -> :data:`ANY_PROJECT`; ``ValueError`` for anything else."""
    if isinstance(text, int):
        return text
    word = str(text).strip().lower()
    if word == ANY_PROJECT:
        return ANY_PROJECT
    try:
        return int(word)
    except ValueError:
        raise ValueError(f"reading project {text!r} is neither a READPRJ number (e.g. "
                         f"{CENTRAL_READING_PROJECT}) nor {ANY_PROJECT!r}") from None


def describe_reading_project(reading_project: int | str) -> str:
    """Words for a ``reading_project`` choice, for the datalist's description and the summary."""
    if reading_project == ANY_PROJECT:
        order = ", ".join(str(p) for p in READING_PROJECT_ORDER)
        return f"the first of READPRJ {order}, then other projects ascending, with a known grade"
    central = " (the central reading)" if reading_project == CENTRAL_READING_PROJECT else ""
    return f"READPRJ {reading_project}{central}"


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


def _code(text: str) -> str:
    """The code of a plain or labelled value: ``"1: Right"`` -> ``"1"``, ``".: Missing ..."`` -> ``"."``."""
    return text.split(":", 1)[0].strip()


def _delimiter(header_line: str, path: Path) -> str:
    """The field delimiter of a grade file, from its header line (quoted parts ignored)."""
    unquoted = header_line.split('"')[::2]
    counts = {d: sum(part.count(d) for part in unquoted) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    if counts[best] == 0:
        raise OaiIndexError(f"{path}:1", "the header has a single column; a kxr_sq_bu file is "
                                         f"separated by {' or '.join(repr(d) for d in DELIMITERS)}")
    return best


def _integer(code: str) -> int | None:
    """``"15"``, ``"15.0"`` -> 15; None when not a whole number."""
    try:
        number = float(code)
        return int(number) if number == int(number) else None
    except (ValueError, OverflowError):  # not a number, nan, inf
        return None


def read_grades_file(path: str | os.PathLike) -> dict[GradeKey, list[Grade]]:
    """Every reading of one ``kxr_sq_bu`` file, per knee, for every visit whose ``V..XRKL`` column it holds.

    Raises:
        OaiIndexError: unreadable file, no ``ID``/``SIDE`` or ``V..XRKL`` column, a bad side or
            ``READPRJ`` code, a short row, or a grade that is neither 0-4 nor a missing code
            (names the file and line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
        header_line = next((line for line in text.splitlines() if line.strip()), "")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(header_line, path),
                            skipinitialspace=True)
        header = [name.strip().upper() for name in next(reader, [])]
        rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise OaiIndexError(path, f"cannot read the grade file ({err})") from err
    id_col, side_col = layout.GRADES_ID_COLUMN, layout.GRADES_SIDE_COLUMN
    if id_col not in header or side_col not in header:
        raise OaiIndexError(path, f"no {id_col} and {side_col} columns; is this a kxr_sq_bu file?")
    kl_cols = {}
    for i, name in enumerate(header):
        prefix = name[: -len(layout.GRADES_KL_SUFFIX)]
        if name.endswith(layout.GRADES_KL_SUFFIX) and prefix in layout.PREFIX_VISIT:
            kl_cols[i] = layout.PREFIX_VISIT[prefix]
    if not kl_cols:
        raise OaiIndexError(path, f"no V..{layout.GRADES_KL_SUFFIX} (Kellgren-Lawrence) column")
    i_id, i_side = header.index(id_col), header.index(side_col)
    i_project = header.index(layout.GRADES_PROJECT_COLUMN) if layout.GRADES_PROJECT_COLUMN in header else None

    readings: dict[GradeKey, list[Grade]] = defaultdict(list)
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) < len(header):
            raise OaiIndexError(where, f"{len(row)} fields where the header has {len(header)}")
        participant = _code(row[i_id])
        if not participant or participant.startswith("."):
            raise OaiIndexError(where, f"no participant ID ({row[i_id].strip()!r})")
        side_number = _integer(_code(row[i_side]))
        side = layout.GRADES_SIDE_CODES.get(str(side_number))
        if side is None:
            raise OaiIndexError(where, f"SIDE {row[i_side].strip()!r} is not 1 (right) or 2 (left)")
        project = None
        if i_project is not None:
            code = _code(row[i_project])
            if code and not code.startswith("."):
                project = _integer(code)
                if project is None:
                    raise OaiIndexError(where, f"READPRJ {row[i_project].strip()!r} is not a project number")
        for i, visit in kl_cols.items():
            readings[(participant, visit, side)].append(_parse_kl(row[i].strip(), where, project))
    return dict(readings)


def _parse_kl(text: str, where: str, project: int | None) -> Grade:
    code = _code(text)
    if code == "" or code.startswith("."):
        return Grade(None, code, where, project)
    number = _integer(code)
    if number is None and not code.replace(".", "", 1).isdigit():
        raise OaiIndexError(where, f"grade {text!r} is neither 0-4 nor an OAI missing code (., .A, .P, .T ...)")
    if number not in range(5):
        raise OaiIndexError(where, f"grade {text!r} is not a Kellgren-Lawrence grade 0-4")
    return Grade(number, "", where, project)


def read_readings(path: str | os.PathLike) -> dict[GradeKey, list[Grade]]:
    """Every reading of every ``kxr_sq_bu`` file named by ``path`` (a file or a folder), per knee."""
    readings: dict[GradeKey, list[Grade]] = defaultdict(list)
    for file in grade_files(path):
        for key, grades in read_grades_file(file).items():
            readings[key] += grades
    return dict(readings)


def _project_order(projects: Sequence[int | None]) -> list[int | None]:
    """Projects in the fallback order: :data:`READING_PROJECT_ORDER`, other numbers ascending, None last."""
    ranked = {p: i for i, p in enumerate(READING_PROJECT_ORDER)}
    return sorted(set(projects), key=lambda p: (p is None, ranked.get(p, len(ranked)), p or 0))


def _one_project(readings: Sequence[Grade]) -> Grade | None:
    """The grade of one project's rows: the known one (None if its rows disagree), else the first code."""
    known = {g.value for g in readings if g.value is not None}
    if len(known) > 1:
        return None
    return next((g for g in readings if g.value is not None), readings[0])


def _project_name(project: int | None) -> str:
    return f"READPRJ {project}" if project is not None else "no READPRJ"


def choose_grade(readings: Sequence[Grade], reading_project: int | str = CENTRAL_READING_PROJECT) -> GradeChoice:
    """The grade of one knee from its readings, and the problem to report (see the module docstring).

    Args:
        readings: every reading of the knee (:func:`read_readings`).
        reading_project: a ``READPRJ`` number, or :data:`ANY_PROJECT`.
    """
    by_project: dict[int | None, list[Grade]] = defaultdict(list)
    for g in readings:
        by_project[g.project].append(g)
    order = _project_order(list(by_project))

    def listed() -> str:  # every project's reading, for a report's detail
        return ", ".join(f"{_project_name(p)}: {'/'.join(dict.fromkeys(g.shown for g in by_project[p]))}"
                         for p in order)

    if reading_project == ANY_PROJECT:
        chosen = next((g for p in order if (g := _one_project(by_project[p])) is not None and g.value is not None),
                      None)
        if chosen is None:  # no project gives a known grade: the first project's missing code
            chosen = next((g for p in order if (g := _one_project(by_project[p])) is not None), None)
        why = "first in the fallback order"
    else:
        group = by_project.get(int(reading_project))
        if group is None and set(by_project) == {None}:
            group = by_project[None]  # a file without READPRJ: one reading per knee, nothing to choose
        if group is None:
            return GradeChoice(None, NO_CHOSEN_GRADE,
                               f"{listed()}; no grade used (no reading by READPRJ {reading_project})")
        chosen = _one_project(group)
        why = "chosen"
    known = {g.value for g in readings if g.value is not None}
    if len(known) > 1:
        used = (f"used {_project_name(chosen.project)} ({why})" if chosen is not None
                else "no grade used (rows of one project disagree)")
        return GradeChoice(chosen, DISAGREE, f"{listed()}; {used}")
    if known and chosen is not None and chosen.value is None:
        return GradeChoice(chosen, NO_CHOSEN_GRADE, f"{listed()}; used {_project_name(chosen.project)} ({why}): missing")
    return GradeChoice(chosen)


def read_grades(
    path: str | os.PathLike, reading_project: int | str = CENTRAL_READING_PROJECT
) -> dict[GradeKey, Grade]:
    """The chosen grade (:func:`choose_grade`) of every knee of the files named by ``path``.

    Knees without a usable grade (not read by the chosen project, rows of one project that
    disagree) are left out; :func:`read_readings` and :func:`choose_grade` say why.
    """
    grades = {}
    for key, readings in read_readings(path).items():
        choice = choose_grade(readings, reading_project)
        if choice.grade is not None:
            grades[key] = choice.grade
    return grades
