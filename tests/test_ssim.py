"""The separable 3-D SSIM gives MONAI's SSIM values: the loss, train.json's validation metric and the report use it."""

import pytest
import torch
from monai.metrics import SSIMMetric

from xray2mri.pipeline.ssim import SeparableSSIMMetric, ssim_3d


def _volumes(shape=(3, 1, 24, 20, 22), seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    b = (0.6 * a + 0.4 * torch.rand(shape, generator=g)).clamp(0, 1)
    return a, b


@pytest.mark.parametrize("kwargs", [{}, {"win_size": 7, "kernel_sigma": 1.0}, {"kernel_type": "uniform", "win_size": 5},
                                    {"win_size": [11, 7, 9], "kernel_sigma": [1.5, 1.0, 2.0]}])
def test_separable_metric_equals_monai_per_volume(kwargs):
    a, b = _volumes()
    ref = SSIMMetric(spatial_dims=3, data_range=1.0, reduction="none", **kwargs)(a, b)
    ours = SeparableSSIMMetric(spatial_dims=3, data_range=1.0, reduction="none", **kwargs)(a, b)
    assert ours.shape == ref.shape == (3, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_metric_accumulates_and_reduces_like_monai():
    a, b = _volumes(seed=1)
    ref, ours = SSIMMetric(spatial_dims=3), SeparableSSIMMetric(spatial_dims=3)
    for metric in (ref, ours):
        metric(a[:2], b[:2])
        metric(a[2:], b[2:])
    torch.testing.assert_close(ours.aggregate(), ref.aggregate(), rtol=1e-4, atol=1e-5)


def test_identical_volumes_score_one_and_bad_shapes_are_refused():
    a, _ = _volumes()
    assert torch.allclose(ssim_3d(a, a), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim_3d(a[..., :8], a[..., :8])
    with pytest.raises(ValueError, match="one shape"):
        ssim_3d(a, a[:, :, :-1])
    with pytest.raises(ValueError, match="3-D only"):
        SeparableSSIMMetric(spatial_dims=2)
