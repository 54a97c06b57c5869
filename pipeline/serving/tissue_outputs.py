"""What a model with the tissue head adds to each prediction: a label map and the clinical readings.

From the tissue head's logits ``(C, D, H, W)`` (canonical space: right knee, ``"PIL"``), for one knee:

* the label map: the most probable tissue class per voxel
  (:data:`~xray2mri.pipeline.data.synth.tissues.TISSUE_CLASSES`), mirrored back to the radiograph's
  own side like the MRI, written as ``<output stem>_labels_synthetic.nii.gz`` (uint8, SYNTHETIC);
* the sidecar's readings (:func:`~xray2mri.pipeline.evaluation.readings.read_tissue_map`, places found
  on the map itself): ``jsw_medial_mm``, ``jsw_lateral_mm``, ``cartilage_thickness_medial_mm``,
  ``cartilage_thickness_lateral_mm`` (tibial cartilage, mean over the weight-bearing lines), and
  ``reprojection_ncc`` (:func:`~xray2mri.pipeline.evaluation.reprojection.reprojection_ncc`: the map
  projected with the project's DRR against the preprocessed input radiograph). ``None`` where a
  reading fails (no femur above a tibia on the map). Readings of a generated map on a real radiograph
  are the model's estimate, not a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xray2mri.pipeline.data.synth.tissues import class_legend
from xray2mri.pipeline.evaluation.readings import read_tissue_map
from xray2mri.pipeline.evaluation.reprojection import reprojection_ncc

__all__ = ["LABELS_SUFFIX", "SIDECAR_READINGS", "tissue_probabilities", "tissue_facts", "label_map"]

#: File name suffix of the label map written beside ``<output stem>_mri_synthetic.nii.gz``.
LABELS_SUFFIX: str = "_labels_synthetic.nii.gz"
#: The readings every sidecar of a model with the tissue head carries.
SIDECAR_READINGS: tuple[str, ...] = (
    "jsw_medial_mm",
    "jsw_lateral_mm",
    "cartilage_thickness_medial_mm",
    "cartilage_thickness_lateral_mm",
)


def tissue_probabilities(logits: torch.Tensor) -> np.ndarray:
    """Softmax over the classes of one knee's logits ``(C, D, H, W)``, float32 numpy."""
    return torch.softmax(torch.as_tensor(logits).detach().float(), dim=0).cpu().numpy()


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def tissue_facts(
    probs: np.ndarray, mri_spacing: Sequence[float], xray: Any = None, xray_spacing: Sequence[float] | None = None
) -> dict[str, Any]:
    """The sidecar entries of one knee: :data:`SIDECAR_READINGS`, ``reprojection_ncc`` (with the preprocessed
    radiograph ``(1, H, W)`` and its pixel size) and the class legend of the label map."""
    readings = read_tissue_map(probs, mri_spacing)
    facts: dict[str, Any] = {k: _finite_or_none(readings[k]) for k in SIDECAR_READINGS}
    if xray is not None and xray_spacing is not None:
        x = np.asarray(torch.as_tensor(xray).detach().float().cpu()).squeeze()
        facts["reprojection_ncc"] = _finite_or_none(reprojection_ncc(probs, x, mri_spacing, xray_spacing))
    facts["tissue_classes"] = class_legend()
    return facts


def label_map(probs: np.ndarray, mirrored: bool) -> np.ndarray:
    """The most probable class per voxel ``(D, H, W)`` uint8, mirrored back when the knee was mirrored."""
    from xray2mri.transforms.laterality import mirror_back

    classes = torch.as_tensor(np.asarray(probs).argmax(axis=0).astype(np.uint8))
    return np.ascontiguousarray(mirror_back(classes, mirrored).numpy())
