"""Honest baselines for radiograph -> MRI generation, evaluated on the same split as the model.

* **Mean training volume**: the voxel-wise mean of the preprocessed training MRIs, the same
  prediction for every test radiograph. A model that does not beat it has learnt nothing
  subject-specific.
* **Nearest-neighbour retrieval**: the training MRI whose preprocessed radiograph is closest in
  L2 (Euclidean) distance to the test radiograph. A model that does not beat it only memorises.

The functions are pure (arrays in, arrays out); the training split they are fitted on is read
through the bundle's own preprocessing by :func:`~xray2mri.pipeline.evaluation.inputs.load_split`,
so baselines and model share one canonical space: ``(1, H, W)`` radiographs and ``(1, D, H, W)``
MRIs in [0, 1], left knees mirrored. :func:`baseline_methods` wraps them as evaluation methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xray2mri.pipeline.evaluation.measure import Case, Method, MethodPrediction

__all__ = [
    "mean_volume",
    "nearest_neighbour_indices",
    "Baselines",
    "BASELINE_NAMES",
    "baseline_methods",
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


def baseline_methods(baselines: Baselines) -> dict[str, Method]:
    """The two baselines as evaluation methods (case -> prediction), named by :data:`BASELINE_NAMES`."""

    def nn(case: Case) -> MethodPrediction:
        i = baselines.neighbour(case.xray[None])
        who = baselines.train_ids[i] if baselines.train_ids is not None else str(i)
        return MethodPrediction(mri=np.asarray(baselines.train_mris[i]), note=f"retrieved {who}")

    return {
        BASELINE_NAMES["mean"]: lambda case: MethodPrediction(mri=baselines.mean),
        BASELINE_NAMES["nn"]: nn,
    }
