"""Evaluation report: per-subject metrics for models and baselines, a JSON summary, figures, report.md.

:func:`evaluate_cases` measures every method on every test case (see
:mod:`xray2mri.pipeline.evaluation.metrics` for the metrics and their data ranges);
:func:`summarize_rows` aggregates (mean, std, seeded 95 % bootstrap interval, overall and per
grade) and checks the demo's quality bar; :func:`write_report` writes the whole report folder
atomically (built under a temporary name next to it, then renamed: a failure leaves no partial
report and keeps an older one). :func:`build_report` does all of it from arrays, so tests and the
``xray2mri report`` command share one path; :func:`load_cases` reads the test split of a datalist
through the bundle's preprocessing and :func:`read_prediction` reads a model's prediction files.
Figures (matplotlib, Agg): :func:`montage`, :func:`grade_distributions`, :func:`training_curves`.

Everything is measured in the bundle's canonical preprocessed space: ``(D, H, W) = (A->P, S->I,
R->L)``, left knees mirrored to the right side, intensities normalised to ``[0, 1]``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xray2mri.pipeline.atomic import atomic_folder
from xray2mri.pipeline.evaluation import metrics as M
from xray2mri.pipeline.evaluation.baselines import BASELINE_NAMES, Baselines, bundle_preprocessing, load_split
from xray2mri.transforms.errors import InputError

__all__ = [
    "Case",
    "MethodPrediction",
    "METRICS",
    "evaluate_cases",
    "summarize_rows",
    "quality_bar",
    "read_prediction",
    "load_cases",
    "report_from_files",
    "read_training_log",
    "write_report",
    "build_report",
]

#: Row name of the JSW measurement check on the ground-truth MRI.
GT_CHECK = "ground-truth MRI (JSW measurement check)"
#: Prediction file names written by the bundle's evaluate.json, per subject.
PRED_MRI_SUFFIX = "_mri_pred.nii.gz"
PRED_XRAY_SUFFIX = "_xray_recon.nii.gz"


@dataclass(frozen=True)
class MetricInfo:
    """How one metric is named, read and compared."""

    key: str
    label: str
    unit: str
    better: str  # "↑" higher is better, "↓" lower is better, "→0" signed, best near zero
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
        "xray_psnr_db", "radiograph recon. PSNR", "dB", "↑", "CAE reconstruction vs input, data_range 1.0"
    ),
    MetricInfo(
        "jsw_abs_err_mm", "JSW abs. error, mean of both", "mm", "↓", "mean of medial and lateral |error|"
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
        labels: ground-truth tissue labels ``(D, H, W)`` on the same grid.
        jsw_truth: ``{"medial": mm, "lateral": mm}`` from the subject's meta JSON.
        grade: Kellgren-Lawrence grade (``None`` when unknown).
        side: "L" or "R" (the knee before mirroring).
    """

    subject: str
    xray: np.ndarray
    mri: np.ndarray
    labels: np.ndarray
    jsw_truth: dict[str, float]
    grade: int | None = None
    side: str = "R"


@dataclass
class MethodPrediction:
    """What one method predicts for one case: the MRI volume and, for models, the radiograph reconstruction."""

    mri: np.ndarray
    xray_recon: np.ndarray | None = None
    note: str = ""


#: A method: case -> prediction (models read files, baselines compute).
Method = Callable[[Case], MethodPrediction]


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def _clip01(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float32).squeeze(), 0.0, 1.0)


def _jsw_columns(measured: Mapping[str, float], truth: Mapping[str, float]) -> dict[str, float]:
    row: dict[str, float] = {}
    errs = []
    for side in ("medial", "lateral"):
        m, t = measured.get(side, math.nan), truth.get(side, math.nan)
        row[f"jsw_{side}_mm"] = m
        row[f"jsw_{side}_err_mm"] = m - t
        errs.append(abs(m - t))
    row["jsw_abs_err_mm"] = float(np.mean(errs))  # nan when either compartment failed
    return row


def evaluate_cases(
    cases: Sequence[Case],
    methods: Mapping[str, Method],
    legend: Mapping[str, int],
    spacing: Sequence[float],
    jsw_kwargs: Mapping[str, Any] | None = None,
    ssim_win_size: int = M.SSIM_WIN_SIZE,
) -> list[dict[str, Any]]:
    """One row per (case, method) with every metric, plus a row per case for the GT JSW check.

    Predicted volumes are clipped to the data range [0, 1] before measuring (the ground truth
    already is). JSW is measured at places found from the case's ground-truth labels, the same
    for every method (:func:`metrics.compartment_lines`).
    """
    jsw_kwargs = dict(jsw_kwargs or {})
    line_keys = {"slab_mm", "band_mm", "plateau_depth_mm", "positions"}
    line_kw = {k: v for k, v in jsw_kwargs.items() if k in line_keys}
    gap_kw = {k: v for k, v in jsw_kwargs.items() if k not in line_keys}
    rows: list[dict[str, Any]] = []
    for case in cases:
        gt = _clip01(case.mri)
        lines = M.compartment_lines(case.labels, legend, spacing, **line_kw)
        base = {"subject": case.subject, "grade": case.grade, "side": case.side}
        truth = {k: float(case.jsw_truth.get(k, math.nan)) for k in ("medial", "lateral")}
        gt_jsw = {k: M.measure_jsw(gt, v, spacing, **gap_kw) for k, v in lines.items()}
        check = {**base, "method": GT_CHECK, "jsw_medial_true_mm": truth["medial"]}
        check.update(_jsw_columns(gt_jsw, truth))
        check["jsw_lines_medial"] = len(lines.get("medial", []))
        check["jsw_lines_lateral"] = len(lines.get("lateral", []))
        label_gap = M.label_jsw(lines, **{k: v for k, v in gap_kw.items() if k == "percentile"})
        check["label_jsw_medial_mm"] = label_gap.get("medial", math.nan)
        check["label_jsw_lateral_mm"] = label_gap.get("lateral", math.nan)
        rows.append(check)
        for name, method in methods.items():
            pred = method(case)
            vol = _clip01(pred.mri)
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
                M.psnr(_clip01(pred.xray_recon), _clip01(case.xray), spatial_dims=2)
                if pred.xray_recon is not None
                else math.nan
            )
            measured = {k: M.measure_jsw(vol, v, spacing, **gap_kw) for k, v in lines.items()}
            row.update(_jsw_columns(measured, truth))
            for tissue, value in M.mae_per_tissue(vol, gt, case.labels, legend).items():
                row[f"mae_{tissue}"] = value
            row["note"] = pred.note
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Aggregating
# ---------------------------------------------------------------------------------------------


def _methods_in(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.setdefault(r["method"], None)
    return list(seen)


def summarize_rows(
    rows: Sequence[Mapping[str, Any]],
    model_names: Sequence[str],
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Mean, std and 95 % bootstrap interval per method and metric, overall and per grade.

    Also the tissue MAEs, the JSW check on the ground-truth MRI and the quality bar
    (:func:`quality_bar`) for each model in ``model_names``.
    """
    keys = [m.key for m in METRICS] + sorted({k for r in rows for k in r if k.startswith("mae_")})
    keys += ["jsw_medial_mm", "jsw_lateral_mm", "label_jsw_medial_mm", "label_jsw_lateral_mm"]
    methods: dict[str, dict[str, Any]] = {}
    per_grade: dict[str, dict[str, Any]] = {}
    for method in _methods_in(rows):
        mrows = [r for r in rows if r["method"] == method]
        methods[method] = {
            k: M.summarize([r.get(k, math.nan) for r in mrows], n_boot=n_boot, seed=seed)
            for k in keys
            if any(k in r for r in mrows)
        }
        grades = sorted({r["grade"] for r in mrows if r.get("grade") is not None})
        per_grade[method] = {
            str(g): {
                k: M.summarize(
                    [r.get(k, math.nan) for r in mrows if r.get("grade") == g], n_boot=n_boot, seed=seed
                )
                for k in (m.key for m in METRICS)
                if any(k in r for r in mrows)
            }
            for g in grades
        }
    summary = {
        "synthetic_data": True,
        "note": "Measured on the synthetic paired knee cohort (xray2mri synth), not on patient data.",
        "n_test_subjects": len({r["subject"] for r in rows}),
        "space": "canonical preprocessed (D, H, W) = (A->P, S->I, R->L), left knees mirrored to the right",
        "data_ranges": {
            "mri": "[0, 1] (robust-percentile normalised; predictions clipped to [0, 1]); data_range = 1.0",
            "radiograph": "[0, 1] (robust-percentile normalised); data_range = 1.0",
            "jsw": "millimetres",
        },
        "definitions": {m.key: f"{m.label} ({m.unit}): {m.note}" for m in METRICS},
        "aggregation": f"mean, sample std (ddof=1), 95 % percentile bootstrap of the mean ({n_boot} resamples, seed {seed}); non-finite values left out, n counts the rest",
        "methods": methods,
        "per_grade": per_grade,
        "quality_bar": quality_bar(methods, model_names, rows, n_boot=n_boot, seed=seed),
    }
    best = headline_model(summary["quality_bar"], methods)
    summary["quality_bar_headline"] = {
        "model": best,
        "passed": bool(best is not None and summary["quality_bar"][best]["pass"]),
        "rule": "the model with the highest mean whole-volume PSNR must pass every criterion",
    }
    return summary


def quality_bar(
    methods: Mapping[str, Mapping[str, Mapping[str, float]]],
    model_names: Sequence[str],
    rows: Sequence[Mapping[str, Any]] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The demo's bar per model: PSNR >= mean-volume + 3 dB and >= nearest-neighbour + 2 dB (whole-volume
    PSNR), 3-D SSIM above both baselines, mean JSW |error| below both. Judged on the means.

    With the per-subject ``rows``, each criterion also gets its ``margin`` (how far the model is on the
    passing side of the threshold, in the metric's unit; negative when it fails) and ``margin_ci95``, the
    95 % paired-bootstrap interval of that margin over the test subjects (model and baseline compared on
    the same subjects), and ``clear``: whether the interval excludes 0, i.e. whether the verdict is
    outside the subject-to-subject noise of this test split (``None`` when no subject has both values).
    """
    mean_name, nn_name = BASELINE_NAMES["mean"], BASELINE_NAMES["nn"]

    def get(method: str, key: str) -> float:
        return float(methods.get(method, {}).get(key, {}).get("mean", math.nan))

    out: dict[str, Any] = {}
    for model in model_names:
        crit = []
        for base, margin, key, cmp in (
            (mean_name, 3.0, "psnr_db", ">="),
            (nn_name, 2.0, "psnr_db", ">="),
            (mean_name, 0.0, "ssim3d", ">"),
            (nn_name, 0.0, "ssim3d", ">"),
            (mean_name, 0.0, "jsw_abs_err_mm", "<"),
            (nn_name, 0.0, "jsw_abs_err_mm", "<"),
        ):
            value, threshold = get(model, key), get(base, key) + margin
            ok = {">=": value >= threshold, ">": value > threshold, "<": value < threshold}[cmp]
            what = f"{key} {cmp} {base}" + (f" + {margin:g}" if margin else "")
            entry: dict[str, Any] = {"criterion": what, "value": value, "threshold": threshold, "pass": bool(ok)}
            if rows is not None:
                sign = -1.0 if cmp == "<" else 1.0
                diffs = sign * (_paired(rows, model, base, key) - margin)
                lo, hi = M.bootstrap_ci(diffs, n_boot=n_boot, seed=seed)
                defined = math.isfinite(lo) and math.isfinite(hi)
                entry.update(
                    margin=sign * (value - threshold),
                    margin_ci95=[lo, hi],
                    clear=bool(lo > 0 or hi < 0) if defined else None,  # None: no subject with both values
                )
            crit.append(entry)
        out[model] = {"criteria": crit, "pass": all(c["pass"] for c in crit)}
    return out


def noisy_criteria(model_bar: Mapping[str, Any]) -> list[str]:
    """The criteria of one model's bar whose margin interval contains 0 (verdict within the split's noise)."""
    return [c["criterion"] for c in model_bar.get("criteria", []) if c.get("clear") is False]


def _paired(rows: Sequence[Mapping[str, Any]], model: str, base: str, key: str) -> np.ndarray:
    """Per-subject ``model - base`` of ``key``, over the subjects where both are finite."""

    def values(method: str) -> dict[str, float]:
        return {r["subject"]: float(r.get(key, math.nan)) for r in rows if r["method"] == method}

    a, b = values(model), values(base)
    d = [a[s] - b[s] for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s])]
    return np.asarray(d, dtype=np.float64)


def headline_model(quality: Mapping[str, Any], methods: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The model with the highest mean whole-volume PSNR (the one a demo would install)."""
    scored = [(float(methods.get(m, {}).get("psnr_db", {}).get("mean", -math.inf)), m) for m in quality]
    return max(scored)[1] if scored else None


# ---------------------------------------------------------------------------------------------
# Reading inputs
# ---------------------------------------------------------------------------------------------


def _squeeze_to(array: np.ndarray, ndim: int, path: Path) -> np.ndarray:
    a = np.asarray(array, dtype=np.float32)
    while a.ndim > ndim and 1 in a.shape:
        a = a.squeeze(axis=a.shape.index(1))
    if a.ndim != ndim:
        raise InputError(path, f"expected a {ndim}-D image (singleton axes allowed), got shape {array.shape}")
    return a


def read_prediction(pred_dir: str | os.PathLike, subject: str) -> MethodPrediction:
    """Read ``<subject>_mri_pred.nii.gz`` (required) and ``<subject>_xray_recon.nii.gz`` (optional).

    The arrays are taken as stored (they are in the canonical preprocessed space already); the
    folder may be the predictions folder itself or the evaluation output holding ``predictions/``.
    """
    import nibabel as nib

    folder = Path(pred_dir)
    if (folder / "predictions").is_dir():
        folder = folder / "predictions"
    mri_path, xray_path = folder / f"{subject}{PRED_MRI_SUFFIX}", folder / f"{subject}{PRED_XRAY_SUFFIX}"
    if not mri_path.is_file():
        raise InputError(
            mri_path, f"no predicted MRI for test subject {subject}; run the bundle's evaluate.json first"
        )
    try:
        mri = _squeeze_to(np.asanyarray(nib.load(str(mri_path)).dataobj), 3, mri_path)
        xray = (
            _squeeze_to(np.asanyarray(nib.load(str(xray_path)).dataobj), 2, xray_path)
            if xray_path.is_file()
            else None
        )
    except InputError:
        raise
    except Exception as err:  # nibabel raises several types on corrupt files
        raise InputError(mri_path, f"cannot read the prediction: {err}") from err
    return MethodPrediction(mri=mri, xray_recon=xray)


def prediction_reader(pred_dir: str | os.PathLike) -> Method:
    """A method reading a model's predictions from ``pred_dir``."""
    return lambda case: read_prediction(pred_dir, case.subject)


def baseline_methods(baselines: Baselines) -> dict[str, Method]:
    """The two baselines as methods (named by :data:`BASELINE_NAMES`)."""

    def nn(case: Case) -> MethodPrediction:
        i = baselines.neighbour(case.xray[None])
        who = baselines.train_ids[i] if baselines.train_ids is not None else str(i)
        return MethodPrediction(mri=np.asarray(baselines.train_mris[i]), note=f"retrieved {who}")

    return {
        BASELINE_NAMES["mean"]: lambda case: MethodPrediction(mri=baselines.mean),
        BASELINE_NAMES["nn"]: nn,
    }


def read_training_log(
    log_dir: str | os.PathLike | None,
) -> tuple[dict[str, tuple[list[float], list[float]]], str]:
    """Scalar curves ``tag -> (steps, values)`` from TensorBoard event files (searched recursively) or,
    failing those, from CSV files with a header row. Returns the curves and a note saying what was read
    or why nothing was (never raises for a missing or empty log)."""
    if log_dir is None:
        return {}, "no training log given (--train-log); training curves not drawn"
    root = Path(log_dir)
    if not root.exists():
        return {}, f"training log {root} not found; training curves not drawn"
    curves: dict[str, tuple[list[float], list[float]]] = {}
    events = sorted(root.rglob("events.out.tfevents.*")) if root.is_dir() else [root]
    events = [e for e in events if "tfevents" in e.name]
    if events:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        parents = {ev.parent for ev in events}
        for ev in events:
            # several runs under one folder (e.g. both variants): keep their curves apart by run folder
            run = ev.parent.relative_to(root).as_posix() if len(parents) > 1 and root.is_dir() else ""
            acc = EventAccumulator(str(ev), size_guidance={"scalars": 0})
            try:
                acc.Reload()
            except Exception as err:  # a truncated event file from a killed run
                return curves, f"event file {ev.name} could not be read ({err}); curves may be incomplete"
            for tag in acc.Tags().get("scalars", []):
                steps, values = curves.setdefault(f"{run}: {tag}" if run else tag, ([], []))
                for e in acc.Scalars(tag):
                    steps.append(float(e.step))
                    values.append(float(e.value))
        if curves:
            return curves, f"read {len(curves)} scalar series from {len(events)} TensorBoard event file(s)"
    csvs = sorted(root.rglob("*.csv")) if root.is_dir() else ([root] if root.suffix == ".csv" else [])
    for path in csvs:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            x_key = next((k for k in ("epoch", "step", "iteration") if k in (reader.fieldnames or [])), None)
            for i, rec in enumerate(reader):
                x = float(rec[x_key]) if x_key else float(i)
                for k, v in rec.items():
                    if k == x_key:
                        continue
                    try:
                        value = float(v)
                    except (TypeError, ValueError):
                        continue
                    steps, values = curves.setdefault(f"{path.stem}/{k}", ([], []))
                    steps.append(x)
                    values.append(value)
    if curves:
        return curves, f"read {len(curves)} series from {len(csvs)} CSV file(s)"
    return (
        {},
        f"no TensorBoard event files or metric CSVs with numbers under {root}; training curves not drawn",
    )


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return (
            "nan"
            if math.isnan(v)
            else ("inf" if math.isinf(v) else f"{v:.{digits}g}" if abs(v) < 1e-3 and v else f"{v:.{digits}f}")
        )
    return str(v)


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    first = ["subject", "grade", "side", "method"]
    keys = first + sorted({k for r in rows for k in r} - set(first) - {"note"}) + ["note"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _cell(stats: Mapping[str, float] | None, digits: int) -> str:
    if not stats or not stats.get("n"):
        return "—"
    return (
        f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} "
        f"[{stats['ci95_low']:.{digits}f}, {stats['ci95_high']:.{digits}f}]"
    )


_DIGITS = {"psnr_db": 2, "psnr_slice_db": 2, "xray_psnr_db": 2, "ssim3d": 3, "mae": 4}


def _markdown(
    summary: Mapping[str, Any],
    figures: Mapping[str, str],
    log_note: str,
    model_names: Sequence[str],
    legend: Mapping[str, int],
) -> str:
    methods = summary["methods"]
    table_methods = [m for m in methods if m != GT_CHECK]
    n = summary["n_test_subjects"]
    out = [
        "# xray2mri evaluation report",
        "",
        "> **Synthetic data.** Every number and image here comes from the synthetic paired knee cohort "
        "made by `xray2mri synth`, not from patients. Generated volumes are not for diagnosis.",
        "",
        f"Test split: **{n} subjects**. All images are compared in the bundle's canonical preprocessed space "
        "((D, H, W) = (A→P, S→I, R→L), left knees mirrored to the right side).",
        "",
        "**Data ranges.** MRI and radiograph intensities are on the normalised **[0, 1]** scale (robust percentiles "
        "of each image; predictions clipped to [0, 1]); PSNR and SSIM use **data_range = 1.0**; MAE is on the [0, 1] "
        "scale; joint-space width (JSW) is in millimetres.",
        "",
        "Cells: mean ± std [95 % bootstrap interval of the mean].",
        "",
        "## Image quality and joint-space width",
        "",
    ]
    cols = [m for m in METRICS]
    header = (
        "| method | "
        + " | ".join(f"{m.label}{f' ({m.unit})' if m.unit else ''} {m.better}" for m in cols)
        + " |"
    )
    out += [header, "|" + "---|" * (len(cols) + 1)]
    for method in table_methods:
        name = f"**{method}**" if method in model_names else method
        cells = [_cell(methods[method].get(m.key), _DIGITS.get(m.key, 2)) for m in cols]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "- *PSNR, whole volume*: one MSE over all voxels. *PSNR, mean per sagittal slice*: the mean of PSNRs of the "
        "2-D slices along R→L (slices with zero error left out). The literature mixes the two; the per-slice "
        "figure runs several dB higher, so compare like with like.",
        "- *SSIM 3-D*: MONAI `SSIMMetric(spatial_dims=3, data_range=1.0)`, Gaussian window 11, σ 1.5.",
        "- *Radiograph recon. PSNR*: the CAE's reconstruction of its input radiograph (models only).",
        "- *JSW error*: measured on the volume − ground truth from the subject's meta JSON (signed); "
        "|error| is the mean of the medial and lateral absolute errors.",
        "",
    ]
    # quality bar
    bar = summary["quality_bar"]
    if bar:
        out += ["## Quality bar (demo configuration)", ""]
        out += [
            "| model | criterion | value | threshold | pass | margin [95 % paired bootstrap] |",
            "|---|---|---|---|---|---|",
        ]
        for model, res in bar.items():
            for c in res["criteria"]:
                ci = c.get("margin_ci95")
                spread = (
                    f"{_fmt(c['margin'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]{'' if c['clear'] else ' (within noise)'}"
                    if ci and c.get("clear") is not None
                    else "—"
                )
                out.append(
                    f"| {model} | {c['criterion']} | {_fmt(c['value'])} | {_fmt(c['threshold'])} | "
                    f"{'✅ pass' if c['pass'] else '❌ fail'} | {spread} |"
                )
        out += [""]
        for model, res in bar.items():
            noisy = noisy_criteria(res)
            verdict = "passes" if res["pass"] else "does not pass"
            tail = f"; within the noise of this test split: {', '.join(noisy)}" if noisy else ""
            out.append(f"- **{model}**: {verdict} the bar{tail}.")
        out += [
            "",
            "The bar is judged on the means. *Margin*: how far the model is on the passing side of the "
            "threshold (negative: the failing side), with the 95 % percentile-bootstrap interval of the "
            "per-subject paired differences; an interval that contains 0 means this split's subjects "
            "cannot tell the model from the threshold (another seed or split could flip the verdict).",
            "",
        ]
    # JSW check
    gt = methods.get(GT_CHECK, {})
    if gt:
        out += [
            "## Joint-space width: method and measurement check",
            "",
            "JSW is measured on an intensity volume as in a DESS-like image, where bone marrow is dark and "
            "cartilage and fluid bright. The places are found from the ground-truth labels, the same for every "
            f"method: the tibial plateau's R→L extent is split at {M.JSW_POSITIONS['lateral']:.0%} (lateral) and "
            f"{M.JSW_POSITIONS['medial']:.0%} (medial) from the patient's right edge; around each, a {M.JSW_BAND_MM:g} mm "
            f"band of S→I lines in a {M.JSW_SLAB_MM:g} mm A→P slab centred on the compartment. On each line the bright joint "
            "band between the dark femur and tibia is found near the expected joint row, and each bone surface is "
            "placed where the profile falls to half-way between the band's peak and that bone's darkest level "
            f"(linear interpolation, sub-voxel). The compartment's JSW is the {M.JSW_PERCENTILE:g}th percentile of its "
            "lines' widths: a robust minimum JSW (mJSW, the width at the contact where narrowing is graded).",
            "",
            "Measuring the **ground-truth MRI** the same way shows the error of the method itself:",
            "",
            "| compartment | measured on GT MRI (mm) | error vs meta JSON (mm) | label-map gap on the same lines (mm) |",
            "|---|---|---|---|",
        ]
        for side in ("medial", "lateral"):
            out.append(
                f"| {side} | {_cell(gt.get(f'jsw_{side}_mm'), 2)} | {_cell(gt.get(f'jsw_{side}_err_mm'), 2)} | "
                f"{_cell(gt.get(f'label_jsw_{side}_mm'), 2)} |"
            )
        out += [f"| mean \\|error\\| | | {_cell(gt.get('jsw_abs_err_mm'), 2)} | |", ""]
    # tissue MAE
    tissue_keys = [f"mae_{t}" for t in legend if any(f"mae_{t}" in methods[m] for m in table_methods)]
    if tissue_keys:
        out += ["## MAE per tissue ([0, 1] scale, ground-truth labels)", ""]
        out += ["| tissue | " + " | ".join(table_methods) + " |", "|" + "---|" * (len(table_methods) + 1)]
        for k in tissue_keys:
            cells = [
                _fmt(methods[m].get(k, {}).get("mean", math.nan), 4)
                if methods[m].get(k, {}).get("n")
                else "—"
                for m in table_methods
            ]
            out.append(f"| {k[4:]} | " + " | ".join(cells) + " |")
        out += [""]
    # per grade
    per_grade = summary["per_grade"]
    grades = sorted({g for m in table_methods for g in per_grade.get(m, {})}, key=lambda g: int(g))
    if grades:
        out += ["## By Kellgren–Lawrence grade (mean; n per grade)", ""]
        for key, label in (
            ("psnr_db", "PSNR, whole volume (dB)"),
            ("ssim3d", "SSIM 3-D"),
            ("jsw_abs_err_mm", "JSW |error| (mm)"),
        ):
            out += [f"**{label}**", "", "| method | " + " | ".join(f"KL {g}" for g in grades) + " |"]
            out += ["|" + "---|" * (len(grades) + 1)]
            for m in table_methods:
                cells = []
                for g in grades:
                    s = per_grade.get(m, {}).get(g, {}).get(key)
                    cells.append(
                        f"{_fmt(s['mean'], _DIGITS.get(key, 2))} (n={s['n']})" if s and s["n"] else "—"
                    )
                out.append(f"| {m} | " + " | ".join(cells) + " |")
            out += [""]
    # figures
    out += ["## Figures", ""]
    for title, rel in figures.items():
        out += [f"**{title}**", "", f"![{title}]({rel})", ""]
    out += ["## Training", "", log_note, ""]
    out += [
        "## Files",
        "",
        "- `metrics_per_subject.csv`: one row per subject and method (all metrics, tissue MAEs, JSW).",
        "- `summary.json`: the numbers above, with data ranges, definitions and the quality bar.",
        "",
    ]
    return "\n".join(out)


def write_report(
    out_dir: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    figure_makers: Mapping[str, tuple[str, Callable[[Path], None]]],
    log_note: str,
    model_names: Sequence[str],
    legend: Mapping[str, int],
) -> Path:
    """Write ``metrics_per_subject.csv``, ``summary.json``, ``figures/*.png`` and ``report.md`` atomically.

    ``figure_makers`` maps a title to ``(relative png path, function(path))``; a figure function may
    decline by not creating the file (the report then leaves it out).
    """
    out_dir = Path(out_dir)

    def fill(tmp: Path) -> None:
        (tmp / "figures").mkdir()
        _write_csv(rows, tmp / "metrics_per_subject.csv")
        with open(tmp / "summary.json", "w") as f:
            json.dump(_json_safe(summary), f, indent=2)
        written = {}
        for title, (rel, make) in figure_makers.items():
            make(tmp / rel)
            if (tmp / rel).is_file():
                written[title] = rel
        (tmp / "report.md").write_text(_markdown(summary, written, log_note, model_names, legend))

    with atomic_folder(out_dir) as tmp:
        fill(tmp)
    return out_dir / "report.md"


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib, Agg backend: no display needed)
# ---------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slice_position(
    case: Case, legend: Mapping[str, int], spacing: Sequence[float]
) -> tuple[int, int, int, dict]:
    """(d, row, w) through the medial compartment (coronal, axial, sagittal slices), and the JSW lines."""
    d0, h0, w0 = (s // 2 for s in case.mri.shape)
    try:
        lines = M.compartment_lines(case.labels, legend, spacing)
    except ValueError:
        return d0, h0, w0, {}
    med = lines.get("medial") or lines.get("lateral") or []
    if med:
        d0 = int(np.median([ln.d for ln in med]))
        h0 = int(round(float(np.median([ln.row for ln in med]))))
        w0 = int(np.median([ln.w for ln in med]))
    return d0, h0, w0, lines


def _planes(vol: np.ndarray, d: int, h: int, w: int) -> list[np.ndarray]:
    """Coronal (S->I x R->L), sagittal (S->I x A->P) and axial (A->P x R->L) slices of a (D, H, W) volume."""
    return [vol[d], vol[:, :, w].T, vol[:, h, :]]


def montage(
    path: Path,
    case: Case,
    predictions: Mapping[str, MethodPrediction],
    legend: Mapping[str, int],
    spacing: Sequence[float],
) -> None:
    """One subject: a row for the ground truth (radiograph | MRI in three planes | labels in three planes)
    and a row per method (radiograph reconstruction | generated MRI in three planes | absolute error).

    Slices pass through the medial compartment where JSW is measured; dashed lines on the ground
    truth's coronal slice mark the medial and lateral measurement columns.
    """
    plt = _pyplot()
    sd, sh, sw = (float(s) for s in spacing)
    d, h, w, lines = _slice_position(case, legend, spacing)
    aspects = [sh / sw, sh / sd, sd / sw]
    gt = _clip01(case.mri)
    n_rows = 1 + len(predictions)
    fig, axes = plt.subplots(n_rows, 7, figsize=(15, 2.35 * n_rows + 0.6), squeeze=False)
    col_titles = [
        "radiograph",
        "coronal",
        "sagittal (medial)",
        "axial (joint line)",
        "|error| coronal",
        "|error| sagittal",
        "|error| axial",
    ]
    for ax, title in zip(axes[0], col_titles):
        ax.set_title(title, fontsize=10)
    lab = np.asarray(case.labels).squeeze()
    n_lab = max(1, int(lab.max()))
    err_im = None
    for r, (name, pred) in enumerate([("ground truth", None), *predictions.items()]):
        row = axes[r]
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        xray = case.xray if pred is None else pred.xray_recon
        if xray is not None:
            row[0].imshow(_clip01(xray), cmap="gray", vmin=0, vmax=1)
        else:
            row[0].text(0.5, 0.5, "no radiograph\nreconstruction", ha="center", va="center", fontsize=8)
            row[0].set_facecolor("#eeeeee")
        vol = gt if pred is None else _clip01(pred.mri)
        for c, (img, asp) in enumerate(zip(_planes(vol, d, h, w), aspects)):
            row[1 + c].imshow(img, cmap="gray", vmin=0, vmax=1, aspect=asp)
        if pred is None:
            for c, (img, asp) in enumerate(zip(_planes(lab, d, h, w), aspects)):
                masked = np.ma.masked_equal(img, 0)
                row[4 + c].imshow(
                    masked, cmap="tab20", vmin=0.5, vmax=n_lab + 0.5, aspect=asp, interpolation="nearest"
                )
                row[4 + c].set_facecolor("black")
            row[4].set_title("labels coronal", fontsize=10)
            row[5].set_title("labels sagittal", fontsize=10)
            row[6].set_title("labels axial", fontsize=10)
            for side, colour in (("medial", "#00e5ff"), ("lateral", "#ffb000")):
                cols = [ln.w for ln in lines.get(side, [])]
                if cols:
                    row[1].axvline(float(np.median(cols)), color=colour, ls="--", lw=1.0, label=side)
            if lines:
                row[1].legend(loc="lower left", fontsize=6, framealpha=0.6)
        else:
            for c, (img, asp) in enumerate(zip(_planes(np.abs(vol - gt), d, h, w), aspects)):
                err_im = row[4 + c].imshow(img, cmap="magma", vmin=0, vmax=0.5, aspect=asp)
        row[0].set_ylabel(textwrap.fill(name, 20), fontsize=9)
    fig.suptitle(
        f"{case.subject} (KL {case.grade}, {case.side} knee shown as right) — synthetic data; "
        "intensities [0, 1]; coronal: image left = patient right",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 0.94, 0.97))
    if err_im is not None:
        cax = fig.add_axes((0.95, 0.1, 0.012, 0.6))
        fig.colorbar(err_im, cax=cax, label="|error| ([0, 1] scale)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


_GRADE_PANELS = (
    ("psnr_db", "PSNR, whole volume (dB) ↑"),
    ("ssim3d", "SSIM 3-D ↑"),
    ("jsw_abs_err_mm", "JSW |error| (mm) ↓"),
)


def grade_distributions(path: Path, rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> None:
    """Box plots (with the subjects as dots) of the headline metrics per KL grade and method."""
    plt = _pyplot()
    grades = sorted({r["grade"] for r in rows if r.get("grade") is not None}) or [None]
    fig, axes = plt.subplots(1, len(_GRADE_PANELS), figsize=(5.2 * len(_GRADE_PANELS), 4.2))
    colours = plt.get_cmap("tab10").colors
    width = 0.8 / max(1, len(methods))
    rng = np.random.default_rng(0)  # jitter only
    for ax, (key, title) in zip(axes, _GRADE_PANELS):
        for i, method in enumerate(methods):
            data, pos = [], []
            for j, g in enumerate(grades):
                v = np.array(
                    [r.get(key, math.nan) for r in rows if r["method"] == method and r.get("grade") == g],
                    float,
                )
                v = v[np.isfinite(v)]
                if v.size:
                    data.append(v)
                    pos.append(j + (i - (len(methods) - 1) / 2) * width)
            if not data:
                continue
            bp = ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True, showfliers=False)
            for patch in bp["boxes"]:
                patch.set_facecolor(colours[i % 10])
                patch.set_alpha(0.35)
            for v, p in zip(data, pos):
                ax.scatter(
                    p + rng.uniform(-width / 5, width / 5, v.size), v, s=9, color=colours[i % 10], zorder=3
                )
            ax.plot([], [], "s", color=colours[i % 10], alpha=0.6, label=method)
        ax.set_xticks(range(len(grades)))
        ax.set_xticklabels([f"KL {g}" if g is not None else "all" for g in grades])
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9, frameon=False)
    fig.suptitle("Test-split metrics per Kellgren–Lawrence grade (synthetic data)", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def training_curves(path: Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> None:
    """Loss terms in one panel (log scale), each other series (validation metrics) in its own panel."""
    plt = _pyplot()
    losses = {t: c for t, c in curves.items() if "loss" in t.lower()}
    others = {t: c for t, c in curves.items() if t not in losses}
    panels: list[tuple[str, dict]] = ([("loss terms", losses)] if losses else []) + [
        (t, {t: c}) for t, c in others.items()
    ]
    panels = panels[:9]
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5 * n_cols, 3.4 * n_rows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, panels):
        for tag, (steps, values) in series.items():
            order = np.argsort(steps, kind="stable")
            ax.plot(
                np.asarray(steps)[order],
                np.asarray(values)[order],
                marker="." if len(steps) < 40 else None,
                label=tag,
            )
        if title == "loss terms":
            vals = np.concatenate([np.asarray(v, float) for _, v in series.values()])
            if vals.size and np.all(vals > 0):
                ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step / epoch", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Training run (synthetic data)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)


@dataclass
class ReportInputs:
    """Everything :func:`build_report` needs, all in the canonical space."""

    cases: list[Case]
    train_xrays: list[np.ndarray]
    train_mris: list[np.ndarray]
    train_ids: list[str]
    legend: dict[str, int]
    spacing: tuple[float, float, float]
    xray_spacing: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_report(
    inputs: ReportInputs,
    predictions: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    train_log: str | os.PathLike | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    n_montage: int = 3,
    jsw_kwargs: Mapping[str, Any] | None = None,
    ssim_win_size: int = M.SSIM_WIN_SIZE,
) -> dict[str, Any]:
    """Measure the models in ``predictions`` (name -> predictions folder) and both baselines on
    ``inputs.cases``, then write the report folder. Returns the summary dict."""
    baselines = Baselines([x[None] for x in inputs.train_xrays], inputs.train_mris, inputs.train_ids)
    methods: dict[str, Method] = {name: prediction_reader(p) for name, p in predictions.items()}
    methods.update(baseline_methods(baselines))
    rows = evaluate_cases(inputs.cases, methods, inputs.legend, inputs.spacing, jsw_kwargs, ssim_win_size)
    summary = summarize_rows(rows, list(predictions), seed=seed, n_boot=n_boot)
    curves, log_note = read_training_log(train_log)
    makers: dict[str, tuple[str, Callable[[Path], None]]] = {}
    for case in inputs.cases[:n_montage]:
        preds = {name: methods[name](case) for name in methods}
        makers[f"Montage: {case.subject} (KL {case.grade}, {case.side} knee)"] = (
            f"figures/montage_{case.subject}.png",
            lambda path, c=case, p=preds: montage(path, c, p, inputs.legend, inputs.spacing),
        )
    makers["Metric distributions per grade"] = (
        "figures/metrics_by_grade.png",
        lambda path: grade_distributions(path, rows, [m for m in methods]),
    )
    if curves:
        makers["Training curves"] = (
            "figures/training_curves.png",
            lambda path: training_curves(path, curves),
        )
    write_report(out_dir, rows, summary, makers, log_note, list(predictions), inputs.legend)
    return summary


# ---------------------------------------------------------------------------------------------
# From files (what the ``xray2mri report`` command runs)
# ---------------------------------------------------------------------------------------------


def read_legend(base_dir: str | os.PathLike) -> dict[str, int]:
    """The cohort's tissue legend ``DIR/tissues.json`` (name -> label id)."""
    path = Path(base_dir) / "tissues.json"
    try:
        legend = json.loads(path.read_text())
        return {str(k): int(v) for k, v in legend.items()}
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise InputError(path, f"cannot read the tissue legend (name -> label id): {err}") from err


def read_meta(mri_path: str | os.PathLike, subject: str) -> dict[str, Any]:
    """``SUBJ_meta.json`` beside the subject's MRI, with ``jsw_medial_mm`` and ``jsw_lateral_mm``."""
    path = Path(mri_path).parent / f"{subject}_meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read the subject's meta JSON: {err}") from err
    missing = [k for k in ("jsw_medial_mm", "jsw_lateral_mm") if k not in meta]
    if missing:
        raise InputError(path, f"no {', '.join(missing)}; the JSW ground truth comes from there")
    return meta


def load_cases(
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    preprocess: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    split: str = "test",
) -> list[Case]:
    """The test cases of a datalist through ``preprocess``, with labels and the meta JSON's JSW."""
    cases = []
    for rec in load_split(datalist, base_dir, split, preprocess, keys=("xray", "mri", "labels")):
        subject = str(rec["subject"])
        meta = read_meta(rec["mri_path"], subject)
        grade = rec.get("grade", meta.get("grade"))
        cases.append(
            Case(
                subject=subject,
                xray=rec["xray"].squeeze(0),
                mri=rec["mri"].squeeze(0),
                labels=np.rint(rec["labels"].squeeze(0)).astype(np.int16),
                jsw_truth={"medial": float(meta["jsw_medial_mm"]), "lateral": float(meta["jsw_lateral_mm"])},
                grade=None if grade is None else int(grade),
                side=str(rec.get("side") or meta.get("side") or ""),
            )
        )
    if not cases:
        raise InputError(datalist, f"the {split!r} split is empty")
    return cases


def report_from_files(
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    predictions: Mapping[str, str | os.PathLike],
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_log: str | os.PathLike | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The whole evaluation from a datalist, a cohort folder, prediction folders and the bundle.

    Training and test splits go through the bundle's own preprocessing
    (:func:`~xray2mri.pipeline.evaluation.baselines.bundle_preprocessing`); ``kwargs`` go to :func:`build_report`.
    """
    preprocess, sizes = bundle_preprocessing(bundle_dir)
    legend = read_legend(base_dir)
    train = load_split(datalist, base_dir, "training", preprocess, keys=("xray", "mri"))
    cases = load_cases(datalist, base_dir, preprocess, "test")
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(sizes["mri_spacing"], float), (3,)))
    inputs = ReportInputs(
        cases=cases,
        train_xrays=[r["xray"].squeeze(0) for r in train],
        train_mris=[r["mri"].squeeze(0) for r in train],
        train_ids=[str(r["subject"]) for r in train],
        legend=legend,
        spacing=spacing,  # type: ignore[arg-type]
    )
    return build_report(inputs, predictions, out_dir, train_log=train_log, **kwargs)
