"""Write the knee crops of a datalist as derived DICOM files (``--export-crops DIR``).

The datalist itself needs no copies (the loading chain crops at load time); this is for
people who want files. Each crop keeps the stored pixels of its box (padding outside the
image with the lowest stored value), the pixel spacing tags and the patient of its source,
gets new SOP/Series UIDs, ImageType ``DERIVED\\SECONDARY``, ImageLaterality of its knee, a
DerivationDescription naming the box and a SourceImageSequence pointing at the radiograph.
It is not mirrored: the loading chain mirrors left knees, as for the uncropped files.
Files are named ``DIR/<participant>/<visit>_<side>.dcm`` and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from xray2mri.pipeline.atomic import atomic_file
from xray2mri.pipeline.data.manifests import SPLITS


def export_crop(source: str | os.PathLike, box: list[int], side: str, out: str | os.PathLike,
                flip_columns: bool = False) -> Path:
    """Write the crop ``box`` (``[row_start, col_start, row_end, col_end]``) of a radiograph as DICOM."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array
    r0, c0, r1, c1 = (int(v) for v in box)
    h, w = pixels.shape
    crop = np.full((r1 - r0, c1 - c0), pixels.min(), dtype=pixels.dtype)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        crop[:] = pixels.max()  # the least attenuation is the highest stored value there
    rs, cs = slice(max(r0, 0), min(r1, h)), slice(max(c0, 0), min(c1, w))
    crop[rs.start - r0: rs.stop - r0, cs.start - c0: cs.stop - c0] = pixels[rs, cs]
    if flip_columns:
        crop = crop[:, ::-1]
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.SourceImageSequence = Sequence([ref])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ImageLaterality = side
    ds.DerivationDescription = (f"Knee crop [{r0}, {c0}, {r1}, {c1}] (row/col start, end) of "
                                f"{Path(source).name} by xray2mri" + (", columns flipped" if flip_columns else ""))
    if flip_columns:
        ds.PatientOrientation = ["L", "F"]
    ds.Rows, ds.Columns = crop.shape
    ds.PixelData = np.ascontiguousarray(crop).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for tag in ("WindowCenter", "WindowWidth"):
        if tag in ds:
            del ds[tag]
    out = Path(out)
    with atomic_file(out) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return out


def export_crops(datalist: dict, base_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 splits: Iterable[str] = SPLITS) -> list[Path]:
    """Write every item's crop under ``out_dir``; items without ``crop_box`` are skipped."""
    written = []
    for split in splits:
        for item in datalist.get(split, []):
            if "crop_box" not in item:
                continue
            out = Path(out_dir) / item["subject"] / f"{item.get('visit', 'V')}_{item['side']}.dcm"
            written.append(export_crop(Path(base_dir) / item["xray"], item["crop_box"], item["side"], out,
                                       bool(item.get("crop_flip_columns", False))))
    return written
