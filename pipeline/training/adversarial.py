"""Adversarial refinement of the generated MRI (issue 15's option; the paper's future work).

A 3-D patch discriminator (MONAI's :class:`~monai.networks.nets.PatchDiscriminator`) learns to tell
generated volumes from acquired ones, patch by patch, with MONAI's least-squares
:class:`~monai.losses.PatchAdversarialLoss`; the generator is pushed towards volumes it cannot tell
apart, which counters the blur an MSE-trained generator settles on where the radiograph leaves
depth ambiguous.

* :class:`WithAdversarialLoss` adds ``weight x`` the generator's adversarial term to the bundle's
  main loss (``total = base + weight * LS(D(mri_hat), real)``) and keeps the loss logging contract
  (``last_terms`` gains ``adv_g``, and ``adv_d`` after each discriminator step). ``weight = 0``
  (train.json's default) is the base loss exactly: no discriminator is built or run.
* :class:`DiscriminatorStep` (a trainer handler, after each iteration) updates the discriminator
  once on the iteration's acquired and (detached) generated volumes with its own optimizer.

The discriminator's parameters do not require gradients outside its own step, so the generator's
backward pass does not spend time on them; under DDP its forward in the generator term uses the
unwrapped module (no gradient to synchronise there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.losses import PatchAdversarialLoss
from monai.utils import CommonKeys

from xray2mri.pipeline.training.checkpoints import _unwrap
from xray2mri.pipeline.training.uncertainty_loss import _plain

__all__ = ["WithAdversarialLoss", "DiscriminatorStep"]


def _logits(discriminator: nn.Module, volume: torch.Tensor) -> torch.Tensor:
    """The patch logits: PatchDiscriminator returns its intermediate features with the logits last."""
    out = discriminator(volume.contiguous().float())
    return out[-1] if isinstance(out, (list, tuple)) else out


class WithAdversarialLoss(nn.Module):
    """The bundle's main loss plus ``weight`` x the least-squares adversarial term on the generated MRI.

    Args:
        base: the main loss, called as ``base(pred, target)`` (its ``last_terms`` are kept).
        discriminator: a 3-D patch discriminator on (B, 1, D, H, W) volumes; may be ``None`` when
            ``weight`` is 0.
        weight: weight of the generator's adversarial term (>= 0).
        mri_key: key of the MRI in ``pred`` and ``target``.

    Raises:
        ValueError: a negative weight, or a positive one without a discriminator.
    """

    def __init__(self, base: nn.Module, discriminator: nn.Module | None = None, weight: float = 0.0,
                 mri_key: str = "mri") -> None:
        super().__init__()
        if float(weight) < 0:
            raise ValueError(f"adversarial weight must be >= 0, got {weight}")
        if float(weight) > 0 and discriminator is None:
            raise ValueError("adversarial weight > 0 needs a discriminator (train.json: discriminator_def)")
        self.base = base
        self.weight = float(weight)
        self.discriminator = discriminator if self.weight > 0 else None
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)
        self.adversarial = PatchAdversarialLoss(criterion="least_squares")
        self.mri_key = mri_key
        self.last_terms: dict[str, float] = {}

    @property
    def term_names(self) -> tuple[str, ...]:
        """The base loss's terms, ``adv_g`` and ``adv_d`` when weighted, then ``"total"``."""
        names = tuple(n for n in getattr(self.base, "term_names", ("total",)) if n != "total")
        return (*names, *(("adv_g", "adv_d") if self.weight > 0 else ()), "total")

    def forward(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Base total + ``weight`` x the generator's adversarial term; records the terms in ``last_terms``."""
        total = self.base(pred, target)
        terms = {k: v for k, v in dict(getattr(self.base, "last_terms", {}) or {}).items() if k != "total"}
        if self.discriminator is not None:
            logits = _logits(_unwrap(self.discriminator), _plain(pred[self.mri_key]))
            adv_g = self.adversarial(logits, target_is_real=True, for_discriminator=False)
            total = total + self.weight * adv_g
            terms["adv_g"] = float(adv_g.detach())
        self.last_terms = {**terms, "total": float(total.detach())}
        return total

    def discriminator_step(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                           optimizer: torch.optim.Optimizer) -> float:
        """One least-squares update of the discriminator on real ``target`` vs detached generated ``pred``
        volumes (float32, outside autocast); returns its loss, also recorded as ``last_terms["adv_d"]``."""
        if self.discriminator is None:
            raise RuntimeError("discriminator_step needs adversarial weight > 0 and a discriminator")
        real = _plain(target[self.mri_key]).detach()
        fake = _plain(pred[self.mri_key]).detach()
        self.discriminator.requires_grad_(True)
        try:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=real.device.type, enabled=False):
                loss_real = self.adversarial(_logits(self.discriminator, real), target_is_real=True,
                                             for_discriminator=True)
                loss_fake = self.adversarial(_logits(self.discriminator, fake), target_is_real=False,
                                             for_discriminator=True)
                loss = 0.5 * (loss_real + loss_fake)
            loss.backward()
            optimizer.step()
        finally:
            self.discriminator.requires_grad_(False)
        value = float(loss.detach())
        self.last_terms = {**self.last_terms, "adv_d": value}
        return value


class DiscriminatorStep:
    """Trainer handler: after each iteration, one discriminator update (:meth:`WithAdversarialLoss.discriminator_step`).

    Attach before the logging handlers so ``adv_d`` is logged with the iteration's other terms.

    Args:
        loss: the trainer's :class:`WithAdversarialLoss`.
        optimizer: the discriminator's optimizer.
        enabled: ``False`` makes the handler do nothing (train.json: adversarial weight 0).
    """

    def __init__(self, loss: WithAdversarialLoss, optimizer: torch.optim.Optimizer | None, enabled: bool = True) -> None:
        self.loss = loss
        self.optimizer = optimizer
        self.enabled = bool(enabled)
        if self.enabled and (optimizer is None or getattr(loss, "discriminator", None) is None):
            raise ValueError("DiscriminatorStep needs the adversarial loss's discriminator and its optimizer")

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output: Any = engine.state.output
        self.loss.discriminator_step(output[CommonKeys.PRED], output[CommonKeys.LABEL], self.optimizer)
