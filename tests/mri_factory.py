"""Synthetic MRI test volumes written as NIfTI, DICOM series and enhanced multi-frame DICOM.

Everything here is made by the tests in a temporary folder and is marked synthetic where it
is written (NIfTI ``descrip``, DICOM ``ImageType`` DERIVED\\SECONDARY and
``SeriesDescription``). The DICOM writers work with pydicom 3.x and 2.4.

World coordinates are MONAI/nibabel RAS millimetres; DICOM headers are written in LPS as
the standard requires, so the geometry round trip is the one a scanner export goes through.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
SYNTHETIC_DESCRIPTION = "SYNTHETIC test volume (xray2mri tests)"
#: Intensity of the marker block placed in the anterior-superior-right corner.
MARKER_VALUE = 1000.0
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_PYDICOM3 = int(pydicom.__version__.split(".")[0]) >= 3


def marked_volume(
    shape: Sequence[int] = (14, 12, 10),
    spacing: Sequence[float] = (0.8, 1.0, 1.5),
    origin: Sequence[float] = (-5.0, 12.0, 30.0),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A RAS-ordered integer-valued volume and its RAS affine, with a marker block.

    Background voxels are random integers in [0, 200) so any axis swap or flip changes the
    array; a block of ``MARKER_VALUE`` fills the anterior-superior-right corner (the high
    end of each RAS axis), 3 voxels deep on every axis.
    """
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 200, size=tuple(shape)).astype(np.float32)
    data[-3:, -3:, -3:] = MARKER_VALUE
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = origin
    return data, affine


def reorient(data: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels re-laid out in ``axcodes`` (e.g. "LPS", "PIR"), exactly (no interpolation)."""
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes)))
    return apply_orientation(data, transform), affine @ inv_ornt_aff(transform, data.shape)


def sphere_volume(
    shape: Sequence[int], spacing: Sequence[float], radius_mm: float, value: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A ball of ``radius_mm`` centred in the field of view, RAS affine with ``spacing``."""
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)], indexing="ij")
    data = (sum(g**2 for g in grids) <= radius_mm**2).astype(np.float32) * value
    return data, np.diag([*map(float, spacing), 1.0])


def save_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> str:
    """Write ``data`` (float32) with ``affine`` as sform and qform; returns the path."""
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.header["descrip"] = b"SYNTHETIC test volume"
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, os.fspath(path))
    return os.fspath(path)


def _ds(values: Sequence[float]) -> list[str]:
    """DICOM DS strings (16 characters at most) for ``values``."""
    return [f"{float(v):.6g}" for v in values]


def _slice_geometry(affine: np.ndarray) -> tuple[np.ndarray, list[str], list[str], float]:
    """LPS affine, ImageOrientationPatient, PixelSpacing and slice step of a RAS affine.

    Array axis 0 runs along a DICOM row (column index), axis 1 down the columns (row
    index), axis 2 across slices.
    """
    lps = _LPS @ np.asarray(affine, dtype=float)
    col_step, row_step, slice_step = (float(np.linalg.norm(lps[:3, i])) for i in range(3))
    iop = _ds([*(lps[:3, 0] / col_step), *(lps[:3, 1] / row_step)])
    return lps, iop, _ds([row_step, col_step]), slice_step


def _base_dataset(path: str, sop_class: str, series_uid: str, study_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    if not _PYDICOM3:  # pydicom 2.x needs the encoding on the dataset as well
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid])
    ds.Modality = "MR"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesDescription = SYNTHETIC_DESCRIPTION
    ds.PatientName, ds.PatientID = "SYNTHETIC^TEST", "SYN-TEST"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def _save(ds: FileDataset, path: str) -> None:
    if _PYDICOM3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, write_like_original=False)


def _stored(values: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored int16 pixels that give back ``values`` exactly through slope/intercept."""
    stored = np.round((values - intercept) / slope)
    if not np.allclose(stored * slope + intercept, values):
        raise ValueError("values are not representable with this slope/intercept")
    return stored.astype(np.int16)


def write_dicom_series(
    folder: str | os.PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    slopes: Sequence[float] | None = None,
    intercept: float = -50.0,
    series_uid: str | None = None,
    study_uid: str | None = None,
    slice_offsets_mm: Sequence[float] | None = None,
    orientations: Sequence[Sequence[float] | None] | None = None,
    in_plane_shift_mm: float = 0.0,
    echoes: int = 1,
    seed: int = 0,
) -> list[str]:
    """One classic MR image per slice (array axis 2) in ``folder``, shuffled names, no extension.

    Args:
        slopes: RescaleSlope per slice (default 1.0 everywhere); values must be representable.
        slice_offsets_mm: extra displacement of each slice along its normal (non-uniform tests).
        orientations: per-slice ImageOrientationPatient overrides (``None`` keeps the true one).
        in_plane_shift_mm: slice ``k`` moves ``k`` times this along the row direction (a
            sheared stack, as from gantry tilt).
        echoes: images per slice position (>1 makes a 4-D multi-echo series; echo ``e`` holds
            ``data + 10 * e``).

    Returns:
        the file paths, slice by slice (echo-major within a slice).
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    lps, iop, pixel_spacing, slice_step = _slice_geometry(affine)
    normal = lps[:3, 2] / slice_step
    n_slices = data.shape[2]
    slopes = [1.0] * n_slices if slopes is None else list(slopes)
    offsets = [0.0] * n_slices if slice_offsets_mm is None else list(slice_offsets_mm)
    names = [f"{i:08d}" for i in random.Random(seed).sample(range(10**7), n_slices * echoes)]
    paths = []
    for k in range(n_slices):
        for echo in range(echoes):
            path = os.path.join(folder, names[k * echoes + echo])
            ds = _base_dataset(path, MR_IMAGE_STORAGE, series_uid, study_uid)
            ds.InstanceNumber = k * echoes + echo + 1
            ds.EchoNumbers = echo + 1
            position = lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3] + offsets[k] * normal
            position = position + k * in_plane_shift_mm * lps[:3, 0] / np.linalg.norm(lps[:3, 0])
            ds.ImagePositionPatient = _ds(position)
            custom = orientations[k] if orientations is not None else None
            ds.ImageOrientationPatient = iop if custom is None else _ds(custom)
            ds.PixelSpacing = pixel_spacing
            ds.SliceThickness = f"{slice_step:.6g}"
            ds.RescaleSlope, ds.RescaleIntercept = f"{slopes[k]:.6g}", f"{intercept:.6g}"
            pixels = _stored(data[:, :, k].T + 10.0 * echo, slopes[k], intercept)
            ds.Rows, ds.Columns = pixels.shape
            ds.PixelData = pixels.tobytes()
            _save(ds, path)
            paths.append(path)
    return paths


def write_enhanced_mr(
    path: str | os.PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    slope: float = 0.5,
    intercept: float = -100.0,
    volumes: int = 1,
    seed: int = 0,
) -> str:
    """An Enhanced MR Image Storage file holding ``data`` (slices along axis 2) as frames.

    Geometry lives in the functional groups the standard defines: PlaneOrientationSequence,
    PixelMeasuresSequence and PixelValueTransformationSequence shared, PlanePositionSequence
    per frame. Frames are stored in shuffled order; ``volumes`` > 1 repeats the stack in time
    (volume ``t`` holds ``data + 10 * t``), a 4-D acquisition.
    """
    path = os.fspath(path)
    lps, iop, pixel_spacing, slice_step = _slice_geometry(affine)
    n_slices = data.shape[2]
    frames = [(t, k) for t in range(volumes) for k in range(n_slices)]
    random.Random(seed).shuffle(frames)
    ds = _base_dataset(path, ENHANCED_MR_IMAGE_STORAGE, generate_uid(), generate_uid())
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(frames)
    shared = pydicom.Dataset()
    orientation, measures, rescale = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
    orientation.ImageOrientationPatient = iop
    measures.PixelSpacing, measures.SliceThickness = pixel_spacing, f"{slice_step:.6g}"
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = (
        f"{slope:.6g}",
        f"{intercept:.6g}",
        "US",
    )
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PixelValueTransformationSequence = DicomSequence([rescale])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame, pixels = [], []
    for t, k in frames:
        item, position, content = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
        position.ImagePositionPatient = _ds(lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3])
        content.InStackPositionNumber, content.TemporalPositionIndex = k + 1, t + 1
        item.PlanePositionSequence = DicomSequence([position])
        item.FrameContentSequence = DicomSequence([content])
        per_frame.append(item)
        pixels.append(_stored(data[:, :, k].T + 10.0 * t, slope, intercept))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    stack = np.stack(pixels)
    ds.Rows, ds.Columns = stack.shape[1:]
    ds.PixelData = stack.tobytes()
    _save(ds, path)
    return path
