"""Checkpoints that survive a kill: atomic saves, the latest (resumable) and best checkpoints,
resuming a run, loading weights into a network, and installing the best weights as the bundle's
``models/model.pt`` when training finishes (:class:`InstallWeights`, train.json) or by hand
(:func:`install_weights`, ``xray2mri bundle install-weights RUN_DIR``). Every checkpoint is read
with ``weights_only=True`` (by this module, not by MONAI's ``CheckpointLoader``, whose default
depends on the MONAI version); under ``torchrun`` only rank 0 writes."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from xray2mri.pipeline.atomic import atomic_file
from xray2mri.pipeline.training.distributed import is_main_process

__all__ = [
    "MODEL_KEY",
    "BEST_NAME",
    "LATEST_NAME",
    "save_atomic",
    "load_checkpoint",
    "model_state",
    "LatestCheckpoint",
    "BestCheckpoint",
    "ResumeFrom",
    "MissingWeightsError",
    "load_weights",
    "LoadWeights",
    "install_weights",
    "InstallWeights",
]


#: Key of the network weights inside every checkpoint this module writes (``ckpt_export --key_in_ckpt``).
MODEL_KEY: str = "model"
#: Key of the Ignite engine state (epoch, iteration) inside a latest checkpoint.
TRAINER_KEY: str = "trainer"
#: File names of the checkpoints in a run's ``ckpt_dir`` (train.json: ``<output_dir>/checkpoints``).
BEST_NAME: str = "checkpoint_best.pt"
LATEST_NAME: str = "checkpoint_latest.pt"


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
        save_dict: objects with ``state_dict()``; a DDP-wrapped network is unwrapped; an entry that is
            ``None`` (an optional part switched off, e.g. the discriminator) is left out.
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
        self.save_dict = {k: v for k, v in save_dict.items() if v is not None}
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
            lr_scheduler, best tracker); a key missing from the checkpoint raises KeyError; an entry
            that is ``None`` (an optional part switched off) is left out, as :class:`LatestCheckpoint` does.
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
        self.load_dict = {k: v for k, v in load_dict.items() if v is not None}
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


#: Where a bundle keeps the weights of its declared variant (the model zoo's convention), relative to it.
BUNDLE_WEIGHTS: str = "models/model.pt"


class MissingWeightsError(FileNotFoundError):
    """No weights file where a bundle config loads one; the message says how to get it."""


def load_weights(network: torch.nn.Module, path: str | os.PathLike, key: str = MODEL_KEY) -> torch.nn.Module:
    """Load the weights at ``path`` (a state dict, or a checkpoint with ``key``) into ``network``; returns it.

    What ``inference.json`` and ``evaluate.json`` call at ``initialize`` (``torch.load(weights_only=True)``;
    a DDP ``module.`` prefix and a DDP wrapper around ``network`` are both handled).

    Raises:
        MissingWeightsError: ``path`` does not exist (the message says how to get weights).
        ValueError: the file holds no network state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(
            f"{path}: no weights. train.json installs the best weights as {BUNDLE_WEIGHTS} under bundle_root "
            "when it finishes; or install a run's: `xray2mri bundle install-weights RUN_DIR --bundle BUNDLE`; "
            "or give a weights file: --weights PATH"
        )
    _unwrap(network).load_state_dict(model_state(load_checkpoint(path), key=key))
    return network


class LoadWeights:
    """Load network weights when the engine starts (train.json's ``init_from``: stage 2 from a stage-1 run).

    The weights-only counterpart of MONAI's ``CheckpointLoader``, reading with
    ``weights_only=True`` whatever the MONAI version (see :func:`load_weights`).

    Args:
        load_path: a state dict or a checkpoint with a ``"model"`` entry.
        network: the network to load into (a DDP wrapper is unwrapped).
        enabled: ``False`` makes the handler do nothing.
    """

    def __init__(self, load_path: str | os.PathLike | None, network: torch.nn.Module, enabled: bool = True) -> None:
        self.load_path = load_path
        self.network = network
        self.enabled = bool(enabled) and load_path is not None

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        load_weights(self.network, self.load_path)
        engine.logger.info(f"loaded network weights from {self.load_path}")


def _install(checkpoint: str | os.PathLike, dest: str | os.PathLike, key: str = MODEL_KEY) -> Path:
    return save_atomic(model_state(load_checkpoint(checkpoint), key=key), dest)


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
    return _install(checkpoint, Path(bundle_dir) / BUNDLE_WEIGHTS, key)


class InstallWeights:
    """When training completes, install the best weights as the bundle's ``models/model.pt`` (rank 0, atomically).

    Attach to the trainer (train.json: ``"path": "@weights"``, i.e. ``<bundle_root>/models/model.pt``),
    so ``inference.json`` runs right after ``train.json``. The file is written only when ``best``
    saved a checkpoint in this run (or the run it resumed): a run without validation installs
    nothing (logged) rather than weights nobody chose. Under ``torchrun`` only rank 0 writes.

    Args:
        best: the evaluator's :class:`BestCheckpoint` (its file and whether it saved).
        path: where the weights go (a zoo-style state dict).
        enabled: ``False`` makes the handler do nothing (train.json's ``install_weights`` switch:
            off for runs that must not replace the bundle's weights, e.g. another variant or seed).
    """

    def __init__(self, best: BestCheckpoint, path: str | os.PathLike, enabled: bool = True) -> None:
        self.best = best
        self.path = Path(path)
        self.enabled = bool(enabled)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        if self.best.best_epoch < 0 or not self.best.path.is_file():
            engine.logger.warning(f"no best checkpoint saved (validation never ran?): {self.path} not installed")
            return
        _install(self.best.path, self.path)
        engine.logger.info(
            f"installed the best weights ({self.best.metric_name}={self.best.best_metric:.4f}, epoch "
            f"{self.best.best_epoch}) as {self.path}"
        )
