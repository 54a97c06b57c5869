"""Burned-in overlays on a radiograph: side markers, text, a ruler's ticks and numbers; found and painted over.

A lead side letter or burned-in text is drawn at (or near) the top of the stored range in strokes a
few mm thick. It is not anatomy: beside the knee it looks like bone to the knee finder, and in the
network's field it is a bright patch the network was never asked to explain. Both the finder
(:func:`~.locate_knee.locate_knees`, on its ~1 mm copy) and :class:`~.xray.PreprocessXray` (on the
network's field) erase what :func:`burned_in_mask` finds, with :func:`erase_burned_in`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["FILL_MM", "MIN_AREA_MM2", "STROKE_MM", "burned_in_mask", "erase_burned_in", "odd_window"]

#: Strokes thinner than this (mm) can be overlays; anything bright that holds a square this wide is
#: anatomy, metal or a collimation band, and stays.
STROKE_MM: float = 5.0
#: Radius (mm) of the neighbourhood whose mean replaces an overlay's pixels.
FILL_MM: float = 15.0
#: Smallest overlay (mm²): a bright speck smaller than a letter's stroke is noise or the tangent of a cortex.
MIN_AREA_MM2: float = 4.0
#: How much brighter than the anatomy (share of the image's range) a stroke must be.
_BRIGHTER: float = 0.1
#: Smallest step (share of the range) from a stroke down to what lies 1 mm beside it: a drawn stroke
#: has a step edge; the tangent of a cortex or a bright bony spot rises smoothly out of the bone.
_STEP: float = 0.2
#: Largest spread of a stroke's values (share of the range): strokes are drawn at one value; a bone's
#: peak brighter than the rest under a harsh LUT is a hump, and stays.
_FLAT: float = 0.02


def odd_window(n: float) -> int:
    """The odd window size nearest ``n`` (at least 1): an odd window is centred, so results mirror with the image."""
    k = max(1, int(round(n)))
    return k if k % 2 else k + 1


def burned_in_mask(image: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """Pixels of burned-in overlays on a 2-D radiograph (more attenuation = higher value): flat-topped
    strokes thinner than :data:`STROKE_MM`, at least :data:`MIN_AREA_MM2`, brighter than the anatomy by
    a tenth of the range and standing a fifth of the range above what lies beside them, with a 1 mm
    rim for their anti-aliased edges.

    "The anatomy" is the brightest :data:`STROKE_MM` square that is not itself flat: a collimation
    band or an unexposed border is as bright as a marker but one value throughout, so it does not
    hide the markers; being thick, it is not erased either.
    """
    img = np.asarray(image, dtype=np.float64)
    mm = (float(spacing_mm[0]), float(spacing_mm[1]))
    size = (max(1, int(round(STROKE_MM / mm[0]))), max(1, int(round(STROKE_MM / mm[1]))))
    floor = ndimage.grey_erosion(img, size=size)  # the darkest value of the square around each pixel
    span = float(img.max()) - float(np.percentile(img, 1.0))
    if span <= 0:
        return np.zeros(img.shape, dtype=bool)
    textured = ndimage.grey_dilation(img, size=size) - floor > _FLAT * span
    top = float(floor[textured].max()) if textured.any() else float(floor.max())
    bright = img > top + _BRIGHTER * span
    labels, n = ndimage.label(bright)
    if not n:
        return np.zeros(img.shape, dtype=bool)
    index = np.arange(1, n + 1)
    # cheapest tests first: big enough, not thick; then flat-topped; then the step down beside it
    candidate = ndimage.sum_labels(np.ones(img.shape), labels, index) * mm[0] * mm[1] >= MIN_AREA_MM2
    thick = np.unique(labels[ndimage.binary_erosion(bright, structure=np.ones(size, dtype=bool))])
    candidate[thick[thick > 0] - 1] = False
    if not candidate.any():
        return np.zeros(img.shape, dtype=bool)
    high = np.asarray(ndimage.maximum(img, labels, index))
    low = np.asarray(ndimage.labeled_comprehension(img, labels, index, lambda x: np.percentile(x, 25), float, 0.0))
    candidate &= low >= high - _FLAT * span
    if not candidate.any():
        return np.zeros(img.shape, dtype=bool)
    rim = (max(1, int(round(1.0 / mm[0]))), max(1, int(round(1.0 / mm[1]))))
    nearest = ndimage.grey_dilation(labels, size=(2 * rim[0] + 1, 2 * rim[1] + 1))
    beside = np.where(bright, 0, nearest)  # what lies within 1 mm outside each bright component
    candidate &= high - np.nan_to_num(ndimage.mean(img, beside, index), nan=float(img.max())) >= _STEP * span
    keep = np.concatenate([[False], candidate])
    mask = keep[labels]
    if mask.any():
        mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool),
                                       iterations=max(1, int(round(1.0 / min(mm)))))
    return mask


def erase_burned_in(image: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """``image`` (2-D) with its burned-in overlays (:func:`burned_in_mask`) replaced by the mean of what
    is not overlay within :data:`FILL_MM`; the input itself when there are none."""
    mask = burned_in_mask(image, spacing_mm)
    if not mask.any():
        return image
    img = np.asarray(image, dtype=np.float64)
    win = (odd_window(FILL_MM / float(spacing_mm[0])), odd_window(FILL_MM / float(spacing_mm[1])))
    keep = (~mask).astype(np.float64)
    around = ndimage.uniform_filter(img * keep, win) / np.maximum(ndimage.uniform_filter(keep, win), 1e-6)
    return np.where(mask, around, img).astype(np.asarray(image).dtype, copy=False)
