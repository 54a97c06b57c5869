"""MONAI transforms for knee radiographs (DICOM) and 3-D MRI volumes, array + dictionary pairs."""

from .augment import RandPairedZoomd, RandShiftCropCentre, RandShiftCropCentred
from .errors import InputError, MriInputError, XrayInputError
from .geometry import CANONICAL_SIDE, MRI_AXCODES
from .mri import ClassFractions, ClassFractionsd, LoadMri, LoadMrid, PreprocessMri, PreprocessMrid

__all__ = ["InputError", "XrayInputError", "MriInputError", "CANONICAL_SIDE", "MRI_AXCODES"]
__all__ += ["LoadMri", "LoadMrid", "PreprocessMri", "PreprocessMrid", "ClassFractions", "ClassFractionsd"]
from .laterality import MirrorBackd, MirrorToCanonicalSide, MirrorToCanonicalSided, mirror_back  # noqa: E402
from .xray import LoadXray, LoadXrayd, PreprocessXray, PreprocessXrayd, XraySpacingWarning  # noqa: E402

__all__ += ["LoadXray", "LoadXrayd", "PreprocessXray", "PreprocessXrayd", "XraySpacingWarning"]
__all__ += ["MirrorToCanonicalSide", "MirrorToCanonicalSided", "MirrorBackd", "mirror_back"]
__all__ += ["RandPairedZoomd", "RandShiftCropCentre", "RandShiftCropCentred"]
from .knee_crop import CropKnee, CropKneed  # noqa: E402
from .locate_knee import KneeLocation, LocateKnee, LocateKneed, LocatorParams  # noqa: E402

__all__ += ["CropKnee", "CropKneed", "LocateKnee", "LocateKneed", "KneeLocation", "LocatorParams"]
