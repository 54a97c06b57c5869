"""The radiograph's convolutional auto-encoder (CAE): MONAI's AutoEncoder, plus multi-scale features.

The paper's CAE (Wang, Chetouani, Jennane, arXiv 2503.13555) reconstructs the radiograph and
hands its hidden variables to the MRI generator. MONAI's
:py:class:`monai.networks.nets.AutoEncoder` is that network already: ``encode`` (strided
convolutions), ``intermediate`` (optional blocks at the bottleneck) and ``decode``
(transposed convolutions back to the input size). :class:`XrayCAE` only adds
:meth:`XrayCAE.encode_levels`, which also returns the encoder's feature map at every scale,
for the geometry-aware generator's skips; what the layers do is MONAI's, unchanged.
"""

from __future__ import annotations

import torch
from monai.networks.nets import AutoEncoder

__all__ = ["XrayCAE"]


class XrayCAE(AutoEncoder):
    """MONAI ``AutoEncoder`` whose encoder can also report its feature map at every scale.

    Takes exactly :py:class:`monai.networks.nets.AutoEncoder`'s arguments (``spatial_dims`` is
    2 for a radiograph); ``forward`` is unchanged (the reconstruction).

    Example::

        cae = XrayCAE(spatial_dims=2, in_channels=1, out_channels=1,
                      channels=(16, 32, 64, 128), strides=(2, 2, 2, 2))
        levels = cae.encode_levels(torch.rand(2, 1, 128, 128))
        # shapes (2, 16, 64, 64), (2, 32, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8)
        recon = cae.decode(levels[-1])  # (2, 1, 128, 128)
    """

    def encode_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the encoder and return the output of every encoder layer, finest first.

        The last entry has also been through ``intermediate``: it is the bottleneck (the
        "hidden variables") that ``decode`` reconstructs from.

        Args:
            x: radiograph batch (B, in_channels, H, W).

        Returns:
            ``len(channels)`` tensors; entry ``i`` is (B, channels[i], H / prod(strides[:i+1]),
            W / prod(strides[:i+1])).
        """
        levels: list[torch.Tensor] = []
        for layer in self.encode:
            x = layer(x)
            levels.append(x)
        levels[-1] = self.intermediate(levels[-1])
        return levels
