"""Networks: the radiograph CAE, the MRI generators and the combined :class:`Xray2MRI`.

Configs name them as ``xray2mri.pipeline.training.networks.Xray2MRI`` (bundle ``network_def``).
"""

from xray2mri.pipeline.training.networks.cae import XrayCAE
from xray2mri.pipeline.training.networks.generator import (
    GeometryGenerator,
    SkipAdapter,
    spread_along_projection,
)
from xray2mri.pipeline.training.networks.xray2mri import OUTPUT_ACTS, VARIANT_NAMES, VARIANTS, Xray2MRI

__all__ = [
    "OUTPUT_ACTS",
    "VARIANTS",
    "VARIANT_NAMES",
    "GeometryGenerator",
    "SkipAdapter",
    "Xray2MRI",
    "XrayCAE",
    "spread_along_projection",
]
