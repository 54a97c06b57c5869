"""Trabecular texture for the SYNTHETIC radiograph: cancellous bone's density varies, the phantom's marrow does not.

A real knee radiograph shows a trabecular pattern in the femoral and tibial epiphyses (the
principal trabeculae run mostly along the load axis); the phantom's marrow is one uniform
tissue, so its radiograph is smooth where a real one is textured, and a network or a knee
finder trained on it meets a texture it never saw. This module modulates the attenuation of
the marrow tissues (:data:`MARROW_TISSUES`) by smooth random noise, elongated along S->I, on
the fine grid the DRR is cast through. The cortical shell is a tissue of its own already
(``cortical_bone``, thickening along the shafts). The MRI is not changed: the DESS the cohort
imitates suppresses marrow fat, and the volume the network must produce stays the truth it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from xray2mri.pipeline.data.synth.tissues import LABEL

__all__ = ["MARROW_TISSUES", "TEXTURE_AMPLITUDE", "TEXTURE_SCALE_MM", "trabecular_attenuation"]

#: Tissues whose attenuation gets the texture: the cancellous bone of each bone, and sclerosis.
MARROW_TISSUES: tuple[str, ...] = ("femur", "tibia", "patella", "fibula", "sclerotic_bone")
#: Relative standard deviation of the marrow's attenuation (trabecular bone volume varies by tens of %).
TEXTURE_AMPLITUDE: float = 0.35
#: Correlation lengths (Gaussian sigma, mm) along (A->P, S->I, R->L): trabeculae along the load axis.
TEXTURE_SCALE_MM: tuple[float, float, float] = (0.8, 2.5, 0.8)


def trabecular_attenuation(
    mu: np.ndarray,
    labels: np.ndarray,
    spacing_mm: float,
    rng: np.random.Generator,
    amplitude: float = TEXTURE_AMPLITUDE,
    scale_mm: Sequence[float] = TEXTURE_SCALE_MM,
) -> np.ndarray:
    """``mu`` (float32, 1/mm) with its marrow voxels' attenuation modulated by trabecular noise (a new array).

    Args:
        mu: attenuation volume (A->P, S->I, R->L) from the label map.
        labels: the label map it came from (same shape).
        spacing_mm: voxel size (isotropic).
        rng: draws the noise (the subject's own generator for appearance).
        amplitude: relative standard deviation of the modulation (0: ``mu`` unchanged).
        scale_mm: correlation length along each axis.
    """
    out = np.array(mu, dtype=np.float32, copy=True)
    if amplitude <= 0:
        return out
    marrow = np.isin(labels, [LABEL[name] for name in MARROW_TISSUES])
    if not marrow.any():
        return out
    sigma = [max(s / spacing_mm, 0.3) for s in scale_mm]
    # noise only over the marrow's bounding box (a quarter of the field), with a margin of 3 sigma
    box = []
    for axis, sig in enumerate(sigma):
        hit = np.flatnonzero(marrow.any(axis=tuple(a for a in range(marrow.ndim) if a != axis)))
        pad = int(np.ceil(3 * sig))
        box.append(slice(max(int(hit[0]) - pad, 0), min(int(hit[-1]) + pad + 1, marrow.shape[axis])))
    box = tuple(box)
    noise = gaussian_filter(rng.standard_normal(out[box].shape, dtype=np.float32), sigma, mode="wrap")
    noise /= max(float(noise.std()), 1e-6)
    inside = marrow[box]
    out[box][inside] *= np.clip(1.0 + amplitude * noise[inside], 0.2, 1.8)
    return out
