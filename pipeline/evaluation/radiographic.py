"""The radiographic baseline: minimum joint-space width read directly on the input radiograph.

This is what clinicians read today. On an AP radiograph (bone bright) the tibiofemoral joint space is a
dark band between the bright femur above and the bright tibia below, so on the inverted radiograph it
is the bright band between dark bones that the intensity JSW of
:mod:`~xray2mri.pipeline.evaluation.metrics` measures on an MRI: the radiograph is read as a one-slice
volume with :func:`~xray2mri.pipeline.evaluation.metrics.compartment_lines_from_mri` (the joint found on
the image itself, within the preprocessed radiograph's field) and
:func:`~xray2mri.pipeline.evaluation.metrics.measure_jsw` (half-maximum, sub-pixel; robust minimum over
each compartment's columns). Rows of the preprocessed radiograph run S->I and its columns R->L, the
same (rows, cols) as the canonical MRI, so the medial and lateral compartments are where the MRI's are.

A projection's band is not the 3-D minimum bone distance (the condyles' curvature, the tibial slope and
the beam blur it), so :class:`RadiographicJsw` fits one line per compartment, ``truth ~ a * raw + b``,
on the training split only (radiograph reading against the 3-D truth: the training label maps'
readings), and reports the calibrated reading. Cartilage has no radiographic counterpart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from xray2mri.pipeline.evaluation import metrics as M

__all__ = ["RADIOGRAPHIC_NAME", "raw_radiograph_jsw", "RadiographicJsw"]

#: Row name of the radiographic baseline in every table.
RADIOGRAPHIC_NAME = "radiographic JSW (calibrated on training)"
COMPARTMENTS = ("medial", "lateral")


def raw_radiograph_jsw(xray, spacing: Sequence[float], **kwargs) -> dict[str, float]:
    """Uncalibrated minimum JSW (mm) per compartment read on a preprocessed radiograph.

    Args:
        xray: ``(H, W)`` (optional leading channel) radiograph on the [0, 1] scale, bone bright, rows
            S->I, columns R->L, right knee (left knees mirrored).
        spacing: pixel size (mm) along (rows, cols).
        kwargs: passed to :func:`~xray2mri.pipeline.evaluation.metrics.compartment_lines_from_mri`.
    Returns ``{"medial": mm, "lateral": mm}``; ``nan`` where no joint band is found.
    """
    img = np.clip(np.asarray(xray, dtype=np.float64).squeeze(), 0.0, 1.0)
    if img.ndim != 2:
        raise ValueError(f"radiograph: expected a 2-D image, got shape {np.asarray(xray).shape}")
    # the projection as a volume along A->P: two equal slices (the metrics squeeze singleton axes); each
    # line appears twice, which leaves the percentile over the lines unchanged
    vol = np.stack([1.0 - img, 1.0 - img])
    sp = (1.0, float(spacing[0]), float(spacing[1]))
    lines = M.compartment_lines_from_mri(vol, sp, **kwargs)
    return {c: M.measure_jsw(vol, lines.get(c, []), sp) for c in COMPARTMENTS}


@dataclass
class RadiographicJsw:
    """The radiographic reading with a per-compartment linear calibration to the 3-D truth.

    Args:
        spacing: the preprocessed radiograph's pixel size (mm) along (rows, cols).

    Example::

        rad = RadiographicJsw((1.25, 1.25)).fit(train_xrays, train_truth)   # truth: {"medial": mm, ...}
        rad(test_xray)   # {"medial": mm, "lateral": mm}
    """

    spacing: Sequence[float]
    coef: dict[str, tuple[float, float]] = field(default_factory=dict)

    def fit(self, xrays: Sequence, truths: Sequence[Mapping[str, float]]) -> RadiographicJsw:
        """Fit ``truth = a * raw + b`` per compartment on training radiographs and their 3-D truth.

        Pairs where either side is not finite are left out; a compartment with fewer than two pairs or no
        spread in the raw readings keeps the identity (``a = 1, b = 0``).
        """
        if len(xrays) != len(truths):
            raise ValueError(f"{len(xrays)} radiographs but {len(truths)} truths")
        raw = [raw_radiograph_jsw(x, self.spacing) for x in xrays]
        for c in COMPARTMENTS:
            pairs = np.array(
                [(r[c], float(t.get(c, math.nan))) for r, t in zip(raw, truths)], dtype=np.float64
            ).reshape(-1, 2)
            pairs = pairs[np.isfinite(pairs).all(axis=1)]
            if pairs.shape[0] < 2 or np.ptp(pairs[:, 0]) == 0:
                self.coef[c] = (1.0, 0.0)
                continue
            a, b = np.polyfit(pairs[:, 0], pairs[:, 1], 1)
            self.coef[c] = (float(a), float(b))
        return self

    def __call__(self, xray) -> dict[str, float]:
        """Calibrated minimum JSW (mm) per compartment of one preprocessed radiograph."""
        raw = raw_radiograph_jsw(xray, self.spacing)
        out = {}
        for c in COMPARTMENTS:
            a, b = self.coef.get(c, (1.0, 0.0))
            out[c] = a * raw[c] + b
        return out
