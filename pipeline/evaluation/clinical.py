"""Clinical readings in the evaluation: tissue Dice and JSW / cartilage readings for every method.

Where a test case has a ground-truth label map, every method that yields a tissue map is read with
:func:`~xray2mri.pipeline.evaluation.readings.read_tissue_map` at the same places (the S->I lines found
once per case on the ground-truth label map) and compared with the reference: the generator's truth
(``Case.readings_truth``, from the synthetic subject's parameters: JSW, tibial and femoral cartilage
thickness) where the case has it, else the same readings on the ground-truth label map (which at the
demo's 2.5 mm label voxels moves in whole voxels: ``benchmarks/bench_readings.py``). The ground-truth
map's own row (:data:`GT_LABELS`) is then the measurement check. The methods read:

* a model with a tissue head: its per-class probabilities (``<subject>_tissue_probs.nii.gz``, channel
  first) or its label map (``<subject>_labels_pred.nii.gz``, class indices) in the predictions folder;
  a model without (no such file) has no tissue readings;
* nearest-neighbour retrieval: the retrieved training subject's label map;
* the mean training volume: the mean one-hot class probabilities of the training label maps;
* the radiographic reading (:mod:`~xray2mri.pipeline.evaluation.radiographic`, JSW only).

Rows carry ``dice_<class>`` and ``dice_mean`` (classes present in the truth), every reading under
``tissue_<reading>`` (``tissue_jsw_medial_mm`` ...; the intensity JSW keeps ``jsw_*``), its error
against the ground-truth map's reading (``tissue_<reading>_err``) and ``cartilage_thickness_abs_err_mm``
(mean over the medial and lateral compartments of the tibial cartilage's mean-thickness |error|) and
``jsw_abs_err_mm``, and ``reprojection_ncc`` (the tissue map projected with the project's DRR
against the input radiograph, :mod:`~xray2mri.pipeline.evaluation.reprojection`). :func:`agreement` gives per method and reading the bias, Bland-Altman limits,
the correlation with the truth and the across-subject std of the method against the truth's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray2mri.pipeline.data.synth.tissues import NUM_CLASSES, TISSUE_CLASSES
from xray2mri.pipeline.evaluation import metrics as M
from xray2mri.pipeline.evaluation import readings as R
from xray2mri.pipeline.evaluation.baselines import BASELINE_NAMES, Baselines
from xray2mri.pipeline.evaluation.measure import Case, case_key
from xray2mri.pipeline.evaluation.reprojection import box_reprojection_ncc, reprojection_ncc
from xray2mri.transforms.errors import InputError

__all__ = [
    "GT_LABELS",
    "DEFINITIONS",
    "READ_KEYS",
    "TISSUE_PROBS_SUFFIX",
    "JOINT_PROBS_SUFFIX",
    "BAR_READINGS",
    "TISSUE_LABELS_SUFFIX",
    "TissueMethod",
    "tissue_prediction_reader",
    "tissue_baselines",
    "measure_readings",
    "agreement",
    "summarize_readings",
    "merge_rows",
]

#: Row name of the ground-truth label map's readings (against the generator's truth: the measurement check).
GT_LABELS = "ground-truth label map (readings check)"
#: Prediction files of a model with a tissue head, per subject.
TISSUE_PROBS_SUFFIX = "_tissue_probs.nii.gz"
TISSUE_LABELS_SUFFIX = "_labels_pred.nii.gz"
#: ... and of a model with the joint-region head: its class probabilities on the joint box.
JOINT_PROBS_SUFFIX = "_joint_probs.nii.gz"
#: The files a tissue map is read from, in order of preference: whole volume, joint box.
TISSUE_SUFFIXES: tuple[str, ...] = (TISSUE_PROBS_SUFFIX, TISSUE_LABELS_SUFFIX)
JOINT_SUFFIXES: tuple[str, ...] = (JOINT_PROBS_SUFFIX,)
#: The readings compared across methods (keys of :func:`readings.read_tissue_map`).
READ_KEYS: tuple[str, ...] = (
    "jsw_medial_mm",
    "jsw_lateral_mm",
    "cartilage_thickness_medial_mm",
    "cartilage_thickness_lateral_mm",
    "tibial_cartilage_min_medial_mm",
    "tibial_cartilage_min_lateral_mm",
    "femoral_cartilage_mean_medial_mm",
    "femoral_cartilage_mean_lateral_mm",
    "cartilage_volume_mm3",
)

#: What the summary's reading keys mean (added to ``summary.json``'s ``definitions``).
DEFINITIONS: dict[str, str] = {
    "dice_<class>": "Dice of one tissue class (argmax of the tissue map vs the ground-truth label map's class)",
    "dice_mean": "mean Dice over the classes present in the case's ground-truth label map",
    "jsw_abs_err_mm": "minimum JSW read on the tissue map (femur-tibia bone distance, partial-volume sum), "
    "mean of medial and lateral |error| against the reference (mm)",
    "cartilage_thickness_abs_err_mm": "tibial cartilage mean thickness per compartment read on the tissue map, "
    "mean of medial and lateral |error| against the reference (mm)",
    "reprojection_ncc": "the tissue map projected with the cohort's DRR vs the input radiograph, normalised "
    "cross-correlation after the radiograph's intensity step (1 = consistent); on the joint-region head's box: "
    "attenuation summed along A->P vs the radiograph over the box, both high-passed (Gaussian 3 px)",
    "reference": "the generator's truth (meta JSON parameters) for JSW and cartilage thickness where the case has "
    "it, else the ground-truth label map's readings",
}

#: Reading keys a quality bar may judge (beside the volume metrics): per-case rows of every tissue method.
BAR_READINGS: tuple[str, ...] = ("jsw_abs_err_mm", "cartilage_thickness_abs_err_mm", "dice_mean")

#: A tissue method: case -> ``(C, D, H, W)`` class probabilities, a ``(D, H, W)`` class map, or ``None``
#: (no tissue map for this case).
TissueMethod = Callable[[Case], "np.ndarray | None"]


def tissue_prediction_reader(pred_dir: str | os.PathLike, suffixes: Sequence[str] = TISSUE_SUFFIXES) -> TissueMethod:
    """A model's tissue maps from its predictions folder (``None`` for a case without one): the first of
    ``<subject><suffix>`` there (probabilities channel last, as NIfTI stores them, or a class map)."""
    import nibabel as nib

    folder = Path(pred_dir)
    if (folder / "predictions").is_dir():
        folder = folder / "predictions"

    def read(case: Case) -> np.ndarray | None:
        for suffix in suffixes:
            path = folder / f"{case.subject}{suffix}"
            if path.is_file():
                try:
                    a = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
                except Exception as err:  # nibabel raises several types on corrupt files
                    raise InputError(path, f"cannot read the tissue prediction: {err}") from err
                if a.ndim == 4 and a.shape[-1] == NUM_CLASSES:
                    a = np.moveaxis(a, -1, 0)  # NIfTI stores channels last
                return a
        return None

    return read


def tissue_baselines(
    baselines: Baselines, train_labels: Sequence[np.ndarray | None], legend: Mapping[str, int]
) -> dict[str, TissueMethod]:
    """Both baselines' tissue maps: retrieval returns its neighbour's labels, the mean volume the mean
    one-hot class probabilities of the training label maps (those that have one). The training maps may be
    cohort label maps (with ``legend``) or class fractions ``(C, D, H, W)`` (the joint-region head's targets)."""
    if len(train_labels) != len(baselines.train_mris):
        raise ValueError(f"{len(train_labels)} training label maps for {len(baselines.train_mris)} training MRIs")
    have = [lab for lab in train_labels if lab is not None]
    if not have:
        return {}
    mean = np.zeros(R.class_probabilities(np.asarray(have[0]).squeeze(), legend).shape, dtype=np.float64)
    for lab in have:
        mean += R.class_probabilities(np.asarray(lab).squeeze(), legend)
    mean = (mean / len(have)).astype(np.float32)

    def nn(case: Case) -> np.ndarray | None:
        lab = train_labels[baselines.neighbour(case.xray[None])]
        return None if lab is None else R.class_probabilities(np.asarray(lab).squeeze(), legend)

    return {BASELINE_NAMES["mean"]: lambda case: mean, BASELINE_NAMES["nn"]: nn}


def _reading_row(
    readings: Mapping[str, float], truth: Mapping[str, float] | None, keys: Sequence[str] = READ_KEYS
) -> dict[str, float]:
    """The readings as row values, with their errors against ``truth`` for ``keys``."""
    row = {f"tissue_{k}": float(readings[k]) for k in READ_KEYS}
    if truth is not None:
        for k in keys:
            row[f"tissue_{k}_err"] = float(readings[k]) - float(truth[k])
        row["jsw_abs_err_mm"] = float(
            np.mean([abs(row.get(f"tissue_jsw_{c}_mm_err", math.nan)) for c in ("medial", "lateral")])
        )
        row["cartilage_thickness_abs_err_mm"] = float(
            np.mean([abs(row.get(f"tissue_cartilage_thickness_{c}_mm_err", math.nan)) for c in ("medial", "lateral")])
        )
    return row


def _truth_lines(labels: np.ndarray, legend: Mapping[str, int], spacing: Sequence[float]) -> dict[str, list[M.JswLine]]:
    """Where to read a case: found on its ground truth, a cohort label map (``legend``) or class fractions."""
    if np.ndim(labels) == 4:
        return R.reading_lines(labels, spacing)
    return M.compartment_lines(labels, legend, spacing)


def _reprojection(
    tissue_map, case: Case, spacing: Sequence[float], xray_spacing: Sequence[float],
    legend: Mapping[str, int] | None = None,
) -> float:
    """``reprojection_ncc`` of a tissue map on ``case``'s grid: the joint-region box's own check when the
    case's truth is class fractions on that box, else the whole-volume DRR's."""
    if np.ndim(case.labels) == 4:
        return box_reprojection_ncc(tissue_map, case.xray, spacing, xray_spacing)
    return reprojection_ncc(tissue_map, case.xray, spacing, xray_spacing, legend)


def measure_readings(
    cases: Sequence[Case],
    methods: Mapping[str, TissueMethod],
    legend: Mapping[str, int],
    spacing: Sequence[float],
    jsw_readers: Mapping[str, Callable[[Case], Mapping[str, float]]] | None = None,
    xray_spacing: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """One row per (case with labels, method with a tissue map) plus the ground-truth map's row per case.

    ``jsw_readers`` are methods that read JSW only (case -> ``{"medial": mm, "lateral": mm}``, e.g. the
    radiographic reading); their rows carry ``tissue_jsw_*`` and ``jsw_abs_err_mm``. With
    ``xray_spacing`` (the preprocessed radiograph's pixel size), every tissue map's row (the ground
    truth's too: the ceiling) carries ``reprojection_ncc`` against the case's radiograph
    (:func:`~xray2mri.pipeline.evaluation.reprojection.reprojection_ncc`); ground truths given as class fractions
    on the joint-region box get the box's own (:func:`~xray2mri.pipeline.evaluation.reprojection.box_reprojection_ncc`).
    """
    rows: list[dict[str, Any]] = []
    for case in cases:
        if case.labels is None:
            continue
        lines = _truth_lines(case.labels, legend, spacing)
        on_labels = R.read_tissue_map(case.labels, spacing, lines=lines, tissue_legend=legend)
        # the reference: the generator's truth where the case has it, else the ground-truth map's readings
        truth = {**on_labels, **(case.readings_truth or {})}
        base = {"subject": case.subject, "grade": case.grade, "side": case.side}
        if case.visit is not None:
            base["visit"] = case.visit
        # the label map is checked on the readings the generator knows the truth of, and only on those
        known = [k for k in READ_KEYS if k in (case.readings_truth or {})]
        gt_row = {**base, "method": GT_LABELS, **_reading_row(on_labels, truth if known else None, known)}
        if xray_spacing is not None:
            gt_row["reprojection_ncc"] = _reprojection(case.labels, case, spacing, xray_spacing, legend)
        rows.append(gt_row)
        for name, method in methods.items():
            tissue = method(case)
            if tissue is None:
                continue
            probs = R.class_probabilities(tissue)
            if probs.shape[1:] != np.shape(case.labels)[-3:]:
                raise ValueError(f"{name}, {case.subject}: tissue map {probs.shape[1:]} != labels {np.shape(case.labels)}")
            row: dict[str, Any] = {**base, "method": name}
            row.update(_reading_row(R.read_tissue_map(probs, spacing, lines=lines), truth))
            dice = R.dice_per_class(probs, case.labels, legend)
            present = {TISSUE_CLASSES[i].name for i in np.unique(R.class_map(R.class_probabilities(case.labels, legend)))}
            for cls, value in dice.items():
                row[f"dice_{cls}"] = value
            row["dice_mean"] = float(np.nanmean([dice[c] for c in present]))
            if xray_spacing is not None:
                row["reprojection_ncc"] = _reprojection(probs, case, spacing, xray_spacing)
            rows.append(row)
        for name, reader in (jsw_readers or {}).items():
            jsw = reader(case)
            row = {**base, "method": name}
            for c in ("medial", "lateral"):
                row[f"tissue_jsw_{c}_mm"] = float(jsw.get(c, math.nan))
                row[f"tissue_jsw_{c}_mm_err"] = row[f"tissue_jsw_{c}_mm"] - float(truth[f"jsw_{c}_mm"])
            row["jsw_abs_err_mm"] = float(
                np.mean([abs(row[f"tissue_jsw_{c}_mm_err"]) for c in ("medial", "lateral")])
            )
            rows.append(row)
    return rows


def agreement(rows: Sequence[Mapping[str, Any]], method: str, key: str) -> dict[str, float]:
    """Agreement of one method's reading ``key`` (a :data:`READ_KEYS` name) with its reference.

    The reference of each row is its value minus its error (``tissue_<key>`` - ``tissue_<key>_err``).
    Returns ``bias`` (mean of method - reference), ``loa_low``/``loa_high`` (Bland-Altman 95 % limits of
    agreement, bias -/+ 1.96 sd of the differences), ``mean_abs_err``, ``pearson_r`` (with the reference;
    ``nan`` when either side has no spread), ``std_method`` and ``std_truth`` (across subjects, ddof=1)
    and ``n`` (cases with both values finite).
    """
    pairs = []
    for r in rows:
        if r["method"] != method:
            continue
        value, err = r.get(f"tissue_{key}", math.nan), r.get(f"tissue_{key}_err", math.nan)
        pairs.append((value, value - err))
    a = np.array(pairs, dtype=np.float64).reshape(-1, 2)
    a = a[np.isfinite(a).all(axis=1)]
    n = a.shape[0]
    if n == 0:
        return {"n": 0}
    d = a[:, 0] - a[:, 1]
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    spread = n > 1 and np.ptp(a[:, 0]) > 0 and np.ptp(a[:, 1]) > 0
    return {
        "n": n,
        "bias": float(d.mean()),
        "loa_low": float(d.mean() - 1.96 * sd),
        "loa_high": float(d.mean() + 1.96 * sd),
        "mean_abs_err": float(np.abs(d).mean()),
        "pearson_r": float(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) if spread else math.nan,
        "std_method": float(a[:, 0].std(ddof=1)) if n > 1 else math.nan,
        "std_truth": float(a[:, 1].std(ddof=1)) if n > 1 else math.nan,
    }


def summarize_readings(
    rows: Sequence[Mapping[str, Any]], summarize: Callable[[Sequence[float]], dict[str, Any]]
) -> dict[str, Any]:
    """Per method: every row key's summary (``summarize``: the report's mean/std/interval) and the
    agreement (:func:`agreement`) of each reading. ``{"methods": {...}, "agreement": {...}}``."""
    methods: dict[str, dict[str, Any]] = {}
    agree: dict[str, dict[str, Any]] = {}
    names = list(dict.fromkeys(r["method"] for r in rows))
    for name in names:
        mrows = [r for r in rows if r["method"] == name]
        keys = sorted(
            {k for r in mrows for k in r if k.startswith(("dice_", "tissue_", "reprojection_")) or k in BAR_READINGS}
        )
        methods[name] = {k: summarize([r.get(k, math.nan) for r in mrows]) for k in keys}
        agree[name] = {k: agreement(rows, name, k) for k in READ_KEYS if any(f"tissue_{k}_err" in r for r in mrows)}
    return {"methods": methods, "agreement": agree}


def merge_rows(rows: Sequence[Mapping[str, Any]], extra: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each ``extra`` row's values added to the row of the same case and method; extra rows
    without one (the ground-truth map's, a JSW-only method's) appended."""
    out = [dict(r) for r in rows]
    index = {(case_key(r), r["method"]): r for r in out}
    for e in extra:
        target = index.get((case_key(e), e["method"]))
        if target is None:
            out.append(dict(e))
        else:
            target.update({k: v for k, v in e.items() if k not in target})
    return out
