"""Write a canonical ("PIL") volume as NIfTI in another acquisition orientation, affine exact.

Real knee MRI arrives in whatever orientation the scanner stored (the OAI DESS is sagittal);
the synthetic cohort writes each subject in a different axis order so that the loader's
reorientation to the canonical layout is exercised. The array is only permuted and flipped
(no resampling), so reorienting it back gives the canonical array exactly.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from xray2mri.pipeline.atomic import atomic_file
from xray2mri.transforms.geometry import MRI_AXCODES

__all__ = ["ACQUISITION_AXCODES", "write_volume"]

#: Acquisition orientations the cohort cycles through (sagittal, axial and coronal storage orders).
ACQUISITION_AXCODES: tuple[str, ...] = ("PIL", "RAS", "LPS", "ASR", "SAL", "IRP")


def write_volume(
    path: str | os.PathLike,
    canonical: np.ndarray,
    affine: np.ndarray,
    axcodes: str,
    description: str,
) -> None:
    """Store ``canonical`` (a "PIL" array with RAS ``affine``) re-laid out as ``axcodes``.

    The header's ``descrip`` carries ``description`` (say SYNTHETIC there); written to a
    temporary name, then renamed.
    """
    transform = ornt_transform(axcodes2ornt(MRI_AXCODES), axcodes2ornt(axcodes))
    data = apply_orientation(canonical, transform)
    new_affine = affine @ inv_ornt_aff(transform, canonical.shape)
    img = nib.Nifti1Image(np.ascontiguousarray(data), new_affine)
    img.header["descrip"] = description.encode("ascii")[:79]
    img.set_qform(new_affine, code=1)
    img.set_sform(new_affine, code=1)
    img.header.set_xyzt_units("mm")
    with atomic_file(path) as tmp:
        nib.save(img, tmp)
