"""Aggregation of per-subject rows: means, bootstrap intervals, per-grade figures and the quality bar.

Intervals are ``scipy.stats.bootstrap`` BCa intervals (bias-corrected and accelerated, seeded):
at n = 30 a plain percentile interval of a skewed metric is off-centre, and the quality bar's
"clear" / "within noise" verdicts rest on these intervals. BCa is undefined for a sample without
spread (every value equal, where the jackknife acceleration divides by zero) or of one value; there
the percentile interval is used instead (zero-width for a constant sample) and the statistic
records why in ``ci_note``.

The quality bar judges whatever criteria it is given (:func:`load_criteria` reads them from JSON);
the library holds no thresholds. The demo's own bar is ``pipeline/demo_quality_bar.json``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from xray2mri.pipeline.evaluation.baselines import BASELINE_NAMES
from xray2mri.pipeline.evaluation.clinical import BAR_READINGS
from xray2mri.pipeline.evaluation.measure import GT_CHECK, METRICS, case_key, methods_in
from xray2mri.transforms.errors import InputError

__all__ = [
    "CI_LEVEL",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "paired_statistic_ci",
    "summarize",
    "Criterion",
    "BarCriteria",
    "load_criteria",
    "summarize_rows",
    "quality_bar",
    "noisy_criteria",
    "headline_model",
    "NO_GRADE",
]

#: Confidence level of every interval.
CI_LEVEL: float = 0.95
#: Per-grade key of the subjects whose manifest item has no grade.
NO_GRADE: str = "no grade"
#: What the data are when a caller does not say (the synthetic cohort ``xray2mri synth`` makes).
SYNTHETIC_COHORT: dict[str, Any] = {
    "synthetic": True,
    "description": "the synthetic paired knee cohort made by xray2mri synth",
    "evidence": "assumed by the caller",
}
#: Why an interval is not BCa (recorded as ``ci_note``).
_NOTE_ONE = "one value: zero-width interval (BCa undefined)"
_NOTE_FLAT = "no spread: percentile interval (BCa undefined)"
_NOTE_BCA = "percentile interval (BCa undefined for this sample)"


def _finite(values) -> np.ndarray:
    v = np.asarray(list(values), dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def _bootstrap(data: tuple[np.ndarray, ...], statistic, n_boot: int, seed: int, paired: bool) -> tuple[float, float, str]:
    """BCa interval of ``statistic`` over ``data`` (samples of one length), percentile where BCa is undefined."""
    n = data[0].size
    if n == 0:
        return math.nan, math.nan, ""
    value = float(statistic(*data, axis=-1))
    if n == 1:
        return value, value, _NOTE_ONE
    spread = np.ptp(data[0] - data[1]) if paired else np.ptp(data[0])
    if spread == 0:
        return value, value, _NOTE_FLAT
    note = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        for method in ("BCa", "percentile"):
            res = stats.bootstrap(data, statistic, n_resamples=n_boot, confidence_level=CI_LEVEL, method=method,
                                  paired=paired, vectorized=True, rng=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            if math.isfinite(lo) and math.isfinite(hi):
                return lo, hi, note
            note = _NOTE_BCA
    return math.nan, math.nan, note


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, str]:
    """95 % BCa bootstrap interval of the mean of ``values`` (non-finite dropped), seeded.

    Returns ``(low, high, note)``: ``note`` is empty for a BCa interval and says why otherwise
    (one value: zero-width; no spread: the percentile interval, zero-width; BCa not finite: the
    percentile interval). ``(nan, nan, "")`` without finite values.
    """
    return _bootstrap((_finite(values),), _mean, n_boot, seed, paired=False)


def paired_statistic_ci(a, b, statistic, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, str]:
    """95 % paired BCa interval of ``statistic(a, b, axis=-1)`` (vectorised over the last axis), e.g. a
    correlation across subjects; pairs with a non-finite member are dropped. Same return as :func:`bootstrap_ci`."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    return _bootstrap((a[keep], b[keep]), statistic, n_boot, seed, paired=True)


def paired_bootstrap_ci(
    a, b, offset: float = 0.0, sign: float = 1.0, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, str]:
    """95 % paired BCa interval of ``sign * (mean(a - b) - offset)``: ``a[i]`` and ``b[i]`` are one subject.

    Pairs with a non-finite member are dropped. Same ``(low, high, note)`` as :func:`bootstrap_ci`.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]

    def margin(x, y, axis=-1):
        return sign * (np.mean(x - y, axis=axis) - offset)

    lo, hi, note = _bootstrap((a, b), margin, n_boot, seed, paired=True)
    return (min(lo, hi), max(lo, hi), note) if math.isfinite(lo) else (lo, hi, note)


def summarize(values, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``{"mean", "std", "ci95_low", "ci95_high", "n"}`` over the finite values (std with ddof=1).

    ``ci_note`` is added when the interval is not BCa (see :func:`bootstrap_ci`).
    """
    v = _finite(values)
    lo, hi, note = bootstrap_ci(v, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {
        "mean": float(v.mean()) if v.size else math.nan,
        "std": float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else math.nan),
        "ci95_low": lo,
        "ci95_high": hi,
        "n": int(v.size),
    }
    if note:
        out["ci_note"] = note
    return out


# ---------------------------------------------------------------------------------------------
# Quality-bar criteria (data, not code)
# ---------------------------------------------------------------------------------------------

_COMPARE = {">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<": lambda v, t: v < t, "<=": lambda v, t: v <= t}


@dataclass(frozen=True)
class Criterion:
    """One quality-bar criterion: ``model.metric <compare> against.metric + margin`` on the means.

    Attributes:
        metric: a summary metric key (e.g. ``psnr_db``).
        compare: ``>=``, ``>``, ``<`` or ``<=``.
        against: a method row name, or ``mean`` / ``nn`` for the two baselines.
        margin: added to the baseline's mean to make the threshold (metric units).
    """

    metric: str
    compare: str
    against: str
    margin: float = 0.0

    @property
    def baseline(self) -> str:
        """The row name compared against (``mean``/``nn`` resolved to the baselines' names)."""
        return BASELINE_NAMES.get(self.against, self.against)

    @property
    def text(self) -> str:
        """How the report names the criterion."""
        sign = "+" if self.margin >= 0 else "-"
        return f"{self.metric} {self.compare} {self.baseline}" + (f" {sign} {abs(self.margin):g}" if self.margin else "")


@dataclass(frozen=True)
class BarCriteria:
    """A named set of quality-bar criteria, as read from JSON by :func:`load_criteria`."""

    name: str
    criteria: tuple[Criterion, ...]
    description: str = ""


def load_criteria(path: str | os.PathLike) -> BarCriteria:
    """The quality bar of a JSON file: ``{"name": ..., "description": ..., "criteria": [{"metric",
    "compare", "against", "margin"}, ...]}`` (``against``: ``mean``, ``nn`` or a method's row name).

    Raises:
        InputError: unreadable file, no criteria list, an unknown metric or comparison, a bad margin.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read the quality-bar criteria: {err}") from err
    entries = data.get("criteria") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(path, "no 'criteria' list (each {metric, compare, against[, margin]})")
    known = {m.key for m in METRICS} | set(BAR_READINGS)
    out = []
    for i, entry in enumerate(entries):
        try:
            crit = Criterion(str(entry["metric"]), str(entry["compare"]), str(entry["against"]),
                             float(entry.get("margin", 0.0)))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(path, f"criterion {i}: needs metric, compare, against and a numeric margin ({err!r})") from err
        if crit.metric not in known:
            raise InputError(path, f"criterion {i}: unknown metric {crit.metric!r}; one of {sorted(known)}")
        if crit.compare not in _COMPARE:
            raise InputError(path, f"criterion {i}: compare must be one of {sorted(_COMPARE)}, got {crit.compare!r}")
        if not math.isfinite(crit.margin):
            raise InputError(path, f"criterion {i}: margin must be finite")
        out.append(crit)
    return BarCriteria(str(data.get("name") or path.stem), tuple(out), str(data.get("description", "")))


# ---------------------------------------------------------------------------------------------
# Aggregating
# ---------------------------------------------------------------------------------------------


def _grade_key(grade: Any) -> str:
    return NO_GRADE if grade is None else str(grade)


def grade_order(key: str) -> tuple[int, int]:
    """Sort key of per-grade keys: grades numerically, then :data:`NO_GRADE`."""
    return (1, 0) if key == NO_GRADE else (0, int(key))


def summarize_rows(
    rows: Sequence[Mapping[str, Any]],
    model_names: Sequence[str],
    criteria: Sequence[Criterion] = (),
    seed: int = 0,
    n_boot: int = 2000,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Mean, std and 95 % BCa bootstrap interval per method and metric, overall and per grade.

    Also the tissue MAEs, the JSW check on the ground-truth MRI and the quality bar
    (:func:`quality_bar`, with ``criteria``; none: no bar) for each model in ``model_names``.
    Subjects without a grade form a :data:`NO_GRADE` group when some subjects have one.
    ``data`` describes the data (``synthetic``, ``description``, ``evidence``: see
    :func:`~xray2mri.pipeline.evaluation.inputs.describe_data`); default :data:`SYNTHETIC_COHORT`.
    """
    keys = [m.key for m in METRICS] + sorted({k for r in rows for k in r if k.startswith("mae_")})
    keys += ["jsw_medial_mm", "jsw_lateral_mm", "label_jsw_medial_mm", "label_jsw_lateral_mm"]
    methods: dict[str, dict[str, Any]] = {}
    per_grade: dict[str, dict[str, Any]] = {}
    for method in methods_in(rows):
        mrows = [r for r in rows if r["method"] == method]
        methods[method] = {
            k: summarize([r.get(k, math.nan) for r in mrows], n_boot=n_boot, seed=seed)
            for k in keys
            if any(k in r for r in mrows)
        }
        graded = any(r.get("grade") is not None for r in mrows)
        groups = sorted({_grade_key(r.get("grade")) for r in mrows}, key=grade_order) if graded else []
        per_grade[method] = {
            g: {
                k: summarize(
                    [r.get(k, math.nan) for r in mrows if _grade_key(r.get("grade")) == g], n_boot=n_boot, seed=seed
                )
                for k in (m.key for m in METRICS)
                if any(k in r for r in mrows)
            }
            for g in groups
        }
    data = dict(data or SYNTHETIC_COHORT)
    synthetic = bool(data["synthetic"])
    summary = {
        "synthetic_data": synthetic,
        "note": (
            f"Measured on SYNTHETIC data, not on patient data: {data['description']}"
            if synthetic
            else f"Measured on acquired (not synthetic) data: {data['description']}"
        ),
        "data": data,
        "n_test_subjects": len({r["subject"] for r in rows}),
        "n_test_cases": len({case_key(r) for r in rows}),
        "space": "canonical preprocessed (D, H, W) = (A->P, S->I, R->L), left knees mirrored to the right",
        "data_ranges": {
            "mri": "[0, 1] (robust-percentile normalised; predictions clipped to [0, 1]); data_range = 1.0",
            "radiograph": "[0, 1] (robust-percentile normalised); data_range = 1.0",
            "jsw": "millimetres",
        },
        "definitions": {m.key: f"{m.label} ({m.unit}): {m.note}" for m in METRICS},
        "aggregation": f"mean, sample std (ddof=1), 95 % BCa bootstrap of the mean (scipy.stats.bootstrap, {n_boot} resamples, seed {seed}; percentile interval where BCa is undefined, noted as ci_note); non-finite values left out, n counts the rest",
        "methods": methods,
        "per_grade": per_grade,
        "quality_bar": quality_bar(methods, model_names, criteria, rows, n_boot=n_boot, seed=seed) if criteria else {},
    }
    jsw_refs = sorted({str(r["jsw_reference"]) for r in rows if r.get("method") == GT_CHECK and r.get("jsw_reference")})
    if jsw_refs:
        summary["jsw_reference"] = jsw_refs
    summary["quality_bar_headline"] = bar_headline(summary, model_names, bool(criteria))
    return summary


def bar_headline(summary: Mapping[str, Any], model_names: Sequence[str], judged: bool) -> dict[str, Any]:
    """Whether the headline model (highest mean PSNR) passes ``summary["quality_bar"]`` (None: nothing judged)."""
    best = headline_model(model_names, summary["methods"])
    return {
        "model": best,
        # None: no criteria were given, so there is no bar to pass
        "passed": bool(best is not None and summary["quality_bar"][best]["pass"]) if judged else None,
        "rule": "the model with the highest mean whole-volume PSNR must pass every criterion",
    }


def quality_bar(
    methods: Mapping[str, Mapping[str, Mapping[str, float]]],
    model_names: Sequence[str],
    criteria: Sequence[Criterion],
    rows: Sequence[Mapping[str, Any]] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Each model judged on ``criteria`` (on the means).

    With the per-subject ``rows``, each criterion also gets its ``margin`` (how far the model is on the
    passing side of the threshold, in the metric's unit; negative when it fails) and ``margin_ci95``, the
    95 % paired BCa bootstrap interval of that margin over the test subjects (model and baseline compared on
    the same subjects), and ``clear``: whether the interval excludes 0, i.e. whether the verdict is
    outside the subject-to-subject noise of this test split (``None`` when no subject has both values).
    ``margin_ci_note`` says why an interval is not BCa, when it is not.
    """

    def get(method: str, key: str) -> float:
        value = methods.get(method, {}).get(key, {}).get("mean", math.nan)
        return float(math.nan if value is None else value)

    out: dict[str, Any] = {}
    for model in model_names:
        entries = []
        for crit in criteria:
            value, threshold = get(model, crit.metric), get(crit.baseline, crit.metric) + crit.margin
            ok = _COMPARE[crit.compare](value, threshold)
            entry: dict[str, Any] = {"criterion": crit.text, "value": value, "threshold": threshold, "pass": bool(ok)}
            if rows is not None:
                sign = -1.0 if crit.compare.startswith("<") else 1.0
                a, b = _paired(rows, model, crit.baseline, crit.metric)
                lo, hi, note = paired_bootstrap_ci(a, b, offset=crit.margin, sign=sign, n_boot=n_boot, seed=seed)
                defined = math.isfinite(lo) and math.isfinite(hi)
                entry.update(
                    margin=sign * (value - threshold),
                    margin_ci95=[lo, hi],
                    clear=bool(lo > 0 or hi < 0) if defined else None,  # None: no subject with both values
                )
                if note:
                    entry["margin_ci_note"] = note
            entries.append(entry)
        out[model] = {"criteria": entries, "pass": all(c["pass"] for c in entries)}
    return out


def noisy_criteria(model_bar: Mapping[str, Any]) -> list[str]:
    """The criteria of one model's bar whose margin interval contains 0 (verdict within the split's noise)."""
    return [c["criterion"] for c in model_bar.get("criteria", []) if c.get("clear") is False]


def _paired(rows: Sequence[Mapping[str, Any]], model: str, base: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-case values of ``key`` for ``model`` and ``base``, over the cases where both are finite.

    A case is one knee at one visit (:func:`~.measure.case_key`): two knees of one participant are two pairs.
    """

    def values(method: str) -> dict[tuple, float]:
        return {case_key(r): float(r.get(key, math.nan)) for r in rows if r["method"] == method}

    a, b = values(model), values(base)
    both = [s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s])]
    return np.asarray([a[s] for s in both], np.float64), np.asarray([b[s] for s in both], np.float64)


def headline_model(models: Sequence[str], methods: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Of ``models``, the one with the highest mean whole-volume PSNR (the one a demo would install)."""

    def psnr(m: str) -> float:
        value = methods.get(m, {}).get("psnr_db", {}).get("mean")
        return -math.inf if value is None or not math.isfinite(value) else float(value)

    scored = [(psnr(m), m) for m in models]
    return max(scored)[1] if scored else None
