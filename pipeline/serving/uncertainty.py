"""The calibrated uncertainty map and the out-of-distribution score of one prediction (issue 16).

The network's uncertainty head predicts a per-voxel log scale ``s`` (raw spread ``sigma = exp(s)``,
:mod:`xray2mri.pipeline.training.uncertainty_loss`). Split-conformal calibration on the validation
split (:mod:`xray2mri.pipeline.training.calibrate`) finds, per nominal level ``p``, the factor ``k_p``
such that ``|truth - prediction| <= k_p * sigma`` covers a fraction ``p`` of a NEW subject's voxels
with 90 % confidence (:func:`subject_conformal_factor`: subjects, not voxels, are the exchangeable
units; the pooled voxel quantile of the scores ``|truth - prediction| / sigma`` is its floor). The bundle
stores them in ``models/uncertainty_calibration.json`` (:data:`CALIBRATION_FILE`, covered by the
export's checksums).

The map written beside every volume is the **90 % half-width** ``k_90 * f * sigma`` in the MRI's
[0, 1] units (:data:`MAP_LEVEL`): the true intensity lies within ``volume +/- map`` for about 90 %
of voxels; multiply by ``k_p / k_90`` (both in the calibration file) for another level.

``f`` is the radiograph's **subject factor** (:meth:`UncertaintyCalibration.subject_factor`): the head
sees each place's features, so it says which places are hard but hardly which subjects are; the CAE's
reconstruction error of the input radiograph does (a radiograph the encoder reproduces badly is one
the generator knows less). ``f = (e / e_ref) ** b`` with ``e`` the reconstruction MAE, ``e_ref`` its
validation median and ``b`` the least-squares slope of ``log(MAE / mean sigma)`` on ``log(e / e_ref)``
over the validation subjects (:func:`fit_subject_exponent`, never below 0); the conformal factors are
fitted on the scores after it. A calibration without it (older files) has ``b = 0``, ``f = 1``.

Out-of-distribution score of one radiograph (:func:`ood_score`): the larger of two ratios, each to
its median over the validation split: the mean calibrated half-width over the volume (the model's
own doubt) and the mean absolute error of the CAE's reconstruction of the radiograph (how far the
input is from the radiographs the encoder learnt). The threshold is a high quantile (99th) of the
validation scores (:func:`quantile_threshold`); a radiograph above it is flagged with :data:`OOD_WARNING`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

__all__ = [
    "CALIBRATION_FILE",
    "LEVELS",
    "RELIABILITY_LEVELS",
    "MAP_LEVEL",
    "OOD_WARNING",
    "UNCERTAINTY_SUFFIX",
    "UncertaintyCalibration",
    "conformal_factor",
    "subject_conformal_factor",
    "fit_subject_exponent",
    "reconstruction_error",
    "ood_components",
    "ood_score",
    "ood_record",
    "calibrated_map",
    "load_calibration",
    "save_calibration",
    "write_uncertainty_map",
]

#: Where a bundle keeps its calibration, relative to the bundle folder (next to the weights).
CALIBRATION_FILE: str = "models/uncertainty_calibration.json"
#: Nominal coverage levels the calibration stores a factor for.
LEVELS: tuple[float, ...] = (0.8, 0.9, 0.95)
#: Levels also fitted for the report's reliability diagram (the file stores a factor for each).
RELIABILITY_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
#: Confidence that a new subject's expected coverage reaches the nominal level (subject-level bound,
#: :func:`subject_conformal_factor`); 0.9 is the usual choice of training-conditional conformal methods.
COVERAGE_CONFIDENCE: float = 0.9
#: Largest exponent of the subject factor (:func:`fit_subject_exponent`): a guard against a slope fitted on a
#: few subjects running away (measured fits: 0.2-0.35).
SUBJECT_EXPONENT_MAX: float = 2.0
#: The level whose half-width the written uncertainty map holds.
MAP_LEVEL: float = 0.9
#: Suffix of the uncertainty map written beside a volume ``<stem>.nii.gz``.
UNCERTAINTY_SUFFIX: str = "_uncertainty.nii.gz"
#: Printed and recorded when a radiograph's OOD score is above the threshold.
OOD_WARNING: str = "this radiograph is unlike the training data; treat the volume with caution"
#: How the map is stored: 16-bit integers scaled by NIfTI's scl_slope (half the bytes to compress of
#: float32; readers get floats back, within 1e-5 of the computed map).
MAP_DTYPE: str = "uint16"
#: What the map holds, for the NIfTI description and the sidecar.
MAP_DESCRIPTION: str = "SYNTHETIC 90% half-width, MRI [0,1] units"


def level_key(level: float) -> str:
    """``0.9`` -> ``"90"`` (the calibration file's keys)."""
    return f"{round(level * 100):d}"


def conformal_factor(scores: np.ndarray | torch.Tensor, level: float) -> float:
    """Split-conformal factor ``k``: the ``ceil((n + 1) level) / n`` empirical quantile of ``scores``.

    ``scores`` are nonconformity scores ``|truth - prediction| / sigma`` of calibration points; an
    interval ``prediction +/- k sigma`` then covers a new exchangeable point with probability
    >= ``level`` (and < ``level + 1 / (n + 1)``).

    Raises:
        ValueError: ``level`` outside (0, 1) or no finite score.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s = torch.as_tensor(scores).reshape(-1).float()
    s = s[torch.isfinite(s)]
    n = s.numel()
    if n == 0:
        raise ValueError("conformal_factor needs at least one finite score")
    rank = min(n, math.ceil((n + 1) * level))  # 1-based rank of the order statistic
    if n > 16_000_000:  # torch.kthvalue on a huge tensor: subsample deterministically, keep the rank fraction
        step = math.ceil(n / 16_000_000)
        s = s[::step]
        rank = min(s.numel(), max(1, round(rank / n * s.numel())))
        n = s.numel()
    return float(torch.kthvalue(s, rank).values)


def reconstruction_error(xray: torch.Tensor | np.ndarray, xray_recon: torch.Tensor | np.ndarray) -> float:
    """Mean absolute error of the CAE's reconstruction of its input radiograph (both on the [0, 1] scale)."""
    return float((torch.as_tensor(xray_recon).float() - torch.as_tensor(xray).float()).abs().mean())


def fit_subject_exponent(mae: Sequence[float], mean_sigma: Sequence[float], recon_error: Sequence[float],
                         reference: float, max_exponent: float = SUBJECT_EXPONENT_MAX) -> float:
    """The exponent ``b`` of the subject factor ``(e / reference) ** b`` (module docstring).

    The least-squares slope of ``log(mae / mean_sigma)`` (how much a subject's error exceeds what its
    map says) on ``log(e / reference)`` over calibration subjects, clipped to ``[0, max_exponent]``: a
    radiograph reproduced worse is never given a narrower map. 0 with fewer than 3 usable subjects or
    no spread in ``e``.
    """
    rows = np.asarray([(m, s, e) for m, s, e in zip(mae, mean_sigma, recon_error)
                       if m > 0 and s > 0 and e > 0 and math.isfinite(m + s + e)], dtype=float)
    if reference <= 0 or len(rows) < 3:
        return 0.0
    x = np.log(rows[:, 2] / reference)
    y = np.log(rows[:, 0] / rows[:, 1])
    spread = float(((x - x.mean()) ** 2).sum())
    if spread <= 1e-12:
        return 0.0
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / spread)
    return float(min(max(slope, 0.0), max_exponent))


def subject_conformal_factor(subject_scores: Sequence[np.ndarray | torch.Tensor], level: float,
                             confidence: float = COVERAGE_CONFIDENCE, candidates: int = 2000) -> float:
    """The factor ``k`` whose coverage of a NEW subject reaches ``level`` with ``confidence``.

    Voxels of one subject are not exchangeable with another's, subjects are: a pooled voxel quantile
    (:func:`conformal_factor`) covers ``level`` on average over calibration splits, but a 30-subject
    split whose errors happen to run small gives a factor that under-covers the next subjects. Here each
    calibration subject ``i`` has its coverage ``c_i(k)`` (fraction of its voxels with score <= k); ``k``
    is the smallest candidate whose normal lower confidence bound of the mean subject coverage,
    ``mean_i c_i(k) - z_confidence * sd_i c_i(k) / sqrt(n)``, reaches ``level``: never below the pooled
    factor. With one subject it is the pooled factor.

    Raises:
        ValueError: ``level`` or ``confidence`` outside (0, 1), or no finite score.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    per_subject = [np.sort(s[np.isfinite(s)]) for s in
                   (torch.as_tensor(x).reshape(-1).float().numpy() for x in subject_scores)]
    per_subject = [s for s in per_subject if s.size]
    if not per_subject:
        raise ValueError("subject_conformal_factor needs at least one finite score")
    scores = np.concatenate(per_subject)
    pooled = conformal_factor(torch.from_numpy(scores), level)
    n = len(per_subject)
    if n < 2:
        return pooled
    z = NormalDist().inv_cdf(confidence)
    # candidates: pooled quantiles finely spaced from the nominal level up to the largest score
    grid = np.unique(np.quantile(scores, np.linspace(level, 1.0, candidates)))
    grid = np.concatenate([[pooled], grid[grid > pooled]])
    coverage = np.stack([np.searchsorted(s, grid, side="right") / s.size for s in per_subject])  # (n, candidates)
    bound = coverage.mean(0) - z * coverage.std(0, ddof=1) / math.sqrt(n)
    reached = np.flatnonzero(bound >= level)
    return float(grid[reached[0]]) if reached.size else float(grid[-1])


@dataclass
class UncertaintyCalibration:
    """What ``models/uncertainty_calibration.json`` holds (one place for its fields).

    Attributes:
        factors: ``{"80": k, "90": k, "95": k}``: the conformal factor per nominal level.
        distribution: the NLL the head was trained with (``"laplace"`` / ``"gaussian"``).
        map_level: the level whose half-width the written map holds.
        ood_reference: validation medians of the OOD components (``{"uncertainty": ..., "reconstruction": ...}``).
        ood_threshold: the OOD score above which an input is flagged.
        ood_quantile: the validation quantile the threshold is.
        subject_exponent: ``b`` of the subject factor ``(e / subject_reference) ** b`` (0: no factor).
        subject_reference: ``e_ref``, the validation median of the radiograph reconstruction MAE.
        fitted_on: what it was fitted on (split, subjects, voxels, weights file).
    """

    factors: dict[str, float]
    distribution: str = "laplace"
    map_level: float = MAP_LEVEL
    ood_reference: dict[str, float] = field(default_factory=dict)
    ood_threshold: float = math.inf
    ood_quantile: float = 0.99
    subject_exponent: float = 0.0
    subject_reference: float = 0.0
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def factor(self, level: float) -> float:
        """The conformal factor of ``level`` (one of the stored levels)."""
        key = level_key(level)
        if key not in self.factors:
            raise KeyError(f"no calibration factor for level {level} (stored: {sorted(self.factors)})")
        return float(self.factors[key])

    def subject_factor(self, recon_error: float | None) -> float:
        """``f = (recon_error / subject_reference) ** subject_exponent``; 1 without a fitted exponent or error."""
        if self.subject_exponent <= 0 or self.subject_reference <= 0 or recon_error is None \
                or not math.isfinite(recon_error) or recon_error <= 0:
            return 1.0
        return float((recon_error / self.subject_reference) ** self.subject_exponent)

    def half_width(self, log_scale: torch.Tensor, level: float | None = None,
                   recon_error: float | None = None) -> torch.Tensor:
        """The calibrated half-width ``k_level * f * exp(log_scale)`` (default level: ``map_level``; ``f``:
        :meth:`subject_factor` of the radiograph's reconstruction MAE, 1 when it is not given)."""
        from xray2mri.pipeline.training.uncertainty_loss import LOG_SCALE_RANGE

        k = self.factor(self.map_level if level is None else level) * self.subject_factor(recon_error)
        return k * torch.exp(log_scale.float().clamp(*LOG_SCALE_RANGE))

    def sidecar(self) -> dict[str, Any]:
        """What a prediction's sidecar records about its uncertainty map."""
        return {
            "uncertainty_map": MAP_DESCRIPTION,
            "uncertainty_level": self.map_level,
            "uncertainty_factors": dict(self.factors),
            "uncertainty_subject_exponent": self.subject_exponent,
        }


def ood_components(half_width: torch.Tensor, recon_error: float) -> dict[str, float]:
    """The raw OOD components of one input: mean calibrated half-width, radiograph reconstruction MAE
    (:func:`reconstruction_error`, computed once per input: it also sets the subject factor)."""
    return {"uncertainty": float(half_width.float().mean()), "reconstruction": float(recon_error)}


def ood_score(components: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """The larger of the components' ratios to their validation medians (1: a typical validation input)."""
    ratios = [components[k] / reference[k] for k in reference if reference[k] > 0 and k in components]
    return float(max(ratios)) if ratios else math.nan


def ood_record(components: Mapping[str, float], calibration: UncertaintyCalibration) -> dict[str, Any]:
    """What a prediction's sidecar records: ``ood_score``, ``ood_threshold``, ``ood_flag`` (score > threshold)."""
    score = ood_score(components, calibration.ood_reference)
    threshold = calibration.ood_threshold
    return {
        "ood_score": round(score, 4) if math.isfinite(score) else None,
        "ood_threshold": round(threshold, 4) if math.isfinite(threshold) else None,
        "ood_flag": bool(math.isfinite(score) and score > threshold),
        "ood_components": {k: float(v) for k, v in components.items()},
    }


def calibrated_map(calibration: UncertaintyCalibration, log_scale: torch.Tensor, xray: torch.Tensor,
                   xray_recon: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """The calibrated 90 % half-width map of one input and what its sidecar records about it.

    The one place a served prediction's map is made (predict, MONAI Label, ``inference.json``): the
    radiograph's reconstruction MAE sets the subject factor, the map is ``k_90 * f * sigma``, and the
    record holds the OOD fields (:func:`ood_record`) and ``uncertainty_subject_factor``.
    """
    error = reconstruction_error(xray, xray_recon)
    half = calibration.half_width(log_scale, recon_error=error)
    record = ood_record(ood_components(half, error), calibration)
    record["uncertainty_subject_factor"] = round(calibration.subject_factor(error), 4)
    return half, record


def save_calibration(calibration: UncertaintyCalibration, path: str | os.PathLike) -> Path:
    """Write the calibration JSON atomically; returns its path."""
    from xray2mri.pipeline.atomic import atomic_file

    path = Path(path)
    data = {"synthetic_note": "calibration of a model trained on SYNTHETIC data", **asdict(calibration)}
    if not math.isfinite(data["ood_threshold"]):
        data["ood_threshold"] = None
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_uncertainty_map(half_width: np.ndarray | torch.Tensor, affine: np.ndarray | torch.Tensor,
                          path: str | os.PathLike) -> Path:
    """Write the calibrated map (D, H, W) beside its volume, atomically: the one place its file format is chosen.

    SYNTHETIC NIfTI described by :data:`MAP_DESCRIPTION`, stored as :data:`MAP_DTYPE` with ``scl_slope``,
    gzip-compressed with the run-length strategy (``gzip_rle``): the map is the head's largest share of the
    writing time (issue 16), and its noisy low bytes gain almost nothing from deflate's string matching.
    """
    from xray2mri.pipeline.serving.writers import write_nifti

    return write_nifti(half_width, affine, path, description=MAP_DESCRIPTION, data_dtype=MAP_DTYPE, gzip_rle=True)


def load_calibration(path: str | os.PathLike) -> UncertaintyCalibration:
    """Read a calibration JSON written by :func:`save_calibration`.

    Raises:
        InputError: the file is not a calibration (names the file and what is missing).
    """
    from xray2mri.transforms.errors import InputError

    try:
        data = json.loads(Path(path).read_text())
        threshold = data.get("ood_threshold")
        return UncertaintyCalibration(
            factors={str(k): float(v) for k, v in data["factors"].items()},
            distribution=str(data.get("distribution", "laplace")),
            map_level=float(data.get("map_level", MAP_LEVEL)),
            ood_reference={str(k): float(v) for k, v in (data.get("ood_reference") or {}).items()},
            ood_threshold=math.inf if threshold is None else float(threshold),
            ood_quantile=float(data.get("ood_quantile", 0.99)),
            subject_exponent=float(data.get("subject_exponent", 0.0)),
            subject_reference=float(data.get("subject_reference", 0.0)),
            fitted_on=dict(data.get("fitted_on") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(path, f"not an uncertainty calibration file ({type(exc).__name__}: {exc})") from exc


def quantile_threshold(scores: Sequence[float], quantile: float) -> float:
    """The flagging threshold from ``n`` validation OOD scores, so that a new in-distribution input
    exceeds it with probability about ``1 - quantile``.

    With enough scores (``ceil((n + 1) quantile) <= n``) it is the conformal rank: the
    ``ceil((n + 1) quantile)``-th smallest score (probability <= ``1 - quantile``). With fewer (fewer
    than 99 at the 99th percentile; the demo has 30) no score is high enough: the maximum is exceeded
    with probability ``1 / (n + 1)``, 3.2 % at 30. The threshold is then the ``quantile`` of a
    log-normal fitted to the (positive, right-skewed) scores, and never below their maximum.
    """
    values = np.sort(np.asarray([s for s in scores if math.isfinite(s)], dtype=float))
    if values.size == 0:
        return math.inf
    rank = math.ceil((values.size + 1) * quantile)
    if rank <= values.size:
        return float(values[rank - 1])
    positive = values[values > 0]
    if positive.size < 2:
        return float(values[-1])
    logs = np.log(positive)
    fitted = math.exp(float(logs.mean()) + NormalDist().inv_cdf(quantile) * float(logs.std(ddof=1)))
    return max(float(values[-1]), fitted)
