"""Engine glue for the ``knee_xray2mri`` bundle: what its JSON configs cannot say on their own.

The bundle's configs declare a MONAI :class:`~monai.engines.SupervisedTrainer` and
:class:`~monai.engines.SupervisedEvaluator`; this module supplies the few callables and Ignite
handlers they name:

* :func:`prepare_batch` turns a collated item batch into ``(xray, {"xray": xray, "mri": mri})``,
  the inputs and the two targets of :class:`~xray2mri.pipeline.networks.Xray2MRI` and
  :class:`~xray2mri.pipeline.losses.HybridLoss`.
* :class:`RandPairedZoomd`: one random isotropic zoom applied to the radiograph and its MRI.
* output transforms for the dictionary predictions: :func:`pred_target` (metric pairs of one
  head), :func:`loss_terms` (the total loss and each term of the hybrid loss, for the console
  and TensorBoard), :func:`metric_score`.
* :class:`TensorBoardSlices`: central MRI slices (three planes, target | prediction) and the
  radiograph | its reconstruction as TensorBoard images after each validation.
* checkpoints that survive a kill: :func:`save_atomic` (temporary file, fsync, rename),
  :class:`LatestCheckpoint` (model, optimizer, scheduler and trainer state every epoch),
  :class:`BestCheckpoint` (the model with the best validation metric), :class:`ResumeFrom`
  (continue a run from the latest checkpoint) and :func:`install_weights` (the weights alone
  as the bundle's ``models/model.pt``). Every checkpoint is read with ``weights_only=True``.
* writers of what evaluation and inference produce: :class:`SaveEvaluationVolumes` (per-subject
  NIfTI in the canonical preprocessed space) and :class:`SaveInferenceVolumes` (NIfTI on the
  radiograph's own side), both marked SYNTHETIC.
* :func:`summary_writer` (TensorBoard on the main process only) and :func:`train_setting` /
  :func:`network_from_bundle` (read sizes and the network from ``train.json``, the one place
  they are written, so ``inference.json`` never repeats them).

Under ``torchrun``, checkpoints and TensorBoard are written by rank 0 only; the evaluation and
inference writers write the items each process was given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Zoom
from monai.utils import ensure_tuple_rep

from xray2mri.pipeline.atomic import atomic_file
from xray2mri.transforms.geometry import LR_FLIP_AXIS, MIRRORED_KEY

__all__ = [
    "MODEL_KEY",
    "BEST_NAME",
    "LATEST_NAME",
    "prepare_batch",
    "pred_target",
    "loss_terms",
    "metric_score",
    "subject_meta",
    "RandPairedZoomd",
    "is_main_process",
    "summary_writer",
    "NullSummaryWriter",
    "TensorBoardSlices",
    "save_atomic",
    "load_checkpoint",
    "model_state",
    "LatestCheckpoint",
    "BestCheckpoint",
    "ResumeFrom",
    "install_weights",
    "SaveEvaluationVolumes",
    "SaveInferenceVolumes",
    "inference_items",
    "train_setting",
    "network_from_bundle",
]


#: Key of the network weights inside every checkpoint this module writes (``ckpt_export --key_in_ckpt``).
MODEL_KEY: str = "model"
#: Key of the Ignite engine state (epoch, iteration) inside a latest checkpoint.
TRAINER_KEY: str = "trainer"
#: File names of the checkpoints in a run's ``ckpt_dir`` (train.json: ``<output_dir>/checkpoints``).
BEST_NAME: str = "checkpoint_best.pt"
LATEST_NAME: str = "checkpoint_latest.pt"

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
    """Inputs and targets of one iteration: ``(xray, {"xray": xray, "mri": mri})``.

    The radiograph is both the network's input and the target of its reconstruction head;
    the MRI is the target of the generator. Batches without ``"mri"`` (inference) give
    ``{"xray": xray}`` alone. Used by the trainer and evaluators of the bundle as
    ``"prepare_batch": "$xray2mri.pipeline.engine.prepare_batch"``.

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
    return xray, targets


def pred_target(key: str, pred_key: str = "pred", label_key: str = "label") -> Callable[[Any], tuple]:
    """Output transform giving ``(predictions, targets)`` of one head (``"mri"`` or ``"xray"``).

    The engine's output holds dictionaries (``{"pred": {"xray": ..., "mri": ...}, "label":
    {...}}``), either as a batch or decollated into a list of items; MONAI metric handlers
    want a pair. Example (config): ``"output_transform":
    "$xray2mri.pipeline.engine.pred_target('mri')"``.
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

    ``loss_fn`` is the bundle's :class:`~xray2mri.pipeline.losses.HybridLoss`, which records
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
# paired augmentation


class RandPairedZoomd(RandomizableTransform, MapTransform):
    """Zoom a radiograph and its MRI about their centres by one random isotropic factor.

    Both modalities cover the same field of view in millimetres, centred on the knee, so one
    isotropic zoom applied to the 2-D radiograph (1, H, W) and the 3-D volume (1, D, H, W)
    keeps them paired: it mimics a larger or smaller knee. (MONAI's ``RandZoomd`` expands its
    factor to the first key's number of dimensions and so cannot serve a 2-D and a 3-D key
    together.) Unlike a random left-right flip, it does not turn the canonical right knee
    into a left one. The sizes are kept (crop or ``padding_mode`` pad after zooming).

    Args:
        keys: keys of the images to zoom together.
        prob: probability of zooming an item.
        min_zoom, max_zoom: range of the factor (> 1 magnifies).
        mode: interpolation per key (or one for all); ``None`` picks ``"bilinear"`` for 2-D
            and ``"trilinear"`` for 3-D images.
        padding_mode: how zoomed-out images are padded back to size (``Zoom``'s ``padding_mode``).
        allow_missing_keys: do not fail when a key is absent.
    """

    backend = Zoom.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        min_zoom: float = 0.9,
        max_zoom: float = 1.1,
        mode: str | Sequence[str | None] | None = None,
        padding_mode: str = "edge",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0 < min_zoom <= max_zoom:
            raise ValueError(f"need 0 < min_zoom <= max_zoom, got {min_zoom}, {max_zoom}")
        self.min_zoom, self.max_zoom = float(min_zoom), float(max_zoom)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = padding_mode
        self._zoom = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._zoom = float(self.R.uniform(self.min_zoom, self.max_zoom))

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key, mode in self.key_iterator(d, self.mode):
            img = d[key]
            if mode is None:
                mode = "bilinear" if img.ndim == 3 else "trilinear"
            d[key] = Zoom(zoom=self._zoom, mode=mode, padding_mode=self.padding_mode, keep_size=True)(img)
        return d


# --------------------------------------------------------------------------------------------
# processes and TensorBoard


def is_main_process() -> bool:
    """True unless running as a non-zero rank of an initialised ``torch.distributed`` group."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


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
    * ``<tag>/xray``: the radiograph and its reconstruction side by side.

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
        self.writer.flush()


# --------------------------------------------------------------------------------------------
# checkpoints


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file in the same folder, fsync and rename.

    A reader (or a run killed while saving) sees the previous complete file or the new
    complete file, never a partial one. The file is readable by group and others, like a
    plain ``torch.save``.
    """
    path = Path(path)
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (tensors and plain containers only).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says which file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    return torch.load(path, map_location=map_location, weights_only=True)


def _unwrap(module: Any) -> Any:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper, else ``module``."""
    return getattr(module, "module", module) if isinstance(
        module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    ) else module


def model_state(checkpoint: Mapping[str, Any], key: str = MODEL_KEY) -> dict[str, torch.Tensor]:
    """The network weights in ``checkpoint``: its ``key`` entry if nested, else the checkpoint itself.

    A ``module.`` prefix left by a DDP-wrapped network is removed.

    Raises:
        ValueError: neither a state dict of tensors nor a checkpoint with a ``key`` entry.
    """
    state = checkpoint.get(key) if isinstance(checkpoint, Mapping) and key in checkpoint else checkpoint
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"not a network state dict and no {key!r} entry holding one (found: {keys})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _state_of(obj: Any) -> Any:
    return _unwrap(obj).state_dict()


class LatestCheckpoint:
    """Save the full training state to one file after every ``interval`` epochs, atomically.

    The file holds ``{name: obj.state_dict()}`` for every entry of ``save_dict`` (network,
    optimizer, LR scheduler, the :class:`BestCheckpoint` tracker, ...) plus ``"trainer"``: the
    state (epoch, iteration) of the engine the handler is attached to, so the config does not
    need to refer to the trainer from inside its own handler list. :class:`ResumeFrom`
    restores it; a run killed mid-epoch loses at most that epoch. Written on rank 0 only.

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects with ``state_dict()``; a DDP-wrapped network is unwrapped.
        filename: name of the file in ``save_dir``.
        interval: save every this many epochs.
    """

    def __init__(
        self, save_dir: str | os.PathLike, save_dict: Mapping[str, Any], filename: str = LATEST_NAME,
        interval: int = 1,
    ) -> None:
        if TRAINER_KEY in save_dict:
            raise ValueError(f"save_dict must not hold {TRAINER_KEY!r}: the attached engine's state is saved under it")
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.interval = int(interval)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        checkpoint = {name: _state_of(obj) for name, obj in self.save_dict.items()}
        checkpoint[TRAINER_KEY] = engine.state_dict()
        save_atomic(checkpoint, self.path)
        engine.logger.info(f"saved latest checkpoint (epoch {engine.state.epoch}): {self.path}")


class BestCheckpoint:
    """Save the network whenever the validation metric ``metric_name`` improves, atomically.

    Attach to the evaluator. The file holds ``{"model": state_dict, "epoch": int, "metric":
    {metric_name: value}}``; ``install_weights`` extracts the weights from it and
    ``ckpt_export --key_in_ckpt model`` reads it directly. ``state_dict``/``load_state_dict``
    carry the best value so far through :class:`LatestCheckpoint` / :class:`ResumeFrom`, so a
    resumed run does not overwrite a better earlier model. Written on rank 0 only.

    Args:
        save_dir: folder of the checkpoint.
        network: the network (a DDP wrapper is unwrapped).
        metric_name: key of ``engine.state.metrics`` to track.
        mode: ``"max"`` (higher is better, e.g. PSNR) or ``"min"``.
        filename: name of the file in ``save_dir``.
    """

    def __init__(
        self, save_dir: str | os.PathLike, network: torch.nn.Module, metric_name: str, mode: str = "max",
        filename: str = BEST_NAME,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.path = Path(save_dir) / filename
        self.network = network
        self.metric_name = metric_name
        self.mode = mode
        self.best_metric = -math.inf if mode == "max" else math.inf
        self.best_epoch = -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def state_dict(self) -> dict[str, Any]:
        return {"metric_name": self.metric_name, "best_metric": float(self.best_metric), "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("metric_name", self.metric_name) != self.metric_name:
            return  # another metric (e.g. CAE pretraining tracked the radiograph): start afresh
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])

    def __call__(self, engine: Engine) -> None:
        value = float(engine.state.metrics[self.metric_name])
        better = value > self.best_metric if self.mode == "max" else value < self.best_metric
        if not better or math.isnan(value):
            return
        self.best_metric, self.best_epoch = value, int(engine.state.epoch)
        if is_main_process():
            checkpoint = {MODEL_KEY: _state_of(self.network), "epoch": self.best_epoch,
                          "metric": {self.metric_name: value}}
            save_atomic(checkpoint, self.path)
            engine.logger.info(f"saved best checkpoint ({self.metric_name}={value:.4f}, epoch {self.best_epoch}): {self.path}")


class ResumeFrom:
    """Continue training from a :class:`LatestCheckpoint` file when the run starts.

    Attach to the trainer. At ``STARTED`` it restores every entry of ``load_dict`` and the
    trainer's epoch and iteration, so Ignite continues with the next epoch; the configured
    ``max_epochs`` is kept (a resumed run can be given more epochs). A checkpoint whose epoch
    already reaches ``max_epochs`` ends the run at once. Reads with ``weights_only=True``.

    Args:
        load_path: the latest checkpoint.
        load_dict: objects with ``load_state_dict`` by checkpoint key (network, optimizer,
            lr_scheduler, best tracker); a key missing from the checkpoint raises KeyError.
        map_location: ``torch.load`` map_location (default: CPU; the objects move the tensors).
        enabled: ``False`` makes the handler do nothing (the config's ``resume`` switch).

    Raises:
        FileNotFoundError: (at start) resuming was asked for and ``load_path`` does not exist.
    """

    def __init__(
        self, load_path: str | os.PathLike, load_dict: Mapping[str, Any], map_location: Any = "cpu",
        enabled: bool = True,
    ) -> None:
        self.load_path = Path(load_path)
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        self.enabled = bool(enabled)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.load_path.is_file():
            raise FileNotFoundError(
                f"{self.load_path}: no checkpoint to resume from; train without --resume first "
                "(or point --ckpt_dir at the run to continue)"
            )
        checkpoint = load_checkpoint(self.load_path, self.map_location)
        missing = [k for k in (*self.load_dict, TRAINER_KEY) if k not in checkpoint]
        if missing:
            raise KeyError(f"{self.load_path}: checkpoint has no {missing} (keys: {sorted(checkpoint)})")
        for name, obj in self.load_dict.items():
            _unwrap(obj).load_state_dict(checkpoint[name])
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(checkpoint[TRAINER_KEY])
        engine.state.max_epochs = max_epochs
        engine.logger.info(f"resumed from {self.load_path} at epoch {engine.state.epoch} (max_epochs {max_epochs})")


def install_weights(
    checkpoint: str | os.PathLike, bundle_dir: str | os.PathLike, key: str = MODEL_KEY
) -> Path:
    """Write the network weights of ``checkpoint`` alone as ``bundle_dir/models/model.pt``, atomically.

    ``checkpoint`` may be a :class:`BestCheckpoint` / :class:`LatestCheckpoint` file (weights
    under ``key``) or a plain state dict. ``models/model.pt`` is what ``inference.json`` and
    ``evaluate.json`` load and what ``ckpt_export`` exports without ``--key_in_ckpt``.

    Returns:
        the path written.
    """
    state = model_state(load_checkpoint(checkpoint), key=key)
    return save_atomic(state, Path(bundle_dir) / "models" / "model.pt")


# --------------------------------------------------------------------------------------------
# writing evaluation and inference volumes


def _items(batch: Any) -> list[dict]:
    """A collated batch (dict of stacked values) or a decollated list, as a list of item dicts."""
    if isinstance(batch, Mapping):
        from monai.data import decollate_batch

        return decollate_batch(batch, detach=True)
    return list(batch)


def _affine4(meta_tensor: Any) -> np.ndarray:
    """The 4x4 affine of a MetaTensor (a 2-D image's 3x3 affine is embedded in 3-D)."""
    from monai.data.utils import to_affine_nd

    affine = getattr(meta_tensor, "affine", None)
    if affine is None:
        return np.eye(4)
    return np.asarray(to_affine_nd(3, torch.as_tensor(affine).double()), dtype=np.float64)


def _volume(t: torch.Tensor) -> np.ndarray:
    """A (1, ...) channel-first tensor as a float32 3-D array (a 2-D image gets a unit last axis)."""
    arr = torch.as_tensor(t).detach().float().cpu().numpy()
    arr = arr[0] if arr.shape[0] == 1 else arr
    return np.ascontiguousarray(arr[..., None] if arr.ndim == 2 else arr, dtype=np.float32)


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    """Write a generated volume: ``descrip`` marked SYNTHETIC, atomic (``writers.write_nifti``)."""
    from xray2mri.pipeline.writers import write_nifti

    write_nifti(array, affine, path, description=description)


def _write_source_nifti(array: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    """Write a preprocessed input/target (not generated: no SYNTHETIC claim of our own), atomically."""
    import nibabel as nib

    from xray2mri.pipeline.atomic import atomic_file

    img = nib.Nifti1Image(array, affine)
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    img.header.set_xyzt_units("mm", "sec")
    with atomic_file(path) as tmp:
        nib.save(img, tmp)


class SaveEvaluationVolumes:
    """Write each evaluated subject's outputs as NIfTI files in the canonical preprocessed space.

    Attach to the evaluator of ``evaluate.json``. For every item of every batch it writes into
    ``output_dir``:

    * ``<subject>_mri_pred.nii.gz``: the generated volume (marked SYNTHETIC in ``descrip``);
    * ``<subject>_xray_recon.nii.gz``: the radiograph reconstruction (SYNTHETIC);
    * ``<subject>_mri_target.nii.gz`` and ``<subject>_xray.nii.gz``: the preprocessed target
      and input (source data, not generated; whether *they* are synthetic is the cohort's
      business), so that evaluation compares voxel for voxel without re-running preprocessing.

    Each volume gets the affine of its preprocessed target (the MRI's, the radiograph's) and
    stays in the canonical, right-knee frame (left knees are not mirrored back: prediction and
    target share one grid). Writes are atomic; under ``torchrun`` each process writes the
    subjects its sampler gave it.

    Args:
        output_dir: folder of the files (created).
        subject_key: item key naming the subject (falls back to the radiograph's file name).
    """

    def __init__(self, output_dir: str | os.PathLike, subject_key: str = "subject") -> None:
        self.output_dir = Path(output_dir)
        self.subject_key = subject_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _subject(self, item: Mapping[str, Any]) -> str:
        subject = item.get(self.subject_key)
        if subject is None:
            name = getattr(item.get("xray"), "meta", {}).get("filename_or_obj", "item")
            subject = Path(str(name)).name.split(".")[0]
        return str(subject)

    def __call__(self, engine: Engine) -> None:
        batch_items = _items(engine.state.batch)
        output = engine.state.output
        preds = _items(output["pred"]) if isinstance(output, Mapping) else [o["pred"] for o in output]
        for item, pred in zip(batch_items, preds):
            subject = self._subject(item)
            mri_affine, xray_affine = _affine4(item["mri"]), _affine4(item["xray"])
            generated = {
                "mri_pred": (pred["mri"], mri_affine, "SYNTHETIC: generated by xray2mri (MRI from radiograph)"),
                "xray_recon": (pred["xray"], xray_affine, "SYNTHETIC: generated by xray2mri (radiograph reconstruction)"),
            }
            sources = {
                "mri_target": (item["mri"], mri_affine, "xray2mri evaluation target: preprocessed source MRI"),
                "xray": (item["xray"], xray_affine, "xray2mri evaluation input: preprocessed source radiograph"),
            }
            for suffix, (tensor, affine, description) in generated.items():
                _write_nifti(_volume(tensor), affine, self.output_dir / f"{subject}_{suffix}.nii.gz", description)
            for suffix, (tensor, affine, description) in sources.items():
                _write_source_nifti(_volume(tensor), affine, self.output_dir / f"{subject}_{suffix}.nii.gz", description)


class SaveInferenceVolumes:
    """Write each generated MRI volume as NIfTI on the radiograph's own side, marked SYNTHETIC.

    Attach to the evaluator of ``inference.json``. Left knees, mirrored to the canonical side
    before the network, are mirrored back along the column (R->L) axis; the volume gets the
    canonical ``"PIL"`` affine with ``spacing`` mm voxels, centred on the origin (the
    radiograph has no 3-D position). The file is ``<output_dir>/<radiograph stem>_mri_synthetic.nii.gz``.
    Writes are atomic; under ``torchrun`` each process writes its own items.

    Args:
        output_dir: folder of the files (created).
        spacing: voxel size (mm) of the network's output along (D, H, W): the bundle's ``mri_spacing``.
        image_key: item key of the radiograph (its meta gives the file name and the mirroring flag).
        suffix: appended to the radiograph's file stem.
    """

    def __init__(
        self, output_dir: str | os.PathLike, spacing: Sequence[float], image_key: str = "xray",
        suffix: str = "_mri_synthetic.nii.gz",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.spacing = tuple(float(s) for s in spacing)
        self.image_key = image_key
        self.suffix = suffix
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from xray2mri.pipeline.predict import canonical_affine

        batch_items = _items(engine.state.batch)
        output = engine.state.output
        preds = _items(output["pred"]) if isinstance(output, Mapping) else [o["pred"] for o in output]
        for item, pred in zip(batch_items, preds):
            mri = pred["mri"] if isinstance(pred, Mapping) else pred
            xray = item[self.image_key]
            meta = getattr(xray, "meta", {}) or {}
            if bool(meta.get(MIRRORED_KEY, item.get(MIRRORED_KEY, False))):
                mri = torch.flip(torch.as_tensor(mri), dims=(LR_FLIP_AXIS,))
            volume = _volume(mri)
            source = Path(str(meta.get("filename_or_obj", f"item{len(self.written)}")))
            stem = source.name[: -len(source.suffix)] if source.suffix.lower() in (".dcm", ".dicom") else source.name
            path = self.output_dir / f"{stem}{self.suffix}"
            _write_nifti(volume, canonical_affine(volume.shape, self.spacing), path,
                         "SYNTHETIC: generated by xray2mri from a radiograph; not acquired")
            self.written.append(path)
            engine.logger.info(f"wrote {path}")


def collate_unknown_meta(batch: Sequence[dict]) -> Any:
    """``list_data_collate`` for inference items whose meta may hold ``None`` (e.g. ``laterality`` of a
    radiograph that states no side): torch's collation refuses ``None``, so it becomes ``""`` here."""
    from monai.data import list_data_collate
    from monai.data.meta_tensor import MetaTensor

    for item in batch:
        for value in item.values():
            if isinstance(value, MetaTensor):
                for key, meta_value in list(value.meta.items()):
                    if meta_value is None:
                        value.meta[key] = ""
    return list_data_collate(batch)


def inference_items(inputs: str | os.PathLike | Sequence[str | os.PathLike] | None, key: str = "xray") -> list[dict]:
    """Items ``[{key: path}, ...]`` for ``inference.json`` from a file, a folder or a list of files.

    A folder contributes its ``*.dcm`` files (sorted); anything else is passed through for
    ``LoadXrayd`` to accept or refuse.

    Raises:
        ValueError: no input given.
        FileNotFoundError: a path that does not exist, or a folder without ``.dcm`` files.
    """
    if inputs is None or (isinstance(inputs, (str, os.PathLike)) and not str(inputs)):
        raise ValueError("no input radiograph: give --input FILE_OR_FOLDER (or a list of files)")
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    items = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".dcm")
            if not found:
                raise FileNotFoundError(f"{p}: no .dcm radiograph in this folder")
            items.extend({key: str(f)} for f in found)
        elif p.exists():
            items.append({key: str(p)})
        else:
            raise FileNotFoundError(f"{p}: input radiograph not found")
    return items


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
