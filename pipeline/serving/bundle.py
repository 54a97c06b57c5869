"""The one way into a bundle folder: its configs (with overrides), verified weights, declared preprocessing.

Prediction (:class:`~xray2mri.pipeline.serving.predict.Predictor`), the evaluation's baselines and
the MONAI Label app all open a bundle through :func:`open_bundle`, so every path reads the same
configs the same way. An exported bundle (one whose metadata records checksums) is verified
file by file (:func:`~xray2mri.pipeline.serving.integrity.verify_bundle`: configs, ``scripts/``,
docs, weights) before any of its configs is parsed or its code imported; its configs name its
own vendored code (``scripts.*``), which is put first on ``sys.path``. ``inference.json`` /
``evaluate.json`` run under ``python -m monai.bundle run`` read the same configs themselves and
call the same verification.

Example::

    bundle = open_bundle("bundles/knee_xray2mri")            # configs/inference.json
    net = bundle.network()                                   # models/model.pt, verified, eval mode
    item = bundle.preprocessing()({bundle.image_key: "knee.dcm"})
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xray2mri.pipeline.serving.integrity import verify_bundle
from xray2mri.pipeline.training.checkpoints import BUNDLE_WEIGHTS, load_weights
from xray2mri.transforms.errors import InputError

__all__ = [
    "OpenedBundle",
    "open_bundle",
    "load_state_dict",
    "DEFAULT_WEIGHTS",
    "INFERENCE_CONFIGS",
    "EVALUATE_CONFIGS",
]

#: Where a bundle keeps the weights of its declared variant (the model zoo's convention).
DEFAULT_WEIGHTS: str = BUNDLE_WEIGHTS
#: The package an exported bundle's vendored code is imported as (its ``scripts/`` folder).
SCRIPTS_PACKAGE: str = "scripts"
#: Config files read to serve a bundle (relative to ``configs/``); later files override earlier ones.
INFERENCE_CONFIGS: tuple[str, ...] = ("inference.json",)
#: Config files read to evaluate a bundle on a datalist: training's ids with evaluate.json over them.
EVALUATE_CONFIGS: tuple[str, ...] = ("train.json", "evaluate.json")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Network weights from ``path``: a plain state dict or a training checkpoint (``{"model": ...}``).

    Read with ``torch.load(weights_only=True)``; a DDP ``module.`` prefix is removed.
    """
    from xray2mri.pipeline.training.checkpoints import load_checkpoint, model_state

    try:
        return model_state(load_checkpoint(path))
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc


@dataclass
class OpenedBundle:
    """A bundle folder with its configs parsed (nothing built until asked).

    Attributes:
        root: the bundle folder.
        parser: a :class:`monai.bundle.ConfigParser` holding the configs read, ``bundle_root``
            set to ``root`` and the overrides applied.
        config_files: the files read, in order.
    """

    root: Path
    parser: Any
    config_files: tuple[Path, ...]

    def has(self, key: str) -> bool:
        """Whether the configs define ``key``."""
        return key in self.parser

    def setting(self, key: str, default: Any = None) -> Any:
        """The evaluated value of ``key`` (e.g. ``"mri_spacing"``), or ``default`` when not defined."""
        return self.parser.get_parsed_content(key) if key in self.parser else default

    @property
    def image_key(self) -> str:
        """The item key of the radiograph (``image_key`` in the configs, else ``"xray"``)."""
        return str(self.setting("image_key", "xray"))

    def weights_path(self, weights: str | os.PathLike | None = None) -> Path:
        """``weights`` if given, else the bundle's ``models/model.pt``."""
        return Path(weights) if weights is not None else self.root / DEFAULT_WEIGHTS

    def network(
        self, weights: str | os.PathLike | None = None, random_init: bool = False, key: str = "network_def"
    ) -> torch.nn.Module:
        """Build ``key`` and load its verified weights (``random_init`` keeps the untrained ones); eval mode.

        Raises:
            MissingWeightsError: no weights file (a FileNotFoundError; the message says how to get one).
        """
        network = self.parser.get_parsed_content(key)
        if not random_init:
            load_weights(network, self.weights_path(weights))
        return network.eval()

    def preprocessing(self, key: str | Sequence[str] = "preprocessing") -> Any:
        """Instantiate the preprocessing chain the configs declare (the first of ``key`` that exists)."""
        keys = [key] if isinstance(key, str) else list(key)
        found = next((k for k in keys if k in self.parser), None)
        if found is None:
            raise InputError(self.config_files[-1], f"defines none of the preprocessing ids {keys}")
        return self.parser.get_parsed_content(found, instantiate=True)


def open_bundle(
    bundle_dir: str | os.PathLike,
    configs: Sequence[str] = INFERENCE_CONFIGS,
    overrides: Mapping[str, Any] | None = None,
) -> OpenedBundle:
    """Read ``bundle_dir/configs/<configs>`` (later files over earlier), set ``bundle_root`` and ``overrides``.

    Raises:
        FileNotFoundError: a config file is missing (the message says which, and that a
            bundle folder is expected).
        BundleIntegrityError: an exported bundle's file was changed, truncated, removed or added.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir)
    files = tuple(root / "configs" / name for name in configs)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: no configs/{missing[0].name}; is this a bundle folder?")
    verify_bundle(root)  # an exported bundle: every file as exported, before anything of it is read
    if (root / SCRIPTS_PACKAGE / "__init__.py").is_file():
        _use_scripts_of(root)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    return OpenedBundle(root=root, parser=parser, config_files=files)


def _use_scripts_of(root: Path) -> None:
    """Make ``import scripts`` give ``root/scripts`` (this bundle's vendored code), not another bundle's.

    One process may open several exported bundles (tests, a server): a ``scripts`` package
    imported from another folder is dropped from ``sys.modules`` first.
    """
    folder = str(root.resolve())
    loaded = sys.modules.get(SCRIPTS_PACKAGE)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent.parent != Path(folder):
        for name in [m for m in sys.modules if m == SCRIPTS_PACKAGE or m.startswith(SCRIPTS_PACKAGE + ".")]:
            del sys.modules[name]
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    _share_error_types(root)


def _share_error_types(root: Path) -> None:
    """Let this process catch the bundle's input errors as its own ``InputError`` when the code is the same.

    The vendored ``scripts/transforms/errors.py`` defines ``InputError`` and its subclasses again;
    a caller here (``xray2mri predict`` skipping a bad radiograph, MONAI Label) catches the
    installed classes. When the vendored module is the installed one renamed, byte for byte, the
    installed module stands in for it (it imports nothing of the package, so nothing else is
    mixed); a bundle exported from other code keeps its own classes.
    """
    import importlib.util

    from xray2mri.pipeline.serving.vendor import rewrite_module_names
    from xray2mri.transforms import errors

    name = f"{SCRIPTS_PACKAGE}.transforms.errors"
    vendored = root / SCRIPTS_PACKAGE / "transforms" / "errors.py"
    spec = importlib.util.find_spec(errors.__name__)
    if name in sys.modules or not vendored.is_file() or spec is None or spec.origin is None:
        return
    if vendored.read_text() == rewrite_module_names(Path(spec.origin).read_text()):
        sys.modules[name] = errors
