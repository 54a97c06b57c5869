"""DICOM radiographs -> float images with physical spacing, and their preprocessing chain.

:class:`LoadXray` reads one greyscale DICOM radiograph (DX, CR, or any single-frame
MONOCHROME image) in any transfer syntax pydicom decodes with the installed plugins and
returns a float32 ``MetaTensor`` of shape ``(1, rows, cols)`` in which more attenuation is
always the higher value (MONOCHROME1 is inverted), with its pixel spacing in millimetres
found the way a radiologist's viewer finds it, never a silent 1.0 mm.

:class:`PreprocessXray` then brings it to the network's grid: resample to a target spacing
(with area anti-aliasing when shrinking), centre crop/pad to a target size, robust
percentile normalisation to [0, 1].

Both work with pydicom 3.x and 2.4 (MONAI Label pins 2.4); the few API differences live in
the ``_dicom_*`` helpers below.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import (
    CenterSpatialCrop,
    MapTransform,
    ScaleIntensityRange,
    Spacing,
    SpatialPad,
    Transform,
    Zoom,
)
from monai.utils import ensure_tuple_rep
from pydicom.errors import InvalidDicomError

from .errors import XrayInputError
from .laterality import MirrorToCanonicalSided, dicom_laterality
from .overlays import erase_burned_in

__all__ = [
    "DEFAULT_FALLBACK_SPACING_MM",
    "XraySpacingWarning",
    "LoadXray",
    "LoadXrayd",
    "PreprocessXray",
    "PreprocessXrayd",
    "anatomy_values",
]

#: Pixel spacing (mm) assumed when a radiograph states none; a typical DX/CR detector pitch.
DEFAULT_FALLBACK_SPACING_MM: float = 0.2

_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")

# --- pydicom 2.4 / 3.x compatibility: the only version-dependent code of this module -------
try:  # pydicom >= 3
    from pydicom.pixels import apply_voi_lut as _apply_voi_lut
    from pydicom.pixels import pixel_array as _pixels_pixel_array
except ImportError:  # pydicom 2.4
    from pydicom.pixel_data_handlers.util import apply_voi_lut as _apply_voi_lut

    _pixels_pixel_array = None


def _dicom_frame(ds: pydicom.Dataset, frame: int | None, n_frames: int) -> np.ndarray:
    """The stored values of one frame (rows, cols); pydicom 3 decodes that frame only."""
    if n_frames > 1 and _pixels_pixel_array is not None:
        return _pixels_pixel_array(ds, index=frame)
    arr = ds.pixel_array
    return arr[frame or 0] if n_frames > 1 else arr


# ------------------------------------------------------------------------------------------


class XraySpacingWarning(UserWarning):
    """A radiograph states no usable pixel spacing; the configured fallback is used."""


def _numbers(ds: pydicom.Dataset, keyword: str) -> tuple[list[float] | None, str]:
    """The finite numbers of a DS element, or (None, why) when absent, empty or not numeric."""
    if keyword not in ds:
        return None, "absent"
    try:
        value = ds[keyword].value
        values = [float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value])]
    except Exception:  # noqa: BLE001 - invalid DS strings raise various errors across versions
        return None, f"not numeric ({_raw_text(ds, keyword)!r})"
    if not values or value in ("", None):
        return None, "empty"
    if not all(math.isfinite(v) for v in values):
        return None, f"not finite ({values})"
    return values, ""


def _raw_text(ds: pydicom.Dataset, keyword: str) -> str:
    try:
        raw = ds.get_item(keyword).value
        return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    except Exception:  # noqa: BLE001
        return "?"


def spacing_from_header(ds: pydicom.Dataset) -> tuple[tuple[float, float] | None, str, float, list[str]]:
    """(row, col) spacing in mm at the object plane, its source, the magnification used, problems."""
    problems = []
    ps, why = _numbers(ds, "PixelSpacing")
    if ps is not None and len(ps) == 2 and min(ps) > 0:
        return (ps[0], ps[1]), "PixelSpacing", 1.0, problems
    problems.append(f"PixelSpacing {why or ps}")
    ips, why = _numbers(ds, "ImagerPixelSpacing")
    if ips is not None and len(ips) == 2 and min(ips) > 0:
        mag, mwhy = _numbers(ds, "EstimatedRadiographicMagnificationFactor")
        if mag is not None and len(mag) == 1 and mag[0] > 0:
            return (ips[0] / mag[0], ips[1] / mag[0]), "ImagerPixelSpacing", mag[0], problems
        if mwhy != "absent":
            warnings.warn(
                f"EstimatedRadiographicMagnificationFactor {mwhy or mag} ignored; ImagerPixelSpacing used as is",
                XraySpacingWarning,
                stacklevel=3,
            )
        return (ips[0], ips[1]), "ImagerPixelSpacing", 1.0, problems
    problems.append(f"ImagerPixelSpacing {why or ips}")
    return None, "fallback", 1.0, problems


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    try:
        return str(ds.get(keyword, "") or "").strip()
    except Exception:  # noqa: BLE001
        return ""


def _stored_range(ds: pydicom.Dataset) -> tuple[int, int]:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _little_endian(ds: pydicom.Dataset) -> bool:
    encoding = getattr(ds, "original_encoding", None)  # pydicom 3: (implicit VR, little endian)
    if encoding is not None and encoding[1] is not None:
        return bool(encoding[1])
    return bool(getattr(ds, "is_little_endian", True) is not False)


def _lut_table(ds: pydicom.Dataset) -> tuple[np.ndarray, int]:
    """The first Modality LUT Sequence item as (table, first stored value mapped).

    Written here rather than taken from pydicom, whose ``apply_modality_lut`` rejects the
    12-bit entries (LUTDescriptor[2] == 12) that radiograph LUTs commonly declare.
    """
    item = ds.ModalityLUTSequence[0]
    entries, first, _bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 2**16
    if int(ds.get("PixelRepresentation", 0)) == 1 and first >= 2**15:
        first -= 2**16  # the first mapped value is signed for signed pixels (US/SS ambiguity)
    data = item["LUTData"].value
    if isinstance(data, (bytes, bytearray)):
        table = np.frombuffer(data, dtype="<u2" if _little_endian(ds) else ">u2")
    else:
        table = np.asarray(data if isinstance(data, (list, tuple, pydicom.multival.MultiValue)) else [data])
    if table.size < entries:
        raise ValueError(f"LUTData has {table.size} entries, LUTDescriptor says {entries}")
    return table[:entries].astype(np.float32), first


def _affine_float32(arr: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """``scale * arr + offset`` as float32: one conversion, then in-place arithmetic."""
    out = arr.astype(np.float32)
    if scale == -1.0:
        np.subtract(np.float32(offset), out, out=out)
        return out
    if scale != 1.0:
        out *= np.float32(scale)
    if offset != 0.0:
        out += np.float32(offset)
    return out


def _modality_lut(
    arr: np.ndarray, ds: pydicom.Dataset, filename: str, invert: bool = False
) -> tuple[np.ndarray, float, float]:
    """Stored values -> float32 modality values, and the output range of the stored bit depth.

    ``invert`` also mirrors the values within that range (MONOCHROME1), folded into the
    same pass for a linear rescale.
    """
    lo, hi = _stored_range(ds)
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        try:
            table, first = _lut_table(ds)
        except Exception as exc:  # noqa: BLE001
            raise XrayInputError(filename, f"unusable Modality LUT Sequence ({_short(exc)})") from exc
        index = np.clip(arr.astype(np.int64) - first, 0, table.size - 1)
        out, lo_out, hi_out = table[index], float(table.min()), float(table.max())
        if invert:
            np.subtract(np.float32(lo_out + hi_out), out, out=out)
        return out, lo_out, hi_out
    slope_v, _ = _numbers(ds, "RescaleSlope")
    icpt_v, _ = _numbers(ds, "RescaleIntercept")
    slope = slope_v[0] if slope_v else 1.0
    intercept = icpt_v[0] if icpt_v else 0.0
    a, b = lo * slope + intercept, hi * slope + intercept
    lo_out, hi_out = min(a, b), max(a, b)
    if invert:  # (lo + hi) - (slope * s + intercept)
        return _affine_float32(arr, -slope, lo_out + hi_out - intercept), lo_out, hi_out
    return _affine_float32(arr, slope, intercept), lo_out, hi_out


def _voi_lut(arr: np.ndarray, ds: pydicom.Dataset, lo: float, hi: float) -> tuple[np.ndarray, float, float, bool]:
    """The first VOI LUT (sequence preferred) or window, and its output range; unchanged if none."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        out = np.asarray(_apply_voi_lut(arr, ds, index=0, prefer_lut=True), dtype=np.float32)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return out, 0.0, float(2**bits - 1), True
    centre, _ = _numbers(ds, "WindowCenter")
    width, _ = _numbers(ds, "WindowWidth")
    if centre and width:
        out = np.asarray(_apply_voi_lut(arr, ds, index=0, prefer_lut=False), dtype=np.float32)
        # pydicom's windowing maps onto the modality range of the stored bit depth
        return out, lo, hi, True
    return arr, lo, hi, False


def _padding_mask(stored: np.ndarray, ds: pydicom.Dataset, filename: str) -> np.ndarray | None:
    """Pixels that PixelPaddingValue (up to PixelPaddingRangeLimit) marks as outside the image, or None.

    Compared on the stored values, before any LUT, as the standard defines them; US/SS values
    read without their VR resolved (raw bytes) are decoded with the dataset's pixel representation.
    """

    def number(keyword: str) -> int | None:
        if keyword not in ds:
            return None
        value = ds[keyword].value
        if isinstance(value, (bytes, bytearray)):
            if len(value) != 2:
                raise XrayInputError(filename, f"{keyword} of {len(value)} bytes (expected 2)")
            signed = int(ds.get("PixelRepresentation", 0)) == 1
            return int.from_bytes(value, "little" if _little_endian(ds) else "big", signed=signed)
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0] if len(value) else None
        return None if value is None or value == "" else int(value)

    pad = number("PixelPaddingValue")
    if pad is None:
        return None
    limit = number("PixelPaddingRangeLimit")
    if limit is None:
        mask = stored == pad
    else:
        mask = (stored >= min(pad, limit)) & (stored <= max(pad, limit))
    return mask if mask.any() else None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class LoadXray(Transform):
    """Load one greyscale DICOM radiograph as a float32 ``MetaTensor`` ``(1, rows, cols)``.

    What it does, in order: reads the file (refusing what is not a usable greyscale image),
    decodes the pixel data (any transfer syntax pydicom handles with the installed plugins:
    little/big endian, deflated, RLE, JPEG baseline/extended/lossless, JPEG 2000, JPEG-LS),
    applies the Modality LUT (RescaleSlope/Intercept or a Modality LUT Sequence), optionally
    the first VOI LUT or window, and inverts MONOCHROME1 (and MONOCHROME2 with Presentation
    LUT Shape INVERSE) over the LUT's output range of the stored bit depth, so that more
    attenuation is always the higher value and the same anatomy stored either way loads to
    the same array. Pixels marked by PixelPaddingValue (and PixelPaddingRangeLimit) are set
    to the least-attenuating value of the rest, so that padding outside the exposed field
    cannot pose as bone or shift the intensity normalisation.

    Spacing (row, col) in mm comes from PixelSpacing, else ImagerPixelSpacing divided by
    EstimatedRadiographicMagnificationFactor when present, else ``fallback_spacing`` with an
    :class:`XraySpacingWarning` naming the file.

    Meta of the output: ``filename_or_obj``, ``spacing``, ``spacing_source``
    ("PixelSpacing", "ImagerPixelSpacing" or "fallback"), ``magnification``, ``laterality``
    ("L", "R" or None), ``photometric`` and ``presentation_lut_shape`` (as stored), ``inverted``,
    ``padding_pixels`` (how many were padding), ``modality``, ``body_part``,
    ``view_position``, ``patient_orientation`` (e.g. ``"L\\F"``) (empty strings when absent),
    ``transfer_syntax``, ``bits_stored``,
    ``frame``, ``voi_lut_applied``, ``spatial_shape``, ``original_channel_dim`` and an
    ``affine`` ``diag(row_spacing, col_spacing, 1, 1)`` that MONAI's ``Spacing`` uses.

    Args:
        fallback_spacing: spacing (mm; one number or (row, col)) for files that state none,
            or None to refuse such files.
        apply_voi_lut: also apply the first VOI LUT Sequence item or window (pydicom's rules).
        frame: the frame to load from a multi-frame file (0-based); multi-frame files are
            refused without it.

    Raises:
        XrayInputError: the file is missing, not DICOM, truncated, colour/palette, has no
            pixel data, is multi-frame without ``frame`` (or ``frame`` is out of range),
            cannot be decoded, or states no spacing while ``fallback_spacing`` is None.

    Example::

        xray = LoadXray(fallback_spacing=0.15)("knee.dcm")
        xray.shape, xray.meta["spacing"], xray.meta["laterality"]
    """

    def __init__(
        self,
        fallback_spacing: float | Sequence[float] | None = DEFAULT_FALLBACK_SPACING_MM,
        apply_voi_lut: bool = False,
        frame: int | None = None,
    ) -> None:
        if fallback_spacing is not None:
            fallback_spacing = tuple(float(s) for s in ensure_tuple_rep(fallback_spacing, 2))
            if not all(math.isfinite(s) and s > 0 for s in fallback_spacing):
                raise ValueError(f"fallback_spacing must be positive mm, got {fallback_spacing}")
        if frame is not None and int(frame) < 0:
            raise ValueError(f"frame must be >= 0, got {frame}")
        self.fallback_spacing = fallback_spacing
        self.apply_voi_lut = apply_voi_lut
        self.frame = None if frame is None else int(frame)

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        filename = os.fspath(filename)
        ds = self._read(filename)
        self._check_header(ds, filename)
        n_frames = self._n_frames(ds, filename)
        frame = self.frame
        if n_frames > 1 and frame is None:
            raise XrayInputError(
                filename, f"multi-frame image ({n_frames} frames); choose one with frame=0..{n_frames - 1}"
            )
        if frame is not None and frame >= n_frames:
            raise XrayInputError(filename, f"frame {frame} out of range: the file has {n_frames} frame(s)")
        try:
            stored = _dicom_frame(ds, frame, n_frames)
        except Exception as exc:  # noqa: BLE001 - decoders raise anything; the user needs the reason
            ts = self._transfer_syntax(ds)
            raise XrayInputError(filename, f"cannot decode the pixel data ({ts}): {_short(exc)}") from exc
        if stored.ndim != 2:
            raise XrayInputError(filename, f"expected one greyscale frame, decoded shape {stored.shape}")

        # MONOCHROME1 (the lowest value is white) or MONOCHROME2 with an INVERSE Presentation
        # LUT (as some CR/DX systems store unprocessed-polarity data): invert over the LUT output
        # range so that bone is high. Without a VOI step the inversion is folded into the modality LUT.
        photometric = _text(ds, "PhotometricInterpretation").upper()
        presentation = _text(ds, "PresentationLUTShape").upper()
        invert = photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and presentation == "INVERSE")
        padding = _padding_mask(stored, ds, filename)
        values, lo, hi = _modality_lut(stored, ds, filename, invert=invert and not self.apply_voi_lut)
        del stored
        voi_applied = False
        if self.apply_voi_lut:
            try:
                values, lo, hi, voi_applied = _voi_lut(values, ds, lo, hi)
            except Exception as exc:  # noqa: BLE001
                raise XrayInputError(filename, f"unusable VOI LUT/window ({_short(exc)})") from exc
            if invert:
                np.subtract(np.float32(lo + hi), values, out=values)
        n_padding = 0
        if padding is not None:
            n_padding = int(padding.sum())
            if n_padding == padding.size:
                raise XrayInputError(filename, "every pixel is padding (PixelPaddingValue): no image")
            # padding is "no image": give it the least-attenuating value of the image itself
            values[padding] = values[~padding].min()

        spacing, source, magnification, problems = spacing_from_header(ds)
        if spacing is None:
            if self.fallback_spacing is None:
                raise XrayInputError(filename, "no usable pixel spacing (" + "; ".join(problems) + ")")
            spacing = self.fallback_spacing
            warnings.warn(
                f"{filename}: no usable pixel spacing ({'; '.join(problems)}); "
                f"using the fallback {spacing[0]:g} x {spacing[1]:g} mm",
                XraySpacingWarning,
                stacklevel=2,
            )

        affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
        meta = {
            "filename_or_obj": filename,
            "spacing": (float(spacing[0]), float(spacing[1])),
            "spacing_source": source,
            "magnification": float(magnification),
            "laterality": dicom_laterality(ds),
            "photometric": photometric,
            "presentation_lut_shape": presentation,
            "inverted": bool(invert),
            "padding_pixels": n_padding,
            "modality": _text(ds, "Modality"),
            "body_part": _text(ds, "BodyPartExamined"),
            "view_position": _text(ds, "ViewPosition"),
            "patient_orientation": "\\".join(str(v) for v in (ds.get("PatientOrientation") or [])),
            "transfer_syntax": self._transfer_syntax(ds),
            "bits_stored": int(ds.BitsStored),
            "frame": frame or 0,
            "voi_lut_applied": voi_applied,
            "spatial_shape": np.asarray(values.shape),
            "original_channel_dim": "no_channel",
            "original_affine": affine.copy(),
        }
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(values)[None]), affine=affine, meta=meta)

    @staticmethod
    def _read(filename: str) -> pydicom.Dataset:
        if not os.path.exists(filename):
            raise XrayInputError(filename, "no such file")
        if not os.path.isfile(filename):
            raise XrayInputError(filename, "not a file (a folder?); give one DICOM radiograph")
        try:
            return pydicom.dcmread(filename)
        except InvalidDicomError as exc:
            # files written without the 128-byte preamble are still DICOM: accept them only
            # when they parse to an image, so that random files are not taken for one
            try:
                ds = pydicom.dcmread(filename, force=True)
                if "PixelData" in ds and "Rows" in ds and "Columns" in ds:
                    return ds
            except Exception:  # noqa: BLE001
                pass
            raise XrayInputError(filename, "not a DICOM file (no DICM header)") from exc
        except Exception as exc:  # noqa: BLE001 - truncated/corrupt files raise many types
            raise XrayInputError(filename, f"unreadable DICOM (truncated or corrupt?): {_short(exc)}") from exc

    @staticmethod
    def _check_header(ds: pydicom.Dataset, filename: str) -> None:
        if "PixelData" not in ds:
            other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
            what = f"only {other[0]}, which radiographs do not use" if other else "no pixel data"
            modality = _text(ds, "Modality")
            raise XrayInputError(
                filename, f"{what} (Modality {modality or 'unknown'}): not an image, or a truncated file"
            )
        try:
            samples = int(ds.get("SamplesPerPixel", 1))
            photometric = _text(ds, "PhotometricInterpretation").upper()
            for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored"):
                int(ds[keyword].value)
        except Exception as exc:  # noqa: BLE001
            raise XrayInputError(filename, f"incomplete image header ({_short(exc)})") from exc
        if samples != 1 or photometric not in _GREYSCALE:
            raise XrayInputError(
                filename,
                f"colour or palette image (PhotometricInterpretation {photometric or 'absent'}, "
                f"SamplesPerPixel {samples}); a radiograph must be MONOCHROME1 or MONOCHROME2",
            )

    @staticmethod
    def _n_frames(ds: pydicom.Dataset, filename: str) -> int:
        try:
            return max(1, int(ds.get("NumberOfFrames", 1) or 1))
        except Exception as exc:  # noqa: BLE001
            raise XrayInputError(filename, f"invalid NumberOfFrames ({_raw_text(ds, 'NumberOfFrames')!r})") from exc

    @staticmethod
    def _transfer_syntax(ds: pydicom.Dataset) -> str:
        meta = getattr(ds, "file_meta", None)
        uid = meta.get("TransferSyntaxUID") if meta is not None else None
        return str(uid) if uid else ""


class LoadXrayd(MapTransform):
    """Dictionary version of :class:`LoadXray`: replaces file paths under ``keys`` by images.

    Args:
        keys: keys holding radiograph paths.
        fallback_spacing, apply_voi_lut, frame: as :class:`LoadXray`.
        mirror_to_canonical: then mirror left knees to the canonical side
            (:class:`~.laterality.MirrorToCanonicalSided` on ``keys``; side from
            ``data[side_key]`` else the laterality of the first key). To keep an MRI and
            labels paired with the radiograph, apply ``MirrorToCanonicalSided`` to all of
            them after loading instead.
        side_key: item key holding the side ("L"/"R"), used when mirroring.
        allow_missing_keys: do not fail when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        fallback_spacing: float | Sequence[float] | None = DEFAULT_FALLBACK_SPACING_MM,
        apply_voi_lut: bool = False,
        frame: int | None = None,
        mirror_to_canonical: bool = False,
        side_key: str = "side",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadXray(fallback_spacing=fallback_spacing, apply_voi_lut=apply_voi_lut, frame=frame)
        self.mirror = (
            MirrorToCanonicalSided(keys, side_key=side_key, allow_missing_keys=allow_missing_keys)
            if mirror_to_canonical
            else None
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return self.mirror(d) if self.mirror is not None else d


#: Smallest share of a field's pixels at its brightest value that makes a burned-in plateau (fewer: a hot pixel).
PLATEAU_SHARE: float = 0.002


def anatomy_values(values: np.ndarray) -> np.ndarray:
    """The pixel values that set a radiograph's grey scale: all of them, less a plateau at the brightest value.

    Markers, text and collimation are burned in at (or saturate to) the brightest stored value; a
    plateau of them covering a percent of the field moves the upper percentile from the bone to
    the marker and darkens the whole knee. Pixels within 0.1 % of the range of the maximum are left
    out when they are at least :data:`PLATEAU_SHARE` of the field (and never more than half of it).
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    top, bottom = float(flat.max()), float(flat.min())
    below = flat < top - 1e-3 * (top - bottom)
    if PLATEAU_SHARE * flat.size <= flat.size - int(below.sum()) <= 0.5 * flat.size:
        return flat[below]
    return flat


class PreprocessXray(Transform):
    """Bring a loaded radiograph to the network grid: spacing, field of view, intensity.

    Steps (MONAI transforms; the affine follows every geometric step):

    1. centre crop the source to the target field of view plus a margin of a few target
       pixels (``CenterSpatialCrop``), so that the later steps only touch what is kept;
    2. when shrinking by a factor of 2 or more, area-average by the integer part of the
       factor (``Zoom(mode="area")``) so that noise and fine lines do not alias;
    3. resample to ``spacing`` mm (``Spacing``, bilinear): the physical extent is kept;
    4. centre crop to at most ``size`` pixels (``CenterSpatialCrop``);
    5. paint over burned-in overlays (side markers, text: :func:`~.overlays.erase_burned_in`) with
       their surroundings, so that the network never sees them;
    6. optionally ``log1p`` of the intensities above their minimum (compresses the range);
    7. map the ``lower``/``upper`` percentiles of the field of view to 0/1, clipped
       (``ScaleIntensityRange``; the percentiles by one ``numpy.percentile`` call), leaving out a
       plateau at the brightest value (a burned-in marker or text, a collimation band:
       :func:`anatomy_values`), so that it cannot set the bone's grey scale;
    8. centre pad to ``size`` with 0 (the least-attenuation value) (``SpatialPad``).

    The output meta ``spacing`` is the new spacing; everything else is kept.

    Args:
        spacing: target (row, col) spacing in mm, or one number for both.
        size: target (rows, cols) in pixels, or one number for both.
        lower, upper: percentiles mapped to 0 and 1.
        log: apply the log step 6.
        anti_alias: apply step 2.
        erase_overlays: apply step 5.

    Example::

        prep = PreprocessXray(spacing=0.5, size=280)   # a 140 mm square at 0.5 mm
        net_input = prep(LoadXray()("knee.dcm"))       # (1, 280, 280) in [0, 1]
    """

    #: source pixels kept around the target field of view before resampling, in target pixels
    margin: int = 2

    def __init__(
        self,
        spacing: float | Sequence[float],
        size: int | Sequence[int],
        lower: float = 1.0,
        upper: float = 99.0,
        log: bool = False,
        anti_alias: bool = True,
        erase_overlays: bool = True,
    ) -> None:
        self.spacing = tuple(float(s) for s in ensure_tuple_rep(spacing, 2))
        self.size = tuple(int(s) for s in ensure_tuple_rep(size, 2))
        if not all(s > 0 for s in self.spacing) or not all(s > 0 for s in self.size):
            raise ValueError(f"spacing and size must be positive, got {spacing}, {size}")
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower, self.upper = float(lower), float(upper)
        self.log = log
        self.anti_alias = anti_alias
        self.erase_overlays = erase_overlays
        self.resample = Spacing(pixdim=self.spacing, mode="bilinear", padding_mode="border", dtype=torch.float32)
        self.crop = CenterSpatialCrop(roi_size=self.size)
        self.pad = SpatialPad(spatial_size=self.size, method="symmetric", value=0.0)

    def __call__(self, img: MetaTensor) -> MetaTensor:
        if not isinstance(img, MetaTensor) or img.ndim != 3:
            raise TypeError(
                "PreprocessXray needs the (1, H, W) MetaTensor of LoadXray (its affine carries the spacing), "
                f"got {type(img).__name__} of shape {tuple(getattr(img, 'shape', ()))}"
            )
        current = [float(c) for c in affine_to_spacing(img.affine, r=2)]
        ratio = [t / c for t, c in zip(self.spacing, current)]
        fov = [math.ceil((n + 2 * self.margin) * r) for n, r in zip(self.size, ratio)]
        img = CenterSpatialCrop(roi_size=fov)(img)
        if self.anti_alias:
            factor = [max(1, math.floor(r + 1e-6)) for r in ratio]
            if max(factor) > 1:
                img = Zoom(zoom=[1.0 / f for f in factor], mode="area", keep_size=False)(img)
        img = self.resample(img)
        img = self.crop(img)
        if self.erase_overlays:
            pixels = img.detach().cpu().numpy()[0]
            erased = erase_burned_in(pixels, self.spacing)
            if erased is not pixels:
                img = img.clone()
                img[0] = torch.as_tensor(erased, dtype=img.dtype, device=img.device)
        if self.log:
            img = torch.log1p(img - img.min())
        lo, hi = np.percentile(anatomy_values(img.detach().cpu().numpy()), [self.lower, self.upper])
        img = ScaleIntensityRange(float(lo), float(hi), 0.0, 1.0, clip=True, dtype=torch.float32)(img)
        img = self.pad(img)
        img.meta["spacing"] = self.spacing
        return img


class PreprocessXrayd(MapTransform):
    """Dictionary version of :class:`PreprocessXray` for the images under ``keys``."""

    def __init__(
        self,
        keys: KeysCollection,
        spacing: float | Sequence[float],
        size: int | Sequence[int],
        lower: float = 1.0,
        upper: float = 99.0,
        log: bool = False,
        anti_alias: bool = True,
        erase_overlays: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.preprocess = PreprocessXray(spacing, size, lower=lower, upper=upper, log=log, anti_alias=anti_alias,
                                         erase_overlays=erase_overlays)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.preprocess(d[key])
        return d
