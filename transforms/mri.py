"""3-D MRI in: NIfTI, DICOM series folders and enhanced multi-frame DICOM -> canonical volume.

``LoadMri`` returns a float32 ``MetaTensor`` of shape (1, D, H, W) laid out in the geometry
contract's axis codes (``geometry.MRI_AXCODES``: A->P, S->I, R->L) with its affine in MONAI's
RAS world convention, so MONAI's spatial transforms (and their inverses) keep working.
``PreprocessMri`` resamples it to the network's spacing, scales intensities to [0, 1] and
centre crops/pads it to the network's shape. ``ClassFractions`` turns a class map into the
per-class fractions of each voxel of a grid a whole number of times coarser (a partial-volume
target).

The readers underneath are MONAI's ``NibabelReader`` (NIfTI) and SimpleITK's
``ImageSeriesReader`` (pixel decoding and per-slice RescaleSlope/Intercept of a series). What
they get wrong or leave unchecked is done here from the DICOM headers with pydicom (2.4 and
3.x): choosing one series out of a folder; refusing missing slices, non-uniform spacing and
mixed orientations (given a series with a missing slice, SimpleITK only prints a warning and
MONAI's PydicomReader says nothing; both return a stack with an averaged, wrong slice step);
4-D series; and enhanced multi-frame geometry, which lives in per-frame functional groups.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.image_reader import NibabelReader
from monai.transforms import (
    MapTransform,
    Orientation,
    ResizeWithPadOrCrop,
    ScaleIntensityRangePercentiles,
    Spacing,
    Transform,
)
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, TransformBackends, ensure_tuple, ensure_tuple_rep
from pydicom.errors import InvalidDicomError

from .errors import MriInputError
from .geometry import MRI_AXCODES

#: One SimpleITK DICOM series read at a time: its GDCM reader crashes now and then when threads read
#: concurrently (SimpleITK issues #805, #1466), as MONAI's CacheDataset does when it fills its cache
#: (a segmentation fault of the OAI training test once in two full runs here).
_SITK_SERIES_LOCK = threading.Lock()

__all__ = ["LoadMri", "LoadMrid", "PreprocessMri", "PreprocessMrid", "ClassFractions", "ClassFractionsd"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: DICOM patient coordinates (LPS) <-> MONAI/nibabel world coordinates (RAS).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: (start, end) labels of the RAS world axes, as nibabel and MONAI name them.
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
#: Images closer than this along the slice normal share one slice position (mm).
_SAME_POSITION_MM = 1e-3
_DICOMDIR_UID = "1.2.840.10008.1.3.10"


@dataclass
class _Plane:
    """Geometry of one DICOM image or frame, as its headers state it (LPS, mm)."""

    key: Any  # the file path (series) or frame number (enhanced)
    order: tuple[int, ...]  # orders images sharing one position (the volume_index axis)
    position: np.ndarray  # ImagePositionPatient
    orientation: np.ndarray  # ImageOrientationPatient (row direction, column direction)
    pixel_spacing: np.ndarray  # PixelSpacing (between rows, between columns)
    size: tuple[int, int]  # (Rows, Columns)


class LoadMri(Transform):
    """Load a 3-D MRI volume as a float32 ``MetaTensor`` (1, D, H, W) in the contract's orientation.

    Accepted inputs:

    - a NIfTI file (``.nii`` / ``.nii.gz``), read with MONAI's ``NibabelReader``;
    - a folder holding a DICOM series, one image per slice (file names need no extension, as
      in OAI exports); other files in the folder are ignored;
    - an enhanced multi-frame DICOM file (e.g. Enhanced MR Image Storage).

    DICOM pixels go through RescaleSlope/Intercept. Geometry comes from ImagePositionPatient,
    ImageOrientationPatient and PixelSpacing (per image, or per frame in the functional
    groups); the slice step is measured from the positions, never taken from SliceThickness.

    Every refusal raises :class:`~xray2mri.transforms.errors.MriInputError` naming the file or
    folder and the reason: 4-D input without ``volume_index``, NaN/inf voxels, a folder with
    several series and no ``series_uid``, missing slices or non-uniform spacing, mixed
    orientations, single 2-D images, multi-frame files whose frames state no geometry (no
    per-frame functional groups), unreadable files.

    Args:
        volume_index: which volume of a 4-D input to take: the NIfTI 4th axis, or the n-th
            image at each slice position of a multi-echo/temporal DICOM (series: by
            InstanceNumber; enhanced: by TemporalPositionIndex, then frame number).
            ``None`` refuses 4-D input; 0 also accepts a 3-D volume.
        series_uid: the SeriesInstanceUID to load from a folder that holds several series.
        axcodes: output axis codes; the geometry contract's ``MRI_AXCODES`` unless a caller
            has a reason to differ.
        spacing_tolerance: largest accepted deviation of a slice step from the mean step, as
            a fraction of it (0.01 = 1 %); beyond it the slices are refused as non-uniform.

    Example::

        volume = LoadMri()("knee_dess/")        # DICOM series folder
        volume.shape                             # torch.Size([1, D, H, W]); D runs A->P
    """

    def __init__(
        self,
        volume_index: int | None = None,
        series_uid: str | None = None,
        axcodes: str = MRI_AXCODES,
        spacing_tolerance: float = 0.01,
    ) -> None:
        if volume_index is not None and volume_index < 0:
            raise ValueError(f"volume_index must be >= 0, got {volume_index}")
        if spacing_tolerance <= 0:
            raise ValueError(f"spacing_tolerance must be > 0, got {spacing_tolerance}")
        self.volume_index = volume_index
        self.series_uid = series_uid
        self.spacing_tolerance = spacing_tolerance
        self.orientation = Orientation(axcodes=axcodes, labels=_RAS_LABELS)

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        path = os.fspath(filename)
        if os.path.isdir(path):
            data, affine, meta = self._read_series(path)
        elif not os.path.isfile(path):
            raise MriInputError(path, "no such file or folder")
        elif path.lower().endswith(NIFTI_SUFFIXES):
            data, affine, meta = self._read_nifti(path)
        else:
            data, affine, meta = self._read_dicom_file(path)
        _check_volume(path, data, affine)
        meta.update(
            {
                ImageMetaKey.FILENAME_OR_OBJ: path,
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(data.shape),
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
            }
        )
        tensor = torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32))[None]
        image = MetaTensor(tensor, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)
        return self.orientation(image)

    # -- NIfTI -----------------------------------------------------------------------------
    def _read_nifti(self, path: str) -> tuple[np.ndarray, np.ndarray, dict]:
        reader = NibabelReader()
        try:
            data, header = reader.get_data(reader.read(path))
        except Exception as err:  # nibabel raises many types for corrupt files
            raise MriInputError(path, f"cannot be read as NIfTI: {err}") from err
        data = np.asarray(data)
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim == 4:
            data = data[..., self._pick(path, data.shape[-1], "volumes along the 4th axis")]
        elif data.ndim == 3 and self.volume_index:
            self._pick(path, 1, "volume")
        elif data.ndim != 3:
            raise MriInputError(
                path, f"expected a 3-D volume (or 4-D with volume_index), got shape {data.shape}"
            )
        return data, np.asarray(header[MetaKeys.AFFINE], dtype=np.float64), {"source_format": "nifti"}

    def _pick(self, path: str, count: int, what: str) -> int:
        """The checked ``volume_index`` among ``count`` volumes."""
        if self.volume_index is None:
            raise MriInputError(
                path, f"4-D input with {count} {what}; choose one with volume_index=0..{count - 1}"
            )
        if self.volume_index >= count:
            raise MriInputError(path, f"volume_index={self.volume_index} but the input has {count} {what}")
        return self.volume_index

    # -- DICOM series folder ---------------------------------------------------------------
    def _read_series(self, folder: str) -> tuple[np.ndarray, np.ndarray, dict]:
        series: dict[str, list[tuple[str, pydicom.Dataset]]] = {}
        for name in sorted(os.listdir(folder)):
            file = os.path.join(folder, name)
            if not os.path.isfile(file):
                continue
            try:
                ds = pydicom.dcmread(file, stop_before_pixels=True)
            except (InvalidDicomError, EOFError):  # not DICOM (README, thumbnails, empty files): skip
                continue
            except Exception as err:  # a DICOM file whose header pydicom cannot parse
                raise MriInputError(file, f"unreadable DICOM header: {err}") from err
            if "Rows" in ds and ds.get("SOPClassUID", "") != _DICOMDIR_UID:
                series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((file, ds))
        uid = self._choose_series(folder, series)
        planes = []
        for file, ds in series[uid]:
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                raise MriInputError(
                    file, "a multi-frame image inside a series folder; load that file on its own"
                )
            planes.append(_plane(file, file, ds, (int(ds.get("InstanceNumber", 0) or 0),), ds))
        ordered, affine = _stack(folder, planes, self.volume_index, self.spacing_tolerance)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([plane.key for plane in ordered])
        reader.SetOutputPixelType(sitk.sitkFloat32)  # RescaleSlope/Intercept applied per file
        try:
            with _SITK_SERIES_LOCK:  # GDCM is not thread-safe; MONAI's CacheDataset loads in threads
                image = reader.Execute()
        except RuntimeError as err:
            raise MriInputError(folder, f"SimpleITK cannot decode the series {uid}: {err}") from err
        data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (slice, row, col) -> (col, row, slice)
        return data, affine, {"source_format": "dicom_series", "series_uid": uid}

    def _choose_series(self, folder: str, series: dict[str, list]) -> str:
        if not series:
            raise MriInputError(folder, "no DICOM images found in this folder")
        if self.series_uid is not None:
            if self.series_uid not in series:
                raise MriInputError(folder, f"no series {self.series_uid!r} here; found {_describe(series)}")
            return self.series_uid
        if len(series) > 1:
            raise MriInputError(
                folder, f"holds {len(series)} series ({_describe(series)}); choose one with series_uid"
            )
        return next(iter(series))

    # -- enhanced multi-frame DICOM --------------------------------------------------------
    def _read_dicom_file(self, path: str) -> tuple[np.ndarray, np.ndarray, dict]:
        try:
            ds = pydicom.dcmread(path)
        except Exception as err:  # InvalidDicomError, EOFError, struct/value errors of truncated files
            raise MriInputError(
                path, f"not a NIfTI ({'/'.join(NIFTI_SUFFIXES)}) or DICOM file: {err}"
            ) from err
        if "PixelData" not in ds:
            raise MriInputError(path, "DICOM file without pixel data")
        if "PerFrameFunctionalGroupsSequence" not in ds:
            n_frames = int(ds.get("NumberOfFrames", 1) or 1)
            if n_frames > 1:
                raise MriInputError(
                    path,
                    f"a multi-frame DICOM of {n_frames} frames without PerFrameFunctionalGroupsSequence: its "
                    "frames state no position or orientation, so the slices cannot be placed; export it as "
                    "an enhanced MR (per-frame functional groups), a series folder (one file per slice) or NIfTI",
                )
            raise MriInputError(
                path,
                "a single-frame DICOM image is one slice, not a volume; pass the folder holding the series",
            )
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise MriInputError(path, f"colour image ({ds.PhotometricInterpretation}); MRI must be greyscale")
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if len(ds.PerFrameFunctionalGroupsSequence) != n_frames:
            raise MriInputError(path, "PerFrameFunctionalGroupsSequence does not have one item per frame")
        try:
            planes = []
            for i in range(n_frames):
                groups = _frame_groups(ds, i)
                planes.append(_plane(path, i, groups, _frame_order(groups, i), ds))
            ordered, affine = _stack(path, planes, self.volume_index, self.spacing_tolerance)
            pixels = ds.pixel_array.reshape(n_frames, *planes[0].size)
        except MriInputError:
            raise
        except Exception as err:  # pydicom decoding / malformed attribute errors
            raise MriInputError(path, f"cannot read the frames: {err}") from err
        frames = []
        for plane in ordered:
            slope, intercept = _rescale(_frame_groups(ds, plane.key), ds)
            frames.append(pixels[plane.key].astype(np.float64) * slope + intercept)
        data = np.stack(frames, axis=-1).transpose(1, 0, 2)  # (row, col, slice) -> (col, row, slice)
        meta = {"source_format": "dicom_enhanced", "series_uid": str(ds.get("SeriesInstanceUID", ""))}
        return data.astype(np.float32), affine, meta


class LoadMrid(MapTransform):
    """Dictionary wrapper of :class:`LoadMri`: loads each of ``keys`` (a path) in place.

    Args:
        keys: keys of the items holding MRI paths.
        volume_index, series_uid, axcodes, spacing_tolerance: see :class:`LoadMri`.
        allow_missing_keys: don't raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        volume_index: int | None = None,
        series_uid: str | None = None,
        axcodes: str = MRI_AXCODES,
        spacing_tolerance: float = 0.01,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMri(volume_index, series_uid, axcodes, spacing_tolerance)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class PreprocessMri(Transform):
    """Resample to ``spacing`` mm, scale robust percentiles to [0, 1], centre crop/pad to ``shape``.

    Input: a (1, D, H, W) ``MetaTensor`` with its affine (as :class:`LoadMri` returns); the
    output keeps meta and affine (updated by each step) and MONAI's applied-operation trace,
    so ``Invertd`` can map network outputs back.

    Args:
        spacing: target voxel size in mm, one value or one per axis.
        shape: target (D, H, W) in voxels, one value or one per axis.
        lower, upper: percentiles mapped to 0 and 1; values outside are clipped.
        is_label: a label map: nearest-neighbour resampling and no intensity scaling, so the
            values stay the same integer labels.
    """

    def __init__(
        self,
        spacing: float | Sequence[float],
        shape: int | Sequence[int],
        lower: float = 0.5,
        upper: float = 99.5,
        is_label: bool = False,
    ) -> None:
        self.spacing = tuple(float(s) for s in ensure_tuple_rep(spacing, 3))
        self.shape = tuple(int(s) for s in ensure_tuple_rep(shape, 3))
        if min(self.spacing) <= 0 or min(self.shape) <= 0:
            raise ValueError(f"spacing and shape must be positive, got {self.spacing} and {self.shape}")
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        self.is_label = is_label
        self.resample = Spacing(pixdim=self.spacing, mode="nearest" if is_label else "bilinear")
        self.scale = None if is_label else ScaleIntensityRangePercentiles(lower, upper, 0.0, 1.0, clip=True)
        self.crop_pad = ResizeWithPadOrCrop(self.shape)

    def __call__(self, img: MetaTensor) -> MetaTensor:
        if img.ndim != 4 or img.shape[0] != 1:
            raise ValueError(f"expected a (1, D, H, W) volume, got shape {tuple(img.shape)}")
        img = self.resample(img)
        if self.scale is not None:
            img = self.scale(img)
        return self.crop_pad(img)


class PreprocessMrid(MapTransform):
    """Dictionary wrapper of :class:`PreprocessMri`; keys in ``label_keys`` are label maps.

    Image and label map of one item come out on the same grid (same spacing, shape and
    affine), since both start from the same affine and go through the same steps.

    Args:
        keys: keys of all volumes to preprocess (images and label maps).
        spacing, shape, lower, upper: see :class:`PreprocessMri`.
        label_keys: the subset of ``keys`` that hold label maps.
        allow_missing_keys: don't raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing: float | Sequence[float],
        shape: int | Sequence[int],
        lower: float = 0.5,
        upper: float = 99.5,
        label_keys: KeysCollection = (),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = set(ensure_tuple(label_keys))
        if not self.label_keys <= set(self.keys):
            raise ValueError(
                f"label_keys {sorted(self.label_keys - set(self.keys))} are not among keys {self.keys}"
            )
        self.image = PreprocessMri(spacing, shape, lower, upper, is_label=False)
        self.label = PreprocessMri(spacing, shape, lower, upper, is_label=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = (self.label if key in self.label_keys else self.image)(d[key])
        return d


class ClassFractions(Transform):
    """Class map (1, D*f0, H*f1, W*f2) -> float32 fractions (num_classes, D, H, W) of each coarse voxel.

    Why: the joint-region tissue head is trained on the partial-volume fraction of each tissue
    class in each of its voxels, computed from a label map ``factors`` times finer.

    Each output voxel holds, per class, the fraction of its ``f0*f1*f2`` input voxels that carry
    that class (one-hot, then a block mean), so the fractions of a voxel sum to 1. A ``MetaTensor``
    input gives a ``MetaTensor`` whose affine is the coarse grid's: voxel size times the factors,
    each coarse voxel centred on the mean of its block's centres (the origin moves by
    ``(f - 1) / 2`` input voxels along each axis); its meta is kept, its transform trace is not
    (the block mean is not invertible). A tensor gives a tensor, an ndarray an ndarray.

    Args:
        num_classes: number of classes; input values must be the integers 0..num_classes-1.
        factors: how many input voxels make one output voxel along each spatial axis (3 ints >= 1).

    Raises:
        ValueError: input not (1, D, H, W), a spatial axis not divisible by its factor, or values
            outside 0..num_classes-1 (or not integers).

    Example::

        rows = torch.tensor([0, 0, 0, 2]).reshape(1, 1, 4, 1)       # one 4-row block
        ClassFractions(num_classes=3, factors=(1, 4, 1))(rows)[:, 0, 0, 0]  # tensor([0.75, 0., 0.25])
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, num_classes: int, factors: Sequence[int]) -> None:
        factors = tuple(ensure_tuple(factors))
        if len(factors) != 3 or not all(isinstance(f, (int, np.integer)) and f >= 1 for f in factors):
            raise ValueError(f"factors must be 3 positive integers, got {factors}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.factors = tuple(int(f) for f in factors)

    def __call__(self, img: Any) -> Any:
        labels = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        shape = tuple(labels.shape)
        if labels.ndim != 4 or shape[0] != 1:
            raise ValueError(f"ClassFractions expects a (1, D, H, W) class map, got shape {shape}")
        if any(n % f for n, f in zip(shape[1:], self.factors)):
            raise ValueError(f"ClassFractions: the class map's spatial shape {shape[1:]} is not divisible by "
                             f"the factors {self.factors}")
        index = labels[0].long()
        if (index != labels[0]).any() or index.min() < 0 or index.max() >= self.num_classes:
            values = torch.unique(labels).tolist()
            shown = values if len(values) <= 12 else [*values[:12], "..."]
            raise ValueError(f"ClassFractions: the class map of shape {shape} holds values {shown}; expected "
                             f"integer classes 0..{self.num_classes - 1}")
        classes = torch.arange(self.num_classes, device=index.device)
        one_hot = (index[None] == classes[:, None, None, None]).to(torch.float32)  # (C, D*f0, H*f1, W*f2)
        fractions = F.avg_pool3d(one_hot, kernel_size=self.factors, stride=self.factors)
        if isinstance(img, MetaTensor):
            fine = img.affine.to(torch.float64)
            steps = torch.as_tensor(self.factors, dtype=torch.float64)
            coarse = fine.clone()
            coarse[:3, :3] = fine[:3, :3] * steps
            coarse[:3, 3] = fine[:3, :3] @ ((steps - 1.0) / 2.0) + fine[:3, 3]
            meta = {k: v for k, v in img.meta.items() if k != MetaKeys.AFFINE}
            return MetaTensor(fractions, affine=coarse, meta=meta)
        return fractions.numpy() if isinstance(img, np.ndarray) else fractions


class ClassFractionsd(MapTransform):
    """Dictionary wrapper of :class:`ClassFractions`: each of ``keys`` (a class map) becomes its fractions.

    Args:
        keys: keys of the items holding class maps.
        num_classes, factors: see :class:`ClassFractions`.
        allow_missing_keys: don't raise if a key is absent.
    """

    backend = ClassFractions.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        factors: Sequence[int],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fractions = ClassFractions(num_classes, factors)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.fractions(d[key])
        return d


# -- helpers --------------------------------------------------------------------------------
def _describe(series: dict[str, list]) -> str:
    """'uid (description, n images); ...' for an error message."""
    parts = []
    for uid, items in series.items():
        description = str(items[0][1].get("SeriesDescription", "")).strip() or "no description"
        parts.append(f"{uid or '<no SeriesInstanceUID>'} ({description}, {len(items)} images)")
    return "; ".join(parts)


def _frame_groups(ds: pydicom.Dataset, index: int) -> dict[str, pydicom.Dataset]:
    """Functional group macros of frame ``index``: per-frame items override shared ones."""
    groups: dict[str, pydicom.Dataset] = {}
    for container in (
        ds.get("SharedFunctionalGroupsSequence"),
        ds.PerFrameFunctionalGroupsSequence[index : index + 1],
    ):
        for item in container or []:
            for element in item:
                if element.VR == "SQ" and len(element.value):
                    groups[element.keyword] = element.value[0]
    return groups


def _frame_order(groups: dict[str, pydicom.Dataset], index: int) -> tuple[int, int]:
    """(TemporalPositionIndex, frame number): how frames at one slice position are ordered."""
    content = groups.get("FrameContentSequence")
    temporal = content.get("TemporalPositionIndex") if content is not None else None
    return (int(temporal) if temporal is not None else 0, index)


def _plane(source: str, key: Any, groups: Any, order: tuple[int, ...], ds: pydicom.Dataset) -> _Plane:
    """A ``_Plane`` from a classic image (``groups`` is the dataset) or a frame's groups."""

    def find(group: str, attribute: str) -> Any:
        item = groups.get(group) if isinstance(groups, dict) else groups
        value = None if item is None else item.get(attribute)
        if value is None:
            where = f" in {group}" if isinstance(groups, dict) else ""
            raise MriInputError(source, f"{attribute} missing{where}; cannot place the slice in space")
        return value

    position = find("PlanePositionSequence", "ImagePositionPatient")
    orientation = find("PlaneOrientationSequence", "ImageOrientationPatient")
    pixel_spacing = find("PixelMeasuresSequence", "PixelSpacing")
    try:
        plane = _Plane(
            key=key,
            order=order,
            position=np.array(position, dtype=np.float64),
            orientation=np.array(orientation, dtype=np.float64),
            pixel_spacing=np.array(pixel_spacing, dtype=np.float64),
            size=(int(ds.Rows), int(ds.Columns)),
        )
    except (TypeError, ValueError) as err:
        raise MriInputError(source, f"malformed geometry attributes: {err}") from err
    if plane.position.shape != (3,) or plane.orientation.shape != (6,) or plane.pixel_spacing.shape != (2,):
        raise MriInputError(
            source, "ImagePositionPatient/ImageOrientationPatient/PixelSpacing have the wrong length"
        )
    return plane


def _rescale(groups: dict[str, pydicom.Dataset], ds: pydicom.Dataset) -> tuple[float, float]:
    """RescaleSlope/Intercept of one frame (functional group, else the top level, else 1/0)."""
    item = groups.get("PixelValueTransformationSequence", ds)
    return float(item.get("RescaleSlope", 1.0) or 1.0), float(item.get("RescaleIntercept", 0.0) or 0.0)


def _stack(
    source: str, planes: list[_Plane], volume_index: int | None, tolerance: float
) -> tuple[list[_Plane], np.ndarray]:
    """Order ``planes`` into one regular stack and its RAS affine, or refuse with the reason.

    The stack's third axis runs along the slice normal (row x column direction); array axis
    0 follows the rows (column index), axis 1 the columns (row index), as NIfTI and ITK do.
    """
    first = planes[0]
    for plane in planes[1:]:
        if not np.allclose(plane.orientation, first.orientation, atol=1e-4):
            raise MriInputError(
                source, "images with different ImageOrientationPatient (a localizer or several stacks?)"
            )
        if plane.size != first.size or not np.allclose(plane.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise MriInputError(source, "images with different sizes or PixelSpacing in one stack")
    row, col = first.orientation[:3], first.orientation[3:]
    if (
        not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1, atol=1e-3))
        or abs(row @ col) > 1e-3
    ):
        raise MriInputError(
            source,
            f"ImageOrientationPatient {first.orientation.tolist()} is not two unit, orthogonal vectors",
        )
    normal = np.cross(row, col)
    planes = sorted(planes, key=lambda p: (float(p.position @ normal), p.order))
    groups: list[list[_Plane]] = []
    for plane in planes:
        if groups and (plane.position - groups[-1][0].position) @ normal < _SAME_POSITION_MM:
            groups[-1].append(plane)
        else:
            groups.append([plane])
    counts = sorted({len(g) for g in groups})
    if len(counts) > 1:
        raise MriInputError(
            source, f"{counts[0]} to {counts[-1]} images per slice position: missing or repeated images"
        )
    per_position = counts[0]
    if per_position > 1 or volume_index:
        if volume_index is None:
            raise MriInputError(
                source,
                f"{per_position} images at each slice position (multi-echo or temporal series, i.e. 4-D); "
                f"choose one with volume_index=0..{per_position - 1}",
            )
        if volume_index >= per_position:
            raise MriInputError(
                source, f"volume_index={volume_index} but there are {per_position} images per slice position"
            )
    ordered = [sorted(g, key=lambda p: p.order)[volume_index or 0] for g in groups]
    if len(ordered) < 2:
        raise MriInputError(source, "a single slice is not a 3-D volume")
    positions = np.stack([p.position for p in ordered])
    steps = np.diff(positions @ normal)
    step = (positions[-1] - positions[0]) @ normal / (len(ordered) - 1)
    worst = int(np.argmax(np.abs(steps - step)))
    if abs(steps[worst] - step) > max(tolerance * step, _SAME_POSITION_MM):
        raise MriInputError(
            source,
            f"non-uniform slice spacing: {steps[worst]:.4g} mm between slices {worst} and {worst + 1}, "
            f"{step:.4g} mm on average (missing slices or a variable-spacing acquisition)",
        )
    drift = positions - positions[0] - np.outer(positions @ normal - positions[0] @ normal, normal)
    if np.abs(drift).max() > max(tolerance * step, _SAME_POSITION_MM):
        raise MriInputError(
            source, "slice positions do not follow the slice normal (gantry tilt or sheared stack)"
        )
    lps = np.eye(4)
    lps[:3, 0] = row * first.pixel_spacing[1]
    lps[:3, 1] = col * first.pixel_spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = positions[0]
    return ordered, _LPS_TO_RAS @ lps


def _check_volume(source: str, data: np.ndarray, affine: np.ndarray) -> None:
    """Refuse degenerate shapes, non-finite voxels and a singular affine."""
    if min(data.shape) < 2:
        raise MriInputError(
            source, f"shape {data.shape} has an axis with fewer than 2 voxels; not a 3-D volume"
        )
    finite = np.isfinite(data)
    if not finite.all():
        raise MriInputError(source, f"{int((~finite).sum())} voxels are NaN or infinite")
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MriInputError(source, f"the affine is singular or not finite:\n{affine}")
