"""TensorBoard for the bundle, written by the main process only: the shared ``summary_writer`` (a no-op writer on other ranks) and :class:`TensorBoardSlices` (central MRI
slices and the radiograph, target | prediction, after each validation)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

from xray2mri.pipeline.training.distributed import is_main_process
from xray2mri.pipeline.training.uncertainty_loss import LOG_SCALE_KEY as UNCERTAINTY_KEY
from xray2mri.pipeline.training.uncertainty_loss import LOG_SCALE_RANGE

__all__ = [
    "summary_writer",
    "NullSummaryWriter",
    "TensorBoardSlices",
]


class NullSummaryWriter:
    """Stands in for a ``SummaryWriter`` on processes that must not write: every call does nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        def _nothing(*args: Any, **kwargs: Any) -> None:
            return None

        return _nothing


def summary_writer(log_dir: str | os.PathLike) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``log_dir`` on the main process, a :class:`NullSummaryWriter` elsewhere.

    The bundle creates one writer (``tb_writer``) and hands it to every TensorBoard handler, so
    a distributed run writes one event file, from rank 0, while the handlers stay the same on
    every rank (no list surgery in ``multi_gpu_train.json``).
    """
    if not is_main_process():
        return NullSummaryWriter()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


def _unit(img: torch.Tensor) -> torch.Tensor:
    return img.detach().float().cpu().clamp(0.0, 1.0)


def central_slices(volume: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three central planes of a (D, H, W) volume in the canonical (A->P, S->I, R->L) frame.

    Returns ``{"coronal": (H, W), "sagittal": (H, D), "axial": (D, W)}``: the coronal plane is
    laid out like the radiograph (rows S->I, columns R->L), the sagittal one with rows S->I
    and columns A->P, the axial one with rows A->P and columns R->L.
    """
    d, h, w = volume.shape[-3:]
    volume = volume.reshape(d, h, w)
    return {
        "coronal": volume[d // 2],
        "sagittal": volume[:, :, w // 2].transpose(0, 1),
        "axial": volume[:, h // 2, :],
    }


class TensorBoardSlices:
    """After each evaluator run, write TensorBoard images of its last batch's first item.

    * ``<tag>/mri_<plane>`` for plane in coronal, sagittal, axial: the target and the
      generated volume's central slice side by side (target left), values clipped to [0, 1];
    * ``<tag>/xray``: the radiograph and its reconstruction side by side;
    * ``<tag>/uncertainty_<plane>`` (a network with the uncertainty head): the absolute error and
      the raw predicted scale ``exp(mri_log_scale)`` side by side, both divided by the larger
      one's 99th percentile (uncalibrated: the conformal factors are fitted after training),
      and the scalar ``<tag>/uncertainty_mean_scale``.

    The step is the evaluator's epoch, which MONAI sets to the trainer's epoch, so the images
    line up with the validation scalars.

    Args:
        summary_writer: the bundle's ``tb_writer`` (a :class:`NullSummaryWriter` on rank > 0).
        tag: prefix of the image tags.
    """

    def __init__(self, summary_writer: Any, tag: str = "val") -> None:
        self.writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        first = output if isinstance(output, Mapping) else output[0]
        pred, label = first["pred"], first["label"]
        if not isinstance(output, Mapping):  # decollated items have no batch axis
            pred = {k: v.unsqueeze(0) for k, v in pred.items()}
            label = {k: v.unsqueeze(0) for k, v in label.items()}
        step = engine.state.epoch
        if "mri" in pred and "mri" in label:
            target, generated = central_slices(_unit(label["mri"][0])), central_slices(_unit(pred["mri"][0]))
            for plane in target:
                pair = torch.cat([target[plane], generated[plane]], dim=-1)
                self.writer.add_image(f"{self.tag}/mri_{plane}", pair.unsqueeze(0), step, dataformats="CHW")
        if "xray" in pred and "xray" in label:
            pair = torch.cat([_unit(label["xray"][0, 0]), _unit(pred["xray"][0, 0])], dim=-1)
            self.writer.add_image(f"{self.tag}/xray", pair.unsqueeze(0), step, dataformats="CHW")
        if UNCERTAINTY_KEY in pred and "mri" in pred and "mri" in label:
            self._uncertainty(pred, label, step)
        self.writer.flush()

    def _uncertainty(self, pred: Mapping[str, torch.Tensor], label: Mapping[str, torch.Tensor], step: int) -> None:
        """|error| | predicted scale, central slices on one intensity scale."""
        scale = torch.exp(pred[UNCERTAINTY_KEY][0].detach().float().cpu().clamp(*LOG_SCALE_RANGE))
        error = (pred["mri"][0].detach().float().cpu() - label["mri"][0].detach().float().cpu()).abs()
        top = float(torch.quantile(torch.cat([scale.reshape(-1), error.reshape(-1)]), 0.99)) or 1.0
        err_s, scale_s = central_slices(error / top), central_slices(scale / top)
        for plane in err_s:
            pair = torch.cat([err_s[plane].clamp(0, 1), scale_s[plane].clamp(0, 1)], dim=-1)
            self.writer.add_image(f"{self.tag}/uncertainty_{plane}", pair.unsqueeze(0), step, dataformats="CHW")
        self.writer.add_scalar(f"{self.tag}/uncertainty_mean_scale", float(scale.mean()), step)
