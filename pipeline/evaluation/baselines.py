"""Honest baselines for radiograph -> MRI generation, evaluated on the same split as the model.

* **Mean training volume**: the voxel-wise mean of the preprocessed training MRIs, the same
  prediction for every test radiograph. A model that does not beat it has learnt nothing
  subject-specific.
* **Nearest-neighbour retrieval**: the training MRI whose preprocessed radiograph is closest in
  L2 (Euclidean) distance to the test radiograph. A model that does not beat it only memorises.

The core functions are pure (arrays in, arrays out). :func:`bundle_preprocessing` builds the
bundle's own deterministic preprocessing from its configs (``monai.bundle.ConfigParser``; sizes and
spacings are read from there, never repeated here) and :func:`load_split` runs a datalist split
through it (or through any callable a caller passes), so baselines and model share one canonical
space: ``(1, H, W)`` radiographs and ``(1, D, H, W)`` MRIs in [0, 1], left knees mirrored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xray2mri.transforms.errors import InputError

__all__ = [
    "mean_volume",
    "nearest_neighbour_indices",
    "Baselines",
    "BASELINE_NAMES",
    "bundle_preprocessing",
    "load_split",
    "read_datalist",
    "PREPROCESSING_IDS",
    "SIZE_IDS",
]

#: Row names of the baselines in every table and figure.
BASELINE_NAMES: dict[str, str] = {
    "mean": "mean training volume",
    "nn": "nearest-neighbour retrieval",
}


def _stack(arrays: Sequence, name: str) -> np.ndarray:
    if len(arrays) == 0:
        raise ValueError(f"{name}: need at least one array")
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"{name}: arrays differ in shape: {sorted(shapes)}")
    return np.stack([np.asarray(a, dtype=np.float32) for a in arrays])


def mean_volume(volumes: Sequence) -> np.ndarray:
    """Voxel-wise mean of same-shape volumes (float32, same shape as one volume)."""
    return _stack(volumes, "mean_volume").mean(axis=0, dtype=np.float64).astype(np.float32)


def nearest_neighbour_indices(queries: Sequence, references: Sequence) -> np.ndarray:
    """For each query image, the index of the reference image at the smallest L2 distance.

    Ties go to the lowest index. Queries and references must all have one shape.
    """
    q = _stack(queries, "queries").reshape(len(queries), -1).astype(np.float64)
    r = _stack(references, "references").reshape(len(references), -1).astype(np.float64)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and references differ in size: {q.shape[1]} vs {r.shape[1]} values")
    # |q - r|^2 = |q|^2 - 2 q.r + |r|^2, computed exactly enough in float64
    d2 = (q**2).sum(1)[:, None] - 2.0 * q @ r.T + (r**2).sum(1)[None, :]
    return np.argmin(d2, axis=1)


@dataclass
class Baselines:
    """Both baselines fitted on one training set.

    Args:
        train_xrays: preprocessed training radiographs, one shape (e.g. ``(1, H, W)``).
        train_mris: preprocessed training MRIs in the same order, one shape (e.g. ``(1, D, H, W)``).
        train_ids: subject ids in the same order (to report which neighbour was retrieved).

    Example::

        b = Baselines(train_xrays, train_mris, train_ids)
        preds = b.predict(test_xray)   # {"mean": volume, "nn": volume}
    """

    train_xrays: Sequence
    train_mris: Sequence
    train_ids: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if len(self.train_xrays) != len(self.train_mris):
            raise ValueError(
                f"{len(self.train_xrays)} training radiographs but {len(self.train_mris)} training MRIs"
            )
        self._mean = mean_volume(self.train_mris)
        self._xrays = _stack(self.train_xrays, "train_xrays")

    @property
    def mean(self) -> np.ndarray:
        """The mean training volume."""
        return self._mean

    def neighbour(self, xray) -> int:
        """Index of the training subject whose radiograph is nearest (L2) to ``xray``."""
        return int(nearest_neighbour_indices([xray], self._xrays)[0])

    def predict(self, xray) -> dict[str, np.ndarray]:
        """``{"mean": mean volume, "nn": retrieved training volume}`` for one preprocessed radiograph."""
        return {"mean": self._mean, "nn": np.asarray(self.train_mris[self.neighbour(xray)], dtype=np.float32)}


# ---------------------------------------------------------------------------------------------
# The training set through the bundle's preprocessing
# ---------------------------------------------------------------------------------------------

#: Config ids tried, in order, for the bundle's deterministic (non-augmenting) preprocessing.
PREPROCESSING_IDS: tuple[str, ...] = ("validate#preprocessing", "evaluate#preprocessing", "preprocessing")
#: Size ids of the bundle's ``train.json`` (read, never repeated).
SIZE_IDS: tuple[str, ...] = ("xray_size", "xray_spacing", "mri_shape", "mri_spacing")
#: Datalist keys holding file paths (resolved against the base directory).
PATH_KEYS: tuple[str, ...] = ("xray", "mri", "labels")

Preprocess = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def bundle_preprocessing(
    bundle_dir: str | os.PathLike, preprocessing_id: str | None = None
) -> tuple[Preprocess, dict[str, Any]]:
    """The bundle's deterministic preprocessing as a callable, and its sizes (``SIZE_IDS``).

    Reads ``configs/train.json`` (and ``configs/evaluate.json`` over it when present) with
    :class:`monai.bundle.ConfigParser` and instantiates ``preprocessing_id`` (default: the first of
    :data:`PREPROCESSING_IDS` that the configs define). The callable takes a datalist item with
    absolute paths and returns it preprocessed; ground-truth label maps (``labels``) that the
    bundle's chain leaves alone are loaded, mirrored and resampled with the MRI chain's
    label mode (nearest neighbour) at the bundle's ``mri_spacing`` / ``mri_shape``.
    """
    from monai.transforms import Compose

    from xray2mri.pipeline.serving.bundle import EVALUATE_CONFIGS, open_bundle
    from xray2mri.transforms.laterality import MirrorToCanonicalSided
    from xray2mri.transforms.mri import LoadMrid, PreprocessMrid

    configs = Path(bundle_dir) / "configs"
    names = [n for n in EVALUATE_CONFIGS if (configs / n).is_file() or n == EVALUATE_CONFIGS[0]]
    if not (configs / names[0]).is_file():
        raise InputError(configs / names[0], "bundle has no configs/train.json")
    bundle = open_bundle(bundle_dir, configs=names)
    missing = [k for k in SIZE_IDS if not bundle.has(k)]
    if missing:
        raise InputError(bundle.config_files[0], f"defines no {', '.join(missing)}; the evaluation reads sizes from there")
    sizes = {k: bundle.setting(k) for k in SIZE_IDS}
    chain = bundle.preprocessing([preprocessing_id] if preprocessing_id else list(PREPROCESSING_IDS))
    label_chain = Compose(
        [
            LoadMrid(keys="labels"),
            MirrorToCanonicalSided(keys="labels"),
            PreprocessMrid(
                keys="labels", spacing=sizes["mri_spacing"], shape=sizes["mri_shape"], label_keys="labels"
            ),
        ]
    )

    def run(item: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(chain(dict(item)))
        if item.get("labels") is not None and not hasattr(
            out.get("labels"), "shape"
        ):  # dropped or left as a path
            out["labels"] = label_chain({"labels": item["labels"], "side": item.get("side")})["labels"]
        return out

    return run, sizes


def _resolve(item: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    d = dict(item)
    for key in PATH_KEYS:
        if d.get(key):
            d[key] = str(base_dir / d[key])
    return d


def read_datalist(datalist: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """The items of one split (``training``, ``validation``, ``test``) of a decathlon-style datalist."""
    path = Path(datalist)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read the datalist: {err}") from err
    if split not in data or not isinstance(data[split], list):
        raise InputError(
            path, f"no {split!r} list; found {sorted(k for k in data if isinstance(data[k], list))}"
        )
    return list(data[split])


def load_split(
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    split: str,
    preprocess: Preprocess,
    keys: Sequence[str] = ("xray", "mri"),
) -> list[dict[str, Any]]:
    """Every item of ``split`` run through ``preprocess``; ``keys`` come back as numpy arrays.

    Each returned dict holds ``subject``, ``side``, ``grade`` (when listed), the item's resolved
    paths under ``<key>_path`` and the preprocessed arrays under ``keys`` (channel kept).
    """
    base = Path(base_dir)
    out = []
    for item in read_datalist(datalist, split):
        resolved = _resolve(item, base)
        for key in PATH_KEYS:  # load only what is asked for
            if key not in keys:
                resolved.pop(key, None)
        try:
            processed = preprocess(resolved)
        except InputError:
            raise
        except Exception as err:  # a transform failing on a file: name the subject and file
            raise InputError(
                resolved.get("mri"), f"preprocessing subject {item.get('subject')} failed: {err}"
            ) from err
        rec = {k: item.get(k) for k in ("subject", "side", "grade")}
        rec.update({f"{k}_path": resolved.get(k) for k in PATH_KEYS})
        for key in keys:
            if key not in processed or isinstance(processed[key], (str, os.PathLike)):
                raise InputError(resolved.get(key), f"the preprocessing returned no {key!r} array")
            rec[key] = _array(processed[key])
        out.append(rec)
    return out
