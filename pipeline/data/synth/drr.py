"""Cone-beam AP digitally reconstructed radiograph (DRR) of an attenuation volume.

Geometry (canonical frame, mm): the X-ray source sits ``sod`` mm anterior of the knee centre
on the central ray (``a = -sod``), the detector plane ``sid`` mm from the source, behind the
knee (``a = sid - sod``), its centre on the central ray. Detector rows run superior ->
inferior, columns the patient's right -> left, so the image is the AP view as displayed
(patient's right on the viewer's left). A structure at depth ``a`` is magnified by
``sid / (sod + a)``; at the knee centre by ``sid / sod`` (DICOM
EstimatedRadiographicMagnificationFactor).

Line integrals: the volume is cut into slabs of a few slices along A->P; each slab is summed
(parallel within the slab) and resampled bilinearly onto the detector with the slab's own
magnification, weighted by the ray's path length per unit depth (1 / cos of the ray angle).
The resampling is separable (rows, then columns), so a DRR costs a few ms per slab in numpy.
Outside the volume the edge values continue (the limb goes on beyond the MRI field).

Exposure: Beer-Lambert ``N = N0 * heel * exp(-integral)``, Poisson photon counts, Gaussian
detector blur, then the log-attenuation ``-ln(N / N0)`` that a DX detector stores (LOG).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def _linear_weights(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (i0, i1) and weight of i1 for linear interpolation at fractional positions, edge-clamped."""
    pos = np.clip(pos, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.intp), n - 2) if n > 1 else np.zeros(pos.shape, np.intp)
    w = (pos - i0).astype(np.float32)
    return i0, np.minimum(i0 + 1, n - 1), w


def line_integrals(
    mu: np.ndarray,
    spacing_mm: float,
    detector_shape: tuple[int, int],
    pixel_mm: float,
    sid_mm: float,
    sod_mm: float,
    slab: int = 2,
) -> np.ndarray:
    """Cone-beam line integrals of ``mu`` (1/mm) along A->P onto the detector, float32 (rows, cols).

    Args:
        mu: attenuation volume (A->P, S->I, R->L), isotropic voxels, centred on the knee.
        spacing_mm: its voxel size.
        detector_shape: (rows, cols) of the detector.
        pixel_mm: detector pixel pitch (ImagerPixelSpacing).
        sid_mm: source-to-detector distance.
        sod_mm: source-to-knee-centre distance.
        slab: slices summed per resampling step.
    """
    d, h, w = mu.shape
    n_slab = -(-d // slab)
    pad = n_slab * slab - d
    vol = np.pad(mu, ((0, pad), (0, 0), (0, 0))) if pad else mu
    slabs = vol.reshape(n_slab, slab, h, w).sum(axis=1, dtype=np.float32) * np.float32(spacing_mm)
    depth = ((np.arange(n_slab) * slab + (slab - 1) / 2.0) - (d - 1) / 2.0) * spacing_mm  # slab centre a, mm
    rows, cols = detector_shape
    s_det = (np.arange(rows) - (rows - 1) / 2.0) * pixel_mm
    l_det = (np.arange(cols) - (cols - 1) / 2.0) * pixel_mm
    mag = (sod_mm + depth) / sid_mm  # detector mm -> object mm at that depth
    # fractional voxel positions of every detector row/col at every slab depth
    s_pos = s_det[None, :] * mag[:, None] / spacing_mm + (h - 1) / 2.0
    l_pos = l_det[None, :] * mag[:, None] / spacing_mm + (w - 1) / 2.0
    r0, r1, rw = _linear_weights(s_pos, h)
    c0, c1, cw = _linear_weights(l_pos, w)
    proj = np.zeros((rows, cols), dtype=np.float32)
    for k in range(n_slab):  # columns first (H, C), then rows (R, C)
        tmp = slabs[k][:, c0[k]] * (1 - cw[k]) + slabs[k][:, c1[k]] * cw[k]
        proj += tmp[r0[k]] * (1 - rw[k])[:, None] + tmp[r1[k]] * rw[k][:, None]
    inv_cos = np.sqrt(1.0 + (s_det[:, None] ** 2 + l_det[None, :] ** 2) / sid_mm**2)
    return (proj * inv_cos).astype(np.float32)


def expose(
    integrals: np.ndarray,
    photons: float,
    blur_px: float,
    heel: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Measured log-attenuation ``-ln(N / N0)`` (float32) of a noisy, blurred exposure.

    Args:
        integrals: line integrals (dimensionless, from :func:`line_integrals`).
        photons: unattenuated photons per detector pixel (N0).
        blur_px: sigma of the detector's Gaussian point-spread, pixels.
        heel: relative intensity change from the top to the bottom row (anode heel effect).
        rng: the subject's generator (draws the photon counts).
    """
    rows = integrals.shape[0]
    ramp = 1.0 + heel * np.linspace(-0.5, 0.5, rows)[:, None]
    expected = photons * ramp * np.exp(-integrals.astype(np.float64))
    counts = rng.poisson(expected).astype(np.float32)
    if blur_px > 0:
        counts = gaussian_filter(counts, blur_px, mode="nearest")
    return (-np.log(np.maximum(counts, 0.5) / photons)).astype(np.float32)
