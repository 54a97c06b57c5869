"""The network variants, the one place they are listed (no torch here: the command line reads them to build its
parser without importing the networks)."""

from __future__ import annotations

__all__ = ["VARIANTS", "VARIANT_NAMES"]

#: Each ``Xray2MRI(variant=...)`` value (the bundle's ``variant``) and its row name in reports and the demo.
VARIANT_NAMES: dict[str, str] = {"bottleneck": "CAE+generator (paper)", "geometry": "geometry-aware"}
#: Allowed values of ``Xray2MRI(variant=...)`` (and of every ``--variant`` option).
VARIANTS: tuple[str, ...] = tuple(VARIANT_NAMES)
