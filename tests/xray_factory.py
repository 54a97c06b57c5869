"""Build synthetic DICOM radiographs for the tests, in any transfer syntax, under pydicom 2.4 and 3.

Everything here is made on the fly (tmp_path); files are marked synthetic in
SeriesDescription/ImageComments. Compressed pixel data is encoded with the codec libraries
themselves (openjpeg, CharLS via pyjpegls, GDCM via SimpleITK for JPEG lossless, Pillow for
JPEG baseline) and encapsulated with pydicom, so that decoding can be tested under
pydicom 2.4, which cannot encode most of them.
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

PYDICOM3 = int(pydicom.__version__.split(".")[0]) >= 3

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG2000_LOSSY = "1.2.840.10008.1.2.4.91"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)


def testdata(name: str) -> Path:
    """A file shipped in pydicom's own test data (works where get_testdata_file cannot, e.g. 2.4)."""
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    assert path.is_file(), f"pydicom {pydicom.__version__} does not ship {name}"
    return path


def phantom(rows: int = 48, cols: int = 40, bits: int = 12, seed: int = 0) -> np.ndarray:
    """Unsigned stored values: a smooth background, a bright 'bone' block and noise, all distinct."""
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    y, x = np.mgrid[0:rows, 0:cols]
    img = 0.15 * top + 0.2 * top * (x / max(cols - 1, 1)) + 0.05 * top * (y / max(rows - 1, 1))
    img[rows // 4 : rows // 2, cols // 3 : 2 * cols // 3] += 0.4 * top
    img += rng.normal(0, 0.01 * top, img.shape)
    return np.clip(np.rint(img), 0, top).astype(np.uint16 if bits > 8 else np.uint8)


def disc(rows: int, cols: int, spacing: tuple[float, float], radius_mm: float, bits: int = 12) -> np.ndarray:
    """A bright disc of ``radius_mm`` centred in an image of the given pixel spacing."""
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    dy = (y - (rows - 1) / 2) * spacing[0]
    dx = (x - (cols - 1) / 2) * spacing[1]
    inside = dy**2 + dx**2 <= radius_mm**2
    top = 2**bits - 1
    return np.where(inside, int(0.8 * top), int(0.1 * top)).astype(np.uint16)


def make_radiograph(
    pixels: np.ndarray | None = None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    pixel_spacing: object = None,
    imager_spacing: object = (0.15, 0.15),
    magnification: object = None,
    image_laterality: str | None = None,
    laterality: str | None = None,
    rescale: tuple[float, float] | None = None,
    modality: str = "DX",
    body_part: str = "KNEE",
    view_position: str = "AP",
) -> Dataset:
    """A single-frame greyscale DX dataset (explicit VR little endian) holding ``pixels``."""
    if pixels is None:
        pixels = phantom(bits=bits_stored)
    signed = np.issubdtype(pixels.dtype, np.signedinteger)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "SYNTHETIC"
    ds.Modality = modality
    ds.SeriesDescription = "SYNTHETIC test radiograph"
    ds.ImageComments = "synthetic, made by tests/xray_factory.py"
    if body_part:
        ds.BodyPartExamined = body_part
    if view_position:
        ds.ViewPosition = view_position
    if image_laterality is not None:
        ds.ImageLaterality = image_laterality
    if laterality is not None:
        ds.Laterality = laterality
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_spacing)
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = magnification
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8 * pixels.dtype.itemsize
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
    return ds


def save(ds: Dataset, path: str | os.PathLike, transfer_syntax: str | None = None) -> Path:
    """Write ``ds`` as a DICOM file; an uncompressed ``transfer_syntax`` re-encodes it."""
    ds = copy.deepcopy(ds)
    if transfer_syntax is not None:
        if transfer_syntax not in UNCOMPRESSED:
            raise ValueError("use encode() for compressed syntaxes")
        if transfer_syntax == ExplicitVRBigEndian:
            arr = np.frombuffer(ds.PixelData, dtype=f"<{'u' if not ds.PixelRepresentation else 'i'}{ds.BitsAllocated // 8}")
            ds.PixelData = arr.byteswap().tobytes()
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ts = pydicom.uid.UID(ds.file_meta.TransferSyntaxUID)
    if PYDICOM3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian = ts != ExplicitVRBigEndian
        ds.is_implicit_VR = ts == ImplicitVRLittleEndian
        ds.save_as(path, write_like_original=False)
    return Path(path)


def _stored(ds: Dataset) -> np.ndarray:
    dtype = f"<{'i' if ds.PixelRepresentation else 'u'}{ds.BitsAllocated // 8}"
    return np.frombuffer(ds.PixelData, dtype=dtype).reshape(ds.Rows, ds.Columns)


def _jpeg_lossless_sv1(arr: np.ndarray, tmp: Path) -> bytes:
    """A JPEG lossless (process 14, SV1) codestream, encoded by GDCM through SimpleITK."""
    import SimpleITK as sitk

    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(tmp))
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")
    writer.Execute(sitk.GetImageFromArray(arr))
    written = pydicom.dcmread(tmp)
    assert written.file_meta.TransferSyntaxUID == JPEG_LOSSLESS_SV1, written.file_meta.TransferSyntaxUID
    if PYDICOM3:
        from pydicom.encaps import generate_frames

        return next(generate_frames(written.PixelData, number_of_frames=1))
    from pydicom.encaps import generate_pixel_data_frame

    return next(generate_pixel_data_frame(written.PixelData, 1))


def encode(ds: Dataset, transfer_syntax: str, tmp_dir: str | os.PathLike) -> Dataset:
    """A copy of ``ds`` with its pixel data compressed in ``transfer_syntax``."""
    out = copy.deepcopy(ds)
    arr = _stored(ds)
    if transfer_syntax == RLELossless:
        out.compress(RLELossless, arr)
        return out
    if transfer_syntax in (JPEG2000_LOSSLESS, JPEG2000_LOSSY):
        import openjpeg

        ratios = None if transfer_syntax == JPEG2000_LOSSLESS else [5]
        frame = openjpeg.encode(arr, bits_stored=ds.BitsStored, photometric_interpretation=2, compression_ratios=ratios)
    elif transfer_syntax in (JPEG_LS_LOSSLESS, JPEG_LS_NEAR):
        import jpeg_ls

        frame = bytes(jpeg_ls.encode_array(arr, lossy_error=0 if transfer_syntax == JPEG_LS_LOSSLESS else 3))
    elif transfer_syntax == JPEG_LOSSLESS_SV1:
        frame = _jpeg_lossless_sv1(arr, Path(tmp_dir) / f"gdcm_{generate_uid()}.dcm")
    elif transfer_syntax == JPEG_BASELINE:
        from PIL import Image

        if ds.BitsAllocated != 8:
            raise ValueError("JPEG baseline holds 8-bit data only")
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format="JPEG", quality=95)
        frame = buf.getvalue()
    else:
        raise ValueError(f"no encoder for {transfer_syntax}")
    out.PixelData = encapsulate([frame])
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = True
    out.file_meta.TransferSyntaxUID = transfer_syntax
    if transfer_syntax in (JPEG2000_LOSSY, JPEG_LS_NEAR, JPEG_BASELINE):
        out.LossyImageCompression = "01"
    return out


# --- anatomy-like test images for the knee finder (values: more attenuation = higher) ------------


def _chord(x: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """Path length through a cylinder of ``half_width`` at lateral offset ``x`` (0 outside)."""
    return 2.0 * np.sqrt(np.clip(np.asarray(half_width, dtype=float) ** 2 - x**2, 0.0, None))


#: Share of the condyles' path the beam crosses through the intercondylar notch of
#: :func:`knee_attenuation` (the notch takes the back 70-80 % of the distal femur's depth at its middle).
NOTCH_PATH: float = 0.2


def knee_attenuation(
    rows: int, cols: int, spacing: float, centre: tuple[float, float], side: str = "R", seed: int = 0,
    fibula: bool = True, limb_lift: float = 0.0, tilt_mm: float = 0.0, collapsed: str | None = None,
    step_mm: float = 0.0, notch_mm: float = 0.0, jsw_mm: float = 5.0, jsw_fill: float = 0.0,
) -> np.ndarray:
    """An analytic AP knee (float, more attenuation = higher): soft tissue, femur, tibia, fibula.

    The joint centre (the middle of the 5 mm joint space) is at ``centre`` (row, col, pixels);
    the fibula (unless ``fibula`` is False: a knee symmetric about its centre column) is lateral:
    on the image's left for a right knee (the patient faces the viewer). ``limb_lift`` brightens
    the soft tissue of thigh and calf from 30 mm off the joint line on (full at 80 mm), as thicker
    limbs and a real radiograph's processing (unsharp masking, LUTs) do: at 2.5 the soft tissue
    beside the shafts is as bright as the knee's bone. ``tilt_mm`` tilts the joint space about the
    centre: the image-right compartment's joint line lies ``tilt_mm`` higher than the image-left one's
    (a tilted plateau, varus/valgus, a rotated or flexed knee); the centre stays where it is.
    ``step_mm`` sets each compartment's joint line level but the image-right one ``step_mm`` higher,
    the step at the notch (plateaus of different heights seen with the knee rotated or tilted).
    ``collapsed`` (``"image-left"`` or ``"image-right"``) closes that compartment's joint space:
    femur on tibia with a 4 mm sclerotic line along the contact (KL 4), the other compartment open,
    ``jsw_mm`` wide (5 mm; KL 4 narrows it too: 1-3 mm). ``jsw_fill`` is the share of the bone's path
    left in the open joint space (0: none): the beam crosses it a little obliquely (the plateau's
    posterior slope), through the rims of the plateau, so a narrow joint space is a faint band.
    ``notch_mm`` (0: none) gives the femur an intercondylar notch that wide at its base (an adult's
    is 18-22 mm), an arch 0.65 times as tall, through which the beam crosses only the trochlea in
    front of it (:data:`NOTCH_PATH` of the condyles' path), and the tibia two spines (the
    intercondylar eminence) 4.5 mm either side of the centre per 20 mm of notch, rising 7 mm from
    the plateau into the notch, a third of the plateau's path thick (narrow front to back): above
    the spines, the notch's dark arch lies a few mm above the joint line, in the joint's middle.
    """
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    y = (y - centre[0]) * spacing  # mm, + inferior
    x = (x - centre[1]) * spacing  # mm, + towards the image's right
    soft = _chord(x, 60.0 + 10.0 * np.clip(-y / 150.0, 0.0, 1.0))
    femur_hw = 15.0 + 23.0 * np.clip((y + 70.0) / 40.0, 0.0, 1.0)
    gap = -tilt_mm * np.clip(x / 50.0, -0.5, 0.5)  # the joint line's height (mm, + inferior) across the knee
    gap -= 0.5 * step_mm * np.sign(x)
    closed = np.zeros_like(x, dtype=bool) if collapsed is None else (x < 0) == (collapsed == "image-left")
    half_gap = np.where(closed, 0.0, jsw_mm / 2)
    femur = np.where(y < gap - half_gap, _chord(x, femur_hw), 0.0)
    tibia_hw = 14.0 + 22.0 * np.clip((70.0 - y) / 45.0, 0.0, 1.0)
    tibia = np.where(np.where(closed, y >= gap, y > gap + half_gap), _chord(x, tibia_hw), 0.0)
    tibia += 20.0 * (closed & (np.abs(y - gap) < 2.0) & (np.abs(x) < tibia_hw))  # subchondral sclerosis
    tibia += jsw_fill * np.where(~closed & (np.abs(y - gap) <= half_gap), _chord(x, tibia_hw), 0.0)
    if notch_mm > 0:
        up = np.clip(-y / (0.65 * notch_mm), 0.0, None)  # height above the joint line, in the arch's heights
        arch = np.abs(x) < 0.5 * notch_mm * np.sqrt(np.clip(1.0 - up**2, 0.0, None))
        femur = np.where(arch, NOTCH_PATH * femur, femur)
        spines = 7.0 * sum(np.exp(-(((x - s * 0.225 * notch_mm) / (0.12 * notch_mm)) ** 2)) for s in (-1.0, 1.0))
        eminence = (y <= gap + half_gap) & (y >= gap + half_gap - spines) & (spines > 0.5)
        tibia = np.maximum(tibia, np.where(eminence, _chord(x, tibia_hw) / 3.0, 0.0))
    lateral = -1.0 if side == "R" else 1.0
    fibula_path = np.where((y > 15.0) & (y < 200.0), _chord(x - lateral * (tibia_hw + 8.0), 6.0), 0.0)
    bone = femur + tibia + (fibula_path if fibula else 0.0)
    rng = np.random.default_rng(seed)
    lift = limb_lift * np.clip((np.abs(y) - 30.0) / 50.0, 0.0, 1.0) * np.clip(soft / 60.0, 0.0, 1.0)
    return 1.0 + 0.02 * soft + 0.05 * bone + lift + rng.normal(0.0, 0.03, soft.shape)


def chest_attenuation(rows: int, cols: int, spacing: float, seed: int = 0) -> np.ndarray:
    """A chest-like PA view: a wide torso, darker lungs, a spine and horizontal ribs."""
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    y = (y - rows / 2) * spacing
    x = (x - cols / 2) * spacing
    torso = _chord(x, 170.0) * (np.abs(y) < 0.48 * rows * spacing)
    lungs = sum(_chord(x - s * 75.0, 60.0) * (np.abs(y + 20.0) < 110.0) for s in (-1, 1))
    spine = _chord(x, 18.0)
    ribs = np.zeros_like(x)
    for k in range(10):
        centre_row = -130.0 + 26.0 * k + 0.08 * x**2 / 10.0
        ribs += 12.0 * (np.abs(y - centre_row) < 5.0) * (np.abs(x) < 150.0)
    rng = np.random.default_rng(seed)
    return 1.0 + 0.02 * torso - 0.015 * lungs + 0.05 * (spine + ribs) + rng.normal(0.0, 0.03, x.shape)


def hand_attenuation(rows: int, cols: int, spacing: float, seed: int = 0) -> np.ndarray:
    """A hand-like PA view: a palm and five fingers, each with thin bones separated by joint gaps."""
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    y = y * spacing  # mm from the top (finger tips)
    x = (x - cols / 2) * spacing
    soft = np.zeros_like(x)
    bone = np.zeros_like(x)
    for k, offset in enumerate((-40.0, -20.0, 0.0, 20.0, 40.0)):
        top = 20.0 + 8.0 * abs(k - 2)
        finger = (y > top) & (y < 130.0)
        soft += _chord(x - offset, 9.0) * finger
        for start in np.arange(top + 5.0, 200.0, 28.0):
            bone += _chord(x - offset * (1 - 0.3 * (start > 130)), 5.0) * ((y > start) & (y < start + 24.0))
    soft += 30.0 * ((np.abs(x) < 50.0) & (y >= 130.0))  # a flat palm, 30 mm thick
    rng = np.random.default_rng(seed)
    return 1.0 + 0.02 * soft + 0.05 * bone + rng.normal(0.0, 0.03, x.shape)


def to_stored(attenuation: np.ndarray, bits: int = 12) -> np.ndarray:
    """Scale float values to unsigned ``bits``-bit stored values (the full range used)."""
    a = np.asarray(attenuation, dtype=float)
    top = 2**bits - 1
    scaled = (a - a.min()) / max(float(a.max() - a.min()), 1e-12) * (0.9 * top) + 0.05 * top
    return np.rint(scaled).astype(np.uint16)


def add_ruler(
    image: np.ndarray, spacing: float, col: float, width_mm: float = 20.0, tilt_deg: float = 0.0,
    level: float = 4.0, ticks: float = 3.0,
) -> np.ndarray:
    """``image`` with a calibration ruler laid along its columns (a copy; values: more attenuation = higher).

    The ruler (a standing or long-leg view's, radiopaque) is a strip ``width_mm`` wide centred on
    column ``col`` at the middle row, tilted ``tilt_deg`` from the columns (its foot towards the image's
    right when positive), running the image's whole height: ``level`` more attenuation than what lies
    under it (4: as much as the knee's bone of :func:`knee_attenuation`), and metal ticks ``ticks``
    more still: 1 mm lines every 10 mm across half its width, every 50 mm across all of it.
    """
    rows, cols = image.shape
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    along = (y - (rows - 1) / 2) * spacing  # mm along the ruler (+ down)
    across = (x - col) * spacing - np.tan(np.radians(tilt_deg)) * along  # mm across it (+ towards the image's right)
    inside = np.abs(across) <= width_mm / 2
    mark = np.mod(along, 10.0) < 1.0
    long_mark = np.mod(along, 50.0) < 1.0
    tick = inside & mark & ((across < 0) | long_mark)
    return image + level * inside + ticks * tick
