"""Negative log-likelihood of the MRI under a per-voxel predicted scale (the uncertainty head, issue 16).

The network's optional head (``Xray2MRI(uncertainty=True)``) predicts, per voxel, the log scale
``s`` of the predictive distribution around the generated intensity ``mu``. It is trained with
the NLL of the true intensity ``y`` (constants dropped, mean over voxels):

* Laplace:  ``|y - mu| * exp(-s) + s``                (scale ``b = exp(s)``; std = ``sqrt(2) b``)
* Gaussian: ``0.5 * (y - mu)^2 * exp(-2 s) + s``      (scale = std ``sigma = exp(s)``)

The mean ``mu`` is detached in this term by default (``detach_mean=True``): the generated volume
keeps being trained by the hybrid loss alone, so adding the head does not trade image quality for
likelihood (a plain NLL down-weights the error where the predicted scale is large). The scale is
then an estimate of the residual's spread, which :mod:`xray2mri.pipeline.serving.uncertainty`
calibrates by split-conformal prediction on the validation split.

:class:`WithUncertaintyLoss` adds the NLL to the bundle's main loss (train.json ``nll_weight``):
``total = base(pred, target) + nll_weight * nll``; its ``last_terms`` are the base's plus ``"nll"``,
so the training log and TensorBoard show the term like the others.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
from monai.utils import LossReduction

__all__ = ["HeteroscedasticNLLLoss", "WithUncertaintyLoss", "NLL_DISTRIBUTIONS", "LOG_SCALE_KEY"]

#: The output key of the uncertainty head (``Xray2MRI(uncertainty=True)``, dict form).
LOG_SCALE_KEY: str = "mri_log_scale"
#: Distributions the NLL may assume (``distribution=``).
NLL_DISTRIBUTIONS: tuple[str, ...] = ("laplace", "gaussian")
#: The log scale is clamped to this range in the loss (exp(-10) ~ 4.5e-5 .. exp(3) ~ 20, in MRI [0, 1] units).
LOG_SCALE_RANGE: tuple[float, float] = (-10.0, 3.0)


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_tensor() if hasattr(t, "as_tensor") else t


class HeteroscedasticNLLLoss(nn.Module):
    """NLL of ``target`` under a Laplace or Gaussian centred on ``mean`` with per-voxel ``log_scale``.

    Called as ``loss(mean, log_scale, target)`` on three tensors of one shape (MONAI loss style,
    ``reduction`` "mean", "sum" or "none").

    Args:
        distribution: ``"laplace"`` (NLL ``|y - mu| / b + log b``) or ``"gaussian"``
            (``(y - mu)^2 / (2 sigma^2) + log sigma``); constants (``log 2``, ``log sqrt(2 pi)``) dropped.
        detach_mean: stop the gradient into ``mean`` (see the module docstring).
        reduction: MONAI :class:`~monai.utils.LossReduction`.

    Raises:
        ValueError: an unknown distribution or reduction.

    Example::

        nll = HeteroscedasticNLLLoss("laplace")
        nll(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4), torch.ones(1, 1, 4, 4, 4))  # tensor(1.)
    """

    def __init__(
        self, distribution: str = "laplace", detach_mean: bool = True, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__()
        if distribution not in NLL_DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {NLL_DISTRIBUTIONS}, got {distribution!r}")
        self.distribution = distribution
        self.detach_mean = bool(detach_mean)
        self.reduction = LossReduction(reduction).value

    def forward(self, mean: torch.Tensor, log_scale: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The NLL, reduced as ``reduction`` says.

        Raises:
            ValueError: the three shapes differ.
        """
        mean, log_scale, target = _plain(mean), _plain(log_scale), _plain(target)
        if not (mean.shape == log_scale.shape == target.shape):
            raise ValueError(
                f"HeteroscedasticNLLLoss: mean {tuple(mean.shape)}, log_scale {tuple(log_scale.shape)} and "
                f"target {tuple(target.shape)} must have one shape"
            )
        mu = mean.detach() if self.detach_mean else mean
        s = log_scale.float().clamp(*LOG_SCALE_RANGE)
        err = target.to(device=s.device, dtype=torch.float32) - mu.float()
        if self.distribution == "laplace":
            nll = err.abs() * torch.exp(-s) + s
        else:
            nll = 0.5 * err.square() * torch.exp(-2.0 * s) + s
        if self.reduction == LossReduction.MEAN.value:
            return nll.mean()
        if self.reduction == LossReduction.SUM.value:
            return nll.sum()
        return nll


class WithUncertaintyLoss(nn.Module):
    """The bundle's main loss plus ``nll_weight`` x the NLL of the uncertainty head.

    ``nll_weight = 0`` makes it the base loss exactly (the NLL is not computed; the network then
    needs no uncertainty head). Keeps the base loss's logging contract: ``last_terms`` and
    ``term_names`` (see :class:`~xray2mri.pipeline.training.losses.HybridLoss`).

    Args:
        base: the main loss, called as ``base(pred, target)``.
        nll_weight: weight of the NLL term (>= 0).
        distribution: see :class:`HeteroscedasticNLLLoss`.
        detach_mean: see :class:`HeteroscedasticNLLLoss`.
        mri_key: key of the MRI in ``pred`` and ``target``.
        scale_key: key of the log scale in ``pred``.

    Raises:
        ValueError: a negative weight.
    """

    def __init__(
        self,
        base: nn.Module,
        nll_weight: float = 0.0,
        distribution: str = "laplace",
        detach_mean: bool = True,
        mri_key: str = "mri",
        scale_key: str = LOG_SCALE_KEY,
    ) -> None:
        super().__init__()
        if float(nll_weight) < 0:
            raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
        self.base = base
        self.nll_weight = float(nll_weight)
        self.nll = HeteroscedasticNLLLoss(distribution, detach_mean=detach_mean)
        self.mri_key = mri_key
        self.scale_key = scale_key
        self.last_terms: dict[str, float] = {}

    @property
    def term_names(self) -> tuple[str, ...]:
        """The base loss's terms, ``"nll"`` when weighted, then ``"total"``."""
        names = tuple(n for n in getattr(self.base, "term_names", ("total",)) if n != "total")
        return (*names, *(("nll",) if self.nll_weight > 0 else ()), "total")

    def forward(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Base total + ``nll_weight`` x NLL; records every term in ``last_terms``.

        Raises:
            KeyError: ``nll_weight > 0`` and the prediction has no log scale (a network built without
                ``uncertainty=True``); the message says so.
        """
        total = self.base(pred, target)
        terms = {k: v for k, v in dict(getattr(self.base, "last_terms", {}) or {}).items() if k != "total"}
        if self.nll_weight > 0:
            if self.scale_key not in pred:
                raise KeyError(
                    f"nll_weight > 0 needs the network's uncertainty head: the prediction has no "
                    f"{self.scale_key!r} (keys: {sorted(pred)}); build Xray2MRI(..., uncertainty=True)"
                )
            nll = self.nll(pred[self.mri_key], pred[self.scale_key], target[self.mri_key])
            total = total + self.nll_weight * nll
            terms["nll"] = float(nll.detach())
        self.last_terms = {**terms, "total": float(total.detach())}
        return total
