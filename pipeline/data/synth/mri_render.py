"""Render a DESS-like knee MRI from a fine tissue label map.

Steps, each what a scanner does to the true tissue signal:

1. per-tissue signal (:func:`~xray2mri.pipeline.data.synth.tissues.mri_signal_lut`), with a small
   per-subject jitter of each tissue's signal (coil, scanner and T2 differences);
2. partial volume: the label map is rendered ``supersample`` times finer than the MRI and
   the signal averaged over each MRI voxel;
3. a smooth multiplicative bias field (coil sensitivity; up to about +/-25 %);
4. Rician noise: the magnitude of the signal plus complex Gaussian noise. Its level follows
   the voxel size: SNR grows with voxel volume, so a noise level typical of a 3-D DESS at its
   native resolution (:data:`REFERENCE_VOXEL_MM3`, cartilage SNR about 20-50) is scaled by
   ``sqrt(reference voxel / voxel)`` for the MRI grid being rendered.

The result is stored like scanner data, as non-negative int16 (signal x 1000).
"""

from __future__ import annotations

import numpy as np

from xray2mri.pipeline.data.synth.tissues import mri_signal_lut

#: stored value of relative signal 1.0 (int16 output).
MRI_STORAGE_SCALE: float = 1000.0
#: Voxel volume (mm^3) at which NOISE_SIGMA_RANGE applies: OAI's sagittal 3-D DESS,
#: 0.365 x 0.365 mm in plane, 0.7 mm slices.
REFERENCE_VOXEL_MM3: float = 0.365 * 0.365 * 0.7
#: Range of the Gaussian noise sigma (relative to the brightest tissue signal 1.0) at that voxel.
NOISE_SIGMA_RANGE: tuple[float, float] = (0.012, 0.03)


def noise_scale(voxel_mm: float) -> float:
    """Factor on the reference noise sigma for isotropic voxels of ``voxel_mm``: SNR ~ voxel volume."""
    return float(np.sqrt(REFERENCE_VOXEL_MM3 / voxel_mm**3))


def block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average non-overlapping ``factor``^3 blocks (partial-volume downsampling)."""
    if factor == 1:
        return volume.astype(np.float32, copy=False)
    d, h, w = (n // factor for n in volume.shape)
    v = volume[: d * factor, : h * factor, : w * factor].reshape(d, factor, h, factor, w, factor)
    return v.mean(axis=(1, 3, 5), dtype=np.float32)


def bias_field(shape: tuple[int, int, int], coeffs: np.ndarray) -> np.ndarray:
    """exp of a second-order polynomial over [-1, 1]^3; ``coeffs`` holds 9 terms (x, y, z, x2, y2, z2, xy, xz, yz)."""
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    c = [np.float32(v) for v in coeffs]
    log_b = c[0] * x + c[1] * y + c[2] * z + c[3] * x * x + c[4] * y * y + c[5] * z * z + c[6] * x * y + c[7] * x * z + c[8] * y * z
    return np.exp(log_b).astype(np.float32)


def draw_mri_params(rng: np.random.Generator, voxel_mm: float) -> dict:
    """Random acquisition parameters of one MRI rendered at isotropic ``voxel_mm`` (JSON-ready)."""
    n_tissues = mri_signal_lut().size
    return {
        "sequence": "DESS-like, water excitation (synthetic)",
        "signal_jitter": [round(float(v), 4) for v in rng.normal(0.0, 0.05, n_tissues)],
        "bias_coeffs": [round(float(v), 4) for v in rng.normal(0.0, 0.08, 9)],
        "noise_sigma": round(float(rng.uniform(*NOISE_SIGMA_RANGE)) * noise_scale(voxel_mm), 6),
    }


def render_mri(fine_labels: np.ndarray, supersample: int, acq: dict, rng: np.random.Generator) -> np.ndarray:
    """MRI (int16, shape = fine shape / supersample) from a fine label map.

    Args:
        fine_labels: uint8 label map rendered ``supersample`` times finer than the MRI.
        supersample: the fineness factor.
        acq: parameters from :func:`draw_mri_params`.
        rng: the subject's generator (draws the noise).
    """
    lut = mri_signal_lut() * (1.0 + np.asarray(acq["signal_jitter"], dtype=np.float32))
    lut[0] = 0.0  # air has no signal
    signal = block_mean(lut[fine_labels], supersample)
    signal *= bias_field(signal.shape, np.asarray(acq["bias_coeffs"]))
    sigma = np.float32(acq["noise_sigma"])
    re = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    mag = np.sqrt(re * re + im * im)
    return np.clip(np.rint(mag * MRI_STORAGE_SCALE), 0, np.iinfo(np.int16).max).astype(np.int16)
