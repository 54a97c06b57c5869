"""Reframe a SYNTHETIC knee radiograph the way real ones are framed: a long-leg field, the knee off
centre, both knees on one detector, a burned-in side marker and a collimation edge.

A rendered radiograph is a single knee centred in a ~190 mm field; real radiographs are not.
:func:`long_leg_field` places one in a larger field: the leg's shafts are continued above and
below (the rows at the image's top and bottom are repeated, with fresh noise), the columns are
padded with the image's own background, the knee ends up off centre, a bright side letter is
burned into the background, and one border is collimated (a flat band of unexposed detector, the
most attenuating value). :func:`bilateral_field` puts the other knee beside it (the mirror image
of the same knee, as a bilateral AP/PA view holds both), :func:`marked_knee_field` keeps the knee
field and adds a marker and a collimation edge. :data:`COHORT_FRAMINGS` is how the default cohort
frames its subjects' radiographs (by subject index, :func:`frame_radiograph`), so the knee finder
and the network meet these framings in training. Also used by ``benchmarks/bench_locate_knee.py``
and the tests of :mod:`xray2mri.transforms.locate_knee`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["COHORT_FRAMINGS", "FramedRadiograph", "bilateral_field", "burn_marker", "frame_radiograph", "saturated_value",
           "long_leg_field", "marked_knee_field", "marker_px"]

#: Framings of the default cohort's radiographs, taken in turn by subject index (``index % 4``):
#: the centred knee field, a long-leg field (knee off centre, marker, collimation), the knee field
#: with a marker and a collimation edge, and a bilateral view (both knees, marker).
COHORT_FRAMINGS: tuple[str, ...] = ("knee", "long_leg", "knee_marked", "bilateral")
#: Distance between the two knee centres of a bilateral view, at the knees, mm (as the OAI-layout tree draws it).
BILATERAL_DISTANCE_MM: tuple[float, float] = (180.0, 215.0)
#: Largest height difference between the two knees of a bilateral view, mm.
BILATERAL_HEIGHT_MM: float = 4.0
#: Side of the burned-in marker letter and the width of its strokes, mm (a lead letter's size).
MARKER_MM: float = 18.0
MARKER_STROKE_MM: float = 3.0
#: How far above the image's brightest anatomy a lead marker and an unexposed (collimated) border
#: are drawn, as a share of the image's range: lead and the unexposed detector saturate beyond bone.
SATURATED_ABOVE: float = 0.25


@dataclass
class FramedRadiograph:
    """The reframed image, where the knee's joint centre moved to (pixels), and what was added.

    ``other_centre`` is the other knee's joint centre on a bilateral view (None otherwise);
    ``burned_in`` says a marker was burned into the pixels (DICOM BurnedInAnnotation).
    """

    image: np.ndarray
    centre: tuple[float, float]
    other_centre: tuple[float, float] | None = None
    burned_in: bool = False


def _noise_sd(img: np.ndarray) -> float:
    """Standard deviation of the pixel noise, from row-to-row differences at the image's left border (air)."""
    return float(np.std(np.diff(img[:, :8], axis=0))) / np.sqrt(2.0)


def _collimate(out: np.ndarray, band: int, left: bool, value: float) -> None:
    """Set a collimation band of ``band`` columns at the left (or right) border of ``out`` to ``value`` (in place)."""
    if band <= 0:
        return
    if left:
        out[:, :band] = value
    else:
        out[:, out.shape[1] - band:] = value


def saturated_value(image: np.ndarray) -> float:
    """The value of lead and of unexposed detector on ``image``: :data:`SATURATED_ABOVE` of its range above its maximum."""
    top = float(image.max())
    return top + SATURATED_ABOVE * (top - float(np.percentile(image, 1.0)))


def marker_px(spacing_mm: float) -> int:
    """The side letter's size (:data:`MARKER_MM`) in pixels of ``spacing_mm``: what :func:`burn_marker` draws."""
    return int(round(MARKER_MM / spacing_mm))


def burn_marker(image: np.ndarray, top_left: tuple[int, int], spacing_mm: float, value: float) -> None:
    """Burn an "L"-shaped side letter (:data:`MARKER_MM`, strokes :data:`MARKER_STROKE_MM`) at ``top_left``
    into ``image`` (in place)."""
    r, c = top_left
    size_px = marker_px(spacing_mm)
    stroke = max(2, int(round(MARKER_STROKE_MM / spacing_mm)))
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
    noise = _noise_sd(img)
    background = float(np.percentile(img[:, : max(2, w // 20)], 50))
    out = np.full((big_h, big_w), background, dtype=np.float32)
    # rows: repeat the first and last rows (the femoral and tibial shafts go on), then columns: background
    rows = np.clip(np.arange(big_h) - top, 0, h - 1)
    out[:, left: left + w] = img[rows]
    repeated = (np.arange(big_h) < top) | (np.arange(big_h) >= top + h)
    out += rng.normal(0.0, noise, out.shape).astype(np.float32) * repeated[:, None]
    out[:, :left] += rng.normal(0.0, noise, (big_h, left)).astype(np.float32)
    out[:, left + w:] += rng.normal(0.0, noise, (big_h, big_w - left - w)).astype(np.float32)
    bright = saturated_value(img)
    # burned-in side letter in the background beside the leg, at half height of the upper field
    side_room = (left, big_w - left - w)
    size = marker_px(spacing_mm)
    burned = max(side_room) > size + 10
    if burned:
        col = (side_room[0] - size) // 2 if side_room[0] >= side_room[1] else left + w + (side_room[1] - size) // 2
        burn_marker(out, (int(rng.integers(5, max(6, big_h // 3))), max(0, col)), spacing_mm, bright)
    if collimation_mm > 0:  # on the side with more room, never over the leg
        band = min(int(round(collimation_mm / spacing_mm)), max(side_room) - 5)
        _collimate(out, band, side_room[0] >= side_room[1], bright)
    return FramedRadiograph(out, (centre[0] + top, centre[1] + left), burned_in=burned)


def _background_columns(img: np.ndarray) -> tuple[int, int]:
    """How many columns at the left and at the right border hold no leg (air only), at most a third each."""
    cols = img.mean(axis=0)
    edge = float(np.median(np.concatenate([img[:, :4].ravel(), img[:, -4:].ravel()])))
    spread = 3.0 * np.sqrt(2.0) * _noise_sd(img) + 1e-6
    leg = np.flatnonzero(cols > edge + spread)
    if leg.size == 0:
        return img.shape[1] // 3, img.shape[1] // 3
    return min(int(leg[0]), img.shape[1] // 3), min(int(img.shape[1] - 1 - leg[-1]), img.shape[1] // 3)


def marked_knee_field(
    image: np.ndarray,
    centre: tuple[float, float],
    spacing_mm: float,
    rng: np.random.Generator,
    collimation_mm: tuple[float, float] = (6.0, 15.0),
) -> FramedRadiograph:
    """The knee field as it is, with a side letter burned into the background beside the calf (where
    there is room) and one border collimated (never over the leg); the joint centre does not move."""
    out = np.array(image, dtype=np.float32, copy=True)
    h, _ = out.shape
    bright = saturated_value(out)
    size = marker_px(spacing_mm)
    rows = slice(h - h // 4, h)  # the marker goes beside the calf, where the leg is narrowest
    room = _background_columns(out[rows])
    wide = 0 if room[0] >= room[1] else 1
    burned = room[wide] > size + 4
    if burned:
        col = 2 if wide == 0 else out.shape[1] - size - 2
        burn_marker(out, (int(rng.integers(h - h // 4, h - size - 1)), col), spacing_mm, bright)
    other = 1 - wide
    band = min(int(round(rng.uniform(*collimation_mm) / spacing_mm)), _background_columns(out)[other] - 2)
    _collimate(out, band, other == 0, bright)
    return FramedRadiograph(out, tuple(centre), burned_in=burned)


def bilateral_field(
    image: np.ndarray,
    centre: tuple[float, float],
    side: str,
    spacing_mm: float,
    magnification: float,
    rng: np.random.Generator,
) -> FramedRadiograph:
    """Both knees on one detector: the knee and, beside it, its mirror image as the other knee.

    The other knee goes to the patient's other side (columns run patient right -> left, the AP
    view as displayed: a right knee keeps the image's left), :data:`BILATERAL_DISTANCE_MM` apart at
    the knees (``magnification`` brings that to the detector) and up to :data:`BILATERAL_HEIGHT_MM`
    higher or lower. The two fields add where they overlap (log-attenuations of air are ~0); a gap
    between them is filled with the background and its noise. A side letter is burned in at the top
    outer corner of the knee's side.

    Args:
        image: the knee radiograph (rows, cols), more attenuation = higher value.
        centre: its joint centre (row, col), pixels.
        side: the knee's side, "R" or "L".
        spacing_mm: detector pixel pitch.
        magnification: the knee's magnification (SID / SOD).
        rng: draws the distance, the height difference and the marker's place.
    """
    if side not in ("R", "L"):
        raise ValueError(f"side must be 'R' or 'L', got {side!r}")
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    shift = int(round(rng.uniform(*BILATERAL_DISTANCE_MM) * magnification / spacing_mm))
    dy = int(round(rng.uniform(-BILATERAL_HEIGHT_MM, BILATERAL_HEIGHT_MM) * magnification / spacing_mm))
    other = np.fliplr(img)[np.clip(np.arange(h) - dy, 0, h - 1)]
    width = w + shift
    noise = _noise_sd(img)
    background = float(np.median(img[:, :4]))
    out = np.zeros((h, width), dtype=np.float32)
    covered = np.zeros(width, dtype=np.int8)
    mine, theirs = (0, shift) if side == "R" else (shift, 0)  # a right knee on the image's left
    for start, part in ((mine, img), (theirs, other)):
        out[:, start: start + w] += part - background
        covered[start: start + w] += 1
    out += background
    gap = covered == 0
    if gap.any():
        out[:, gap] += rng.normal(0.0, noise, (h, int(gap.sum()))).astype(np.float32)
    size = marker_px(spacing_mm)
    outer = 2 if side == "R" else width - size - 2  # at the outer top corner of the knee's own side
    burn_marker(out, (int(rng.integers(2, max(3, h // 6))), outer), spacing_mm, saturated_value(img))
    mirrored_col = (w - 1) - centre[1]
    return FramedRadiograph(out, (centre[0], centre[1] + mine), other_centre=(centre[0] + dy, mirrored_col + theirs),
                            burned_in=True)


def frame_radiograph(
    framing: str,
    image: np.ndarray,
    centre: tuple[float, float],
    side: str,
    spacing_mm: float,
    magnification: float,
    rng: np.random.Generator,
) -> FramedRadiograph:
    """Apply one of :data:`COHORT_FRAMINGS` to a centred knee radiograph (``"knee"`` returns it as it is)."""
    if framing == "knee":
        return FramedRadiograph(np.asarray(image, dtype=np.float32), tuple(centre))
    if framing == "long_leg":
        return long_leg_field(image, centre, spacing_mm, rng)
    if framing == "knee_marked":
        return marked_knee_field(image, centre, spacing_mm, rng)
    if framing == "bilateral":
        return bilateral_field(image, centre, side, spacing_mm, magnification, rng)
    raise ValueError(f"unknown framing {framing!r}; choose one of {COHORT_FRAMINGS}")
