"""Engine glue for the ``knee_xray2mri`` bundle: what its JSON configs cannot say on their own.

The bundle's configs declare a MONAI :class:`~monai.engines.SupervisedTrainer` and
:class:`~monai.engines.SupervisedEvaluator`; this module supplies the callables that feed them
and read their output:

* :func:`prepare_batch` turns a collated item batch into ``(xray, {"xray": xray, "mri": mri})``,
  the inputs and the two targets of :class:`~xray2mri.pipeline.training.networks.Xray2MRI` and
  :class:`~xray2mri.pipeline.training.losses.HybridLoss`.
* output transforms for the dictionary predictions: :func:`pred_target` (metric pairs of one
  head), :func:`loss_terms` (the total loss and each term of the hybrid loss, for the console
  and TensorBoard), :func:`metric_score`, and :func:`subject_meta` (``MetricsSaver`` rows
  named by subject).
* :func:`train_setting` / :func:`network_from_bundle` (read sizes and the network from
  ``train.json``, the one place they are written, so ``inference.json`` never repeats them).

The rest of the bundle's glue has modules of its own: :mod:`xray2mri.pipeline.training.checkpoints`
(atomic checkpoints, resuming, ``install_weights``), :mod:`xray2mri.pipeline.training.tb_logging`
(TensorBoard on the main process), :mod:`xray2mri.pipeline.serving.volume_outputs` (the NIfTI files
evaluation and inference write) and :mod:`xray2mri.transforms.augment` (``RandPairedZoomd``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine

__all__ = [
    "prepare_batch",
    "pred_target",
    "loss_terms",
    "metric_score",
    "subject_meta",
    "train_setting",
    "network_from_bundle",
]

# --------------------------------------------------------------------------------------------
# batches and output transforms


def _plain(x: Any, device: str | torch.device | None, non_blocking: bool, **kwargs: Any) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor`` on ``device``.

    MetaTensor metadata is dropped on purpose: every operation on a MetaTensor goes through
    MONAI's ``__torch_function__``, which costs far more than the arithmetic of a small
    network on a CPU. The handlers that need the metadata read it from ``engine.state.batch``.
    """
    t = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return t.to(device=device, non_blocking=non_blocking, **kwargs) if device is not None else t


def prepare_batch(
    batchdata: Mapping[str, Any],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Inputs and targets of one iteration: ``(xray, {"xray": xray, "mri": mri})``, plus ``"labels"``
    (tissue-class maps) and ``"joint_labels"`` (joint-region class fractions) when the batch holds them as tensors (a validation batch may carry their paths).

    The radiograph is both the network's input and the target of its reconstruction head;
    the MRI is the target of the generator. Batches without ``"mri"`` (inference) give
    ``{"xray": xray}`` alone. Used by the trainer and evaluators of the bundle as
    ``"prepare_batch": "$xray2mri.pipeline.training.engine.prepare_batch"``.

    Args:
        batchdata: a collated batch with ``"xray"`` (B, 1, H, W) and, for training and
            evaluation, ``"mri"`` (B, 1, D, H, W).
        device: where the tensors go; ``non_blocking`` and ``kwargs`` as for ``Tensor.to``.

    Raises:
        KeyError: the batch has no ``"xray"``.
    """
    if "xray" not in batchdata:
        raise KeyError(f"batch has no 'xray' key (keys: {sorted(batchdata)})")
    xray = _plain(batchdata["xray"], device, non_blocking, **kwargs)
    targets = {"xray": xray}
    if "mri" in batchdata:
        targets["mri"] = _plain(batchdata["mri"], device, non_blocking, **kwargs)
    for key in ("labels", "joint_labels"):  # tissue maps (not paths) for the tissue and joint-region terms
        if isinstance(batchdata.get(key), torch.Tensor):
            targets[key] = _plain(batchdata[key], device, non_blocking, **kwargs)
    return xray, targets


def pred_target(key: str, pred_key: str = "pred", label_key: str = "label") -> Callable[[Any], tuple]:
    """Output transform giving ``(predictions, targets)`` of one head (``"mri"`` or ``"xray"``).

    The engine's output holds dictionaries (``{"pred": {"xray": ..., "mri": ...}, "label":
    {...}}``), either as a batch or decollated into a list of items; MONAI metric handlers
    want a pair. Example (config): ``"output_transform":
    "$xray2mri.pipeline.training.engine.pred_target('mri')"``.
    """

    def _transform(output: Any) -> tuple:
        if isinstance(output, Mapping):
            return output[pred_key][key], output[label_key][key]
        return [o[pred_key][key] for o in output], [o[label_key][key] for o in output]

    return _transform


def _scalar(value: Any) -> float:
    return float(value.detach().mean()) if isinstance(value, torch.Tensor) else float(value)


def loss_terms(loss_fn: Any, loss_key: str = "loss") -> Callable[[Any], dict[str, float]]:
    """Output transform giving the total loss and each term of ``loss_fn`` as ``{name: float}``.

    ``loss_fn`` is the bundle's :class:`~xray2mri.pipeline.training.losses.HybridLoss`, which records
    the terms of its latest call in ``loss_fn.last_terms`` (``{"xray": ..., "mri": ..., "total": ...}``;
    the total is the engine's ``loss`` already and is not repeated).
    MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` print / plot every entry of the
    returned dict, so each term shows in the training log and in TensorBoard as
    ``loss_<term>``. Works on a batch output or a decollated list.
    """

    def _transform(output: Any) -> dict[str, float]:
        first = output if isinstance(output, Mapping) else output[0]
        values = {loss_key: _scalar(first[loss_key])}
        for name, value in (getattr(loss_fn, "last_terms", None) or {}).items():
            if name != "total":
                values[f"{loss_key}_{name}"] = _scalar(value)
        return values

    return _transform


def subject_meta(batch: Any, subject_key: str = "subject") -> list[dict[str, str]]:
    """``[{"filename_or_obj": subject}, ...]`` for a batch: MetricsSaver's ``batch_transform``.

    MONAI's ``MetricsSaver`` labels each row of its per-image CSV with the
    ``filename_or_obj`` of the item's meta; the subject id names the row better than the
    radiograph's path, and is what the per-subject prediction files are named after.
    """
    items = batch if isinstance(batch, list) else None
    if items is None:
        subjects = batch[subject_key]
        return [{"filename_or_obj": str(s)} for s in subjects]
    return [{"filename_or_obj": str(item[subject_key])} for item in items]


def metric_score(name: str, sign: float = 1.0) -> Callable[[Engine], float]:
    """Score function reading ``engine.state.metrics[name]`` (times ``sign``), e.g. for early stopping."""

    def _score(engine: Engine) -> float:
        return sign * float(engine.state.metrics[name])

    return _score


# --------------------------------------------------------------------------------------------
# reading the training config from the other configs


def _train_parser(bundle_root: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Any:
    from monai.bundle import ConfigParser

    path = Path(bundle_root) / "configs" / "train.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the bundle's train.json (where sizes and the network are set) not found")
    parser = ConfigParser()
    parser.read_config(str(path))
    parser["bundle_root"] = str(bundle_root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def train_setting(bundle_root: str | os.PathLike, key: str) -> Any:
    """The value of ``key`` (e.g. ``"mri_spacing"``) as ``bundle_root/configs/train.json`` sets it.

    ``inference.json`` is run on its own, yet sizes and spacings are written once, in
    ``train.json``; it reads them with this function.
    """
    return _train_parser(bundle_root).get_parsed_content(key)


def network_from_bundle(
    bundle_root: str | os.PathLike, return_dict: bool = False, **overrides: Any
) -> torch.nn.Module:
    """The network ``network_def`` of ``bundle_root/configs/train.json``, built with ``return_dict``.

    ``overrides`` replace train.json ids before building (e.g. ``xray_size``, ``variant``), so
    ``inference.json`` passes its own overridable values through. The same weights load into
    the training (dict) and inference (MRI tensor) forms.
    """
    parser = _train_parser(bundle_root, overrides)
    parser["network_def#return_dict"] = bool(return_dict)
    return parser.get_parsed_content("network_def")
