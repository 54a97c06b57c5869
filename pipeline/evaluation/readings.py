"""What a clinician reads off a knee tissue map: joint-space width, cartilage thickness and volume.

The readings are taken on a tissue map over the classes of
:data:`~xray2mri.pipeline.data.synth.tissues.TISSUE_CLASSES` (bones, cartilages, menisci, fluid, soft
tissue, background), either as per-class probabilities ``(C, D, H, W)`` (a network's tissue head,
a baseline's mean one-hot map) or as a hard map: a class map ``(D, H, W)`` or a cohort label map
(:func:`class_probabilities` turns either into one-hot probabilities). The volume is in the bundle's
canonical space, ``(D, H, W) = (A->P, S->I, R->L)``, right knee (left knees mirrored).

Where: the same S->I lines in the weight-bearing region of each compartment that the intensity JSW of
:mod:`~xray2mri.pipeline.evaluation.metrics` uses (:func:`~xray2mri.pipeline.evaluation.metrics.compartment_lines`,
found on a label map: the ground truth's in the evaluation, so every method is read at the same
places; the map's own argmax when there is no ground truth, e.g. on a real radiograph's prediction).

How, on each line (sub-voxel from probabilities, partial-volume sums):

* **JSW** (femur-tibia bone distance): between the lowest femur-marrow row and the highest
  tibia-marrow row below it (probability >= 0.5), the summed non-bone probability ``sum(1 - p_bone)``
  times the row spacing; ``p_bone`` is the summed probability of every bone class (marrow of the
  four bones and the shared cortex). A partial-volume map of two flat surfaces gives their distance
  exactly; a hard map gives the bone-free voxels times the spacing, the same as
  :func:`~xray2mri.pipeline.evaluation.metrics.label_jsw`.
* **Cartilage thickness** (tibial, femoral): the summed class probability along the line times the
  row spacing (vertical thickness; in the weight-bearing region the surfaces are close to
  perpendicular to S->I).

A compartment's minimum JSW and minimum cartilage thickness are the same robust minimum as the
intensity JSW (the :data:`~xray2mri.pipeline.evaluation.metrics.JSW_PERCENTILE` percentile over its
lines); the mean thickness is the mean over its lines. Cartilage volume is the summed class
probability over the whole map times the voxel volume. Everything here is pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xray2mri.pipeline.data.synth.tissues import (
    CLASS_INDEX,
    NUM_CLASSES,
    TISSUE_CLASSES,
    class_legend,
    to_classes,
)
from xray2mri.pipeline.evaluation import metrics as M

__all__ = [
    "BONE_CLASSES",
    "CARTILAGE_CLASSES",
    "THICKNESS_CLASSES",
    "READING_KEYS",
    "class_probabilities",
    "class_map",
    "reading_lines",
    "jsw_per_line",
    "thickness_per_line",
    "read_tissue_map",
    "dice_per_class",
    "grid_text",
]

#: Classes that are bone (a bone surface is where their summed probability falls off).
BONE_CLASSES: tuple[str, ...] = ("cortical_bone", "femur", "tibia", "patella", "fibula")
#: Classes that are hyaline cartilage (their volume is read).
CARTILAGE_CLASSES: tuple[str, ...] = tuple(c.name for c in TISSUE_CLASSES if c.name.endswith("_cartilage"))
#: Cartilages whose thickness is read per compartment on the JSW lines.
THICKNESS_CLASSES: tuple[str, ...] = ("tibial_cartilage", "femoral_cartilage")
COMPARTMENTS: tuple[str, ...] = ("medial", "lateral")


def _reading_keys() -> tuple[str, ...]:
    keys = [f"jsw_{c}_mm" for c in COMPARTMENTS]
    keys += [f"cartilage_thickness_{c}_mm" for c in COMPARTMENTS]
    for cls in THICKNESS_CLASSES:
        for c in COMPARTMENTS:
            keys += [f"{cls}_mean_{c}_mm", f"{cls}_min_{c}_mm"]
    keys += [f"{cls}_volume_mm3" for cls in CARTILAGE_CLASSES] + ["cartilage_volume_mm3"]
    return tuple(keys)


#: Every key :func:`read_tissue_map` returns. ``cartilage_thickness_<compartment>_mm`` is the tibial
#: cartilage's mean thickness there (the issue's cartilage target and the prediction sidecar's field).
READING_KEYS: tuple[str, ...] = _reading_keys()


def grid_text(spacing: Sequence[float]) -> str:
    """A map's voxel size as the sidecars and the report name it, e.g. ``"2.5 x 1.25 x 2.5 mm voxels"``."""
    return " x ".join(f"{float(s):g}" for s in spacing) + " mm voxels"


def class_probabilities(tissue_map, tissue_legend: Mapping[str, int] | None = None) -> np.ndarray:
    """Per-class probabilities ``(C, D, H, W)`` (float32) of a tissue map.

    Args:
        tissue_map: probabilities ``(C, D, H, W)`` with ``C`` the number of tissue classes (returned as
            float32), or a hard map ``(D, H, W)`` (optionally with a leading channel of 1), one-hot encoded:
            a cohort label map when ``tissue_legend`` is given (mapped to classes by
            :func:`~xray2mri.pipeline.data.synth.tissues.to_classes`), else a class map.
        tissue_legend: the cohort's legend (tissue name -> label id) of a hard label map.
    """
    a = np.asarray(tissue_map)
    if a.ndim == 4 and a.shape[0] == NUM_CLASSES:
        return a.astype(np.float32, copy=False)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(
            f"tissue map: expected ({NUM_CLASSES}, D, H, W) probabilities or a (D, H, W) hard map, got {a.shape}"
        )
    classes = to_classes(a, tissue_legend) if tissue_legend is not None else np.rint(a).astype(np.int64)
    if classes.min() < 0 or classes.max() >= NUM_CLASSES:
        raise ValueError(f"class map holds values outside 0..{NUM_CLASSES - 1}; pass the cohort legend for label maps")
    return (np.arange(NUM_CLASSES)[:, None, None, None] == classes[None]).astype(np.float32)


def class_map(probs) -> np.ndarray:
    """The most probable class of each voxel, ``(D, H, W)`` int64."""
    return np.asarray(probs).argmax(axis=0).astype(np.int64)


def reading_lines(probs, spacing: Sequence[float], **line_kw: Any) -> dict[str, list[M.JswLine]]:
    """The S->I lines of each compartment found on the map's own argmax (when there is no ground truth)."""
    return M.compartment_lines(class_map(probs), class_legend(), spacing, **line_kw)


def _canonical(probs: np.ndarray) -> np.ndarray:
    """``(C, D, H, W)`` -> ``(C, A->P, S->I, R->L)`` (the metrics module's axis constants)."""
    return np.moveaxis(probs, (1 + M.AP_AXIS, 1 + M.SI_AXIS, 1 + M.SAGITTAL_AXIS), (1, 2, 3))


def jsw_per_line(probs, lines: Sequence[M.JswLine], spacing: Sequence[float]) -> np.ndarray:
    """Femur-tibia bone distance (mm) on each line (``nan`` where a line crosses no femur above tibia)."""
    p = _canonical(np.asarray(probs, dtype=np.float64))
    sh = float(spacing[M.SI_AXIS])
    bone_ids = [CLASS_INDEX[c] for c in BONE_CLASSES]
    out = np.full(len(lines), math.nan)
    for i, ln in enumerate(lines):
        femur = p[CLASS_INDEX["femur"], ln.d, :, ln.w] >= 0.5
        tibia = p[CLASS_INDEX["tibia"], ln.d, :, ln.w] >= 0.5
        if not tibia.any():
            continue
        rows = np.arange(femur.size)
        below = rows >= ln.row  # the tibia whose top is nearest below the line's expected joint row
        tib = rows[tibia & below] if (tibia & below).any() else rows[tibia]
        t = int(tib.min())
        fem = rows[femur & (rows < t)]
        if not fem.size:
            continue
        f = int(fem.max())
        bone = p[bone_ids, ln.d, f : t + 1, ln.w].sum(axis=0)
        out[i] = float(np.clip(1.0 - bone, 0.0, 1.0).sum() * sh)
    return out


def thickness_per_line(probs, lines: Sequence[M.JswLine], spacing: Sequence[float], cls: str) -> np.ndarray:
    """Thickness (mm) of tissue class ``cls`` on each line: its summed probability times the row spacing."""
    p = _canonical(np.asarray(probs, dtype=np.float64))
    sh = float(spacing[M.SI_AXIS])
    k = CLASS_INDEX[cls]
    return np.array([float(p[k, ln.d, :, ln.w].sum() * sh) for ln in lines], dtype=np.float64)


def _robust_min(values: np.ndarray, percentile: float) -> float:
    v = values[np.isfinite(values)]
    return float(np.percentile(v, percentile)) if v.size else math.nan


def _mean(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(v.mean()) if v.size else math.nan


def read_tissue_map(
    tissue_map,
    spacing: Sequence[float],
    lines: Mapping[str, Sequence[M.JswLine]] | None = None,
    tissue_legend: Mapping[str, int] | None = None,
    percentile: float = M.JSW_PERCENTILE,
    **line_kw: Any,
) -> dict[str, float]:
    """Every reading (:data:`READING_KEYS`) of one tissue map, in mm and mm^3.

    Args:
        tissue_map: class probabilities ``(C, D, H, W)`` or a hard map (see :func:`class_probabilities`).
        spacing: voxel size (mm) along (D, H, W).
        lines: ``{"medial": [...], "lateral": [...]}`` where to read (e.g. found once on the ground truth
            with :func:`~xray2mri.pipeline.evaluation.metrics.compartment_lines`); default: found on
            this map's own argmax (:func:`reading_lines`, ``line_kw`` passed on).
        tissue_legend: the cohort's legend when ``tissue_map`` is a cohort label map.
        percentile: the robust minimum's percentile over a compartment's lines.
    Returns a reading -> value dict; ``nan`` for a compartment without usable lines.

    Example::

        probs = softmax(tissue_logits)[0]                       # (C, D, H, W)
        r = read_tissue_map(probs, spacing=(2.5, 2.5, 2.5))
        r["jsw_medial_mm"], r["cartilage_thickness_medial_mm"]
    """
    probs = class_probabilities(tissue_map, tissue_legend)
    if lines is None:
        lines = reading_lines(probs, spacing, **line_kw)
    out: dict[str, float] = {}
    for comp in COMPARTMENTS:
        ls = list(lines.get(comp, []))
        out[f"jsw_{comp}_mm"] = _robust_min(jsw_per_line(probs, ls, spacing), percentile)
        for cls in THICKNESS_CLASSES:
            th = thickness_per_line(probs, ls, spacing, cls) if ls else np.array([])
            out[f"{cls}_mean_{comp}_mm"] = _mean(th)
            out[f"{cls}_min_{comp}_mm"] = _robust_min(th, percentile)
        out[f"cartilage_thickness_{comp}_mm"] = out[f"tibial_cartilage_mean_{comp}_mm"]
    voxel_mm3 = float(np.prod([float(s) for s in spacing]))
    for cls in CARTILAGE_CLASSES:
        out[f"{cls}_volume_mm3"] = float(probs[CLASS_INDEX[cls]].sum(dtype=np.float64) * voxel_mm3)
    out["cartilage_volume_mm3"] = float(sum(out[f"{cls}_volume_mm3"] for cls in CARTILAGE_CLASSES))
    return {k: out[k] for k in READING_KEYS}


def dice_per_class(pred, truth, tissue_legend: Mapping[str, int] | None = None) -> dict[str, float]:
    """Dice of each tissue class between a predicted map and the ground truth (hard, argmax of probabilities).

    Args:
        pred: class probabilities ``(C, D, H, W)`` or a class map ``(D, H, W)``.
        truth: the ground truth as a cohort label map (with ``tissue_legend``) or a class map.
    Returns class name -> Dice (``nan`` for a class absent from both).
    """
    p = class_map(class_probabilities(pred))
    t = class_map(class_probabilities(truth, tissue_legend))
    if p.shape != t.shape:
        raise ValueError(f"predicted tissue map {p.shape} and ground truth {t.shape} differ in shape")
    out = {}
    for c in TISSUE_CLASSES:
        a, b = p == c.index, t == c.index
        denom = int(a.sum()) + int(b.sum())
        out[c.name] = 2.0 * float((a & b).sum()) / denom if denom else math.nan
    return out
