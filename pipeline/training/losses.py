"""HybridLoss: weighted radiograph reconstruction + MRI generation (+ optional 3-D SSIM).

The paper's hybrid loss (Wang, Chetouani, Jennane, arXiv 2503.13555) is the sum of the
CAE's reconstruction error on the radiograph and the generator's error on the MRI::

    total = xray_weight * L_x(pred["xray"], target["xray"])
          + mri_weight  * L_m(pred["mri"],  target["mri"])
          + ssim_weight * (1 - SSIM3D(pred["mri"], target["mri"]))

          + tissue_weight * DiceCE(pred["tissue_logits"], target["labels"])      (optional)
          + joint_weight  * DiceCE(pred["joint_logits"], target["joint_labels"]) (optional)

with ``L_x``, ``L_m`` each L1 or MSE (mean over all elements). The tissue term is MONAI's
:py:class:`monai.losses.DiceCELoss` (softmax over the tissue classes, the target's class indices
one-hot encoded) on the network's optional tissue head; it is computed only when its weight is
non-zero *and* the target holds ``labels`` (a batch from a datalist without label maps, e.g. OAI,
trains the other terms alone). The joint term is the same loss on the joint-region head's logits against
partial-volume class fractions (``joint_labels``, (B, C, D, H, W), :class:`~xray2mri.transforms.mri.ClassFractions`):
soft targets, so the probabilities learn the fraction of a voxel each tissue fills. SSIM is MONAI's definition
(:py:class:`monai.losses.SSIMLoss` with ``spatial_dims=3``, ``data_range=1.0`` since targets
are normalised to [0, 1]: "valid" Gaussian or uniform window, SSIM map averaged per volume,
``1 - SSIM`` averaged over the batch), computed by :func:`ssim_loss_3d` with the window
applied one axis at a time (:mod:`xray2mri.pipeline.ssim`): the same value (the tests compare
it with ``SSIMLoss``) about 35 times faster on CPU (forward + backward, batch of four 64^3
volumes, one thread: ~0.13 s instead of ~4.5 s). A term whose weight is 0 is not computed at all
(CAE pre-training with ``mri_weight=0`` costs no MRI loss or generator backward).

Logging: after every call the loss stores the latest values in ``last_terms``, a plain
``dict[str, float]`` of *unweighted* terms plus the weighted total, for the computed terms
only, e.g. ``{"xray": 0.08, "mri": 0.12, "ssim": 0.40, "total": 0.28}``. An Ignite handler
(or the trainer's output transform) reads ``loss_fn.last_terms`` after each iteration and
logs each key to the console / TensorBoard; :attr:`HybridLoss.term_names` lists the keys
it will contain.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.losses import DiceCELoss

from xray2mri.pipeline.ssim import ssim_3d

__all__ = ["HybridLoss", "POINTWISE_LOSSES", "ssim_loss_3d"]

#: Names accepted for the radiograph and MRI terms, and the functions they name.
POINTWISE_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


def ssim_loss_3d(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 7,
    sigma: float = 1.5,
    kernel_type: str = "gaussian",
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """``1 - SSIM`` of two (B, C, D, H, W) batches, averaged over the batch (MONAI's ``SSIMLoss``),
    by the separable :func:`xray2mri.pipeline.ssim.ssim_3d`.

    Raises:
        ValueError: inputs that are not 5-D, or a side smaller than ``win_size``.
    """
    ssim = ssim_3d(pred, target, data_range=data_range, win_size=win_size, sigma=sigma,
                   kernel_type=kernel_type, k1=k1, k2=k2)
    return (1 - ssim).mean()


class HybridLoss(nn.Module):
    """Weighted sum of the radiograph and MRI terms, called as ``loss(pred, target)``.

    Args:
        xray_weight: weight of the radiograph reconstruction term (>= 0).
        mri_weight: weight of the MRI generation term (>= 0).
        ssim_weight: weight of the 3-D ``1 - SSIM`` term on the MRI (>= 0; 0 = off).
        tissue_weight: weight of the tissue Dice + cross-entropy term (>= 0; 0 = off).
        joint_weight: weight of the joint-region head's Dice + cross-entropy term (>= 0; 0 = off).
        xray_loss: ``"l1"`` or ``"mse"`` for the radiograph term.
        mri_loss: ``"l1"`` or ``"mse"`` for the MRI term.
        ssim_win_size: SSIM window (voxels per axis); must not exceed the volume's sides.
        ssim_kernel_type: ``"gaussian"`` or ``"uniform"`` SSIM window.
        ssim_sigma: standard deviation of the Gaussian window, in voxels.
        data_range: intensity range of the MRI for SSIM (1.0: targets in [0, 1]).
        xray_key: key of the radiograph in ``pred`` and ``target``.
        mri_key: key of the MRI in ``pred`` and ``target``.
        tissue_key: key of the tissue logits in ``pred`` (B, C, D, H, W).
        labels_key: key of the tissue-class map in ``target`` (B, 1, D, H, W), class indices.
        joint_key: key of the joint-region logits in ``pred`` (B, C, D, H, W).
        joint_labels_key: key of the joint-region class fractions in ``target`` (B, C, D, H, W).

    Raises:
        ValueError: a negative weight, all weights 0, or an unknown loss name.

    Example::

        loss_fn = HybridLoss(xray_weight=0.5, mri_weight=1.0, ssim_weight=0.1)
        total = loss_fn({"xray": xr_hat, "mri": mri_hat}, {"xray": xr, "mri": mri})
        total.backward()
        loss_fn.last_terms  # {"xray": ..., "mri": ..., "ssim": ..., "total": ...}
    """

    def __init__(
        self,
        xray_weight: float = 1.0,
        mri_weight: float = 1.0,
        ssim_weight: float = 0.0,
        tissue_weight: float = 0.0,
        joint_weight: float = 0.0,
        xray_loss: str = "l1",
        mri_loss: str = "l1",
        ssim_win_size: int = 7,
        ssim_kernel_type: str = "gaussian",
        ssim_sigma: float = 1.5,
        data_range: float = 1.0,
        xray_key: str = "xray",
        mri_key: str = "mri",
        tissue_key: str = "tissue_logits",
        labels_key: str = "labels",
        joint_key: str = "joint_logits",
        joint_labels_key: str = "joint_labels",
    ) -> None:
        super().__init__()
        weights = {
            "xray": float(xray_weight),
            "mri": float(mri_weight),
            "ssim": float(ssim_weight),
            "tissue": float(tissue_weight),
            "joint": float(joint_weight),
        }
        negative = {k: w for k, w in weights.items() if w < 0}
        if negative:
            raise ValueError(f"HybridLoss weights must be >= 0, got {negative}")
        if not any(weights.values()):
            raise ValueError(
                "HybridLoss needs at least one non-zero weight (xray_weight, mri_weight, ssim_weight, tissue_weight, "
                "joint_weight)"
            )
        for name, value in (("xray_loss", xray_loss), ("mri_loss", mri_loss)):
            if value not in POINTWISE_LOSSES:
                raise ValueError(f"{name} must be one of {sorted(POINTWISE_LOSSES)}, got {value!r}")
        self.weights = weights
        self.xray_loss = xray_loss
        self.mri_loss = mri_loss
        self.xray_key = xray_key
        self.mri_key = mri_key
        self.tissue_key = tissue_key
        self.labels_key = labels_key
        self.joint_key = joint_key
        self.joint_labels_key = joint_labels_key
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True) if weights["tissue"] > 0 else None
        self.joint_dice_ce = DiceCELoss(softmax=True) if weights["joint"] > 0 else None
        if ssim_kernel_type not in ("gaussian", "uniform"):
            raise ValueError(f"ssim_kernel_type must be 'gaussian' or 'uniform', got {ssim_kernel_type!r}")
        self.ssim_kwargs = {
            "data_range": float(data_range),
            "win_size": int(ssim_win_size),
            "sigma": float(ssim_sigma),
            "kernel_type": ssim_kernel_type,
        }
        #: Latest unweighted terms and the weighted total, as floats (see the module docstring).
        self.last_terms: dict[str, float] = {}

    @property
    def term_names(self) -> tuple[str, ...]:
        """Keys ``last_terms`` holds after a call: the terms with a non-zero weight, then "total"
        (``tissue`` and ``joint`` only for a batch with their label maps)."""
        return (*(k for k, w in self.weights.items() if w > 0), "total")

    def forward(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return the weighted total (a scalar tensor) and record the terms in ``last_terms``.

        Args:
            pred: network output, with ``xray_key`` (B, C, H, W) and/or ``mri_key`` (B, C, D, H, W)
                as the non-zero weights require.
            target: the same keys and shapes.

        Raises:
            KeyError: a key that a non-zero term needs is missing (the message names it).
            ValueError: prediction and target shapes differ.
        """
        terms: dict[str, torch.Tensor] = {}
        if self.weights["xray"] > 0:
            p, t = self._pair(pred, target, self.xray_key)
            terms["xray"] = POINTWISE_LOSSES[self.xray_loss](p, t)
        if self.weights["mri"] > 0 or self.weights["ssim"] > 0:
            p, t = self._pair(pred, target, self.mri_key)
            if self.weights["mri"] > 0:
                terms["mri"] = POINTWISE_LOSSES[self.mri_loss](p, t)
            if self.weights["ssim"] > 0:
                terms["ssim"] = ssim_loss_3d(p, t, **self.ssim_kwargs)
        if self.dice_ce is not None and self.labels_key in target:
            if self.tissue_key not in pred:
                raise KeyError(
                    f"HybridLoss: tissue_weight > 0 but the prediction has no {self.tissue_key!r} entry "
                    f"(keys: {sorted(pred)}); build the network with tissue_classes"
                )
            logits, labels = pred[self.tissue_key], target[self.labels_key]
            logits = logits.as_tensor() if isinstance(logits, MetaTensor) else logits
            labels = labels.as_tensor() if isinstance(labels, MetaTensor) else labels
            if labels.dim() == logits.dim() - 1:
                labels = labels.unsqueeze(1)
            if labels.shape[2:] != logits.shape[2:]:
                raise ValueError(
                    f"HybridLoss: labels {tuple(labels.shape[2:])} and tissue logits {tuple(logits.shape[2:])} differ"
                )
            terms["tissue"] = self.dice_ce(logits.float(), labels.to(device=logits.device, dtype=torch.float32))
        if self.joint_dice_ce is not None and self.joint_labels_key in target:
            if self.joint_key not in pred:
                raise KeyError(
                    f"HybridLoss: joint_weight > 0 but the prediction has no {self.joint_key!r} entry "
                    f"(keys: {sorted(pred)}); build the network with joint_classes"
                )
            p, t = self._pair({self.joint_key: pred[self.joint_key]}, {self.joint_key: target[self.joint_labels_key]},
                              self.joint_key)
            terms["joint"] = self.joint_dice_ce(p, t)
        if not terms:
            raise KeyError(
                f"HybridLoss: only label terms have a weight, and the target has neither {self.labels_key!r} nor "
                f"{self.joint_labels_key!r}"
            )
        total = sum(self.weights[k] * v for k, v in terms.items())
        assert isinstance(total, torch.Tensor)  # at least one weight is non-zero
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        self.last_terms["total"] = float(total.detach())
        return total

    @staticmethod
    def _pair(
        pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], key: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pred[key]``, ``target[key]`` as float32 (stable under AMP), with their shapes checked."""
        for name, mapping in (("prediction", pred), ("target", target)):
            if key not in mapping:
                raise KeyError(f"HybridLoss: the {name} has no {key!r} entry (keys: {sorted(mapping)})")
        p, t = pred[key], target[key]
        p = p.as_tensor() if isinstance(p, MetaTensor) else p  # plain tensors: no metadata in the loss
        t = t.as_tensor() if isinstance(t, MetaTensor) else t
        if p.shape != t.shape:
            raise ValueError(
                f"HybridLoss: {key!r} prediction shape {tuple(p.shape)} != target shape {tuple(t.shape)}"
            )
        return p.float(), t.to(device=p.device, dtype=torch.float32)
