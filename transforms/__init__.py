"""MONAI transforms for knee radiographs (DICOM) and 3-D MRI volumes, array + dictionary pairs.

The names below are imported from their modules on first use (PEP 562), so that importing a light
module of this package (``errors``, ``geometry``) does not import torch and MONAI: the command line
builds its parser, and ``xray2mri synth`` / ``manifest`` run, without them.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each public name and the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("InputError", "XrayInputError", "MriInputError"), "errors"),
    **dict.fromkeys(("CANONICAL_SIDE", "MRI_AXCODES"), "geometry"),
    **dict.fromkeys(("LoadMri", "LoadMrid", "PreprocessMri", "PreprocessMrid", "ClassFractions", "ClassFractionsd"),
                    "mri"),
    **dict.fromkeys(("LoadXray", "LoadXrayd", "PreprocessXray", "PreprocessXrayd", "XraySpacingWarning"), "xray"),
    **dict.fromkeys(("MirrorToCanonicalSide", "MirrorToCanonicalSided", "MirrorBackd", "mirror_back"), "laterality"),
    **dict.fromkeys(("RandPairedZoomd", "RandShiftCropCentre", "RandShiftCropCentred"), "augment"),
    **dict.fromkeys(("CropKnee", "CropKneed"), "knee_crop"),
    **dict.fromkeys(("LocateKnee", "LocateKneed", "KneeLocation", "LocatorParams"), "locate_knee"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
