"""Per-subject measurement: every method on every test case, one row of metrics each.

Everything is measured in the bundle's canonical preprocessed space: ``(D, H, W) = (A->P, S->I,
R->L)``, left knees mirrored to the right side, intensities normalised to ``[0, 1]`` (see
:mod:`xray2mri.pipeline.evaluation.metrics` for the metrics and their data ranges).

Image metrics need only the ground-truth MRI. Joint-space width (JSW) is measured on the
ground-truth MRI and on every generated volume the same way, on the same S->I lines: found from the
ground-truth label map when the case has one, else from the ground-truth MRI itself. Its reference
is the synthetic truth (the subject's meta JSON) when the case has it; otherwise the JSW measured on
the ground-truth (acquired) MRI, so the error is generated-vs-acquired.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xray2mri.pipeline.evaluation import metrics as M

__all__ = [
    "Case",
    "MethodPrediction",
    "Method",
    "MetricInfo",
    "METRICS",
    "GT_CHECK",
    "JSW_FROM_META",
    "JSW_FROM_MRI",
    "clip01",
    "jsw_lines",
    "evaluate_cases",
    "case_key",
    "methods_in",
]

#: Row name of the JSW measurement on the ground-truth MRI.
GT_CHECK = "ground-truth MRI (JSW measurement check)"
#: ``jsw_reference`` of a case whose JSW truth is the synthetic generator's (meta JSON).
JSW_FROM_META = "synthetic truth (meta JSON)"
#: ``jsw_reference`` of a case without it: JSW measured on the ground-truth (acquired) MRI.
JSW_FROM_MRI = "measured on the ground-truth MRI"


@dataclass(frozen=True)
class MetricInfo:
    """How one metric is named, read and compared."""

    key: str
    label: str
    unit: str
    better: str  # "↑" higher is better, "↓" lower is better, "→0" signed, best near zero, "→1" a ratio, best near one
    note: str


#: The summary metrics, in table order. Data ranges: every image on the normalised [0, 1] scale.
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("psnr_db", "PSNR, whole volume", "dB", "↑", "one MSE over all voxels, data_range 1.0"),
    MetricInfo(
        "psnr_slice_db",
        "PSNR, mean per sagittal slice",
        "dB",
        "↑",
        "mean of per-slice PSNRs, slices along R->L, data_range 1.0",
    ),
    MetricInfo(
        "ssim3d", "SSIM 3-D", "", "↑", "MONAI SSIMMetric, spatial_dims 3, data_range 1.0, Gaussian window 11"
    ),
    MetricInfo("mae", "MAE", "[0,1]", "↓", "mean absolute error on the [0, 1] scale"),
    MetricInfo(
        "boundary_sharpness", "edge sharpness vs truth", "ratio", "→1",
        "mean gradient magnitude on the true tissue boundaries / the truth's (1 = as sharp; needs label maps)",
    ),
    MetricInfo(
        "xray_psnr_db", "radiograph recon. PSNR", "dB", "↑", "CAE reconstruction vs input, data_range 1.0"
    ),
    MetricInfo(
        "mri_jsw_abs_err_mm", "JSW abs. error on the MRI, mean of both", "mm", "↓",
        "mean of medial and lateral |error|, read on the volume's intensity profile (the clinical reading, ``jsw_abs_err_mm``, is on the tissue map)"
    ),
    MetricInfo("jsw_medial_err_mm", "JSW error, medial", "mm", "→0", "measured - truth (signed)"),
    MetricInfo("jsw_lateral_err_mm", "JSW error, lateral", "mm", "→0", "measured - truth (signed)"),
)


@dataclass
class Case:
    """One test subject in the canonical preprocessed space.

    Attributes:
        subject: subject id.
        xray: preprocessed radiograph ``(H, W)`` in [0, 1].
        mri: preprocessed ground-truth MRI ``(D, H, W)`` in [0, 1].
        labels: ground-truth tissue labels ``(D, H, W)`` on the same grid, or ``None`` (acquired data).
        jsw_truth: ``{"medial": mm, "lateral": mm}`` from the subject's meta JSON (synthetic data), or
            ``None``: the reference is then the JSW measured on ``mri``.
        readings_truth: the generator's truth of the clinical readings (JSW, cartilage thickness; names of
            :mod:`~xray2mri.pipeline.evaluation.readings`) from the meta JSON's parameters, or ``None``.
        grade: Kellgren-Lawrence grade (``None`` when unknown).
        side: "L" or "R" (the knee before mirroring).
        visit: the item's visit, when the datalist gives one (a subject may have several knees and visits).
        joint: ground-truth class fractions ``(C, D, H, W)`` on the joint-region head's box (a bundle with
            that head and a case with ``joint_labels``), or ``None``.
    """

    subject: str
    xray: np.ndarray
    mri: np.ndarray
    labels: np.ndarray | None = None
    jsw_truth: dict[str, float] | None = None
    readings_truth: dict[str, float] | None = None
    grade: int | None = None
    side: str = "R"
    visit: str | None = None
    joint: np.ndarray | None = None


@dataclass
class MethodPrediction:
    """What one method predicts for one case: the MRI volume and, for models, the radiograph reconstruction."""

    mri: np.ndarray
    xray_recon: np.ndarray | None = None
    note: str = ""


#: A method: case -> prediction (models read files, baselines compute).
Method = Callable[[Case], MethodPrediction]

_LINE_KEYS = {"slab_mm", "band_mm", "plateau_depth_mm", "positions"}


def clip01(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 without singleton axes, clipped to the data range [0, 1]."""
    return np.clip(np.asarray(x, dtype=np.float32).squeeze(), 0.0, 1.0)


def jsw_lines(
    case: Case, legend: Mapping[str, int] | None, spacing: Sequence[float], **line_kw: Any
) -> dict[str, list[M.JswLine]]:
    """Where JSW is measured on ``case``: from its label map when it has one (and a legend), else
    from its ground-truth MRI (:func:`metrics.compartment_lines_from_mri`)."""
    if case.labels is not None and legend:
        return M.compartment_lines(case.labels, legend, spacing, **line_kw)
    kw = {k: v for k, v in line_kw.items() if k != "plateau_depth_mm"}
    return M.compartment_lines_from_mri(clip01(case.mri), spacing, **kw)


def _jsw_columns(measured: Mapping[str, float], truth: Mapping[str, float]) -> dict[str, float]:
    row: dict[str, float] = {}
    errs = []
    for side in ("medial", "lateral"):
        m, t = measured.get(side, math.nan), truth.get(side, math.nan)
        row[f"jsw_{side}_mm"] = m
        row[f"jsw_{side}_err_mm"] = m - t
        errs.append(abs(m - t))
    row["mri_jsw_abs_err_mm"] = float(np.mean(errs))  # nan when either compartment failed
    return row


def _check_row(
    case: Case, base: dict, lines: Mapping, gt_jsw: Mapping[str, float], gap_kw: Mapping, from_labels: bool
) -> dict:
    """The ground-truth MRI's row: its JSW against the synthetic truth, or (no truth) its JSW as the reference."""
    check: dict[str, Any] = {**base, "method": GT_CHECK}
    if case.jsw_truth is not None:
        truth = {k: float(case.jsw_truth.get(k, math.nan)) for k in ("medial", "lateral")}
        check["jsw_medial_true_mm"] = truth["medial"]
        check.update(_jsw_columns(gt_jsw, truth))
    else:
        check.update({f"jsw_{k}_mm": gt_jsw.get(k, math.nan) for k in ("medial", "lateral")})
        check["jsw_reference"] = JSW_FROM_MRI
    check["jsw_lines_medial"] = len(lines.get("medial", []))
    check["jsw_lines_lateral"] = len(lines.get("lateral", []))
    if case.labels is not None and from_labels:
        label_gap = M.label_jsw(lines, **{k: v for k, v in gap_kw.items() if k == "percentile"})
        check["label_jsw_medial_mm"] = label_gap.get("medial", math.nan)
        check["label_jsw_lateral_mm"] = label_gap.get("lateral", math.nan)
    return check


def evaluate_cases(
    cases: Sequence[Case],
    methods: Mapping[str, Method],
    legend: Mapping[str, int] | None,
    spacing: Sequence[float],
    jsw_kwargs: Mapping[str, Any] | None = None,
    ssim_win_size: int = M.SSIM_WIN_SIZE,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One row per (case, method) with every metric, plus a row per case for the ground-truth MRI's JSW.

    Predicted volumes are clipped to the data range [0, 1] before measuring (the ground truth
    already is). JSW is measured at places found once per case (:func:`jsw_lines`), the same for
    every method; its error is against the synthetic truth where the case has one, else against
    the JSW measured on the ground-truth MRI. Tissue MAEs need a label map and a ``legend``.
    """
    jsw_kwargs = dict(jsw_kwargs or {})
    line_kw = {k: v for k, v in jsw_kwargs.items() if k in _LINE_KEYS}
    gap_kw = {k: v for k, v in jsw_kwargs.items() if k not in _LINE_KEYS}
    rows: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    for case in tqdm(cases, desc="measure", unit="case", disable=not progress):
        gt = clip01(case.mri)
        lines = jsw_lines(case, legend, spacing, **line_kw)
        base = {"subject": case.subject, "grade": case.grade, "side": case.side}
        if case.visit is not None:
            base["visit"] = case.visit
        gt_jsw = {k: M.measure_jsw(gt, v, spacing, **gap_kw) for k, v in lines.items()}
        rows.append(_check_row(case, base, lines, gt_jsw, gap_kw, bool(legend)))
        truth = (
            {k: float(case.jsw_truth.get(k, math.nan)) for k in ("medial", "lateral")}
            if case.jsw_truth is not None
            else gt_jsw
        )
        for name, method in methods.items():
            pred = method(case)
            vol = clip01(pred.mri)
            if vol.shape != gt.shape:
                raise ValueError(
                    f"{name}, {case.subject}: predicted shape {vol.shape} != ground truth {gt.shape}"
                )
            row: dict[str, Any] = {**base, "method": name}
            row["psnr_db"] = M.psnr(vol, gt)
            row["psnr_slice_db"] = M.psnr_per_slice(vol, gt)
            row["ssim3d"] = M.ssim3d(vol, gt, win_size=ssim_win_size)
            row["mae"] = M.mae(vol, gt)
            row["xray_psnr_db"] = (
                M.psnr(clip01(pred.xray_recon), clip01(case.xray), spatial_dims=2)
                if pred.xray_recon is not None
                else math.nan
            )
            measured = {k: M.measure_jsw(vol, v, spacing, **gap_kw) for k, v in lines.items()}
            row.update(_jsw_columns(measured, truth))
            row["boundary_sharpness"] = (
                M.boundary_sharpness(vol, gt, case.labels) if case.labels is not None else math.nan
            )
            if case.labels is not None and legend:
                for tissue, value in M.mae_per_tissue(vol, gt, case.labels, legend).items():
                    row[f"mae_{tissue}"] = value
            row["note"] = pred.note
            rows.append(row)
    return rows


def case_key(row: Mapping[str, Any]) -> tuple[str, str, str]:
    """What identifies one case in the rows: (subject, visit, side); a participant's two knees are two cases."""
    return (str(row["subject"]), str(row.get("visit") or ""), str(row.get("side") or ""))


def methods_in(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The method names of ``rows``, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.setdefault(r["method"], None)
    return list(seen)
