"""A SYNTHETIC image tree in the exact layout of an OAI release, with its indexes and grades.

Nobody here has OAI data, so the importer is built and tested on this tree, which reproduces
what :mod:`.layout` says about the real one::

    OUT/README_SYNTHETIC.txt                       says that nothing here is patient data
    OUT/00m/contents.csv                           index of release 0.C.2 (quoted, trailing spaces)
    OUT/00m/0.C.2/9000099/20050314/00000991        bilateral PA fixed-flexion radiograph, file 001
    OUT/00m/0.C.2/9000099/20050314/10000991        SAG_3D_DESS_RIGHT, one DICOM file per slice (001...)
    OUT/00m/0.C.2/9000099/20050314/10000992        SAG_3D_DESS_LEFT
    OUT/12m/contents.csv, OUT/12m/1.C.2/...        the 12-month visit, and so on
    OUT/clinical/kxr_sq_bu00.txt, ...bu01.txt      Kellgren-Lawrence grades (pipe-separated; plain
                                                   or labelled codes; optionally a second project)
    OUT/known_centres.csv                          true joint centre of every knee on its radiograph
    OUT/oai_truth.json                             what the importer must find (pairs, awkward cases)

Each participant has two knees with their own anatomy and grade (the phantom of
:mod:`xray2mri.pipeline.data.synth.phantom`, one left, one right); each visit has one bilateral
radiograph (both knees in one cone-beam DRR, the patient's right knee on the image's left,
PatientOrientation ``L\\F``) and a DESS-like MRI of each knee written as a sagittal DICOM
series with real geometry tags. (The DRR is cast front to back; OAI's views are PA, which
changes the magnification of each structure by a few per cent, not the layout.)

The awkward cases are there on purpose, on the first visit of the first participants
(:data:`AWKWARD_CASES`): a knee without DESS, a rescan, a radiograph three weeks before the
MRI, a missing grade code, a visit without radiograph, a radiograph months away from the MRI,
a radiograph stored mirrored (PatientOrientation ``R\\F``), and one malformed index row.
``oai_truth.json`` lists what a correct importer reports for each.

The grade files hold the central reading (``READPRJ`` 15) of every knee, written with plain
codes (``1``, ``.T``) or, with ``grades_labelled``, with OAI's labelled codes (``1: Right``,
``2: 2``, ``.T: Technical problem``). With ``grades_reread`` a second project
(:data:`REREAD_PROJECT`) re-reads some knees after the central rows (:func:`reread_grade`):
it disagrees on some, grades the knee the central reading could not (the ``.T`` one), and
alone reads one knee; ``oai_truth.json`` lists every reading under ``grade_readings``.

Every DICOM file says it is synthetic (ImageType DERIVED\\SECONDARY, PatientName
``SYNTHETIC^...``, ImageComments); the index keeps OAI's SeriesDescriptions so that it reads
like the real thing.
"""

from __future__ import annotations

import csv
import datetime
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from xray2mri.pipeline.data.synth.dicom_writer import PHOTOMETRICS, write_dx
from xray2mri.pipeline.data.synth.drr import expose, line_integrals
from xray2mri.pipeline.data.synth.mri_render import draw_mri_params, render_mri
from xray2mri.pipeline.data.synth.phantom import KneeParams, draw_params, render_labels
from xray2mri.pipeline.data.synth.presets import SynthPreset, get_preset
from xray2mri.pipeline.data.synth.tissues import attenuation_lut
from xray2mri.pipeline.dicom_mr import write_mr_series as write_mr_series_file
from xray2mri.transforms.geometry import canonical_affine

from . import layout, pairing

#: Radiograph field at the detector (rows, cols), mm: a landscape cassette holding both knees.
DETECTOR_FIELD_MM: tuple[float, float] = (300.0, 440.0)
#: Voxel size (mm) of the label volume the bilateral DRR is cast through.
DRR_SPACING_MM: float = 2.0
#: Extent (mm) of that volume along A->P (both limbs fit).
DRR_DEPTH_MM: float = 200.0
#: Range of the distance between the two knee centres, mm.
KNEE_DISTANCE_MM: tuple[float, float] = (180.0, 215.0)
#: Largest shift of the knees from the central ray (up/down, and between the two knees), mm.
KNEE_SHIFT_MM: tuple[float, float] = (25.0, 4.0)
#: Source-to-detector distance range, mm, and knee-centre-to-detector distance, mm.
SID_MM: tuple[float, float] = (980.0, 1020.0)
OBJECT_DETECTOR_MM: tuple[float, float] = (70.0, 95.0)
#: First participant id (OAI ids are 7 digits starting with 9).
FIRST_PARTICIPANT: int = 9000099
#: Visits written by default (months).
DEFAULT_VISITS: tuple[int, ...] = (0, 12)
#: Awkward cases, one per participant on its first visit, in this order.
AWKWARD_CASES: tuple[str, ...] = (
    "no_mri_left", "rescan_right", "xray_weeks_early", "missing_grade_right", "no_xray",
    "xray_outside_window", "mirrored_storage",
)
#: Days between radiograph and MRI in the "xray_weeks_early" and "xray_outside_window" cases.
WEEKS_EARLY_DAYS: int = 21
OUTSIDE_WINDOW_DAYS: int = 150
#: Study descriptions of the visits, as OAI words them.
_VISIT_WORDS: dict[int, str] = {0: "ENROLLMENT", 12: "12 MONTH", 18: "18 MONTH", 24: "24 MONTH", 30: "30 MONTH",
                                36: "36 MONTH", 48: "48 MONTH", 72: "72 MONTH", 96: "96 MONTH"}
SYNTHETIC_NOTE = "SYNTHETIC image generated by xray2mri (OAI-layout tree); not patient data"
#: The second reading project of ``grades_reread`` (OAI's project 37 re-read a subset of knees).
REREAD_PROJECT: int = 37
#: Labels of missing-value codes in the labelled form (others: the words of ``layout.MISSING_CODES``).
_MISSING_LABELS: dict[str, str] = {".": "Missing Form/Incomplete Workbook", ".A": "Not Expected"}
_SIDE_LABELS: dict[str, str] = {"R": "1: Right", "L": "2: Left"}


def participant_id(index: int) -> str:
    """OAI-style 7-digit participant id of participant ``index``."""
    return str(FIRST_PARTICIPANT + int(index))


def release_of(visit: int) -> str:
    """The release folder this tree uses for a visit (the first listed in :data:`~.layout.RELEASE_VISIT`)."""
    for release, months in layout.RELEASE_VISIT.items():
        if months == visit:
            return release
    raise ValueError(f"no OAI image release for visit {visit} months")


def barcode(kind: str, index: int, visit: int, number: int) -> str:
    """8-digit series folder: ``0`` radiograph / ``1`` MRI, then participant, visit and series number."""
    visit_i = sorted(layout.RELEASE_VISIT.values()).index(visit) % 10 if visit in layout.RELEASE_VISIT.values() else 0
    return f"{'0' if kind == 'xray' else '1'}{index % 10000:04d}{visit_i:1d}{number:02d}"


def _axis(n: int, spacing: float) -> np.ndarray:
    return ((np.arange(n) - (n - 1) / 2.0) * spacing).astype(np.float32)


# --------------------------------------------------------------------------------------------
# rendering


@dataclass
class BilateralRadiograph:
    """One rendered bilateral radiograph: log-attenuation image and where the knees are."""

    image: np.ndarray  # float32 (rows S->I, cols R->L as seen from the front)
    centres: dict[str, tuple[float, float]]  # side -> (row, col) of the joint centre, pixels
    imager_pixel_mm: float
    sid_mm: float
    sod_mm: float

    @property
    def magnification(self) -> float:
        return self.sid_mm / self.sod_mm


def participant_knees(seed: int, index: int) -> dict[str, KneeParams]:
    """The two knees of participant ``index`` (same anatomy at every visit)."""
    rng = np.random.default_rng([int(seed), int(index), 0])
    return {side: draw_params(rng, side=side) for side in ("R", "L")}


def render_bilateral(
    knees: dict[str, KneeParams], pre: SynthPreset, rng: np.random.Generator,
    drr_spacing_mm: float = DRR_SPACING_MM,
) -> BilateralRadiograph:
    """Cone-beam DRR of both knees of one participant on one detector.

    The right knee lies at negative ``l`` (towards the patient's right, the image's left), the
    left knee at positive ``l``; each knee is rendered from its own parameters on its own half
    of the volume. The centres are the projections of each knee's joint centre (the middle of
    its joint line) through the source onto the detector.
    """
    pixel = pre.xray_pixel_mm
    shape = tuple(int(round(f / pixel)) for f in DETECTOR_FIELD_MM)
    sid = float(rng.uniform(*SID_MM))
    sod = sid - float(rng.uniform(*OBJECT_DETECTOR_MM))
    mag = sid / sod
    distance = float(rng.uniform(*KNEE_DISTANCE_MM))
    height = float(rng.uniform(-KNEE_SHIFT_MM[0], KNEE_SHIFT_MM[0]))
    centres_mm = {
        "R": (height + float(rng.uniform(-KNEE_SHIFT_MM[1], KNEE_SHIFT_MM[1])), -distance / 2),
        "L": (height + float(rng.uniform(-KNEE_SHIFT_MM[1], KNEE_SHIFT_MM[1])), distance / 2),
    }
    field = [f / mag + 4 * drr_spacing_mm for f in DETECTOR_FIELD_MM]
    a = _axis(int(round(DRR_DEPTH_MM / drr_spacing_mm)), drr_spacing_mm)
    s = _axis(int(round(field[0] / drr_spacing_mm)), drr_spacing_mm)
    lr = _axis(int(round(field[1] / drr_spacing_mm)), drr_spacing_mm)
    labels = np.empty((a.size, s.size, lr.size), dtype=np.uint8)
    half = lr < 0
    for side, cols in (("R", half), ("L", ~half)):
        s_c, l_c = centres_mm[side]
        labels[:, :, cols] = render_labels(knees[side], a, s - s_c, lr[cols] - l_c)
    mu = attenuation_lut()[labels]
    integrals = line_integrals(mu, drr_spacing_mm, shape, pixel, sid, sod, pre.drr_slab)
    photons = pre.photons_per_mm2 * pixel**2 * float(rng.uniform(0.7, 1.3))
    image = expose(integrals, photons, pre.detector_blur_px, float(rng.uniform(-0.08, 0.08)), rng)
    centres = {
        side: (s_c * mag / pixel + (shape[0] - 1) / 2.0, l_c * mag / pixel + (shape[1] - 1) / 2.0)
        for side, (s_c, l_c) in centres_mm.items()
    }
    return BilateralRadiograph(image, centres, pixel, sid, sod)


def render_knee_mri(knee: KneeParams, pre: SynthPreset, rng: np.random.Generator) -> np.ndarray:
    """DESS-like MRI (int16, canonical "PIL" array of ``pre.mri_shape``) of one knee."""
    fine = [_axis(n, pre.fine_spacing_mm) for n in pre.fine_shape]
    acq = draw_mri_params(rng, pre.mri_spacing_mm)
    return render_mri(render_labels(knee, *fine), pre.supersample, acq, rng)


# --------------------------------------------------------------------------------------------
# writing


def write_radiograph(
    path: str | os.PathLike, image: np.ndarray, *, participant: str, date: datetime.date,
    series_description: str, imager_pixel_mm: float, sid_mm: float, sod_mm: float,
    photometric: str = "MONOCHROME2", mirrored: bool = False, uid_seed: str = "",
) -> None:
    """Write a bilateral PA knee radiograph as OAI stores it (one file, no extension).

    ``mirrored`` stores the columns running from the patient's left to right and says so in
    PatientOrientation (``R\\F``), as some archives do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = image[:, ::-1] if mirrored else image
    write_dx(path, np.ascontiguousarray(pixels), subject=participant, laterality="B",
             imager_pixel_mm=imager_pixel_mm, sid_mm=sid_mm, sod_mm=sod_mm, photometric=photometric,
             uid_seed=uid_seed)
    ds = pydicom.dcmread(path)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"{date:%Y%m%d}"
    ds.StudyDescription = "OAI^XR^SYNTHETIC"
    ds.SeriesDescription = f"{series_description} (SYNTHETIC)"
    ds.ViewPosition = "PA"  # write_dx wrote ImageLaterality B and no series Laterality (R or L only)
    ds.PatientOrientation = ["R", "F"] if mirrored else ["L", "F"]
    ds.save_as(path, enforce_file_format=True)


def write_mr_series(
    folder: str | os.PathLike, volume: np.ndarray, spacing_mm: float, centre_lps: Sequence[float], *,
    participant: str, side: str, date: datetime.date, series_description: str, uid_seed: str = "",
) -> None:
    """Write a canonical ("PIL") volume as a sagittal MR series, one file per slice (``001``, ``002``...).

    Slices run along the patient's right -> left; each image has rows superior -> inferior and
    columns anterior -> posterior (ImageOrientationPatient ``0\\1\\0\\0\\0\\-1``). Geometry
    tags (ImagePositionPatient, PixelSpacing, SliceThickness) place the volume centre at
    ``centre_lps`` (mm, DICOM patient coordinates). Written by the project's one MR series
    writer (:func:`xray2mri.pipeline.dicom_mr.write_mr_series`), atomically, with UIDs derived
    from ``uid_seed``.
    """
    centre_ras = (-float(centre_lps[0]), -float(centre_lps[1]), float(centre_lps[2]))
    canonical = canonical_affine(volume.shape, spacing_mm, centre_ras)
    sagittal = canonical[:, [2, 1, 0, 3]]  # array axes (R->L, S->I, A->P): slices, rows, columns
    stored = np.clip(volume, 0, None).astype(np.uint16).transpose(2, 1, 0)
    attributes = {
        "SpecificCharacterSet": "ISO_IR 100",
        "ImageType": ["DERIVED", "SECONDARY"],
        "StudyDate": f"{date:%Y%m%d}", "SeriesDate": f"{date:%Y%m%d}", "ContentDate": f"{date:%Y%m%d}",
        "Manufacturer": "xray2mri (synthetic)",
        "StudyDescription": "OAI^MR^SYNTHETIC",
        "SeriesDescription": series_description,
        "ImageComments": SYNTHETIC_NOTE,
        "PatientName": f"SYNTHETIC^{participant}",
        "PatientID": participant,
        "PatientIdentityRemoved": "YES",
        "BodyPartExamined": "KNEE",
        "Laterality": side,
        "MRAcquisitionType": "3D",
        "SequenceName": "DESS-SYNTHETIC",
        "SeriesNumber": 1,
    }
    write_mr_series_file(stored, sagittal, folder, attributes, uid_seed=uid_seed, file_name=lambda k: f"{k + 1:03d}")


def write_contents(path: str | os.PathLike, rows: Iterable[Sequence[str]]) -> None:
    """Write a ``contents.csv`` index as OAI does: every value quoted, some with trailing spaces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(layout.CONTENTS_COLUMNS)
        writer.writerows(rows)


def _labelled(code: str) -> str:
    """OAI's labelled form of a grade or missing code: ``"2"`` -> ``"2: 2"``, ``".T"`` -> ``".T: Technical problem"``."""
    if code.startswith("."):
        return f"{code}: {_MISSING_LABELS.get(code) or layout.MISSING_CODES.get(code, 'missing').capitalize()}"
    return f"{code}: {code}"


def write_grades(
    path: str | os.PathLike, visit: int, rows: Iterable[Sequence], labelled: bool = False
) -> None:
    """Write a ``kxr_sq_bu``-style grade file: ``ID|SIDE|READPRJ|VERSION|V..XRKL|V..XRJSM``.

    ``rows`` holds (participant, side "R"/"L", KL grade or an OAI missing code[, READPRJ,
    default 15]). ``labelled`` writes OAI's labelled codes (``1: Right``, ``2: 2``, ``.T: ...``).
    """
    prefix = layout.visit_prefix(visit)
    codes = {side: code for code, side in layout.GRADES_SIDE_CODES.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(f"ID|SIDE|READPRJ|VERSION|{prefix}XRKL|{prefix}XRJSM\n")
        for participant, side, kl, *rest in rows:
            project = rest[0] if rest else layout.GRADES_CENTRAL_PROJECT
            jsm = kl if kl.startswith(".") else str(max(0, int(kl) - 1))
            if project != layout.GRADES_CENTRAL_PROJECT:
                jsm = "."  # the second project read only the KL grade
            if labelled:
                side_text, kl, jsm = _SIDE_LABELS[side], _labelled(kl), _labelled(jsm)
            else:
                side_text = codes[side]
            handle.write(f"{participant}|{side_text}|{project}|{prefix}.1|{kl}|{jsm}\n")


def reread_grade(index: int, visit_index: int, side: str, central: str, true_grade: int) -> tuple[bool, str | None]:
    """The second project's reading of one knee in a ``grades_reread`` tree.

    Returns (whether the central reading reads this knee too, the second project's grade or None).
    Rules, fixed so that tests can rely on them: the central reading's missing grade (a code) is
    re-read with the knee's grade; the left knee of participant 1 on the first visit is read by
    the second project only; every knee with ``(index + visit_index) % 3 == 1`` is re-read, the
    right one a grade apart (a disagreement), the left one with the same grade.
    """
    if central.startswith("."):
        return True, str(true_grade)
    if index == 1 and visit_index == 0 and side == "L":
        return False, central
    if (index + visit_index) % 3 == 1:
        grade = int(central)
        return True, str(grade + 1 if grade < 4 else grade - 1) if side == "R" else central
    return True, None


# --------------------------------------------------------------------------------------------
# one participant-visit


def _visit_date(seed: int, index: int, visit: int) -> datetime.date:
    rng = np.random.default_rng([int(seed), int(index), 7])
    baseline = datetime.date(2004, 2, 1) + datetime.timedelta(days=int(rng.integers(0, 700)))
    return baseline + datetime.timedelta(days=int(round(visit * 30.44)) + int(rng.integers(-20, 21)))


def _write_visit(job: tuple) -> dict:
    """Render and write one participant-visit; returns its index rows, grades and truth."""
    out, index, visit, seed, pre, case, first_visit, drr_spacing = job
    out = Path(out)
    pre = get_preset(pre) if isinstance(pre, str) else pre
    knees = participant_knees(seed, index)
    rng = np.random.default_rng([int(seed), int(index), int(visit) + 1])
    pid, release = participant_id(index), release_of(visit)
    mri_date = _visit_date(seed, index, visit)
    xray_date = mri_date - datetime.timedelta(
        days={"xray_weeks_early": WEEKS_EARLY_DAYS, "xray_outside_window": OUTSIDE_WINDOW_DAYS}.get(case, 0))
    words = _VISIT_WORDS.get(visit, f"{visit} MONTH")
    rows, truth = [], {"pairs": [], "unpaired": [], "centres": [], "grades": []}

    def series_path(date, folder):
        return f"{release}/{pid}/{date:%Y%m%d}/{folder}"

    def add_row(date, folder, study, description):
        trail = " " if len(rows) % 3 == 0 else ""
        rows.append((series_path(date, folder), pid, f"{date:%Y%m%d}", folder, study + " ", description + trail))

    radiograph = render_bilateral(knees, pre, rng, drr_spacing)
    xray_folder = barcode("xray", index, visit, 1)
    xray_rel = f"{layout.visit_label(visit)}/{series_path(xray_date, xray_folder)}"
    if case != "no_xray":
        mirrored = case == "mirrored_storage"
        write_radiograph(out / xray_rel / layout.XRAY_FILE_NAME, radiograph.image, participant=pid, date=xray_date,
                         series_description="Bilateral PA Fixed Flexion Knee",
                         imager_pixel_mm=radiograph.imager_pixel_mm, sid_mm=radiograph.sid_mm,
                         sod_mm=radiograph.sod_mm, photometric=PHOTOMETRICS[(index + visit) % len(PHOTOMETRICS)],
                         mirrored=mirrored, uid_seed=f"oai/{seed}/{pid}/{visit}/xray")
        add_row(xray_date, xray_folder, f"OAI^XR^{words}", "Bilateral PA Fixed Flexion Knee")
        cols = radiograph.image.shape[1]
        for side, (row, col) in radiograph.centres.items():
            truth["centres"].append({"participant": pid, "visit": layout.visit_label(visit), "side": side,
                                     "row": round(row, 3), "col": round(cols - 1 - col if mirrored else col, 3),
                                     "xray": f"{xray_rel}/{layout.XRAY_FILE_NAME}"})
        if index == 0 and visit == first_visit:  # a view the importer must ignore (index row only)
            add_row(xray_date, barcode("xray", index, visit, 2), f"OAI^XR^{words}", "Full Limb")

    number = 1
    mri_paths: dict[str, str] = {}
    for side, word in (("R", "RIGHT"), ("L", "LEFT")):
        volume = render_knee_mri(knees[side], pre, rng)
        repeats = 2 if (case == "rescan_right" and side == "R") else 1
        if case == "no_mri_left" and side == "L":
            add_row(mri_date, barcode("mri", index, visit, number), f"OAI^MR^{words}^{word}", f"COR_IW_TSE_{word}")
            number += 1
            continue
        for repeat in range(repeats):
            folder = barcode("mri", index, visit, number)
            number += 1
            rel = f"{layout.visit_label(visit)}/{series_path(mri_date, folder)}"
            l_centre = radiograph.centres[side][1]  # only to place the knees apart in the scanner frame
            centre_lps = ((l_centre - (radiograph.image.shape[1] - 1) / 2) * radiograph.imager_pixel_mm
                          / radiograph.magnification, 0.0, 0.0)
            write_mr_series(out / rel, volume, pre.mri_spacing_mm, centre_lps, participant=pid, side=side,
                            date=mri_date, series_description=f"{layout.DEFAULT_SEQUENCE}_{word}",
                            uid_seed=f"oai/{seed}/{pid}/{visit}/{side}/{repeat}")
            add_row(mri_date, folder, f"OAI^MR^{words}^{word}", f"{layout.DEFAULT_SEQUENCE}_{word}")
            if repeat < repeats - 1:
                truth["unpaired"].append({"participant": pid, "visit": layout.visit_label(visit), "side": side,
                                          "kind": "mri", "path": rel, "reason": pairing.SUPERSEDED})
            mri_paths[side] = rel

    for side in ("R", "L"):
        key = {"participant": pid, "visit": layout.visit_label(visit), "side": side}
        if case == "no_xray":
            truth["unpaired"].append({**key, "kind": "mri", "path": mri_paths[side], "reason": pairing.NO_XRAY})
        elif side not in mri_paths:
            truth["unpaired"].append({**key, "kind": "xray", "path": xray_rel, "reason": pairing.NO_MRI})
        elif case == "xray_outside_window":
            truth["unpaired"].append({**key, "kind": "xray", "path": xray_rel, "reason": pairing.OUTSIDE_WINDOW})
            truth["unpaired"].append({**key, "kind": "mri", "path": mri_paths[side], "reason": pairing.OUTSIDE_WINDOW})
        else:
            truth["pairs"].append({**key, "xray": f"{xray_rel}/{layout.XRAY_FILE_NAME}", "mri": mri_paths[side],
                                   "days_apart": (mri_date - xray_date).days})
        kl = ".T" if (case == "missing_grade_right" and side == "R") else str(knees[side].grade)
        truth["grades"].append({**key, "kl": kl})
    return {"visit": visit, "rows": rows, "truth": truth, "case": case, "participant": pid}


# --------------------------------------------------------------------------------------------
# the tree


def write_oai_tree(
    out_dir: str | os.PathLike,
    participants: int,
    seed: int = 0,
    visits: Sequence[int] = DEFAULT_VISITS,
    preset: str | SynthPreset = "demo",
    workers: int = 1,
    awkward: bool = True,
    progress: bool = False,
    drr_spacing_mm: float = DRR_SPACING_MM,
    grades_labelled: bool = False,
    grades_reread: bool = False,
) -> Path:
    """Write a SYNTHETIC OAI-layout tree of ``participants`` participants at ``visits``.

    Args:
        out_dir: the tree root (created; an existing tree there is replaced).
        participants: number of participants (ids from :data:`FIRST_PARTICIPANT`).
        seed: the same seed gives the same tree.
        visits: months since baseline, each an OAI visit with an image release.
        preset: MRI size and radiograph pixel pitch (:mod:`xray2mri.pipeline.data.synth.presets`).
        workers: worker processes rendering participant-visits.
        awkward: put the :data:`AWKWARD_CASES` on the first visit of the first participants.
        progress: show a progress bar.
        drr_spacing_mm: voxel size of the volume the radiographs are cast through (coarser is faster).
        grades_labelled: write the grade files with OAI's labelled codes (``1: Right``, ``2: 2``).
        grades_reread: add a second reading project (:data:`REREAD_PROJECT`, :func:`reread_grade`).

    Returns:
        the tree root.
    """
    if participants < 1:
        raise ValueError(f"participants must be >= 1, got {participants}")
    visits = sorted({layout.parse_visit(v) for v in visits})
    for visit in visits:
        release_of(visit)
    out = Path(out_dir)
    if out.exists() and (out / "oai_truth.json").exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for index in range(participants):
        for visit in visits:
            case = AWKWARD_CASES[index] if awkward and visit == visits[0] and index < len(AWKWARD_CASES) else ""
            jobs.append((str(out), index, visit, seed, preset, case, visits[0], drr_spacing_mm))
    from tqdm import tqdm

    results = []
    with tqdm(total=len(jobs), desc="synth oai", unit="visit", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                results.append(_write_visit(job))
                bar.update()
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(min(workers, len(jobs))) as pool:
                for result in pool.imap(_write_visit, jobs, chunksize=1):
                    results.append(result)
                    bar.update()

    truth: dict[str, list] = {"pairs": [], "unpaired": [], "centres": [], "grades": [], "grade_readings": []}
    for visit_index, visit in enumerate(visits):
        rows = [row for r in results if r["visit"] == visit for row in r["rows"]]
        if awkward and visit == visits[0]:  # one malformed index row, reported as unreadable
            bad = f"{release_of(visit)}/{participant_id(0)}/2005XX14/{barcode('mri', 0, visit, 99)}"
            rows.append((bad, participant_id(0), "2005XX14", bad[-8:], "OAI^MR^BROKEN ", "SAG_3D_DESS_RIGHT"))
            truth["unpaired"].append({"participant": participant_id(0), "visit": "", "side": "", "kind": "index",
                                      "path": bad, "reason": pairing.UNREADABLE})
        write_contents(out / layout.visit_label(visit) / layout.CONTENTS_NAME, rows)
        central, second = [], []
        for r in (r for r in results if r["visit"] == visit):
            index = int(r["participant"]) - FIRST_PARTICIPANT
            for g in list(r["truth"]["grades"]):
                read_centrally, reread = True, None
                if grades_reread:
                    true_grade = participant_knees(seed, index)[g["side"]].grade
                    read_centrally, reread = reread_grade(index, visit_index, g["side"], g["kl"], true_grade)
                if read_centrally:
                    central.append((g["participant"], g["side"], g["kl"], layout.GRADES_CENTRAL_PROJECT))
                else:
                    r["truth"]["grades"].remove(g)
                if reread is not None:
                    second.append((g["participant"], g["side"], reread, REREAD_PROJECT))
        truth["grade_readings"] += [{"participant": p, "visit": layout.visit_label(visit), "side": side, "kl": kl,
                                     "project": project} for p, side, kl, project in central + second]
        write_grades(out / "clinical" / f"kxr_sq_bu{layout.visit_prefix(visit)[1:]}.txt", visit, central + second,
                     labelled=grades_labelled)
    for r in results:
        for key in ("pairs", "unpaired", "centres", "grades"):
            truth[key] += r["truth"][key]
    with open(out / "known_centres.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["participant", "visit", "side", "row", "col"])
        for c in truth["centres"]:
            writer.writerow([c["participant"], c["visit"], c["side"], c["row"], c["col"]])
    pre = get_preset(preset) if isinstance(preset, str) else preset
    info = {
        "synthetic": True,
        "description": "SYNTHETIC tree in the layout of an OAI image release, made by xray2mri; not patient data",
        "seed": seed, "participants": participants, "visits": [layout.visit_label(v) for v in visits],
        "preset": pre.to_dict(), "grades_labelled": grades_labelled, "grades_reread": grades_reread,
        "awkward_cases": {participant_id(i): c for i, c in enumerate(AWKWARD_CASES)
                                                  if awkward and i < participants},
        **truth,
    }
    (out / "oai_truth.json").write_text(json.dumps(info, indent=1) + "\n")
    (out / "README_SYNTHETIC.txt").write_text(
        "SYNTHETIC data in the folder layout of an OAI image release, generated by `xray2mri synth --layout oai`.\n"
        "Nothing here is patient data. oai_truth.json lists what an importer must find.\n")
    return out
