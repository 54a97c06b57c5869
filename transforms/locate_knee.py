"""Find the knee(s) on a frontal knee radiograph: joint centre, side, confidence and crop box.

One knee (an AP/PA knee view, a tight crop, a long-leg view) or two (a bilateral PA/AP view,
OAI's standard) are found the same way at training, in ``inference.json``, in ``xray2mri
predict`` and in the MONAI Label task: :class:`LocateKneed` before :class:`~.knee_crop.CropKneed`.

How (:func:`locate_knees`, on a copy of the image brought to about 1 mm pixels, averaged down or,
for a thumbnail, interpolated up):

1. refuse a blank image (no structure above the noise);
2. drop what is not anatomy: burned-in markers and text, even over the leg (thin flat strokes
   brighter than the anatomy: :func:`~.overlays.erase_burned_in`), flat bright bands at the border (collimation, unexposed detector),
   rulers (long straight bright strips along the legs: :func:`_rulers`) and small isolated bright blobs away from the body;
3. three-class Otsu thresholds split air, soft tissue and bone, metal left out (implants
   saturate: a large textureless plateau near the brightest value; it counts as bone);
4. legs are the bands of columns holding body, split at the soft-tissue gap between them (or,
   when the legs touch, at the bone-free columns between the two knees);
5. per leg, every row is scored as a joint line: a horizontal dark band in the bone (the joint
   space between femoral condyles and tibial plateau) on each side of the leg's bone axis, in the
   columns 10-30 mm from it (clear of the intercondylar notch's dark arch above the tibial spines; each
   compartment's band may lie a few mm above or below the other's: the joint line is midway, or
   the one band seen when the other compartment has collapsed, bone on bone). The best
   rows are checked for a knee's anatomy: bone 50-130 mm wide and solid just above and just
   below the band (condyles, plateau: a hand's fingers or a chest's ribs are not), and a shaft
   narrower than the knee where the image reaches it (so an ankle, a hip or the ribs of a chest
   do not pass; each shaft is thresholded among its own rows' pixels, since the soft tissue of a
   real thigh or calf is often as bright as the knee's bone). The strongest row that passes is the joint line; the joint centre's column
   is the middle of the bone beside it. A leg with no such row has no knee. A replaced knee's
   joint line is the strongest band between two pieces of metal a knee's width across (femoral
   component above, tibial tray below), with no anatomy to check.

Sides. A knee's side (patient left/right) comes from, in order: the caller (a datalist's
``side``), the image's ImageLaterality/Laterality for a single knee, its position for two knees
(the patient's right knee is on the image's left unless PatientOrientation says the columns run
towards the patient's right, ``R\\F``), and the anatomy for a single knee without tags (the
fibula is lateral). ``side_source`` records which.

A radiograph where no knee is found is refused with :class:`~.errors.XrayInputError` and the
reason of each leg, never guessed. Accuracy: ``benchmarks/bench_locate_knee.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from scipy import ndimage
from scipy.ndimage import gaussian_filter, gaussian_filter1d, uniform_filter1d

from .errors import XrayInputError
from .knee_crop import crop_box_for
from .laterality import normalise_side
from .overlays import erase_burned_in
from .overlays import odd_window as _odd

__all__ = [
    "otsu2",
    "LocatorParams",
    "KneeLocation",
    "NoKneeFound",
    "otsu3",
    "locate_knees",
    "columns_run_to_patient_right",
    "LocateKnee",
    "LocateKneed",
    "KNEE_META_KEYS",
]

#: Meta keys LocateKnee writes on the image of each knee (and LocateKneed on each item).
KNEE_META_KEYS: tuple[str, ...] = (
    "joint_centre_px", "knee_side", "side_source", "locator_confidence", "knee_crop_box_px",
    "knee_field_mm", "source_spacing_mm", "knees_found",
)


@dataclass(frozen=True)
class LocatorParams:
    """Thresholds of the knee finder (the bundle config passes its own through :class:`LocateKnee`).

    Attributes:
        grid_mm: pixel size (mm) the image is brought to before searching.
        band_offset_mm: distance above and below a row compared with it when scoring a dark band.
        compartment_offset_mm: how far (up or down) each compartment's joint space may lie from the joint
            line, which is midway between the two (tilted plateaus, varus/valgus, rotation, flexion; a
            real tight crop's two joint spaces lie 12 mm apart).
        compartment_columns_mm: (inner, outer) distance (mm) from the leg's bone axis of the columns
            each compartment's dark band is measured over. The inner limit keeps the band clear of the
            intercondylar notch: its dark arch (an adult's notch is 18-22 mm wide at its base, so it
            reaches 9-11 mm either side of the axis) lies above the tibial spines, a few mm above the
            joint line, and on a KL 4 knee, whose collapsed compartment has no band of its own, it
            passed for that compartment's joint space. The outer limit stays inside the condyles and
            the plateau (a knee is 70-90 mm wide: 35-45 mm either side).
        min_contrast: smallest accepted dark-band score (relative to the bone-soft tissue contrast).
        knee_width_mm: (min, max) width of the bone just above and below the joint line.
        min_plateau_fill: share of the tibial plateau's extent its widest run of bone must cover (one solid
            bone; a hand's separate metacarpals are not).
        max_shaft_ratio: a shaft's widest solid run (60-95 mm from the joint line) is at most this share of the knee's width.
        max_leg_width_mm: a body band wider than this is split between two legs or refused.
        min_confidence: knees found with a lower confidence are refused.
        tight_crop_mm: an image smaller than this both ways is a tight crop around one knee (soft
            tissue and bone, no air): its thresholds split those two only.
        collapsed_band_ratio: a compartment whose dark band is under this share of the other's has
            lost its joint space (bone on bone, KL 4): the other compartment's band alone is the joint line.
        metal_min_area_mm2, metal_max_texture: metal (implants, saturating) is a plateau near the
            brightest value at least this large, whose local standard deviation (3 mm window, share
            of the image's range) has a median under ``metal_max_texture`` (bone has texture).
    """

    grid_mm: float = 1.0
    band_offset_mm: float = 4.0
    compartment_offset_mm: float = 5.0
    compartment_columns_mm: tuple[float, float] = (10.0, 30.0)
    min_contrast: float = 0.03
    knee_width_mm: tuple[float, float] = (50.0, 130.0)
    min_plateau_fill: float = 0.7
    max_shaft_ratio: float = 0.75
    max_leg_width_mm: float = 240.0
    min_confidence: float = 0.2
    tight_crop_mm: float = 150.0
    metal_min_area_mm2: float = 150.0
    metal_max_texture: float = 0.006
    collapsed_band_ratio: float = 0.25


@dataclass
class KneeLocation:
    """One knee found on a radiograph (pixels of the source image, as stored).

    Attributes:
        centre: (row, col) of the joint centre.
        side: ``"R"``, ``"L"`` or None (unknown).
        side_source: how the side was decided: ``"given"``, ``"tag"``, ``"position"``, ``"anatomy"`` or ``""``.
        confidence: 0..1, how clearly the joint space and a knee's shape were seen (1 for a given centre).
        crop_box: ``[row0, col0, row1, col1]`` (end exclusive) of the field of view around the centre.
        flip_columns: the stored columns run patient left -> right (PatientOrientation ``R\\F``).
        position: ``"image-left"``, ``"image-right"`` or ``"single"``.
    """

    centre: tuple[float, float]
    side: str | None
    side_source: str
    confidence: float
    crop_box: list[int] = field(default_factory=list)
    flip_columns: bool = False
    position: str = "single"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["centre"] = [float(v) for v in self.centre]
        return d


class NoKneeFound(ValueError):
    """No knee on the image; ``reason`` says what was seen instead."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


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


def otsu2(values: np.ndarray, bins: int = 96) -> float:
    """The threshold splitting ``values`` into two classes with the largest between-class variance."""
    lo, hi = np.percentile(values, (0.5, 99.5))
    hist, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi + 1e-9))
    p = hist / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where((w0 > 0) & (w0 < 1), (m0[-1] * w0 - m0) ** 2 / (w0 * (1 - w0)), -1.0)
    return float(edges[int(np.argmax(var)) + 1])


def columns_run_to_patient_right(patient_orientation: Any) -> bool:
    """True when PatientOrientation's row direction is ``R`` (stored columns run patient left -> right)."""
    if patient_orientation is None:
        return False
    values = [patient_orientation] if isinstance(patient_orientation, str) else list(patient_orientation)
    if len(values) == 1 and "\\" in str(values[0]):
        values = str(values[0]).split("\\")
    return bool(values) and str(values[0]).strip().upper().startswith("R")


# --------------------------------------------------------------------------------------------
# the search, on a ~1 mm grid


def _block_mean(image: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    fr, fc = factors
    h, w = image.shape[0] // fr, image.shape[1] // fc
    return image[: h * fr, : w * fc].reshape(h, fr, w, fc).mean(axis=(1, 3), dtype=np.float64)


def _to_grid(img: np.ndarray, spacing: Sequence[float], grid_mm: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The image brought to about ``grid_mm`` pixels, and how many source pixels one of its pixels spans per axis.

    Finer images are averaged over whole blocks of pixels. Coarser ones (thumbnails, figure panels,
    a downsampled PACS preview: 1.5-3 mm pixels) are interpolated up to the grid: the search's
    windows and offsets are whole pixels of the grid, and at 2-3 mm a joint space is one pixel, so
    the band offsets and smoothing would otherwise span several times the millimetres they mean.
    Source pixel ``i`` covers grid pixels ``(i + 0.5) / factor - 0.5`` either way.
    """
    if max(float(s) for s in spacing) <= 1.5 * grid_mm:
        factors = tuple(max(1, int(round(grid_mm / float(s)))) for s in spacing)
        return _block_mean(img, factors), (float(factors[0]), float(factors[1]))
    zoom = tuple(max(1.0, float(s) / grid_mm) for s in spacing)
    grid = ndimage.zoom(img, zoom, order=1, mode="nearest", grid_mode=True)
    return grid, (img.shape[0] / grid.shape[0], img.shape[1] / grid.shape[1])


def _border_runs(row_flags: np.ndarray, col_flags: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Mask of the runs of flagged rows and columns that start at a border (each at most 35 % of the image)."""
    mask = np.zeros(shape, dtype=bool)
    limit = int(0.35 * min(shape))
    for axis, flags in ((0, row_flags), (1, col_flags)):
        for forward in (True, False):
            order = range(len(flags)) if forward else range(len(flags) - 1, -1, -1)
            n = 0
            for i in order:
                if not flags[i] or n >= limit:
                    break
                n += 1
            if n:
                sl = slice(0, n) if forward else slice(len(flags) - n, None)
                if axis == 0:
                    mask[sl, :] = True
                else:
                    mask[:, sl] = True
    return mask


def _padding(small: np.ndarray) -> np.ndarray:
    """Mask of constant bands along the borders at the image's lowest value: padding or a viewer's canvas
    around the radiograph, which hold no exposure at all (not even air's noise). Left in, they become the
    image's darkest class, the radiograph's own air is counted as body, and a leg's bone threshold
    splits air from leg."""
    low, span = float(small.min()), float(np.ptp(small))
    if span <= 0:
        return np.zeros(small.shape, dtype=bool)
    empty = [(lines.max(axis=1) - low) < 0.01 * span for lines in (small, small.T)]
    return _border_runs(empty[0], empty[1], small.shape)


def _border_bands(v: np.ndarray) -> np.ndarray:
    """Mask of flat bright bands along the borders (collimation, unexposed detector)."""
    flat_bright = [(lines.mean(axis=1) > 0.6) & (lines.std(axis=1) < 0.06) for lines in (v, v.T)]
    return _border_runs(flat_bright[0], flat_bright[1], v.shape)


#: A ruler (a calibration ruler on a standing or long-leg view) is a bright strip at most this wide (mm) ...
RULER_MAX_WIDTH_MM: float = 60.0
#: ... whose two straight edges run unbroken (gaps under :data:`RULER_GAP_MM`: numbers, ticks) along at
#: least this share of the exposed rows and this many mm, and at least 5 times its width ...
RULER_MIN_SHARE: float = 0.85
RULER_MIN_LENGTH_MM: float = 100.0
RULER_GAP_MM: float = 12.0
#: ... within this angle (degrees) of the columns ...
RULER_MAX_TILT_DEG: float = 10.0
#: ... each edge a step of at least this share of the image's range across 3 mm.
RULER_STEP: float = 0.1


def _longest_run(line: np.ndarray, gap: int) -> tuple[int, int]:
    """(start, end) (end exclusive) of the longest run of True in a 1-D mask, bridging gaps of up to ``gap``."""
    runs = _runs(line)
    if not runs:
        return 0, 0
    merged = [list(runs[0])]
    for a, b in runs[1:]:
        if a - merged[-1][1] <= gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    a, b = max(merged, key=lambda run: run[1] - run[0])
    return int(a), int(b)


def _rulers(v: np.ndarray, excluded: np.ndarray, mm: tuple[float, float]) -> np.ndarray:
    """Mask of rulers: long, straight, bright strips near the columns' direction.

    Standing and long-leg views often hold a calibration ruler (a strip of plastic or metal, with
    ticks and numbers) along the legs, often between them. It is not anatomy: between the legs it
    joins one leg's soft tissue and bone (the leg then holds a 130-140 mm "knee" and is refused),
    or it passes for a leg of its own. A ruler is told apart from anatomy by its edges: two straight
    parallel steps (bright inside), at most :data:`RULER_MAX_WIDTH_MM` apart, running all along the
    image (:data:`RULER_MIN_SHARE` of the exposed rows, gaps under :data:`RULER_GAP_MM` for ticks and
    numbers). A limb's edges curve (thigh, knee, calf), a shaft widens into the knee, and the edges of
    a collimation band or the image's border are left out.

    Each tilt within :data:`RULER_MAX_TILT_DEG` is tried (steps small enough that a line strays at most
    1.5 mm from one of them): the edge pixels are counted per line of that tilt, and a line holding
    enough of them is followed; its longest run (gaps bridged) is its edge's length.
    """
    h, w = v.shape
    mask = np.zeros(v.shape, dtype=bool)
    exposed = np.flatnonzero(~excluded.all(axis=1))
    k = max(1, int(round(1.5 / mm[1])))
    if exposed.size == 0 or w <= 2 * k + 2:
        return mask
    min_len = max(RULER_MIN_LENGTH_MM / mm[0], RULER_MIN_SHARE * (exposed[-1] - exposed[0] + 1))
    step = np.zeros(v.shape)
    step[:, k:w - k] = v[:, 2 * k:] - v[:, :w - 2 * k]  # across each column: right minus left, 3 mm apart
    near_excluded = ndimage.binary_dilation(excluded, np.ones((1, 2 * k + 3), dtype=bool))
    step[near_excluded] = 0.0
    tol = k  # an edge may wander as far from the straight line (1.5 mm) as the step's half-width
    widen = np.ones((1, 2 * tol + 1), dtype=bool)
    edges = {+1: ndimage.binary_dilation(step > RULER_STEP, widen), -1: ndimage.binary_dilation(step < -RULER_STEP, widen)}
    gap = max(1, int(round(RULER_GAP_MM / mm[0])))
    max_width = RULER_MAX_WIDTH_MM / mm[1]
    rows = np.arange(h)
    pixels = {sign: np.nonzero(edge) for sign, edge in edges.items()}
    max_slope = np.tan(np.radians(RULER_MAX_TILT_DEG)) * mm[0] / mm[1]  # columns per row
    n = int(np.ceil(max_slope * h / (2 * tol))) if h > 1 else 0
    for slope in np.linspace(-max_slope, max_slope, 2 * n + 1) if n else [0.0]:
        shift = np.rint(slope * (rows - h / 2)).astype(int)  # a line of this tilt: column c + shift[row]
        found = {}
        for sign, (rr, cc) in pixels.items():
            sheared = cc - shift[rr]  # the line (of this tilt) each edge pixel lies on
            inside = (sheared >= 0) & (sheared < w)
            counts = np.bincount(sheared[inside], minlength=w)
            found[sign] = []
            for c in np.flatnonzero(counts >= 0.75 * min_len):  # lines holding enough edge pixels
                cols = c + shift
                on = (cols >= 0) & (cols < w)
                line = np.zeros(h, dtype=bool)
                line[on] = edges[sign][rows[on], cols[on]]
                a, b = _longest_run(line, gap)
                if b - a >= min_len:
                    found[sign].append((int(c), a, b))
        for c1, a1, b1 in found[+1]:  # rising edge (image-left side of the strip) ...
            for c2, a2, b2 in found[-1]:  # ... then a falling one (image-right side)
                a, b = max(a1, a2), min(b1, b2)
                if not 0 < c2 - c1 <= max_width or b - a < max(min_len, 5 * (c2 - c1) * mm[1] / mm[0]):
                    continue
                # the strip's columns reach 1.5 mm beyond each edge's step (and the edges' wander) already
                strip = np.arange(c1, c2 + 1)[None, :] + shift[a:b, None]
                keep = (strip >= 0) & (strip < w)
                mask[np.broadcast_to(rows[a:b, None], strip.shape)[keep], strip[keep]] = True
    return mask


def _metal(small: np.ndarray, excluded: np.ndarray, mm: tuple[float, float], p: LocatorParams) -> np.ndarray:
    """Mask of metal: large, flat plateaus near the brightest value of the image.

    Implants, stems and calibration balls attenuate far more than bone: the detector (or the
    display's LUT) saturates there, so metal is a smooth area at or near the brightest value that
    fills more than a few mm (burned-in text may be brighter still, but its strokes are thin).
    Left in, metal dominates the thresholds (the soft tissue then falls in with the air, and a
    knee's bone looks like a slab with nothing around it). Bone as bright (an equalised or
    over-processed image) keeps its trabecular texture; metal has none.
    """
    size = (max(1, int(round(5.0 / mm[0]))), max(1, int(round(5.0 / mm[1]))))
    top = float(ndimage.grey_erosion(np.where(excluded, small.min(), small), size=size).max())
    lo = float(np.percentile(small, 1.0))
    if top - lo <= 0:
        return np.zeros(small.shape, dtype=bool)
    plateau = (small >= top - 0.12 * (top - lo)) & ~excluded
    labels, n = ndimage.label(plateau)
    if not n:
        return plateau
    win = (max(3, int(round(3.0 / mm[0]))), max(3, int(round(3.0 / mm[1]))))
    mean = ndimage.uniform_filter(small, win)
    texture = np.sqrt(np.clip(ndimage.uniform_filter(small**2, win) - mean**2, 0.0, None)) / (top - lo)
    areas = ndimage.sum_labels(plateau, labels, index=np.arange(1, n + 1)) * mm[0] * mm[1]
    metal = np.zeros(small.shape, dtype=bool)
    for i in np.flatnonzero(areas >= p.metal_min_area_mm2):
        part = labels == i + 1
        if float(np.median(texture[part])) < p.metal_max_texture:
            metal |= part
    return metal


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of the True runs of a 1-D mask (end exclusive)."""
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


@dataclass
class _Leg:
    c0: int
    c1: int


def _find_legs(body: np.ndarray, bone: np.ndarray, mm: tuple[float, float], p: LocatorParams) -> list[_Leg]:
    """Column bands of the legs: split at soft-tissue gaps, and at bone-free columns when too wide."""
    profile = uniform_filter1d(body.mean(axis=0), _odd(10 / mm[1]))
    peak = profile.max(initial=0.0)
    if peak <= 0:
        return []
    inside = profile > 0.25 * peak
    bands = [(a, b) for a, b in _runs(inside) if (b - a) * mm[1] >= 30.0]
    legs: list[_Leg] = []
    for a, b in bands:
        # a gap inside the band: a dip of the body profile well below the legs on both sides
        splits = [a]
        if (b - a) * mm[1] > 0.6 * p.max_leg_width_mm:
            seg = profile[a:b]
            lo, hi = int(0.25 * seg.size), int(0.75 * seg.size)
            k = lo + int(np.argmin(seg[lo:hi]))
            left, right = seg[:k].max(initial=0.0), seg[k:].max(initial=0.0)
            if seg[k] < 0.6 * min(left, right):
                splits.append(a + k)
            elif (b - a) * mm[1] > p.max_leg_width_mm:
                bone_profile = uniform_filter1d(bone[:, a:b].mean(axis=0), _odd(10 / mm[1]))
                k = lo + int(np.argmin(bone_profile[lo:hi]))
                if bone_profile[k] < 0.25 * bone_profile.max(initial=0.0):
                    splits.append(a + k)
        splits.append(b)
        legs += [_Leg(s, e) for s, e in zip(splits[:-1], splits[1:])]
    return [leg for leg in legs if leg.c1 - leg.c0 >= 2]


def _extent(mask_row: np.ndarray) -> tuple[int, int, float]:
    """(first, last, fill) of the True values in a row (fill: share of first..last that is True)."""
    hits = np.flatnonzero(mask_row)
    if hits.size == 0:
        return 0, -1, 0.0
    first, last = int(hits[0]), int(hits[-1])
    return first, last, float(hits.size) / (last - first + 1)


def _soft_tissue_around(row: int, bone: np.ndarray, body: np.ndarray, mm: tuple[float, float]) -> bool:
    """Whether the bone beside joint line ``row`` has soft tissue around it (or runs off the image).

    A knee's bones lie inside the leg's soft tissue; a slab whose every body pixel counts as bone
    (a thick palm taken for bone, a block) does not.
    """
    h, w = bone.shape
    margins = []
    for r in (row + int(round(d / mm[0])) for d in (-10.0, -6.0, 6.0, 10.0)):
        if not 0 <= r < h:
            continue
        b, t = np.flatnonzero(bone[r]), np.flatnonzero(body[r])
        if b.size == 0 or t.size == 0:
            continue
        if b[0] == 0 or b[-1] == w - 1:
            return True  # the bone runs off the image (a tight crop)
        margins.append(((b[0] - t[0]) + (t[-1] - b[-1])) * mm[1])
    return bool(margins) and float(np.median(margins)) >= 6.0


def _shaft_bone(rows: list[int], leg: np.ndarray, bone: np.ndarray, c0: int, c1: int, col_mm: float) -> np.ndarray:
    """The bone of a shaft's rows, thresholded among those rows' own pixels (a mask of ``rows`` x ``c0:c1``).

    Thigh and calf are thicker than the knee, and a real radiograph's processing (unsharp masking,
    LUTs) lifts their soft tissue further, so the knee's bone threshold takes the soft tissue beside a
    shaft for bone and the shaft looks as wide as the leg. A limb is a cylinder: its soft tissue is
    brightest where it is thickest, in the middle, so a split of the rows' intensities takes the
    thick middle of the thigh for the shaft. The shaft is a narrow step on that smooth profile: the
    profile smoothed over 10 mm along the row is taken off first, and Otsu's split of what is left
    separates the shaft. The threshold is only ever raised (never below the knee's), so bone seen at
    the knee's threshold is all the shaft can be.
    """
    sub_bone = bone[rows, c0:c1]
    sub = leg[rows, c0:c1]
    detail = sub - gaussian_filter1d(sub, 10.0 / col_mm, axis=1, mode="nearest")
    values = detail[sub_bone]
    if values.size < 50 or np.ptp(values) <= 1e-9:
        return sub_bone
    return sub_bone & (detail > otsu2(values))


def _knee_at(row: int, bone: np.ndarray, axis_col: float, mm: tuple[float, float], p: LocatorParams,
             leg: np.ndarray | None = None, bands: tuple[float, float] | None = None):
    """Check a knee's anatomy around joint line ``row`` of one leg; (ok, reason, col, width, fill).

    ``leg`` (the leg's intensities) lets the shafts be measured with their own bone threshold
    (:func:`_shaft_bone`); without it they are measured on ``bone``. ``bands`` (the upper and the
    lower compartment's joint-space rows, :func:`_compartment_rows`) puts the femur's checks above
    the upper band and the tibia's below the lower one: with the compartments' joint spaces several
    mm apart, rows a few mm from the midway line cross the other compartment's joint space.
    """
    h, w = bone.shape
    top, bottom = (row, row) if bands is None else (int(np.floor(bands[0])), int(np.ceil(bands[1])))
    reach = int(round(75 / mm[1]))
    c0, c1 = max(0, int(np.floor(axis_col - reach))), min(w, int(np.ceil(axis_col + reach)) + 1)

    def rows_stats(start_mm: float, end_mm: float, shaft: bool = False):
        base = top if start_mm < 0 else bottom
        rows = [base + int(round(v / mm[0])) for v in np.arange(start_mm, end_mm + 1e-6, mm[0])]
        rows = [r for r in rows if 0 <= r < h]
        if not rows:
            return None
        mask = _shaft_bone(rows, leg, bone, c0, c1, mm[1]) if shaft and leg is not None else bone[rows, c0:c1]
        stats = [_extent(m) for m in mask]
        gap = max(1, int(round(3.0 / mm[1])))  # runs bridge gaps under 3 mm (trabecular texture)
        closed = [ndimage.binary_closing(m, np.ones(gap + 1, bool)) | m for m in mask]
        runs = [max((e - s for s, e in _runs(c)), default=0) * mm[1] for c in closed]
        widths = [(b - a + 1) * mm[1] for a, b, _ in stats if b >= a]
        mids = [c0 + (a + b) / 2 for a, b, _ in stats if b >= a]
        # solidity: the widest run of bone over the bone's extent (one plateau, not separate rays)
        fills = [run / ((b - a + 1) * mm[1]) for (a, b, _), run in zip(stats, runs) if b >= a]
        if len(widths) < max(1, len(rows) // 2):
            return 0.0, 0.0, axis_col, 0.0
        return float(np.median(widths)), float(np.median(fills)), float(np.median(mids)), float(np.median(runs))

    above, below = rows_stats(-12.0, -4.0), rows_stats(4.0, 12.0)
    if above is None or below is None:
        return False, "joint line at the image border", axis_col, 0.0, 0.0
    lo, hi = p.knee_width_mm
    for name, (width, *_) in (("above", above), ("below", below)):
        if not lo <= width <= hi:
            return False, f"bone {name} the dark band is {width:.0f} mm wide (a knee: {lo:.0f}-{hi:.0f} mm)", \
                axis_col, width, 0.0
    if below[1] < p.min_plateau_fill:
        return False, f"bone below the band is broken up ({below[1]:.0%} solid; a tibial plateau is solid)", \
            axis_col, below[0], below[1]
    knee_width = min(above[0], below[0])
    for name, sign in (("femoral", -1.0), ("tibial", 1.0)):
        inside = [(top if sign < 0 else bottom) + sign * v / mm[0] for v in (60.0, 95.0)]
        if sum(0 <= r < h for r in np.linspace(*inside, 8)) < 4:
            continue  # the image ends before the shaft (a tight crop): not checked
        shaft = rows_stats(-95.0, -60.0, shaft=True) if sign < 0 else rows_stats(60.0, 95.0, shaft=True)
        if shaft is None or shaft[0] == 0.0:
            continue
        if shaft[3] > p.max_shaft_ratio * knee_width:
            return False, f"no {name} shaft narrower than the joint ({shaft[3]:.0f} vs {knee_width:.0f} mm)", \
                axis_col, knee_width, below[1]
    col = (above[2] + below[2]) / 2
    return True, "", col, knee_width, below[1]


def _band_row(score: np.ndarray, row: int, reach: int) -> float:
    """The sub-pixel row of ``score``'s maximum within ``reach`` rows of ``row`` (a parabola through its neighbours)."""
    lo, hi = max(0, row - reach), min(score.size, row + reach + 1)
    r = lo + int(np.argmax(score[lo:hi]))
    if not 0 < r < score.size - 1:
        return float(r)
    a, b, c = score[r - 1], score[r], score[r + 1]
    denom = a - 2 * b + c
    return r + (0.5 * (a - c) / denom if np.isfinite(denom) and denom < 0 else 0.0)


def _compartment_rows(sides: list[np.ndarray], row: int, reach: int, collapsed: float) -> tuple[float, float]:
    """(upper, lower) rows of the two compartments' dark bands near ``row``; the one band seen, twice.

    A compartment whose cartilage is gone (bone on bone, KL 4) has no dark band of its own: the row
    of its strongest (faint) score within ``reach`` is noise or the edge of a sclerotic line. When one
    compartment's band is under ``collapsed`` times the other's, the other one alone is the joint space.
    """
    rows = [_band_row(side, row, reach) for side in sides]
    lo, hi = max(0, row - reach), row + reach + 1
    depth = [max(float(np.max(side[lo:hi], initial=0.0)), 0.0) for side in sides]
    if min(depth) < collapsed * max(depth):
        one = float(rows[int(np.argmax(depth))])
        return one, one
    return float(min(rows)), float(max(rows))


def _joint_row(sides: list[np.ndarray], row: int, reach: int, collapsed: float) -> float:
    """The joint line near ``row``: midway between the two compartments' dark bands, or the one band seen."""
    return float(np.mean(_compartment_rows(sides, row, reach, collapsed)))


def _implant_joint(row: int, metal: np.ndarray, mm: tuple[float, float]) -> float | None:
    """The column of a joint replacement's articulation at ``row``, or None when the row is not one.

    A replaced knee's femoral component and tibial tray are metal a knee's width across (not a
    screw, a ball or a marker) with the radiolucent polyethylene insert between them: the joint
    line is a band with little metal between metal just above and metal just below (a post or a
    hinge may join the two). Such a joint has no bone of a knee's shape around it to check. The
    column is midway across the metal.
    """
    h = metal.shape[0]
    reach, skip = int(round(15.0 / mm[0])), max(1, int(round(2.0 / mm[0])))
    spans = []
    for rows in (np.arange(row - reach, row - skip + 1), np.arange(row + skip, row + reach + 1)):
        rows = rows[(rows >= 0) & (rows < h)]
        cols = np.flatnonzero(metal[rows].any(axis=0)) if rows.size else np.zeros(0, int)
        if cols.size == 0 or (cols[-1] - cols[0] + 1) * mm[1] < 40.0:
            return None
        spans.append((int(cols[0]), int(cols[-1])))
    c0, c1 = max(spans[0][0], spans[1][0]), min(spans[0][1], spans[1][1])
    if c1 <= c0 or metal[row, c0:c1 + 1].mean() > 0.35:
        return None  # metal across the band: inside a component, not between two
    return float((sum(spans[0]) + sum(spans[1])) / 4)


def _one_knee(leg: np.ndarray, bone: np.ndarray, body: np.ndarray, t_air: float, t_bone: float,
              mm: tuple[float, float], p: LocatorParams,
              metal: np.ndarray | None = None) -> tuple[tuple[float, float] | None, str, float]:
    """((row, col) in ``leg`` pixels or None, reason, confidence) for the knee in one leg's columns.

    With ``metal`` (the leg's metal mask) the strongest band that is a joint replacement's
    articulation (:func:`_implant_joint`) is the joint line, before any band checked for anatomy.
    """
    if bone.sum() * mm[0] * mm[1] < 400:
        return None, "no bone found", 0.0
    rows_with_bone = bone.any(axis=1)
    # the bone axis per row: the middle of the bone, smoothed along the leg
    mids = np.full(leg.shape[0], np.nan)
    for r in np.flatnonzero(rows_with_bone):
        a, b, _ = _extent(bone[r])
        mids[r] = (a + b) / 2
    valid = np.isfinite(mids)
    axis = np.interp(np.arange(leg.shape[0]), np.flatnonzero(valid), mids[valid])
    axis = uniform_filter1d(axis, _odd(30 / mm[0]))

    k = max(1, int(round(p.band_offset_mm / mm[0])))
    inner, outer = (int(round(d / mm[1])) for d in p.compartment_columns_mm)
    contrast = max(t_bone - t_air, 1e-6)
    h, w = leg.shape
    cols = np.arange(w)[None, :]
    offset = cols - axis[:, None]
    # rows beside bone (the joint space itself may hold none)
    near_bone = ndimage.binary_dilation(rows_with_bone, iterations=k + 2)
    sides = []  # the dark-band score of each compartment (image-left, image-right of the bone axis)
    for lo, hi in ((-outer, -inner), (inner, outer)):
        band = (offset >= lo) & (offset <= hi)
        n = np.maximum(band.sum(axis=1), 1)
        prof = (leg * band).sum(axis=1) / n
        prof = gaussian_filter1d(prof, 0.7)
        up = np.concatenate([np.full(k, np.nan), prof[:-k]])
        down = np.concatenate([prof[k:], np.full(k, np.nan)])
        side = np.nan_to_num(np.minimum(up - prof, down - prof) / contrast, nan=-np.inf)
        side[~near_bone] = -np.inf
        sides.append(side)
    # the two compartments' joint lines need not be level (a tilted plateau, varus/valgus, rotation,
    # flexion): each side's band may sit up to compartment_offset_mm above or below the row
    shift = int(round(p.compartment_offset_mm / mm[0]))
    score = sum(ndimage.maximum_filter1d(side, 2 * shift + 1, mode="nearest") for side in sides) / 2
    # candidate rows: local maxima of the score, strongest first, one per 2 * shift + 1 rows
    is_peak = (score >= np.roll(score, 1)) & (score >= np.roll(score, -1)) & np.isfinite(score)
    candidates: list[int] = []
    for r in sorted(np.flatnonzero(is_peak & (score >= p.min_contrast)), key=lambda r: -score[r]):
        if all(abs(r - c) > shift for c in candidates):
            candidates.append(int(r))
    candidates = candidates[:12]
    if not candidates:
        best = float(np.max(score[np.isfinite(score)], initial=0.0))
        return None, f"no joint space found (contrast {best:.3f} < {p.min_contrast})", 0.0
    first_reason = ""
    for row in candidates if metal is not None and metal.any() else []:
        col = _implant_joint(int(row), metal, mm)
        if col is not None:
            row_f = _joint_row(sides, row, shift, p.collapsed_band_ratio)
            return (row_f, col), "", float(np.clip(score[row] / (4 * p.min_contrast), 0.0, 1.0))
    for row in candidates:
        bands = _compartment_rows(sides, row, shift, p.collapsed_band_ratio)
        ok, reason, col, width, fill = _knee_at(int(row), bone, float(axis[row]), mm, p, leg, bands)
        if ok and not _soft_tissue_around(int(row), bone, body, mm):
            ok, reason = False, "bone fills the body beside the dark band (no soft tissue around it: not a knee)"
        if not ok:
            first_reason = first_reason or reason
            continue
        # the joint line: midway between the two compartments' dark bands near this row
        row_f = _joint_row(sides, row, shift, p.collapsed_band_ratio)
        confidence = float(np.clip(score[row] / (4 * p.min_contrast), 0.0, 1.0)) * float(np.clip(fill, 0.0, 1.0))
        return (float(row_f), float(col)), "", confidence
    return None, f"no knee: {first_reason}", 0.0


def _fibula_side(leg: np.ndarray, body: np.ndarray, centre: tuple[float, float], mm: tuple[float, float]) -> str:
    """``"image-left"``/``"image-right"``: the side of the fibula, 35-75 mm below the joint line.

    Across the lower leg each bone's border is a rise of brightness going inwards from the skin:
    the medial side has one (the tibia), the lateral side two (the fibula, then the tibia). Per
    row, the rises stronger than a quarter of the strongest are counted on each side of the joint
    centre's column; the side with more of them in most rows is the fibula's. Empty when unclear.
    """
    h, w = leg.shape
    c = int(round(centre[1]))
    votes = {"image-left": 0, "image-right": 0}
    rows = list(range(max(0, int(centre[0] + 35 / mm[0])), min(h, int(centre[0] + 75 / mm[0]))))
    for r in rows:
        inside = np.flatnonzero(body[r])
        if inside.size < 10 or not inside[0] < c < inside[-1]:
            continue
        prof = gaussian_filter1d(leg[r], 1.0 / mm[1])
        grad = np.gradient(prof)
        left = grad[inside[0] + 2: c]  # rising towards the centre: positive
        right = -grad[c: inside[-1] - 1]
        strongest = max(left.max(initial=0.0), right.max(initial=0.0))
        if strongest <= 0:
            continue

        def rises(g: np.ndarray, floor: float = 0.25 * strongest) -> int:
            peaks = (g[1:-1] > g[:-2]) & (g[1:-1] >= g[2:]) & (g[1:-1] > floor)
            return int(peaks.sum())

        n_left, n_right = rises(left), rises(right)
        if n_left > n_right:
            votes["image-left"] += 1
        elif n_right > n_left:
            votes["image-right"] += 1
    best = max(votes, key=votes.get)
    other = "image-right" if best == "image-left" else "image-left"
    return best if votes[best] >= max(3, 0.4 * len(rows)) and votes[other] <= 0.35 * votes[best] else ""


def locate_knees(
    image: np.ndarray,
    spacing: Sequence[float],
    *,
    patient_orientation: Any = None,
    laterality: str | None = None,
    field_mm: float = 160.0,
    params: LocatorParams | None = None,
) -> list[KneeLocation]:
    """Every knee on a frontal knee radiograph, patient right first.

    Args:
        image: 2-D array (rows, cols) or (1, rows, cols), more attenuation = higher value
            (as :class:`~.xray.LoadXray` gives).
        spacing: (row, col) pixel spacing in mm.
        patient_orientation: the image's PatientOrientation (e.g. ``["L", "F"]``); ``R`` first
            means the stored columns run towards the patient's right.
        laterality: ImageLaterality/Laterality of the image (``"L"``/``"R"``; others mean none).
        field_mm: side of the square crop box around each joint centre.
        params: thresholds (:class:`LocatorParams`).

    Returns:
        one :class:`KneeLocation` per knee found (one or two).

    Raises:
        NoKneeFound: no knee on the image (blank, or no leg with a knee's joint); the reason says why.
    """
    p = params or LocatorParams()
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D radiograph, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise NoKneeFound("the image holds non-finite values")
    small, factors = _to_grid(img, spacing, p.grid_mm)
    mm = (float(spacing[0]) * factors[0], float(spacing[1]) * factors[1])
    if min(small.shape[0] * mm[0], small.shape[1] * mm[1]) < 60:
        raise NoKneeFound(f"the image covers {small.shape[0] * mm[0]:.0f} x {small.shape[1] * mm[1]:.0f} mm, "
                          "too small to hold a knee")
    small = erase_burned_in(small, mm)
    padding = _padding(small)  # at most 35 % of each side: never the whole image
    lo, hi = np.percentile(small[~padding], (1.0, 99.5))
    if hi - lo <= 1e-9 * max(1.0, abs(hi)):
        raise NoKneeFound("blank image (every pixel has the same value)")
    v = np.clip((small - lo) / (hi - lo), 0.0, 1.0)
    smooth = gaussian_filter(v, 4.0 / min(mm))
    if np.percentile(smooth, 99) - np.percentile(smooth, 1) < 0.25:
        raise NoKneeFound("blank image (no structure above the noise)")
    v = gaussian_filter(v, 0.7)
    # what is not anatomy: collimation bands, then burned-in markers (small blobs apart from the body)
    excluded = _border_bands(v) | padding
    if (~excluded).sum() < 0.2 * v.size:
        raise NoKneeFound("no exposed field (the image is collimation or unexposed)")
    excluded |= _rulers(v, excluded, mm)  # before the legs are split: a ruler between them joins one
    metal = _metal(small, excluded, mm, p)
    valid = v[~excluded & ~metal]  # the thresholds of the anatomy; metal is bone to the search
    tight = max(v.shape[0] * mm[0], v.shape[1] * mm[1]) < p.tight_crop_mm
    if tight:  # a tight crop around one knee: no air to speak of, soft tissue and bone only
        t_air, t_bone = float(np.percentile(valid, 0.5)), otsu2(valid)
    else:
        t_air, t_bone = otsu3(valid)
    body = (v > t_air) & ~excluded
    labels, n = ndimage.label(body)
    if n:
        areas = ndimage.sum_labels(body, labels, index=np.arange(1, n + 1)) * mm[0] * mm[1]
        keep = np.concatenate([[False], areas >= max(3000.0, 0.05 * areas.max())])
        body = keep[labels]
    bone = (v > t_bone) & body
    legs = _find_legs(body, bone, mm, p)
    if not legs:
        raise NoKneeFound("no leg found (no band of soft tissue)")

    flip = columns_run_to_patient_right(patient_orientation)
    found: list[tuple[float, float, float, np.ndarray, int]] = []
    reasons = []
    for leg in legs:
        width_mm = (leg.c1 - leg.c0) * mm[1]
        if width_mm > p.max_leg_width_mm:
            reasons.append(f"body {width_mm:.0f} mm wide without a gap (a knee is at most "
                           f"{p.max_leg_width_mm:.0f} mm: a chest, pelvis or abdomen?)")
            continue
        leg_body = body[:, leg.c0:leg.c1]
        leg_v = v[:, leg.c0:leg.c1]
        # the bone threshold of this leg alone (exposure varies across a bilateral field: heel effect),
        # then lower ones: in a tight crop the leg is nearly all bone and Otsu splits bone from bone
        t_leg = max(t_air, otsu2(leg_v[leg_body])) if leg_body.sum() > 100 else t_bone
        best: tuple = (None, "", 0.0, None)
        for t in (t_leg, t_air + 0.6 * (t_leg - t_air)):
            leg_bone = (leg_v > t) & leg_body
            centre, reason, confidence = _one_knee(leg_v, leg_bone, leg_body, t_air, t, mm, p,
                                                   metal[:, leg.c0:leg.c1])
            if centre is not None and confidence > best[2] + (0.1 if best[0] is not None else 0.0):
                best = (centre, "", confidence, leg_bone)
            elif best[0] is None and not best[1]:
                best = (None, reason, 0.0, None)
            if best[2] >= 0.95:
                break
        centre, reason, confidence, leg_bone = best
        if centre is None:
            reasons.append(reason)
            continue
        if confidence < p.min_confidence:
            reasons.append(f"knee-like joint only faintly seen (confidence {confidence:.2f} < {p.min_confidence})")
            continue
        found.append((centre[0], centre[1] + leg.c0, confidence, (v[:, leg.c0:leg.c1], leg_body), leg.c0))
    two_legs = len(legs) == 2 and all((leg.c1 - leg.c0) * mm[1] <= p.max_leg_width_mm for leg in legs)
    if not found:
        unique = list(dict.fromkeys(reasons))
        raise NoKneeFound("no knee found: " + "; ".join(unique))
    if len(found) > 2:  # keep the two clearest
        found = sorted(sorted(found, key=lambda f: -f[2])[:2], key=lambda f: f[1])

    knees = []
    side_tag = normalise_side(laterality)
    for i, (row, col, confidence, leg_bone, c0) in enumerate(found):
        centre = ((row + 0.5) * factors[0] - 0.5, (col + 0.5) * factors[1] - 0.5)
        if len(found) == 2 or two_legs:
            image_left = i == 0 if len(found) == 2 else c0 == legs[0].c0
            position = "image-left" if image_left else "image-right"
            side, source = ("R" if (position == "image-left") != flip else "L"), "position"
        else:
            position = "single"
            if side_tag:
                side, source = side_tag, "tag"
            else:
                fib = _fibula_side(leg_bone[0], leg_bone[1], (row, col - c0), mm)
                side, source = (None, "") if not fib else (("R" if (fib == "image-left") != flip else "L"), "anatomy")
        knees.append(KneeLocation(
            centre=(float(centre[0]), float(centre[1])), side=side, side_source=source,
            confidence=round(float(confidence), 3), crop_box=crop_box_for(centre, spacing, field_mm, img.shape),
            flip_columns=flip, position=position,
        ))
    order = {"R": 0, "L": 1, None: 2}
    return sorted(knees, key=lambda k: order[k.side])


# --------------------------------------------------------------------------------------------
# the transforms


class LocateKnee(Transform):
    """Find every knee of a loaded radiograph ``(1, H, W)``; returns one :class:`KneeLocation` per knee.

    The image's meta (from :class:`~.xray.LoadXray`) gives the spacing, the laterality and the
    PatientOrientation; ``knees_found`` (how many) is recorded in it.

    Args:
        field_mm: side of the square crop box around each joint centre (the bundle's field of view).
        params: thresholds (:class:`LocatorParams`), or their fields as keyword arguments
            (a bundle config passes them as a dict).

    Raises:
        XrayInputError: no knee found (names the file and the reason), or no spacing in the meta.

    Example::

        xray = LoadXray()("bilateral_pa.dcm")
        right, left = LocateKnee(field_mm=160)(xray)   # patient right first
        right.centre, right.crop_box, right.confidence
    """

    def __init__(self, field_mm: float = 160.0, params: LocatorParams | Mapping[str, Any] | None = None) -> None:
        if not field_mm > 0:
            raise ValueError(f"field_mm must be positive, got {field_mm}")
        self.field_mm = float(field_mm)
        if isinstance(params, Mapping):
            params = LocatorParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        self.params = params or LocatorParams()

    def __call__(
        self, img: Any, centre: Sequence[float] | None = None, side: str | None = None
    ) -> list[KneeLocation]:
        """The knees of ``img``; a given ``centre`` (row, col) replaces the search (one knee, of ``side``)."""
        meta = img.meta if isinstance(img, MetaTensor) else {}
        name = meta.get("filename_or_obj")
        spacing = meta.get("spacing")
        if spacing is None:
            raise XrayInputError(name, "no pixel spacing in the image meta; load it with LoadXray")
        spacing = tuple(float(s) for s in spacing)
        orientation = meta.get("patient_orientation")
        flip = columns_run_to_patient_right(orientation)
        if centre is not None:
            given = normalise_side(side)
            tag = normalise_side(meta.get("laterality"))
            knee_side, source = (given, "given") if given else ((tag, "tag") if tag else (None, ""))
            c = (float(centre[0]), float(centre[1]))
            knees = [KneeLocation(c, knee_side, source, 1.0, crop_box_for(c, spacing, self.field_mm, img.shape[-2:]),
                                  flip)]
        else:
            arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
            try:
                knees = locate_knees(arr, spacing, patient_orientation=orientation, laterality=meta.get("laterality"),
                                     field_mm=self.field_mm, params=self.params)
            except NoKneeFound as exc:
                raise XrayInputError(name, exc.reason) from exc
        if isinstance(img, MetaTensor):
            img.meta["knees_found"] = len(knees)
        return knees

    def knee_meta(self, knee: KneeLocation, img: Any) -> dict[str, Any]:
        """The meta entries (:data:`KNEE_META_KEYS`) recording one knee on its image."""
        meta = img.meta if isinstance(img, MetaTensor) else {}
        return {
            "joint_centre_px": [float(v) for v in knee.centre],
            "knee_side": knee.side or "",
            "side_source": knee.side_source,
            "locator_confidence": float(knee.confidence),
            "knee_crop_box_px": [int(v) for v in knee.crop_box],
            "knee_field_mm": self.field_mm,
            "source_spacing_mm": [float(s) for s in meta.get("spacing", ())],
            "knees_found": int(meta.get("knees_found", 1)),
        }


class LocateKneed(MapTransform):
    """Dictionary version of :class:`LocateKnee`: one item per knee, ready for :class:`~.knee_crop.CropKneed`.

    Each knee's item is a shallow copy of the input with ``side``, ``crop_box``,
    ``crop_flip_columns`` and the entries of :data:`KNEE_META_KEYS`; its image (a MetaTensor
    sharing the pixels, with its own meta) carries the same entries in its meta, so writers
    and sidecars can read them after cropping and preprocessing.

    Which knees: an item whose ``side_key`` names a side (a datalist's knee) gets that knee
    only, returned as one dict; an item without a side gets every knee found, returned as a
    list (one item per knee, patient right first), which MONAI's ``Compose`` maps the next
    transforms over and ``list_data_collate`` flattens, as with MONAI's multi-sample crops.
    An item that already holds ``box_key`` (a datalist with precomputed boxes) passes unchanged.
    An item's ``centre_key`` ((row, col) pixels, e.g. from ``--centre``) replaces the search.

    Args:
        keys: the radiograph key (one).
        field_mm, params: as :class:`LocateKnee`.
        side_key, box_key, flip_key, centre_key: item keys.
        allow_missing_keys: do not fail when the key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        field_mm: float = 160.0,
        params: LocatorParams | Mapping[str, Any] | None = None,
        side_key: str = "side",
        box_key: str = "crop_box",
        flip_key: str = "crop_flip_columns",
        centre_key: str = "centre",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"LocateKneed locates on one radiograph key, got {self.keys}")
        self.locator = LocateKnee(field_mm=field_mm, params=params)
        self.side_key, self.box_key, self.flip_key, self.centre_key = side_key, box_key, flip_key, centre_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any] | list[dict[Hashable, Any]]:
        d = dict(data)
        if d.get(self.box_key) is not None:
            return d
        key = next(self.key_iterator(d), None)
        if key is None:
            return d
        img = d[key]
        wanted = normalise_side(d.get(self.side_key))
        centre = d.get(self.centre_key)
        try:
            knees = self.locator(img, centre=centre, side=wanted)
        except XrayInputError as exc:
            if wanted is None:  # a radiograph to predict: refused as it is
                raise
            # a datalist's knee (training, evaluation): say how to place it by hand
            raise XrayInputError(exc.filename, f"{exc.reason}; give its datalist item a {self.centre_key!r} "
                                 f"[row, col] or a {self.box_key!r} to place the knee") from exc
        if wanted is not None and centre is None:
            chosen = [k for k in knees if k.side == wanted] or ([knees[0]] if len(knees) == 1 and knees[0].side is None
                                                                 else [])
            if not chosen:
                name = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
                sides = ", ".join(k.side or "unknown" for k in knees)
                raise XrayInputError(name, f"no {wanted} knee found (found: {sides})")
            knees = chosen[:1]
        items = []
        for knee in knees:
            item = dict(d)
            extra = self.locator.knee_meta(knee, img)
            if isinstance(img, MetaTensor):
                image = MetaTensor(img.as_tensor(), meta=copy.copy(img.meta),
                                   applied_operations=list(img.applied_operations))
                image.meta.update(extra)
                item[key] = image
            item.update(extra)
            item[self.side_key] = knee.side if knee.side else d.get(self.side_key)
            item[self.box_key] = list(knee.crop_box)
            item[self.flip_key] = bool(knee.flip_columns)
            items.append(item)
        return items[0] if wanted is not None else items
