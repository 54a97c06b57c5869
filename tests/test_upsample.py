"""LinearUpsample2x: the uncertainty head's upsampling equals PyTorch's trilinear one, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from xray2mri.pipeline.training.networks.upsample import LinearUpsample2x


@pytest.mark.parametrize("shape", [(1, 1, 32, 32, 32), (2, 3, 5, 6, 7), (1, 2, 1, 4, 3), (2, 1, 9, 4)])
def test_equals_torch_linear_upsampling_with_its_gradient(shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    mode = "trilinear" if len(shape) == 5 else "bilinear"
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = LinearUpsample2x()(a)
    ref = F.interpolate(b, scale_factor=2, mode=mode, align_corners=False)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(ref)
    (ours * weights).sum().backward(), (ref * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_scripts_for_torchscript_export():
    x = torch.randn(1, 1, 4, 5, 6)
    scripted = torch.jit.script(LinearUpsample2x())
    torch.testing.assert_close(scripted(x), F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False))
