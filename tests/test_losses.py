"""HybridLoss: each term and weight against hand-computed values, skipped terms, errors, gradients."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.losses import SSIMLoss

from xray2mri.pipeline.training.losses import HybridLoss, ssim_loss_3d
from xray2mri.pipeline.training.networks import Xray2MRI


def _pair():
    """Prediction/target with known differences: |xray diff| = 0.5 everywhere, |mri diff| 0.2 or 0.4."""
    pred = {"xray": torch.zeros(2, 1, 4, 4), "mri": torch.zeros(2, 1, 2, 2, 2)}
    mri_target = torch.full((2, 1, 2, 2, 2), 0.2)
    mri_target[1] = 0.4
    target = {"xray": torch.full((2, 1, 4, 4), 0.5), "mri": mri_target}
    return pred, target


@pytest.mark.parametrize(
    "xray_loss, mri_loss, x_term, m_term",
    [
        ("l1", "l1", 0.5, (0.2 + 0.4) / 2),
        ("mse", "mse", 0.25, (0.04 + 0.16) / 2),
        ("l1", "mse", 0.5, (0.04 + 0.16) / 2),
    ],
)
def test_terms_and_weights(xray_loss, mri_loss, x_term, m_term):
    pred, target = _pair()
    loss = HybridLoss(xray_weight=2.0, mri_weight=3.0, xray_loss=xray_loss, mri_loss=mri_loss)
    total = loss(pred, target)
    assert total.dim() == 0
    assert total.item() == pytest.approx(2.0 * x_term + 3.0 * m_term)
    assert loss.last_terms == pytest.approx(
        {"xray": x_term, "mri": m_term, "total": 2.0 * x_term + 3.0 * m_term}
    )
    assert all(type(v) is float for v in loss.last_terms.values())
    assert loss.term_names == ("xray", "mri", "total")


def test_ssim_term_matches_monai():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 12, 11, 10)
    pred = (target + 0.3 * torch.rand_like(target)).clamp(0, 1)
    loss = HybridLoss(xray_weight=0.0, mri_weight=0.0, ssim_weight=1.0, ssim_win_size=5)
    total = loss({"mri": pred}, {"mri": target})
    expected = SSIMLoss(spatial_dims=3, data_range=1.0, win_size=5)(pred, target)
    torch.testing.assert_close(total, expected, rtol=1e-4, atol=1e-5)
    assert set(loss.last_terms) == {"ssim", "total"}
    # identical volumes: SSIM 1, term 0
    assert loss({"mri": target}, {"mri": target}).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("kernel_type", ["gaussian", "uniform"])
def test_separable_ssim_equals_monai_dense_window(kernel_type):
    torch.manual_seed(1)
    a = torch.rand(2, 2, 9, 10, 11)
    b = (0.7 * a + 0.3 * torch.rand_like(a)).clamp(0, 1)
    a_ours, a_ref = a.clone().requires_grad_(), a.clone().requires_grad_()
    ours = ssim_loss_3d(a_ours, b, win_size=7, kernel_type=kernel_type)
    ref = SSIMLoss(spatial_dims=3, kernel_type=kernel_type, win_size=7)(a_ref, b)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    # training follows the same gradient (the target's statistics are filtered outside the graph)
    ours.backward(), ref.backward()
    torch.testing.assert_close(a_ours.grad, a_ref.grad, rtol=1e-3, atol=1e-7)


def test_zero_weight_skips_the_term():
    pred, target = _pair()
    pred["mri"].requires_grad_(True)
    pred["xray"].requires_grad_(True)
    loss = HybridLoss(xray_weight=1.0, mri_weight=0.0)
    total = loss(pred, target)
    total.backward()
    assert set(loss.last_terms) == {"xray", "total"} and loss.term_names == ("xray", "total")
    assert pred["mri"].grad is None  # the MRI was never used
    assert pred["xray"].grad is not None
    # a skipped term's key may be absent altogether (CAE pre-training on radiographs alone)
    assert loss({"xray": pred["xray"]}, {"xray": target["xray"]}).item() == pytest.approx(0.5)


def test_missing_key_and_shape_mismatch_are_named():
    pred, target = _pair()
    loss = HybridLoss()
    with pytest.raises(KeyError, match="'mri'"):
        loss({"xray": pred["xray"]}, target)
    with pytest.raises(ValueError, match=r"\(2, 1, 2, 2, 2\)"):
        loss({"xray": pred["xray"], "mri": torch.zeros(2, 1, 2, 2, 3)}, target)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(xray_weight=-1.0), ">= 0"),
        (dict(xray_weight=0.0, mri_weight=0.0), "non-zero"),
        (dict(mri_loss="huber"), "mri_loss"),
        (dict(ssim_kernel_type="box"), "ssim_kernel_type"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HybridLoss(**kwargs)


def test_metatensor_inputs_give_a_plain_tensor():
    pred, target = _pair()
    target = {k: MetaTensor(v) for k, v in target.items()}
    total = HybridLoss()(pred, target)
    assert type(total) is torch.Tensor


def test_mri_term_trains_the_encoder_not_the_decoder():
    torch.manual_seed(2)
    net = Xray2MRI(
        cae_channels=(4, 8, 8, 8),
        cae_num_res_units=0,
        latent_size=8,
        gen_start_channels=4,
        gen_channels=(4, 4, 4),
    )
    x = torch.rand(2, 1, 128, 128)
    loss = HybridLoss(xray_weight=0.0, mri_weight=1.0, ssim_weight=0.5)
    loss(net(x), {"xray": x, "mri": torch.rand(2, 1, 64, 64, 64)}).backward()
    encoder_grad = sum(float(p.grad.abs().sum()) for p in net.cae.encode.parameters())
    assert encoder_grad > 0
    # xray weight 0: the decoder ran but received no gradient
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in net.cae.decode.parameters())


def test_ssim_refuses_a_volume_smaller_than_its_window():
    vol = torch.rand(1, 1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"\(4, 8, 8\).*window 7"):
        HybridLoss(ssim_weight=1.0, ssim_win_size=7)(
            {"xray": vol[:, :, 0], "mri": vol}, {"xray": vol[:, :, 0], "mri": vol}
        )
