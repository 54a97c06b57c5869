"""Reframe a SYNTHETIC knee radiograph the way real ones are framed: a long-leg field, the knee off
centre, a burned-in side marker and a collimation edge.

The built-in cohort's radiographs are single knees centred in a ~190 mm field; real radiographs
are not. :func:`long_leg_field` places one in a larger field: the leg's shafts are continued
above and below (the rows at the image's top and bottom are repeated, with fresh noise), the
columns are padded with the image's own background, the knee ends up off centre, a bright side
letter is burned into the background, and one border is collimated (a flat band of unexposed
detector, the most attenuating value). Used by ``benchmarks/bench_locate_knee.py`` and the tests
of :mod:`xray2mri.transforms.locate_knee`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FramedRadiograph", "long_leg_field", "burn_marker"]


@dataclass
class FramedRadiograph:
    """The reframed image and where the knee's joint centre moved to (pixels)."""

    image: np.ndarray
    centre: tuple[float, float]


def burn_marker(image: np.ndarray, top_left: tuple[int, int], size_px: int, value: float) -> None:
    """Burn an "L"-shaped side letter of ``size_px`` pixels at ``top_left`` into ``image`` (in place)."""
    r, c = top_left
    stroke = max(2, size_px // 5)
    image[r: r + size_px, c: c + stroke] = value
    image[r + size_px - stroke: r + size_px, c: c + (2 * size_px) // 3] = value


def long_leg_field(
    image: np.ndarray,
    centre: tuple[float, float],
    spacing_mm: float,
    rng: np.random.Generator,
    field_mm: tuple[float, float] = (700.0, 320.0),
    collimation_mm: float = 25.0,
) -> FramedRadiograph:
    """Place a knee radiograph (rows, cols) in a larger ``field_mm`` field, knee off centre.

    Args:
        image: the knee radiograph, more attenuation = higher value.
        centre: its joint centre (row, col), pixels.
        spacing_mm: its pixel spacing (isotropic).
        rng: draws the knee's position in the field (anywhere with its shafts inside) and the marker's corner.
        field_mm: (height, width) of the new field; at least the image's.
        collimation_mm: width of the collimated band at one side border (0: none).

    Returns:
        the new image (float32) and the joint centre in its pixels.
    """
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    big_h = max(h, int(round(field_mm[0] / spacing_mm)))
    big_w = max(w, int(round(field_mm[1] / spacing_mm)))
    # where the knee image goes: off centre, in the upper or the lower third of the free rows
    free = big_h - h
    third = rng.uniform(0.05, 0.3) if rng.random() < 0.5 else rng.uniform(0.7, 0.95)
    top = int(round(third * free))
    left = int(rng.integers(0, big_w - w + 1))
    noise = float(np.std(np.diff(img[:, :8], axis=0))) / np.sqrt(2.0)
    background = float(np.percentile(img[:, : max(2, w // 20)], 50))
    out = np.full((big_h, big_w), background, dtype=np.float32)
    # rows: repeat the first and last rows (the femoral and tibial shafts go on), then columns: background
    rows = np.clip(np.arange(big_h) - top, 0, h - 1)
    out[:, left: left + w] = img[rows]
    repeated = (np.arange(big_h) < top) | (np.arange(big_h) >= top + h)
    out += rng.normal(0.0, noise, out.shape).astype(np.float32) * repeated[:, None]
    out[:, :left] += rng.normal(0.0, noise, (big_h, left)).astype(np.float32)
    out[:, left + w:] += rng.normal(0.0, noise, (big_h, big_w - left - w)).astype(np.float32)
    bright = float(img.max())
    # burned-in side letter in the background beside the leg, at half height of the upper field
    side_room = (left, big_w - left - w)
    size = int(round(25 / spacing_mm))
    if max(side_room) > size + 10:
        col = (side_room[0] - size) // 2 if side_room[0] >= side_room[1] else left + w + (side_room[1] - size) // 2
        burn_marker(out, (int(rng.integers(5, max(6, big_h // 3))), max(0, col)), size, bright)
    if collimation_mm > 0:  # on the side with more room, never over the leg
        band = min(int(round(collimation_mm / spacing_mm)), max(side_room) - 5)
        if band > 0 and side_room[0] >= side_room[1]:
            out[:, :band] = bright
        elif band > 0:
            out[:, big_w - band:] = bright
    return FramedRadiograph(out, (centre[0] + top, centre[1] + left))
