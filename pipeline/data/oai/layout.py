"""Facts about the OAI image releases on disk, written down once.

Sources: the layout of the OAI image packages as read by public code that works with them
(series path ``<timepoint>/<release>/<ParticipantID>/<yyyymmdd>/<8-digit series folder>``,
one ``contents.csv`` per release, series folders starting with ``0`` holding a radiograph,
``1`` an MRI series), the OAI clinical file naming (visit prefixes ``V00``...``V11``) and the
SeriesDescription values of the OAI knee MRI and radiograph protocols.

Visits are handled as whole months since baseline (``int``); :func:`visit_label` spells
them ``"12m"`` (the timepoint folder and the CLI's ``--visits``) and :func:`visit_prefix`
``"V01"`` (the clinical files and the datalist's ``visit``).
"""

from __future__ import annotations

import re

from xray2mri.transforms.geometry import DEFAULT_CROP_MM

#: Image release folder -> visit (months since baseline).
RELEASE_VISIT: dict[str, int] = {
    "0.C.2": 0, "0.E.1": 0,
    "1.C.2": 12, "1.E.1": 12,
    "2.D.2": 18,
    "3.C.2": 24, "3.E.1": 24,
    "4.G.1": 30,
    "5.C.1": 36, "5.E.1": 36,
    "6.C.1": 48, "6.E.1": 48,
    "8.C.1": 72, "8.E.1": 72,
    "10.C.1": 96, "10.E.1": 96,
}
#: Visit (months) -> prefix of the clinical variables and files (``V00XRKL``, ``kxr_sq_bu00``).
VISIT_PREFIX: dict[int, str] = {
    0: "V00", 12: "V01", 18: "V02", 24: "V03", 30: "V04", 36: "V05",
    48: "V06", 60: "V07", 72: "V08", 84: "V09", 96: "V10", 108: "V11",
}
PREFIX_VISIT: dict[str, int] = {prefix: months for months, prefix in VISIT_PREFIX.items()}

#: Columns of a release's ``contents.csv`` index, in the order OAI writes them.
CONTENTS_COLUMNS: tuple[str, ...] = (
    "Folder", "ParticipantID", "StudyDate", "Barcode", "StudyDescription", "SeriesDescription",
)
#: File name of a release index.
CONTENTS_NAME: str = "contents.csv"

#: First character of a series folder name -> what the folder holds.
SERIES_FOLDER_KIND: dict[str, str] = {"0": "xray", "1": "mri"}
#: Digits of a series folder name.
SERIES_FOLDER_DIGITS: int = 8
#: The file of a radiograph series folder (one image, no extension).
XRAY_FILE_NAME: str = "001"

#: MRI SeriesDescriptions of the knee protocol, before the ``_LEFT``/``_RIGHT`` suffix.
MRI_SEQUENCES: tuple[str, ...] = (
    "SAG_3D_DESS", "COR_MPR", "AX_MPR", "SAG_IW_TSE", "COR_IW_TSE", "COR_T1_3D_FLASH",
    "SAG_T2_MAP", "MP_LOCATOR",
)
#: The sequence paired by default: sagittal 3-D DESS with water excitation (160 slices of
#: 384 x 384, 0.7 mm slices, about 0.365 mm in-plane).
DEFAULT_SEQUENCE: str = "SAG_3D_DESS"
#: SeriesDescription suffix -> side (patient's).
MRI_SIDE_SUFFIX: dict[str, str] = {"_RIGHT": "R", "_LEFT": "L"}

#: Radiograph SeriesDescription -> the knees it shows ("B" = both, one image).
KNEE_XRAY_VIEWS: dict[str, str] = {
    "Bilateral PA Fixed Flexion Knee": "B",
    "PA Fixed Flexion Left Knee": "L",
    "PA Fixed Flexion Right Knee": "R",
}
#: Radiograph views OAI also holds that are not used here (listed for documentation and tests).
OTHER_XRAY_VIEWS: tuple[str, ...] = (
    "Full Limb", "Lateral Left Knee", "Lateral Right Knee", "AP Pelvis", "PA Bilateral Hand",
)

#: Community convention for the knee region of interest: a square this size (mm) around the
#: joint centre, left knees mirrored to look like right ones.
CROP_SIZE_MM: float = DEFAULT_CROP_MM  # written down once, in transforms/geometry.py

#: Grades: file name pattern (``kxr_sq_bu00.txt``: semi-quantitative X-ray readings, visit 00),
#: participant, side and reading-project columns, side codes, the Kellgren-Lawrence column after
#: the prefix, and the reading project of OAI's central reading.
GRADES_FILE_PATTERN: re.Pattern = re.compile(r"^kxr_sq_bu(\d\d)\.txt$", re.IGNORECASE)
GRADES_ID_COLUMN: str = "ID"
GRADES_SIDE_COLUMN: str = "SIDE"
GRADES_PROJECT_COLUMN: str = "READPRJ"
GRADES_CENTRAL_PROJECT: int = 15
GRADES_SIDE_CODES: dict[str, str] = {"1": "R", "2": "L"}
GRADES_KL_SUFFIX: str = "XRKL"
#: OAI missing-value codes (a value starting with "." is missing; these are the common ones).
MISSING_CODES: dict[str, str] = {
    ".A": "not expected", ".P": "prosthesis", ".T": "technical problem", ".M": "missing",
    ".N": "not assessed", ".": "missing",
}

_VISIT_TEXT = re.compile(r"^\s*(?:V(\d{1,2})|(\d{1,3})\s*(?:m|mo|months?)?)\s*$", re.IGNORECASE)


def visit_label(months: int) -> str:
    """Timepoint name of a visit: 0 -> ``"00m"``, 12 -> ``"12m"``, 96 -> ``"96m"``."""
    return f"{int(months):02d}m"


def visit_prefix(months: int) -> str:
    """Clinical prefix of a visit: 0 -> ``"V00"``; raises ``ValueError`` for an unknown visit."""
    try:
        return VISIT_PREFIX[int(months)]
    except KeyError:
        raise ValueError(f"no OAI visit at {months} months; known: {sorted(VISIT_PREFIX)}") from None


def parse_visit(text: str | int) -> int:
    """Months since baseline from ``"12m"``, ``"12"``, ``12`` or ``"V01"``; ``ValueError`` otherwise."""
    if isinstance(text, int):
        months = text
    else:
        match = _VISIT_TEXT.match(str(text))
        if not match:
            raise ValueError(f"not a visit: {text!r} (use e.g. 00m, 12m or V01)")
        if match.group(1) is not None:
            prefix = f"V{int(match.group(1)):02d}"
            if prefix not in PREFIX_VISIT:
                raise ValueError(f"unknown visit prefix {prefix}; known: {sorted(PREFIX_VISIT)}")
            return PREFIX_VISIT[prefix]
        months = int(match.group(2))
    if months not in VISIT_PREFIX:
        raise ValueError(f"no OAI visit at {months} months; known: {sorted(VISIT_PREFIX)}")
    return months


def release_visit(release: str) -> int | None:
    """Visit (months) of a release folder name such as ``"1.C.2"``; None when unknown."""
    return RELEASE_VISIT.get(release.strip())


def series_kind(folder_name: str) -> str | None:
    """``"xray"`` or ``"mri"`` from an 8-digit series folder name; None for anything else."""
    name = folder_name.strip()
    if len(name) != SERIES_FOLDER_DIGITS or not name.isdigit():
        return None
    return SERIES_FOLDER_KIND.get(name[0])


def mri_side(series_description: str, sequence: str) -> str | None:
    """Side of an MRI SeriesDescription of ``sequence`` (``SAG_3D_DESS_RIGHT`` -> ``"R"``), else None."""
    text = series_description.strip().upper()
    for suffix, side in MRI_SIDE_SUFFIX.items():
        if text == sequence.upper() + suffix:
            return side
    return None


def xray_knees(series_description: str) -> str | None:
    """Knees shown by a knee radiograph view (``"B"``, ``"L"``, ``"R"``), None for views not used."""
    wanted = series_description.strip().lower()
    for view, knees in KNEE_XRAY_VIEWS.items():
        if view.lower() == wanted:
            return knees
    return None
