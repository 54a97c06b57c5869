"""The one DICOM MR series writer: a volume with its RAS affine -> one MR Image file per slice, atomically.

Two callers, two kinds of series: :func:`xray2mri.pipeline.serving.writers.write_dicom_series`
writes a *generated* volume (pseudonymised identity, SYNTHETIC marks), and the synthetic OAI
tree (:mod:`xray2mri.pipeline.data.oai.synth_tree`) writes a sagittal DESS-like series as an
OAI release stores it. What they share lives here: the MR Image Storage file meta, the UIDs,
the slice geometry from the affine, the pixel module and the atomic folder; each caller
brings its own header attributes (identity, descriptions, marks).

Geometry: slices run along array axis 0; DICOM rows are array axis 1, columns array axis 2.
The affine maps voxel indices to RAS millimetres (MONAI/nibabel); DICOM patient coordinates
are LPS, so x and y are negated for ImagePositionPatient and ImageOrientationPatient.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xray2mri.pipeline.atomic import atomic_folder

__all__ = ["MR_IMAGE_STORAGE", "slice_geometry", "write_mr_series"]

#: SOP Class UID of MR Image Storage (one image per file).
MR_IMAGE_STORAGE: str = "1.2.840.10008.5.1.4.1.1.4"
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def slice_geometry(affine: np.ndarray) -> tuple[list[float], list[float], float, np.ndarray, np.ndarray]:
    """DICOM geometry for slices along array axis 0 of a volume with RAS ``affine``.

    Returns (ImageOrientationPatient, PixelSpacing, slice step mm, LPS origin, LPS slice step vector).
    The row direction cosine is the direction of increasing column index (array axis 2).
    """
    lin = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    step_vec, col_vec, row_vec = lin[:, 0], lin[:, 1], lin[:, 2]  # axis 0, axis 1 (rows), axis 2 (columns)
    row_sp, col_sp, slice_sp = (float(np.linalg.norm(v)) for v in (col_vec, row_vec, step_vec))
    iop = [*(row_vec / col_sp), *(col_vec / row_sp)]
    origin = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)[:3, 3]
    return [round(float(v), 6) + 0.0 for v in iop], [row_sp, col_sp], slice_sp, origin, step_vec


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _default_file_name(index: int) -> str:
    return f"MR{index + 1:06d}.dcm"


def write_mr_series(
    stored: np.ndarray,
    affine: np.ndarray,
    folder: str | os.PathLike,
    attributes: Mapping[str, Any],
    *,
    rescale_slope: float = 1.0,
    uid_seed: str | None = None,
    file_name: Callable[[int], str] = _default_file_name,
) -> Path:
    """Write ``stored`` (D, H, W) unsigned 16-bit values as an MR series, one file per slice along axis 0.

    Args:
        stored: the stored pixel values (cast to uint16); a reader gets ``stored * rescale_slope``.
        affine: 4x4 voxel -> RAS mm affine of ``stored``; gives ImagePositionPatient,
            ImageOrientationPatient, PixelSpacing, SliceThickness, SpacingBetweenSlices, SliceLocation.
        folder: the series folder to create; replaced whole if it exists (atomic).
        attributes: header attributes (pydicom keywords) every slice carries: identity, dates,
            descriptions, SeriesNumber, ImageType, the caller's marks.
        rescale_slope: RescaleSlope (RescaleIntercept is 0).
        uid_seed: None gives new random Study/Series/Frame of Reference/SOP UIDs; a string gives
            the same UIDs on every run (derived from the seed).
        file_name: the file name of slice ``k`` (0-based); default ``MR000001.dcm`` ...

    Returns:
        the series folder.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    def uid(*parts: object) -> str:
        return generate_uid() if uid_seed is None else generate_uid(entropy_srcs=[str(p) for p in (uid_seed, *parts)])

    pixels = np.asarray(stored).astype(np.uint16, copy=False)
    if pixels.ndim != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {pixels.shape}")
    iop, pixel_spacing, slice_step, origin, step_vec = slice_geometry(affine)
    normal = np.cross(iop[:3], iop[3:])
    study_uid, series_uid, frame_uid = uid("study"), uid("series"), uid("frame")
    with atomic_folder(folder) as tmp:
        for k in range(pixels.shape[0]):
            ds = Dataset()
            sop_uid = uid("sop", k)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            for keyword, value in attributes.items():
                setattr(ds, keyword, copy.deepcopy(value))  # sequences must not be shared between files
            ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, sop_uid
            ds.Modality = "MR"
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
            ds.InstanceNumber = k + 1
            position = origin + k * step_vec
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = [_ds(v) for v in iop]
            ds.SliceLocation = _ds(float(np.dot(position, normal)))
            ds.SliceThickness = _ds(slice_step)
            ds.SpacingBetweenSlices = _ds(slice_step)
            ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = _ds(rescale_slope)
            ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
            ds.save_as(tmp / file_name(k), enforce_file_format=True)
    return Path(folder)
