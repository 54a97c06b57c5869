"""How well the calibrated uncertainty map holds on the test split (issue 16): coverage, sharpness, ranking.

For a model whose evaluation wrote ``<subject>_mri_sigma.nii.gz`` (the raw scale of the network's
uncertainty head, :class:`~xray2mri.pipeline.serving.volume_outputs.SaveEvaluationVolumes`), and the
bundle's calibration fitted on the VALIDATION split (:mod:`xray2mri.pipeline.training.calibrate`),
this measures on the test cases:

* empirical coverage of ``prediction +/- k_p f sigma`` at every stored level ``p`` (80/90/95 % and
  the reliability grid), over the whole volume and inside the joint region (a slab of
  :data:`JOINT_SLAB_MM` S->I around the tibiofemoral joint line, found from the ground truth as
  the joint-space-width lines are);
* the mean 90 % interval width (``2 k_90 f sigma``, MRI [0, 1] units);
* the per-subject Spearman correlation of mean calibrated uncertainty with MAE.

:func:`uncertainty_section` returns the summary entries (``uncertainty_coverage_80`` ...), the
figure makers (reliability diagram, error vs uncertainty) and the report's markdown section;
:mod:`.report` composes it. ``f`` is the subject factor of the calibration
(:meth:`~xray2mri.pipeline.serving.uncertainty.UncertaintyCalibration.subject_factor`), from the
reconstruction the evaluation wrote (``<subject>_xray_recon.nii.gz``) and the case's radiograph, as
a served prediction computes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xray2mri.pipeline.evaluation.summary import bootstrap_ci, paired_statistic_ci
from xray2mri.pipeline.serving.uncertainty import (
    LEVELS,
    MAP_LEVEL,
    UncertaintyCalibration,
    level_key,
    reconstruction_error,
)

__all__ = ["SIGMA_SUFFIX", "JOINT_SLAB_MM", "SubjectUncertainty", "measure_subject", "uncertainty_section",
           "spearman", "read_sigma"]

#: File of the raw scale an evaluation writes per subject.
SIGMA_SUFFIX: str = "_mri_sigma.nii.gz"
#: Half-height (mm, S->I) of the joint region around the joint line.
JOINT_SLAB_MM: float = 12.5
#: S->I axis of a (D, H, W) canonical volume.
_SI_AXIS: int = 1


@dataclass
class SubjectUncertainty:
    """One test subject: coverage per level (whole, joint), mean half-width, MAE."""

    subject: str
    coverage: dict[str, float]
    coverage_joint: dict[str, float]
    mean_half_width: float
    mean_width_90: float
    mae: float
    abs_err: np.ndarray  # subsample for the error-vs-uncertainty figure
    half_width: np.ndarray


def read_sigma(pred_dir: str | os.PathLike, subject: str) -> np.ndarray | None:
    """``<subject>_mri_sigma.nii.gz`` of a predictions folder (or its parent), or None when absent."""
    import nibabel as nib

    folder = Path(pred_dir)
    if (folder / "predictions").is_dir():
        folder = folder / "predictions"
    path = folder / f"{subject}{SIGMA_SUFFIX}"
    if not path.is_file():
        return None
    return np.squeeze(np.asanyarray(nib.load(str(path)).dataobj)).astype(np.float32)


def joint_region(mri: np.ndarray, labels: np.ndarray | None, legend: Mapping[str, int] | None,
                 spacing: Sequence[float]) -> np.ndarray | None:
    """Boolean mask of the joint region (see the module docstring), or None when no joint line is found."""
    from xray2mri.pipeline.evaluation import metrics as M

    try:
        if labels is not None and legend is not None:
            lines = M.compartment_lines(labels, legend, spacing)
        else:
            lines = M.compartment_lines_from_mri(mri, spacing)
    except Exception:  # no bone / band found: no joint region for this subject
        return None
    rows = [ln.row for found in lines.values() for ln in found]
    if not rows:
        return None
    centre, half = float(np.median(rows)), JOINT_SLAB_MM / float(spacing[_SI_AXIS])
    idx = np.arange(mri.shape[_SI_AXIS])
    keep = np.abs(idx - centre) <= half
    mask = np.zeros(mri.shape, dtype=bool)
    mask[:, keep, :] = True
    return mask


def measure_subject(subject: str, pred: np.ndarray, sigma: np.ndarray, truth: np.ndarray,
                    calibration: UncertaintyCalibration, joint: np.ndarray | None,
                    sample: int = 2000, seed: int = 0, recon_error: float | None = None) -> SubjectUncertainty:
    """Coverage and width of one subject's calibrated intervals (levels: every stored factor); ``recon_error``
    (the radiograph's reconstruction MAE) sets the subject factor, 1 without it."""
    err = np.abs(truth.astype(np.float32) - pred.astype(np.float32))
    sigma = sigma * calibration.subject_factor(recon_error)
    coverage, coverage_joint = {}, {}
    for key, k in calibration.factors.items():
        inside = err <= k * sigma
        coverage[key] = float(inside.mean())
        coverage_joint[key] = float(inside[joint].mean()) if joint is not None and joint.any() else float("nan")
    half = calibration.factor(MAP_LEVEL) * sigma
    rng = np.random.default_rng(seed)
    pick = rng.choice(err.size, size=min(sample, err.size), replace=False)
    return SubjectUncertainty(
        subject=subject, coverage=coverage, coverage_joint=coverage_joint,
        mean_half_width=float(half.mean()), mean_width_90=float(2 * half.mean()), mae=float(err.mean()),
        abs_err=err.reshape(-1)[pick], half_width=half.reshape(-1)[pick],
    )


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 3 pairs or a constant side."""
    if len(x) < 3 or len(x) != len(y):
        return float("nan")
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts  # 0-based first rank of each distinct value
    return (start + (counts + 1) / 2.0)[inverse]


def _spearman_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman correlation along ``axis`` (vectorised for the bootstrap; ties broken by order)."""
    rx = np.argsort(np.argsort(x, axis=axis), axis=axis).astype(np.float64)
    ry = np.argsort(np.argsort(y, axis=axis), axis=axis).astype(np.float64)
    rx -= rx.mean(axis=axis, keepdims=True)
    ry -= ry.mean(axis=axis, keepdims=True)
    return (rx * ry).sum(axis=axis) / np.sqrt((rx**2).sum(axis=axis) * (ry**2).sum(axis=axis))


def _interval(lo_hi_note: tuple[float, float, str]) -> list[float | None]:
    lo, hi, _ = lo_hi_note
    return [None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi]


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def summarize(subjects: Sequence[SubjectUncertainty], model: str) -> dict[str, Any]:
    """The summary.json entries: the issue's five names (top level) and the details under ``uncertainty``."""
    levels = sorted({k for s in subjects for k in s.coverage}, key=float)
    cov = {k: _nanmean([s.coverage[k] for s in subjects]) for k in levels}
    cov_joint = {k: _nanmean([s.coverage_joint[k] for s in subjects]) for k in levels}
    rho = spearman([s.mean_half_width for s in subjects], [s.mae for s in subjects])
    out: dict[str, Any] = {f"uncertainty_coverage_{level_key(p)}": cov.get(level_key(p)) for p in LEVELS}
    out["uncertainty_width_90"] = _nanmean([s.mean_width_90 for s in subjects])
    out["uncertainty_error_spearman"] = rho
    out["uncertainty"] = {
        "model": model,
        "subjects": len(subjects),
        "map": "90 % half-width k_90 * f * sigma, MRI [0, 1] units",
        "coverage": cov,
        # 95 % BCa intervals over subjects: how far the test split's 30-odd subjects pin the coverage down
        "coverage_ci": {level_key(p): _interval(bootstrap_ci([s.coverage[level_key(p)] for s in subjects]))
                        for p in LEVELS if level_key(p) in cov},
        "coverage_joint": cov_joint,
        "joint_region": f"slab of +/-{JOINT_SLAB_MM} mm S->I around the joint line",
        "width_90": out["uncertainty_width_90"],
        "spearman_uncertainty_vs_mae": rho,
        "spearman_ci": _interval(paired_statistic_ci([s.mean_half_width for s in subjects], [s.mae for s in subjects],
                                                     _spearman_along)),
    }
    return out


def reliability_diagram(path: Path, subjects: Sequence[SubjectUncertainty], word: str) -> None:
    """Nominal vs empirical coverage, whole volume and joint region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({k for s in subjects for k in s.coverage}, key=float)
    nominal = [float(k) / 100 for k in levels]
    whole = [_nanmean([s.coverage[k] for s in subjects]) for k in levels]
    joint = [_nanmean([s.coverage_joint[k] for s in subjects]) for k in levels]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    ax.plot(nominal, whole, "o-", label="whole volume")
    ax.plot(nominal, joint, "s-", label="joint region")
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage (test split)")
    ax.set_title(f"Reliability of the uncertainty map ({word})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def error_vs_uncertainty(path: Path, subjects: Sequence[SubjectUncertainty], word: str) -> None:
    """Left: voxel |error| vs calibrated half-width (binned means); right: per-subject MAE vs mean half-width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    half = np.concatenate([s.half_width for s in subjects])
    err = np.concatenate([s.abs_err for s in subjects])
    edges = np.unique(np.quantile(half, np.linspace(0, 1, 16)))
    which = np.clip(np.digitize(half, edges) - 1, 0, max(len(edges) - 2, 0))
    centres = [half[which == i].mean() for i in range(len(edges) - 1) if (which == i).any()]
    means = [err[which == i].mean() for i in range(len(edges) - 1) if (which == i).any()]
    q90 = [np.quantile(err[which == i], 0.9) for i in range(len(edges) - 1) if (which == i).any()]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    a.plot(centres, means, "o-", label="mean |error|")
    a.plot(centres, q90, "s-", label="90th percentile |error|")
    top = max(max(centres, default=0), max(q90, default=0))
    a.plot([0, top], [0, top], "k--", lw=1, label="|error| = half-width")
    a.set_xlabel("calibrated 90 % half-width (voxel)")
    a.set_ylabel("|prediction - truth|")
    a.legend(fontsize=8)
    a.set_title("voxels (binned by uncertainty)", fontsize=9)
    b.scatter([s.mean_half_width for s in subjects], [s.mae for s in subjects], s=14)
    b.set_xlabel("mean calibrated half-width (subject)")
    b.set_ylabel("MAE (subject)")
    rho = spearman([s.mean_half_width for s in subjects], [s.mae for s in subjects])
    b.set_title(f"subjects: Spearman {rho:.2f}", fontsize=9)
    fig.suptitle(f"Error vs uncertainty, test split ({word})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(entries: Mapping[str, Any]) -> str:
    """The report's section on the uncertainty map."""
    unc = entries["uncertainty"]
    lines = [
        "## Uncertainty map (calibrated on the validation split)",
        "",
        f"Model: {unc['model']}; {unc['subjects']} test subjects. The map is the {unc['map']}"
        + (f" (subject factor {unc['subject_factor']})" if unc.get("subject_factor") else "")
        + f"; joint region: {unc['joint_region']}.",
        "",
        "| nominal | coverage, whole volume | coverage, joint region |",
        "|---|---|---|",
    ]
    cis = unc.get("coverage_ci", {})

    def ci(interval: Sequence[float | None] | None, scale: float = 100.0, digits: int = 1) -> str:
        if not interval or None in interval:
            return ""
        return f" [{scale * interval[0]:.{digits}f}, {scale * interval[1]:.{digits}f}]"

    for k in sorted(unc["coverage"], key=float):
        lines.append(f"| {k} % | {100 * unc['coverage'][k]:.1f} %{ci(cis.get(k))} | {100 * unc['coverage_joint'][k]:.1f} % |")
    lines += [
        "",
        "Brackets: 95 % BCa bootstrap interval over the test subjects.",
        "",
        f"Mean 90 % interval width: {unc['width_90']:.4f}. Per-subject Spearman correlation of mean "
        f"uncertainty with MAE: {unc['spearman_uncertainty_vs_mae']:.2f}{ci(unc.get('spearman_ci'), 1.0, 2)}.",
        "",
    ]
    return "\n".join(lines)


def uncertainty_section(
    cases: Sequence[Any],
    predictions: Mapping[str, str | os.PathLike],
    calibration: UncertaintyCalibration | None,
    legend: Mapping[str, int] | None,
    spacing: Sequence[float],
    word: str,
    model: str | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[str, Callable[[Path], None]]], str]:
    """Summary entries, figure makers and markdown for the model the calibration belongs to.

    ``model`` names it; by default it is the only model whose predictions carry
    ``*_mri_sigma.nii.gz``. Returns empty results when there is no calibration, no such model, or
    several and none named (a calibration fits one model's weights only).

    Raises:
        KeyError: ``model`` is not one of ``predictions``.
    """
    from xray2mri.pipeline.evaluation.inputs import read_prediction

    if calibration is None or not cases:
        return {}, {}, ""
    if model is not None and model not in predictions:
        raise KeyError(f"--uncertainty-model {model!r} is not one of the predictions {sorted(predictions)}")
    with_scale = [m for m, f in predictions.items() if read_sigma(f, cases[0].subject) is not None]
    chosen = [model] if model is not None else with_scale if len(with_scale) == 1 else []
    for model in chosen:
        folder = predictions[model]
        subjects = []
        for case in cases:
            sigma = read_sigma(folder, case.subject)
            if sigma is None:
                continue
            prediction = read_prediction(folder, case.subject)
            joint = joint_region(case.mri, case.labels, legend, spacing)
            recon_error = (None if prediction.xray_recon is None or case.xray is None
                           else reconstruction_error(case.xray, prediction.xray_recon))
            subjects.append(measure_subject(case.subject, prediction.mri, sigma, case.mri, calibration, joint,
                                            recon_error=recon_error))
        entries = summarize(subjects, model)
        entries["uncertainty"]["subject_factor"] = (
            f"f = (radiograph reconstruction MAE / {calibration.subject_reference:.5f}) ** "
            f"{calibration.subject_exponent:.3f}" if calibration.subject_exponent > 0 else "f = 1 (none fitted)")
        makers = {
            "Uncertainty: reliability diagram": (
                "figures/uncertainty_reliability.png", lambda p, s=subjects: reliability_diagram(p, s, word)),
            "Uncertainty: error vs uncertainty": (
                "figures/uncertainty_error.png", lambda p, s=subjects: error_vs_uncertainty(p, s, word)),
        }
        return entries, makers, markdown(entries)
    return {}, {}, ""
