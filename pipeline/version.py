"""The installed xray2mri version, the one place it is read: ``xray2mri --version``, and what the
sidecars, reports and exported bundles record as the code that made them."""

from __future__ import annotations

import functools
from importlib import metadata

__all__ = ["DISTRIBUTION", "UNKNOWN_VERSION", "package_version"]

#: The distribution name in setup.cfg (where the version itself is written).
DISTRIBUTION: str = "xray2mri"
#: What :func:`package_version` says when the code runs without the distribution installed.
UNKNOWN_VERSION: str = "unknown"


@functools.cache
def package_version() -> str:
    """The version of the installed ``xray2mri`` distribution (setup.cfg's), e.g. ``"0.1.0"``.

    Code run from a plain copy (e.g. a bundle's ``scripts/`` without the package installed)
    gets :data:`UNKNOWN_VERSION` instead of an error, so recording a version never fails.
    """
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
