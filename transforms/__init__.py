"""MONAI transforms for knee radiographs (DICOM) and 3-D MRI volumes, array + dictionary pairs."""

from .errors import InputError, MriInputError, XrayInputError
from .geometry import CANONICAL_SIDE, MRI_AXCODES

__all__ = ["InputError", "XrayInputError", "MriInputError", "CANONICAL_SIDE", "MRI_AXCODES"]
