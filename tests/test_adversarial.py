"""The adversarial option (train.json ``adversarial_weight``): off it is the base loss exactly; on, the
generator term trains the generator only and the discriminator step trains the discriminator only."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import PatchDiscriminator

from xray2mri.pipeline.training.adversarial import DiscriminatorStep, WithAdversarialLoss
from xray2mri.pipeline.training.losses import HybridLoss


def _disc() -> PatchDiscriminator:
    torch.manual_seed(0)
    return PatchDiscriminator(spatial_dims=3, num_layers_d=2, channels=4, in_channels=1, out_channels=1, norm="INSTANCE")


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(2, 1, 16, 16, 16, generator=g)
    fake = torch.nn.functional.avg_pool3d(real, 5, 1, 2)  # a blurred copy: what an MSE generator makes
    return {"mri": fake.clone().requires_grad_(True)}, {"mri": real}


def test_weight_zero_is_the_base_loss_and_builds_no_discriminator():
    pred, target = _batch()
    base = HybridLoss(xray_weight=0.0, mri_weight=1.0)
    loss = WithAdversarialLoss(base, discriminator=_disc(), weight=0.0)
    assert loss.discriminator is None
    assert torch.equal(loss(pred, target), base(pred, target))
    assert loss.term_names == ("mri", "total")
    with pytest.raises(ValueError, match="needs a discriminator"):
        WithAdversarialLoss(base, discriminator=None, weight=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        WithAdversarialLoss(base, discriminator=_disc(), weight=-1.0)


def test_generator_term_reaches_the_generated_volume_but_not_the_discriminator():
    pred, target = _batch()
    disc = _disc()
    loss = WithAdversarialLoss(HybridLoss(xray_weight=0.0, mri_weight=1.0), discriminator=disc, weight=0.5)
    total = loss(pred, target)
    total.backward()
    assert set(loss.last_terms) == {"mri", "adv_g", "total"}
    assert total.item() == pytest.approx(loss.last_terms["mri"] + 0.5 * loss.last_terms["adv_g"], rel=1e-5)
    assert pred["mri"].grad is not None and pred["mri"].grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters())


def test_discriminator_step_learns_to_tell_blurred_from_real():
    pred, target = _batch()
    disc = _disc()
    loss = WithAdversarialLoss(HybridLoss(xray_weight=0.0, mri_weight=1.0), discriminator=disc, weight=0.1)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    losses = [loss.discriminator_step(pred, target, opt) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert loss.last_terms["adv_d"] == losses[-1]
    assert any(not torch.equal(before[k], v) for k, v in disc.state_dict().items())
    assert pred["mri"].grad is None  # the generated volume is detached in the discriminator's step
    assert not any(p.requires_grad for p in disc.parameters())  # frozen again for the generator's term


def test_discriminator_step_handler_needs_its_parts_when_enabled():
    loss = WithAdversarialLoss(HybridLoss(xray_weight=0.0, mri_weight=1.0), weight=0.0)
    DiscriminatorStep(loss, None, enabled=False)  # off: nothing needed
    with pytest.raises(ValueError, match="discriminator and its optimizer"):
        DiscriminatorStep(loss, None, enabled=True)
