"""3-D SSIM as MONAI defines it, computed with a separable window: one implementation for the
training loss, the validation metric (train.json) and the report.

MONAI's :class:`monai.losses.SSIMLoss` / :class:`monai.metrics.SSIMMetric` correlate the five local
statistics with a dense ``win_size**3`` window, which on CPU costs ~0.25 s per 64^3 volume with the
metric's 11^3 window. The window is a product of 1-D windows, so it is applied one axis at a time
("valid", no padding, like MONAI), each pass a matrix product with a band matrix over the tensor as
it lies in memory, the target's statistics outside the autograd graph: the same values (tests compare
both with MONAI's), the metric 17x faster (``benchmarks/bench_train_parts.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics import SSIMMetric

__all__ = ["ssim_3d", "SeparableSSIMMetric"]


def _window_1d(size: int, sigma: float, kernel_type: str) -> torch.Tensor:
    """Normalised 1-D window: MONAI's Gaussian (centred, ``sigma`` in voxels) or uniform."""
    if kernel_type == "uniform":
        return torch.full((size,), 1.0 / size)
    dist = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    gauss = torch.exp(-((dist / sigma) ** 2) / 2)
    return gauss / gauss.sum()


def _valid_filter_matrix(n: int, window: torch.Tensor) -> torch.Tensor:
    """(n, n - k + 1) band matrix M with ``v @ M`` = the "valid" correlation of ``v`` with ``window``."""
    k = window.numel()
    out = torch.arange(n - k + 1, device=window.device)
    matrix = torch.zeros(n, n - k + 1, device=window.device, dtype=window.dtype)
    matrix[out[:, None] + torch.arange(k, device=window.device)[None, :], out[:, None]] = window
    return matrix


def _filter_valid(x: torch.Tensor, mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N, D, H, W) filtered along W, H and D by the band matrices ``mats`` (D, H, W order), each a
    matrix product over the tensor as it lies in memory (no transposed copies)."""
    n, d = x.shape[:2]
    x = mats[1].T @ (x @ mats[2])  # W, then H: (N, D, H', W')
    h, w = x.shape[2:]
    return (mats[0].T @ x.reshape(n, d, h * w)).reshape(n, -1, h, w)  # D


def ssim_3d(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    win_size: int | Sequence[int] = 11,
    sigma: float | Sequence[float] = 1.5,
    kernel_type: str = "gaussian",
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """SSIM of each (C, D, H, W) pair of two (B, C, D, H, W) batches: a (B,) tensor, the SSIM map's
    mean per volume (channels included), as MONAI's SSIM metric and loss average it. ``win_size``
    and ``sigma`` (voxels) are one value or one per spatial axis.

    Raises:
        ValueError: inputs that are not 5-D of one shape, a side smaller than ``win_size``, or an
            unknown ``kernel_type``.
    """
    if pred.dim() != 5 or pred.shape != target.shape:
        raise ValueError(
            f"3-D SSIM expects two (B, C, D, H, W) tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    sizes = tuple(int(w) for w in (win_size if isinstance(win_size, Sequence) else (win_size,) * 3))
    sigmas = tuple(float(s) for s in (sigma if isinstance(sigma, Sequence) else (sigma,) * 3))
    if len(sizes) != 3 or len(sigmas) != 3:
        raise ValueError(f"3-D SSIM: win_size and sigma need one value or three, got {win_size!r}, {sigma!r}")
    if any(n < k for n, k in zip(pred.shape[2:], sizes)):
        raise ValueError(f"3-D SSIM: volume {tuple(pred.shape[2:])} is smaller than the SSIM window {sizes if len(set(sizes)) > 1 else sizes[0]}")
    if kernel_type not in ("gaussian", "uniform"):
        raise ValueError(f"kernel_type must be 'gaussian' or 'uniform', got {kernel_type!r}")
    b = pred.shape[0]
    mats = [_valid_filter_matrix(n, _window_1d(k, s, kernel_type).to(device=pred.device, dtype=pred.dtype))
            for n, k, s in zip(pred.shape[2:], sizes, sigmas)]
    p, t = pred.flatten(0, 1), target.flatten(0, 1)  # (B*C, D, H, W)
    # the target's statistics filtered apart: unless the target needs a gradient, autograd keeps 3 maps, not 5
    mu_y, mu_yy = _filter_valid(torch.cat([t, t * t]), mats).chunk(2)
    mu_x, mu_xx, mu_xy = _filter_valid(torch.cat([p, p * p, p * t]), mats).chunk(3)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    sigma_x, sigma_y, sigma_xy = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * ((2 * sigma_xy + c2) / (sigma_x + sigma_y + c2))
    return ssim_map.reshape(b, -1).mean(dim=1)


class SeparableSSIMMetric(SSIMMetric):
    """:class:`monai.metrics.SSIMMetric` for 3-D volumes computed by :func:`ssim_3d` (same arguments,
    same values and reductions; Gaussian or uniform window), for train.json's validation and the report."""

    def __init__(self, spatial_dims: int = 3, **kwargs) -> None:
        if spatial_dims != 3:
            raise ValueError(f"SeparableSSIMMetric is 3-D only, got spatial_dims={spatial_dims}")
        super().__init__(spatial_dims=3, **kwargs)

    def _compute_metric(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, 1) SSIM per volume, as the parent class returns it."""
        return ssim_3d(
            y_pred, y, data_range=self.data_range, win_size=self.kernel_size, sigma=self.kernel_sigma,
            kernel_type=str(self.kernel_type.value if hasattr(self.kernel_type, "value") else self.kernel_type),
            k1=self.k1, k2=self.k2,
        ).unsqueeze(1)
