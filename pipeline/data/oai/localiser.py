"""Find the knee joint centres on a PA knee radiograph (bilateral or one knee).

A built-in localiser for when no centres are given, in three steps on a copy of the image
brought to about 1 mm pixels:

1. three-class Otsu thresholds split air, soft tissue and bone;
2. the two legs are split at the soft-tissue gap: the column, in the middle of the image,
   where the fewest rows hold tissue (refused when no clear gap exists);
3. per leg, the joint line is the row where a horizontal dark band (the joint space between
   the femoral condyles and the tibial plateau) is strongest, searched in each compartment
   beside the notch and only between the widest bone rows; the joint centre's column is the
   middle of the bone just above and below that row.

A knee it cannot place (no gap between the legs, no bone, no joint space darker than its
surroundings, a joint line at the image border) comes back with ``centre=None`` and the
reason: it is reported, never guessed. Accuracy on the synthetic bilateral radiographs is
measured by ``benchmarks/bench_localiser.py`` (target: within 5 mm for 95 % of knees).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, uniform_filter1d

#: Pixel size (mm) the image is brought to before searching.
GRID_MM: float = 1.0
#: Distance (mm) above and below a row compared with it when scoring a dark band.
BAND_OFFSET_MM: float = 4.0
#: Compartment bands, mm from the knee's middle column (inner, outer edge).
COMPARTMENT_MM: tuple[float, float] = (8.0, 32.0)
#: Rows (mm) above and below the joint line whose bone extent gives the centre's column.
EXTENT_ROWS_MM: tuple[float, float] = (2.0, 10.0)
#: Smallest accepted dark-band score, relative to the leg's bone-soft tissue contrast.
MIN_SCORE: float = 0.04
#: A gap between the legs must hold at most this share of the smaller leg's tissue rows.
MAX_GAP_SHARE: float = 0.6


@dataclass(frozen=True)
class KneeFinding:
    """One knee on the radiograph.

    Attributes:
        position: where on the image: ``"image-left"``, ``"image-right"`` or ``"single"``.
        centre: (row, col) of the joint centre in the image's pixels, or None when not placed.
        reason: why the knee was not placed (empty when it was).
        score: strength of the joint space found (relative contrast; larger is clearer).
    """

    position: str
    centre: tuple[float, float] | None
    reason: str = ""
    score: float = 0.0


def _block_mean(image: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    fr, fc = factors
    h, w = image.shape[0] // fr, image.shape[1] // fc
    return image[: h * fr, : w * fc].reshape(h, fr, w, fc).mean(axis=(1, 3), dtype=np.float64)


def otsu3(values: np.ndarray, bins: int = 96) -> tuple[float, float]:
    """Two thresholds splitting ``values`` into three classes with the largest between-class variance."""
    lo, hi = np.percentile(values, (0.5, 99.5))
    hist, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi + 1e-9))
    p = hist / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w = np.concatenate([[0.0], np.cumsum(p)])
    m = np.concatenate([[0.0], np.cumsum(p * centres)])
    best, pair = -1.0, (centres[bins // 3], centres[2 * bins // 3])
    for i in range(1, bins - 1):
        j = np.arange(i + 1, bins)
        w0, w1, w2 = w[i], w[j] - w[i], w[-1] - w[j]
        m0, m1, m2 = m[i], m[j] - m[i], m[-1] - m[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.where((w0 > 0) & (w1 > 0) & (w2 > 0), m0**2 / w0 + m1**2 / w1 + m2**2 / w2, -1.0)
        k = int(np.argmax(var))
        if var[k] > best:
            best, pair = float(var[k]), (float(edges[i]), float(edges[j[k]]))
    return pair


def localise_knees(image: np.ndarray, spacing: Sequence[float], knees: int = 2) -> list[KneeFinding]:
    """Joint centres of the knees on a PA knee radiograph.

    Args:
        image: 2-D array (rows, cols), more attenuation = higher value (as ``LoadXray`` gives).
        spacing: (row, col) pixel spacing in mm.
        knees: 2 for a bilateral view (returns image-left then image-right knee), 1 for one knee.

    Returns:
        One :class:`KneeFinding` per knee; ``centre`` is None (with a reason) for a knee not placed.
    """
    if knees not in (1, 2):
        raise ValueError(f"knees must be 1 or 2, got {knees}")
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D radiograph, got shape {img.shape}")
    positions = ("image-left", "image-right") if knees == 2 else ("single",)
    factors = tuple(max(1, int(round(GRID_MM / float(s)))) for s in spacing)
    small = _block_mean(img, factors)
    mm = (float(spacing[0]) * factors[0], float(spacing[1]) * factors[1])
    if min(small.shape) < 40 / min(mm) or not np.isfinite(small).all():
        return [KneeFinding(p, None, "image too small or not finite") for p in positions]
    small = gaussian_filter1d(gaussian_filter1d(small, 0.7, axis=0), 0.7, axis=1)
    t_air, t_bone = otsu3(small)
    body = small > t_air

    if knees == 2:
        profile = uniform_filter1d(body.mean(axis=0), max(1, int(round(10 / mm[1]))))
        w = profile.size
        lo, hi = int(0.3 * w), int(0.7 * w)
        split = lo + int(np.argmin(profile[lo:hi]))
        peaks = profile[:split].max(initial=0.0), profile[split:].max(initial=0.0)
        if profile[split] > MAX_GAP_SHARE * min(peaks):
            return [KneeFinding(p, None, "no soft-tissue gap between the legs") for p in positions]
        legs = [(0, split), (split, w)]
    else:
        legs = [(0, small.shape[1])]

    findings = []
    for position, (c0, c1) in zip(positions, legs):
        finding = _one_knee(small[:, c0:c1], t_air, t_bone, mm)
        if finding[0] is None:
            findings.append(KneeFinding(position, None, finding[1], finding[2]))
            continue
        r, c = finding[0]
        centre = ((r + 0.5) * factors[0] - 0.5, (c + c0 + 0.5) * factors[1] - 0.5)
        findings.append(KneeFinding(position, (float(centre[0]), float(centre[1])), "", finding[2]))
    return findings


def _one_knee(leg: np.ndarray, t_air: float, t_bone: float, mm: tuple[float, float]):
    """((row, col) in ``leg`` pixels or None, reason, score) for the knee in one leg's columns."""
    bone = leg > t_bone
    if bone.sum() < 100 / (mm[0] * mm[1]):
        return None, "no bone found in this leg", 0.0
    cols = np.nonzero(bone)[1]
    middle = float(np.median(cols))
    width = bone.sum(axis=1).astype(float)
    width = uniform_filter1d(width, max(1, int(round(5 / mm[0]))))
    wide = np.nonzero(width >= 0.6 * width.max())[0]
    top, bottom = int(wide[0]), int(wide[-1])
    margin = int(round(6 / mm[0]))
    top, bottom = max(0, top - margin), min(leg.shape[0] - 1, bottom + margin)

    k = max(1, int(round(BAND_OFFSET_MM / mm[0])))
    inner, outer = (int(round(v / mm[1])) for v in COMPARTMENT_MM)
    contrast = max(t_bone - t_air, 1e-6)
    score = np.zeros(leg.shape[0])
    for lo, hi in ((middle - outer, middle - inner), (middle + inner, middle + outer)):
        lo_i, hi_i = max(0, int(lo)), min(leg.shape[1], int(hi) + 1)
        if hi_i - lo_i < 3:
            continue
        prof = leg[:, lo_i:hi_i].mean(axis=1)
        up, down = np.roll(prof, k), np.roll(prof, -k)
        score += np.minimum(up - prof, down - prof) / contrast
    score[: top + k] = -np.inf
    score[bottom - k + 1:] = -np.inf
    if not np.isfinite(score).any():
        return None, "knee region too close to the image border", 0.0
    row = int(np.argmax(score))
    best = float(score[row]) / 2
    if best < MIN_SCORE:
        return None, f"no joint space found (contrast {best:.3f} < {MIN_SCORE})", best
    if row <= k or row >= leg.shape[0] - 1 - k:
        return None, "joint line at the image border", best
    # refine to the sub-pixel minimum of the dark band
    if 0 < row < leg.shape[0] - 1 and np.isfinite(score[row - 1]) and np.isfinite(score[row + 1]):
        a, b, c = score[row - 1], score[row], score[row + 1]
        denom = a - 2 * b + c
        row_f = row + (0.5 * (a - c) / denom if denom < 0 else 0.0)
    else:
        row_f = float(row)

    near, far = (int(round(v / mm[0])) for v in EXTENT_ROWS_MM)
    mids = []
    for r in list(range(row - far, row - near + 1)) + list(range(row + near, row + far + 1)):
        if 0 <= r < leg.shape[0]:
            hits = np.nonzero(bone[r])[0]
            if hits.size:
                mids.append((hits[0] + hits[-1]) / 2)
    if not mids:
        return None, "no bone beside the joint line", best
    return (row_f, float(np.median(mids))), "", best
