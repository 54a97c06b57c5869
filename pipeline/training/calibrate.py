"""Fit the uncertainty calibration of a trained bundle on its VALIDATION split (issue 16).

Runs the bundle's network (dict form, with its uncertainty head) over the validation items of a
datalist, preprocessed exactly as evaluation does (``train.json`` + ``evaluate.json`` through
:func:`~xray2mri.pipeline.serving.bundle.open_bundle`), and fits:

* the subject factor's exponent (:func:`~xray2mri.pipeline.serving.uncertainty.fit_subject_exponent`):
  how a subject's error grows with the CAE's reconstruction error of its radiograph;
* the conformal factor ``k_p`` per nominal level (:data:`~xray2mri.pipeline.serving.uncertainty.LEVELS`)
  from the scores ``|truth - prediction| / (f sigma)`` of every validation voxel, subject by subject
  (:func:`~xray2mri.pipeline.serving.uncertainty.subject_conformal_factor`: a new subject's coverage
  reaches the level with 90 % confidence);
* the OOD reference (validation medians of the components) and threshold (a quantile of the
  validation OOD scores), with the validation radiographs run through the SERVING path
  (:class:`~xray2mri.pipeline.serving.predict.Predictor`: the knee finder's crop, as every
  prediction is scored), not the evaluation's centre crop, so the score compares like with like.

The result is written next to the weights, ``models/uncertainty_calibration.json``, which the
export copies and checksums. Never fit on the test split: the report measures coverage there.

Example::

    xray2mri calibrate --bundle bundles/knee_xray2mri --datalist data/synthetic_knee/datalist.json \\
        --base-dir data/synthetic_knee
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xray2mri.pipeline.serving.uncertainty import (
    CALIBRATION_FILE,
    COVERAGE_CONFIDENCE,
    LEVELS,
    RELIABILITY_LEVELS,
    UncertaintyCalibration,
    fit_subject_exponent,
    level_key,
    ood_components,
    ood_score,
    quantile_threshold,
    reconstruction_error,
    save_calibration,
    subject_conformal_factor,
)
from xray2mri.pipeline.training.uncertainty_loss import LOG_SCALE_KEY, LOG_SCALE_RANGE

__all__ = ["SplitOutputs", "split_outputs", "fit_calibration", "calibrate_bundle"]


@dataclass
class SplitOutputs:
    """The network's outputs on one split, per subject (CPU tensors, (D, H, W) volumes)."""

    subjects: list[str]
    predictions: list[torch.Tensor]
    sigmas: list[torch.Tensor]
    truths: list[torch.Tensor]
    xrays: list[torch.Tensor]
    reconstructions: list[torch.Tensor]


def _open(bundle_dir: str | os.PathLike, datalist: str | os.PathLike, base_dir: str | os.PathLike, split: str,
          overrides: Mapping[str, Any] | None) -> Any:
    from xray2mri.pipeline.serving.bundle import EVALUATE_CONFIGS, open_bundle

    return open_bundle(
        bundle_dir, configs=EVALUATE_CONFIGS,
        overrides={"dataset_dir": str(base_dir), "datalist": str(datalist), "validate#split": split,
                   "eval_split": split, "num_workers": 0, **(overrides or {})},
    )


@torch.inference_mode()
def split_outputs(
    bundle_dir: str | os.PathLike,
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    split: str = "validation",
    weights: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SplitOutputs:
    """Run the bundle's network (with its uncertainty head) over ``split``; outputs per subject.

    Raises:
        ValueError: the bundle's network has no uncertainty head (train.json ``uncertainty: false``).
    """
    bundle = _open(bundle_dir, datalist, base_dir, split, overrides)
    # the configs' own ``weights`` (train.json: models/model.pt, or what an override points at)
    network = bundle.network(weights=weights if weights is not None else bundle.setting("weights"))
    if not getattr(network, "uncertainty", False):
        raise ValueError(f"{bundle_dir}: the network has no uncertainty head (train.json 'uncertainty' is false)")
    loader = bundle.parser.get_parsed_content("validate#dataloader")
    out = SplitOutputs([], [], [], [], [], [])
    for batch in loader:
        xray = torch.as_tensor(batch["xray"]).float()
        pred = network(xray)
        sigma = torch.exp(pred[LOG_SCALE_KEY].float().clamp(*LOG_SCALE_RANGE))
        for i in range(xray.shape[0]):
            out.subjects.append(str(batch["subject"][i]))
            out.predictions.append(pred["mri"][i, 0].float().clamp(0, 1).cpu())
            out.sigmas.append(sigma[i, 0].cpu())
            out.truths.append(torch.as_tensor(batch["mri"][i, 0]).float().cpu())
            out.xrays.append(xray[i, 0].cpu())
            out.reconstructions.append(pred["xray"][i, 0].float().cpu())
    return out


def fit_calibration(outputs: SplitOutputs, distribution: str = "laplace", ood_quantile: float = 0.99,
                    fitted_on: Mapping[str, Any] | None = None,
                    ood_inputs: list[dict[str, float]] | None = None,
                    confidence: float = COVERAGE_CONFIDENCE,
                    factors: Mapping[str, float] | None = None,
                    ood_extra: Sequence[Mapping[str, float]] = (),
                    subject_factor: bool = True) -> UncertaintyCalibration:
    """Subject factor, conformal factors and OOD reference/threshold from one split's outputs (module docstring).

    ``ood_inputs`` are the OOD components of the split's radiographs as served (:func:`served_components`);
    by default they are computed from ``outputs`` (the evaluation's preprocessing). ``factors``: ones already
    fitted on these outputs (a second call, with the served OOD inputs, need not fit them again).
    ``ood_extra``: OOD components of more held-out radiographs; they join the threshold's scores, not the
    reference medians (those stay the split's). ``subject_factor=False``: no subject factor (exponent 0), as
    calibrations before it were (for comparison).

    Raises:
        ValueError: no subjects.
    """
    if not outputs.subjects:
        raise ValueError("fit_calibration: the split has no subjects")
    errors = [reconstruction_error(x, r) for x, r in zip(outputs.xrays, outputs.reconstructions)]
    reference = float(np.median(errors))
    exponent = 0.0 if not subject_factor else fit_subject_exponent([float((t - p).abs().mean()) for p, t in zip(outputs.predictions, outputs.truths)],
                                    [float(s.mean()) for s in outputs.sigmas], errors, reference)
    calibration = UncertaintyCalibration(factors={}, distribution=distribution, ood_quantile=ood_quantile,
                                         subject_exponent=exponent, subject_reference=reference)
    scores = [((t - p).abs() / (s * calibration.subject_factor(e))).reshape(-1)
              for p, s, t, e in zip(outputs.predictions, outputs.sigmas, outputs.truths, errors)]
    calibration.factors = dict(factors) if factors else {
        level_key(level): subject_conformal_factor(scores, level, confidence)
        for level in sorted({*LEVELS, *RELIABILITY_LEVELS})}
    components = ood_inputs or [ood_components(calibration.half_width(torch.log(s), recon_error=e), e)
                                for s, e in zip(outputs.sigmas, errors)]
    calibration.ood_reference = {k: float(np.median([c[k] for c in components])) for k in components[0]}
    ood_scores = [ood_score(c, calibration.ood_reference) for c in components]
    extra_scores = [ood_score(c, calibration.ood_reference) for c in ood_extra]
    calibration.ood_threshold = quantile_threshold(ood_scores + extra_scores, ood_quantile)
    calibration.fitted_on = {"subjects": len(outputs.subjects), "voxels": sum(int(x.numel()) for x in scores),
                             "factors": f"subject-level conformal, {confidence:.0%} confidence",
                             "subject_factor": f"(reconstruction MAE / {reference:.5f}) ** {exponent:.3f}",
                             "validation_ood_scores": [round(s, 4) for s in ood_scores],
                             "held_out_ood_scores": len(extra_scores), **(fitted_on or {})}
    return calibration


def served_components(bundle_dir: str | os.PathLike, calibration: UncertaintyCalibration, paths: list[str],
                      weights: str | os.PathLike | None = None,
                      overrides: Mapping[str, Any] | None = None) -> list[dict[str, float]]:
    """OOD components of radiographs as ``xray2mri predict`` scores them (every knee found; refused files skipped)."""
    from xray2mri.pipeline.serving.bundle import open_bundle
    from xray2mri.pipeline.serving.predict import Predictor
    from xray2mri.transforms.errors import XrayInputError

    bundle = open_bundle(bundle_dir, overrides=overrides)
    network = bundle.network(weights=weights if weights is not None else bundle.setting("weights"))
    predictor = Predictor(network, bundle.preprocessing(), bundle.setting("mri_spacing"),
                          image_key=bundle.image_key, calibration=calibration)
    found = []
    for path in paths:
        try:
            found += [p.ood["ood_components"] for p in predictor.predict_knees(path) if p.ood]
        except XrayInputError:
            continue
    return found


def calibrate_bundle(
    bundle_dir: str | os.PathLike,
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    split: str = "validation",
    ood_quantile: float = 0.99,
    overrides: Mapping[str, Any] | None = None,
    ood_radiographs: Sequence[str | os.PathLike] = (),
) -> tuple[UncertaintyCalibration, Path]:
    """Fit on ``split`` (validation) and write ``out`` (default ``bundle_dir/models/uncertainty_calibration.json``).

    ``ood_radiographs``: more held-out radiographs of the training population (no MRI needed: the OOD score
    reads only the radiograph), scored as served beside the split's for the OOD threshold. From 99 scores on
    the threshold is their conformal rank, which a new input of that population exceeds with probability
    at most ``1 - ood_quantile``; 30 validation radiographs alone cannot place a 99th percentile.

    Raises:
        ValueError: ``split`` is "test" (the report measures coverage there), or no uncertainty head.
    """
    if split == "test":
        raise ValueError("the uncertainty calibration is never fitted on the test split; use the validation split")
    from xray2mri.pipeline.data import manifests
    from xray2mri.pipeline.training.engine import train_setting

    outputs = split_outputs(bundle_dir, datalist, base_dir, split, weights, overrides)
    distribution = (overrides or {}).get("nll_distribution") or train_setting(bundle_dir, "nll_distribution")
    fitted_on = {"split": split, "datalist": str(datalist),
                 "weights": str(weights) if weights is not None else "models/model.pt"}
    factors_only = fit_calibration(outputs, distribution=str(distribution), ood_quantile=ood_quantile)
    paths = [str(item["xray"]) for item in manifests.load_datalist(datalist, split, base_dir)]
    served = served_components(bundle_dir, factors_only, paths, weights, overrides)
    extra = served_components(bundle_dir, factors_only, [str(p) for p in ood_radiographs], weights, overrides)
    calibration = fit_calibration(outputs, distribution=str(distribution), ood_quantile=ood_quantile,
                                  fitted_on={**fitted_on, "ood_fitted_on": f"{len(served)} {split} knees as served"
                                             + (f" + {len(extra)} held-out radiographs' knees" if extra else "")},
                                  ood_inputs=served or None, factors=factors_only.factors, ood_extra=extra)
    path = save_calibration(calibration, out if out is not None else Path(bundle_dir) / CALIBRATION_FILE)
    return calibration, path
