"""The tissue label map as a DICOM Segmentation beside the generated MR series (issue 15).

With ``--format dicom``, a model with the tissue head writes its label map as a DICOM SEG instance
(``<stem>_seg.dcm``) that references the generated MR series slice by slice, so a PACS or viewer
(3D Slicer, OHIF) overlays it on the volume. One segment per tissue class of
:data:`~xray2mri.pipeline.data.synth.tissues.TISSUE_CLASSES` (background is 0, no segment), coded in
SNOMED CT (:data:`SEGMENT_CODES`), as a LABELMAP segmentation (one frame per MR slice, pixel value =
class). Series and segment descriptions say SYNTHETIC.

Written with highdicom, the reference implementation of DICOM SEG in our field. highdicom needs
pydicom >= 3 (``pip install xray2mri[seg]``); where it is missing (e.g. beside MONAI Label's pydicom
2.4) :func:`seg_available` is False and the label map is written as NIfTI instead, with a note.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xray2mri.pipeline.data.synth.tissues import TISSUE_CLASSES

__all__ = ["SEG_SUFFIX", "SEGMENT_CODES", "SEG_UNAVAILABLE", "seg_available", "write_dicom_seg"]

#: File name suffix of the SEG instance written beside ``<stem>_mri_synthetic/`` (the MR series folder).
SEG_SUFFIX: str = "_seg.dcm"
#: SNOMED CT (category, type) code values and meanings per tissue class name (background has none).
SEGMENT_CODES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "soft_tissue": (("85756007", "Tissue"), ("87784001", "Soft tissue")),
    "cortical_bone": (("85756007", "Tissue"), ("3138006", "Bone")),
    "femur": (("91723000", "Anatomical Structure"), ("71341001", "Femur")),
    "tibia": (("91723000", "Anatomical Structure"), ("12611008", "Tibia")),
    "patella": (("91723000", "Anatomical Structure"), ("64234005", "Patella")),
    "fibula": (("91723000", "Anatomical Structure"), ("87342007", "Fibula")),
    "femoral_cartilage": (("85756007", "Tissue"), ("309312004", "Cartilage")),
    "tibial_cartilage": (("85756007", "Tissue"), ("309312004", "Cartilage")),
    "patellar_cartilage": (("85756007", "Tissue"), ("309312004", "Cartilage")),
    "meniscus": (("91723000", "Anatomical Structure"), ("74135004", "Meniscus")),
    "fluid": (("91720002", "Body Substance"), ("6085005", "Synovial fluid")),
}
#: Said where a SEG was asked for (DICOM output with the tissue head) but highdicom cannot be used.
SEG_UNAVAILABLE: str = (
    "no DICOM SEG: highdicom (pydicom >= 3) is not installed (pip install 'xray2mri[seg]'); "
    "the label map is written as NIfTI"
)


def seg_available() -> bool:
    """Whether highdicom can be imported here (it needs pydicom >= 3)."""
    try:
        import highdicom  # noqa: F401
    except Exception:  # ImportError, or highdicom failing on an older pydicom
        return False
    return True


def _segment_descriptions(version: str) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="xray2mri tissue head (SYNTHETIC)", version=version,
        family=codes.cid7162.ArtificialIntelligence,
    )
    out = []
    for tissue in TISSUE_CLASSES:
        if tissue.index == 0:
            continue
        (cat_value, cat_meaning), (type_value, type_meaning) = SEGMENT_CODES[tissue.name]
        out.append(hd.seg.SegmentDescription(
            segment_number=tissue.index,
            segment_label=f"{tissue.name} (SYNTHETIC)",
            segmented_property_category=hd.sr.CodedConcept(cat_value, "SCT", cat_meaning),
            segmented_property_type=hd.sr.CodedConcept(type_value, "SCT", type_meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        ))
    return out


def write_dicom_seg(labels: np.ndarray, series_folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write ``labels`` (D, H, W) uint8 classes, slice ``i`` on the MR series' ``i``-th file (the order
    :func:`~xray2mri.pipeline.serving.writers.write_dicom_series` writes), as a SEG instance at ``path``,
    atomically; returns ``path``.

    Raises:
        RuntimeError: highdicom is not available (:data:`SEG_UNAVAILABLE`).
        ValueError: the label map and the series disagree in shape, or a value is not a tissue class.
    """
    if not seg_available():
        raise RuntimeError(SEG_UNAVAILABLE)
    import highdicom as hd
    import pydicom

    from xray2mri.pipeline.atomic import atomic_file
    from xray2mri.pipeline.version import package_version

    version = package_version()

    files = sorted(Path(series_folder).glob("*.dcm"))
    sources = [pydicom.dcmread(f) for f in files]
    labels = np.asarray(labels)
    if labels.ndim != 3 or len(sources) != labels.shape[0] or \
            (int(sources[0].Rows), int(sources[0].Columns)) != labels.shape[1:]:
        raise ValueError(f"{series_folder}: label map {labels.shape} does not match the series "
                         f"({len(sources)} slices of {sources[0].Rows}x{sources[0].Columns} if any)")
    if labels.size and int(labels.max()) >= len(TISSUE_CLASSES):
        raise ValueError(f"label value {int(labels.max())} is not a tissue class (0..{len(TISSUE_CLASSES) - 1})")
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=_segment_descriptions(version),
        series_instance_uid=hd.UID(),
        series_number=int(getattr(sources[0], "SeriesNumber", 1) or 1) + 1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="xray2mri",
        manufacturer_model_name="xray2mri tissue head",
        software_versions=version,
        device_serial_number="SYNTHETIC",
        series_description="SYNTHETIC tissue map by xray2mri (not acquired)",
    )
    path = Path(path)
    with atomic_file(path) as tmp:
        seg.save_as(tmp)
    return path
