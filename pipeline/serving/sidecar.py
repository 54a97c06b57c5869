"""The JSON sidecar of a generated volume: where on which radiograph the knee was found, and what was made.

Every volume ``xray2mri predict`` or ``inference.json`` writes gets a sidecar with the same stem,
``<output stem>.json`` beside ``<output stem>.nii.gz`` (or the DICOM series folder
``<output stem>/``), as BIDS puts JSON beside NIfTI. It holds (:func:`knee_facts` gathers them
from the preprocessed radiograph's meta, which :class:`~xray2mri.transforms.locate_knee.LocateKneed`
and :class:`~xray2mri.transforms.knee_crop.CropKneed` filled):

``source`` (the radiograph), ``side`` (``L``/``R``, or ``""`` unknown), ``side_source`` (``given``,
``tag``, ``position``, ``anatomy``), ``joint_centre_px`` ([row, col] in the source radiograph's stored
pixels), ``crop_box_px`` ([row0, col0, row1, col1], end exclusive), ``field_mm``,
``pixel_spacing_mm`` ([row, col] of the source), ``spacing_source``, ``locator_confidence``,
``knees_found``, ``mirrored_to_canonical``, ``synthetic: true``, ``generator`` and
``xray2mri_version``; the writer adds ``output`` and ``warnings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from xray2mri.pipeline.version import package_version

__all__ = ["knee_facts", "sidecar_path", "description_line"]



def _plain(value: Any) -> Any:
    """Tensors, arrays and tuples as JSON-ready Python values."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def knee_facts(meta: Mapping[str, Any], source: str | os.PathLike, mirrored: bool) -> dict[str, Any]:
    """The sidecar facts of one knee from its preprocessed radiograph's ``meta``."""
    centre = _plain(meta.get("joint_centre_px")) or []
    box = _plain(meta.get("knee_crop_box_px", meta.get("crop_box"))) or []
    spacing = _plain(meta.get("source_spacing_mm")) or []
    return {
        "source": os.fspath(source),
        "side": str(meta.get("knee_side") or ""),
        "side_source": str(meta.get("side_source") or ""),
        "joint_centre_px": [round(float(v), 2) for v in centre],
        "crop_box_px": [int(v) for v in box],
        "field_mm": float(_plain(meta.get("knee_field_mm")) or 0.0),
        "pixel_spacing_mm": [float(v) for v in spacing],
        "spacing_source": str(meta.get("spacing_source") or ""),
        "locator_confidence": float(_plain(meta.get("locator_confidence")) or 0.0),
        "knees_found": int(_plain(meta.get("knees_found")) or 1),
        "mirrored_to_canonical": bool(mirrored),
        "synthetic": True,
        "generator": "xray2mri: SYNTHETIC MRI generated from a radiograph; not acquired, not for diagnosis",
        "xray2mri_version": package_version(),
    }


def sidecar_path(volume_path: str | os.PathLike) -> str:
    """``<output stem>.json`` for a volume ``<output stem>.nii.gz`` / ``.nii`` or a DICOM series folder."""
    path = os.fspath(volume_path).rstrip("/")
    for suffix in (".nii.gz", ".nii"):
        if path.endswith(suffix):
            return path[: -len(suffix)] + ".json"
    return path + ".json"


def description_line(facts: Mapping[str, Any]) -> str:
    """The facts in one line, for the DICOM output's DerivationDescription."""
    return (
        f"Knee {facts.get('side') or 'side unknown'} of {os.path.basename(str(facts.get('source', '')))}: "
        f"joint centre (row, col) {facts.get('joint_centre_px')} px, crop box {facts.get('crop_box_px')} px, "
        f"pixel spacing {facts.get('pixel_spacing_mm')} mm ({facts.get('spacing_source')}), "
        f"locator confidence {facts.get('locator_confidence')}, xray2mri {facts.get('xray2mri_version')}."
    )
