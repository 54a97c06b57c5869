"""A per-subject term of the uncertainty head's log scale, read from the radiograph's latent vector.

The voxel branch of the uncertainty head (1x1 convolutions on the generator's last-layer features)
sees each place's features, so it tells which places are hard (the joint's depth, soft-tissue
edges), but hardly which subjects are: its per-subject mean rose with the size of the limb rather
than with the subject's error. :class:`SubjectLogScale` adds one value per subject and channel,
a linear map of the latent vector, to the whole log-scale map. It reads the latent detached (the
MRI is trained exactly as without it), standardised by running means and variances kept in
training, as batch normalisation keeps them, but updated one sample at a time so that it works at
batch size 1 (the demo's). Zero-initialised: the head starts as the voxel branch alone.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SubjectLogScale"]


class SubjectLogScale(nn.Module):
    """(B, *latent) -> (B, out_channels, 1, 1, 1): a per-subject shift of the log scale.

    Args:
        features: size of the flattened latent.
        out_channels: log-scale channels (the MRI's).
        momentum: weight of a new sample in the running statistics once ``1 / momentum`` samples
            have been seen (before that, their plain mean, so the first steps are not dominated by
            the statistics' initial values).
        eps: added to the running variance.
    """

    def __init__(self, features: int, out_channels: int = 1, momentum: float = 0.01, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.register_buffer("running_mean", torch.zeros(int(features)))
        self.register_buffer("running_var", torch.ones(int(features)))
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.long))
        self.linear = nn.Linear(int(features), int(out_channels))
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.flatten(1).float()
        if self.training:
            with torch.no_grad():
                for i in range(z.shape[0]):  # one at a time: a batch of one has no variance of its own
                    self.samples_seen += 1
                    m = max(self.momentum, 1.0 / float(self.samples_seen.item()))
                    delta = z[i] - self.running_mean
                    self.running_mean += m * delta
                    # exponentially weighted variance (West's update); Welford's exact one while m = 1/n
                    self.running_var.copy_((1.0 - m) * (self.running_var + m * delta * delta))
        # before a second sample there is no spread to scale by
        var = self.running_var if int(self.samples_seen.item()) > 1 else torch.ones_like(self.running_var)
        standard = (z - self.running_mean) / torch.sqrt(var + self.eps)
        return self.linear(standard).view(z.shape[0], -1, 1, 1, 1)
