"""Image-quality and clinical metrics for generated knee MRI volumes, with their data ranges stated.

Every function here is pure: arrays (numpy or torch) in, numbers out. Volumes are in the canonical
preprocessed space of the bundle, ``(D, H, W) = (A->P, S->I, R->L)`` (a leading channel of 1 is
accepted), left knees already mirrored to the right side, intensities normalised to ``[0, 1]``.

What is measured and how (the literature mixes these, so every figure says which it is):

* ``psnr`` -- PSNR over the whole volume: ``10 log10(data_range^2 / MSE)`` with one MSE over all
  voxels, ``data_range = 1.0`` (the normalised volume), through :class:`monai.metrics.PSNRMetric`.
* ``psnr_per_slice`` -- the mean of per-slice PSNRs, slices taken along the R->L axis (sagittal
  slices, the plane a knee DESS is acquired in). Slices with zero error (infinite PSNR) are left
  out of the mean. When every slice has some error, Jensen's inequality puts it at or above the
  whole-volume figure; in practice it runs several dB higher.
* ``ssim3d`` -- 3-D SSIM as :class:`monai.metrics.SSIMMetric` defines it (``spatial_dims=3``,
  ``data_range=1.0``, Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03), never a library default range,
  computed with the separable window of :mod:`xray2mri.pipeline.ssim` (same values, ~40x faster).
* ``mae`` and ``mae_per_tissue`` -- mean absolute error on the ``[0, 1]`` scale, whole volume or
  within each ground-truth tissue label.
* ``boundary_sharpness`` -- mean gradient magnitude on the ground truth's tissue boundaries relative
  to the truth's own (1 = as sharp; blur < 1), see :func:`boundary_sharpness`.
* Joint-space width (JSW), see :func:`joint_space_width`: the distance in mm between the femoral
  and tibial bone surfaces along S->I lines in the medial and lateral compartments; a compartment's
  JSW is the robust minimum over its lines (the radiographic minimum JSW, mJSW, that
  osteoarthritis grading and the OAI's measurements use).

Where JSW is measured comes from the ground-truth label map when there is one
(:func:`compartment_lines`) and otherwise from the ground-truth MRI itself
(:func:`compartment_lines_from_mri`); either way every method is measured on the same lines.
Aggregation over subjects lives in :mod:`xray2mri.pipeline.evaluation.summary`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import MAEMetric, PSNRMetric

from xray2mri.pipeline.ssim import SeparableSSIMMetric
from xray2mri.transforms.geometry import CANONICAL_SIDE, MRI_AXCODES

#: Intensity range of every normalised image the metrics compare (radiograph and MRI).
DATA_RANGE: float = 1.0
#: Spatial axis (no channel) of the canonical MRI that runs R->L; slicing along it gives sagittal slices.
SAGITTAL_AXIS: int = MRI_AXCODES.index("L")
#: Spatial axis (no channel) that runs S->I, along which joint-space width is measured.
SI_AXIS: int = MRI_AXCODES.index("I")
#: Spatial axis (no channel) that runs A->P (the projection axis).
AP_AXIS: int = MRI_AXCODES.index("P")
#: SSIM window settings (stated in the report).
SSIM_WIN_SIZE: int = 11
#: Where JSW is measured (see :func:`compartment_lines`): fractions of the tibial plateau's R->L width
#: from the patient's right edge, the R->L band and the A->P slab around each, in mm.
JSW_POSITIONS: dict[str, float] = {"lateral": 0.25, "medial": 0.75}
JSW_BAND_MM: float = 6.0
JSW_SLAB_MM: float = 10.0
#: Percentile of the per-line widths taken as a compartment's JSW: a robust minimum (the minimum
#: JSW, where the condyle meets the plateau; the single smallest line would follow noise).
JSW_PERCENTILE: float = 10.0

__all__ = [
    "DATA_RANGE",
    "SAGITTAL_AXIS",
    "psnr",
    "psnr_per_slice",
    "ssim3d",
    "mae",
    "mae_per_tissue",
    "bone_label_ids",
    "JswLine",
    "compartment_lines",
    "gap_from_profile",
    "measure_jsw",
    "joint_space_width",
    "label_jsw",
    "compartment_lines_from_mri",
]


def _to_batch(x: np.ndarray | torch.Tensor, spatial_dims: int, name: str) -> torch.Tensor:
    """``(spatial...)`` or ``(1, spatial...)`` -> float64 tensor ``(1, 1, spatial...)``."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach().cpu())
    t = t.as_subclass(torch.Tensor).to(torch.float64)
    if t.ndim == spatial_dims + 1 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != spatial_dims:
        raise ValueError(
            f"{name}: expected a {spatial_dims}-D array (optionally with a leading channel of 1), "
            f"got shape {tuple(t.shape)}"
        )
    return t[None, None]


def _pair(pred, target, spatial_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    p = _to_batch(pred, spatial_dims, "pred")
    y = _to_batch(target, spatial_dims, "target")
    if p.shape != y.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(p.shape[2:])} vs {tuple(y.shape[2:])}")
    return p, y


def psnr(pred, target, data_range: float = DATA_RANGE, spatial_dims: int = 3) -> float:
    """PSNR (dB) over the whole image: one MSE over all voxels, peak ``data_range`` (1.0 = [0, 1] scale).

    Args:
        pred, target: same-shape arrays, ``spatial_dims``-D with an optional leading channel of 1.
        data_range: the intensity range of the images (the peak in the PSNR formula).
        spatial_dims: 3 for MRI volumes, 2 for radiographs.
    Returns ``inf`` for identical images.
    """
    p, y = _pair(pred, target, spatial_dims)
    return float(PSNRMetric(max_val=data_range, reduction="none")(p, y).item())


def psnr_per_slice(pred, target, axis: int = SAGITTAL_AXIS, data_range: float = DATA_RANGE) -> float:
    """Mean of per-slice PSNRs (dB) over 2-D slices taken along spatial ``axis`` of a 3-D volume.

    The default ``axis`` is the R->L axis, i.e. sagittal slices. Slices with zero error (infinite
    PSNR) are left out of the mean; ``inf`` if every slice is identical.
    """
    p, y = _pair(pred, target, 3)
    ps = torch.movedim(p[0, 0], axis, 0)[:, None]
    ys = torch.movedim(y[0, 0], axis, 0)[:, None]
    values = PSNRMetric(max_val=data_range, reduction="none")(ps, ys).flatten()
    finite = values[torch.isfinite(values)]
    return float(finite.mean().item()) if finite.numel() else math.inf


def ssim3d(pred, target, data_range: float = DATA_RANGE, win_size: int = SSIM_WIN_SIZE) -> float:
    """3-D SSIM (MONAI's ``SSIMMetric``, separable; Gaussian window ``win_size``, ``data_range`` 1.0 = [0, 1] scale).

    Each spatial size must be at least ``win_size``.
    """
    p, y = _pair(pred, target, 3)
    if min(p.shape[2:]) < win_size:
        raise ValueError(f"3-D SSIM needs every side >= win_size={win_size}, got {tuple(p.shape[2:])}")
    metric = SeparableSSIMMetric(spatial_dims=3, data_range=data_range, win_size=win_size, reduction="none")
    return float(metric(p.float(), y.float()).item())


def mae(pred, target, spatial_dims: int = 3) -> float:
    """Mean absolute error over all voxels, in the images' own units ([0, 1] for normalised images)."""
    p, y = _pair(pred, target, spatial_dims)
    return float(MAEMetric(reduction="none")(p, y).item())


def mae_per_tissue(pred, target, labels, legend: Mapping[str, int]) -> dict[str, float]:
    """MAE ([0, 1] scale) within each tissue of the ground-truth label map.

    Args:
        pred, target: same-shape 3-D volumes.
        labels: integer label map on the same grid (ground truth).
        legend: tissue name -> label id (the cohort's ``tissues.json``).
    Returns tissue name -> MAE, ``nan`` for a tissue absent from ``labels``.
    """
    p, y = _pair(pred, target, 3)
    lab = _to_batch(labels, 3, "labels")[0, 0].round().long()
    if lab.shape != p.shape[2:]:
        raise ValueError(f"labels shape {tuple(lab.shape)} differs from the volumes' {tuple(p.shape[2:])}")
    err = (p - y).abs()[0, 0]
    out: dict[str, float] = {}
    for name, label_id in legend.items():
        mask = lab == int(label_id)
        out[name] = float(err[mask].mean().item()) if bool(mask.any()) else math.nan
    return out


def boundary_sharpness(pred, target, labels) -> float:
    """How sharp ``pred`` is where tissues meet, relative to ``target``: the mean gradient magnitude of
    ``pred`` over the ground truth's tissue-boundary voxels divided by that of ``target`` there.

    1 is as sharp as the truth; a generator that blurs edges (what MSE training settles on where depth
    is ambiguous) scores below 1, and one that invents extra edge contrast above it. Boundary voxels
    are those whose label differs from a face neighbour's (both sides of the boundary); gradients are
    central differences per voxel, so the ratio does not depend on the spacing. ``nan`` when the
    label map has one tissue, or the truth has no gradient there.
    """
    p, y = _pair(pred, target, 3)
    lab = _to_batch(labels, 3, "labels")[0, 0].round().long()
    if lab.shape != p.shape[2:]:
        raise ValueError(f"labels shape {tuple(lab.shape)} differs from the volumes' {tuple(p.shape[2:])}")
    edge = torch.zeros_like(lab, dtype=torch.bool)
    for axis in range(3):
        diff = lab.diff(dim=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff

    def _grad_mag(vol: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(sum(g.double() ** 2 for g in torch.gradient(vol[0, 0].double())))

    if not bool(edge.any()):
        return math.nan
    truth = float(_grad_mag(y)[edge].mean())
    return float(_grad_mag(p)[edge].mean()) / truth if truth > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Joint-space width
# ---------------------------------------------------------------------------------------------


def bone_label_ids(legend: Mapping[str, int]) -> tuple[list[int], list[int], list[int]]:
    """Label ids of femur marrow, tibia marrow and every bone tissue in a tissue legend, found by name.

    Femur: names with "femur"/"femoral", tibia: "tibia"/"tibial" (cartilage and menisci excluded);
    bone: those plus names with "bone", "patella", "fibula" (cortex and subchondral sclerosis are
    shared labels that line both bones, so a bone surface is where any bone label ends).
    """

    def ids(stems: tuple[str, ...]) -> list[int]:
        return [
            int(v)
            for k, v in legend.items()
            if any(s in k.lower() for s in stems) and not any(x in k.lower() for x in ("cartilage", "menisc"))
        ]

    femur, tibia = ids(("femur", "femoral")), ids(("tibia", "tibial"))
    if not femur or not tibia:
        raise ValueError(f"tissue legend names no femur and tibia bone labels: {sorted(legend)}")
    bone = sorted(set(femur) | set(tibia) | set(ids(("bone", "patella", "fibula"))))
    return femur, tibia, bone


@dataclass(frozen=True)
class JswLine:
    """One S->I measurement line: depth index ``d`` (A->P), column ``w`` (R->L), the expected joint row
    ``row`` (midway between the ground-truth femoral and tibial bone surfaces there) and the ground-truth
    label gap (mm, voxel resolution: bone-free voxels between the two surfaces times the row spacing)."""

    d: int
    w: int
    row: float
    label_gap_mm: float


def compartment_lines(
    labels,
    legend: Mapping[str, int],
    spacing: Sequence[float],
    slab_mm: float = JSW_SLAB_MM,
    band_mm: float = JSW_BAND_MM,
    plateau_depth_mm: float = 10.0,
    positions: Mapping[str, float] | None = None,
) -> dict[str, list[JswLine]]:
    """Where to measure joint-space width, found from the ground-truth label map (same for every method).

    The tibial plateau is the tibia within ``plateau_depth_mm`` of its highest voxel; its R->L extent
    ``[w0, w1]`` is split at fixed fractions (``positions``, default lateral 0.25 and medial 0.75 of the
    width from the patient's right edge: in the canonical right knee, columns run R->L, so the lateral
    compartment is at low and the medial at high column index). Around each such column a band of
    ``band_mm`` (R->L) and, centred on the A->P range where femur and tibia both cross that band, a
    slab of ``slab_mm`` (A->P) give the lines: every (d, w) whose S->I line crosses femur above tibia.

    Args:
        labels: ``(D, H, W)`` label map in canonical space (mirrored right knee).
        legend: tissue name -> label id.
        spacing: voxel size in mm along (D, H, W).
    Returns ``{"medial": [...], "lateral": [...]}`` of :class:`JswLine`; a compartment without lines
    gets an empty list.
    """
    lab = np.asarray(labels).squeeze()
    if lab.ndim != 3:
        raise ValueError(f"labels: expected a 3-D label map, got shape {np.asarray(labels).shape}")
    lab = np.moveaxis(lab, (AP_AXIS, SI_AXIS, SAGITTAL_AXIS), (0, 1, 2)).round().astype(np.int64)
    sd, sh, sw = (float(spacing[AP_AXIS]), float(spacing[SI_AXIS]), float(spacing[SAGITTAL_AXIS]))
    femur_ids, tibia_ids, bone_ids = bone_label_ids(legend)
    femur, tibia, bone = np.isin(lab, femur_ids), np.isin(lab, tibia_ids), np.isin(lab, bone_ids)
    if CANONICAL_SIDE != "R" or MRI_AXCODES[SAGITTAL_AXIS] != "L":  # pragma: no cover - contract guard
        raise RuntimeError("compartment_lines assumes right knees with columns running R->L")
    positions = dict(positions or JSW_POSITIONS)
    out: dict[str, list[JswLine]] = {k: [] for k in positions}
    if not tibia.any() or not femur.any():
        return out
    n_rows = lab.shape[1]
    rows = np.arange(n_rows)
    # highest tibia row and lowest femur row of each (d, w) line (rows run S->I)
    tib_top = np.where(tibia, rows[None, :, None], n_rows).min(axis=1)
    fem_bot = np.where(femur, rows[None, :, None], -1).max(axis=1)
    plateau = tib_top <= tib_top.min() + max(1, round(plateau_depth_mm / sh))
    cols = np.nonzero(plateau.any(axis=0))[0]
    w0, w1 = int(cols.min()), int(cols.max())
    half_band = max(0, round(band_mm / sw / 2))
    half_slab = max(0, round(slab_mm / sd / 2))
    valid = (fem_bot >= 0) & (tib_top < n_rows) & (fem_bot < tib_top)

    def surfaces(d: int, w: int) -> tuple[int, int]:
        """Femur's lowest and tibia's highest bone row on a line: from each marrow, through cortex/sclerosis."""
        f, t = int(fem_bot[d, w]), int(tib_top[d, w])
        while f + 1 < t and bone[d, f + 1, w]:
            f += 1
        while t - 1 > f and bone[d, t - 1, w]:
            t -= 1
        return f, t

    for name, frac in positions.items():
        wc = round(w0 + frac * (w1 - w0))
        band = np.arange(max(0, wc - half_band), min(lab.shape[2], wc + half_band + 1))
        ds = np.nonzero(valid[:, band].any(axis=1))[0]
        if not ds.size:
            continue
        dc = round((ds.min() + ds.max()) / 2)
        for d in range(max(0, dc - half_slab), min(lab.shape[0], dc + half_slab + 1)):
            for w in band:
                if valid[d, w]:
                    f, t = surfaces(d, w)
                    out[name].append(JswLine(int(d), int(w), (f + t) / 2.0, (t - f - 1) * sh))
    return out


def _crossing(profile: np.ndarray, start: int, step: int, level: float, stop: int) -> float:
    """First fractional index from ``start`` walking by ``step`` where ``profile`` drops below ``level``."""
    i = start
    while i != stop:
        j = i + step
        if profile[j] < level:
            # linear interpolation between samples i (>= level) and j (< level)
            return i + step * (profile[i] - level) / (profile[i] - profile[j])
        i = j
    return math.nan


def gap_from_profile(
    profile,
    spacing_mm: float,
    centre: float | None = None,
    search_mm: float = 6.0,
    bone_mm: float = 10.0,
    min_contrast: float = 0.05,
) -> float:
    """Width (mm) of the bright joint band between two dark bone regions on one S->I intensity profile.

    In a DESS-like image bone marrow is dark and cartilage and fluid are bright, so the joint space
    is a bright band between dark femur (above) and dark tibia (below). Method (half-maximum, sub-voxel):

    1. the peak: the brightest sample within ``search_mm`` of ``centre`` (the expected joint row;
       default the middle of the profile);
    2. the bone levels: the darkest sample within ``bone_mm`` above and, separately, below the peak;
    3. each bone surface: walking outward from the peak, where the profile first falls below the
       level halfway between the peak and that side's bone level, linearly interpolated between
       the two samples around the crossing;
    4. the gap: the distance between the two crossings times ``spacing_mm``.

    Returns ``nan`` when there is no bright band (peak minus either bone level below
    ``min_contrast``, on the [0, 1] scale) or no crossing within ``bone_mm``.
    """
    p = np.asarray(profile, dtype=np.float64).ravel()
    n = p.size
    if n < 3:
        return math.nan
    c = (n - 1) / 2.0 if centre is None else float(centre)
    s = max(1, round(search_mm / spacing_mm))
    b = max(1, round(bone_mm / spacing_mm))
    lo, hi = max(0, math.floor(c - s)), min(n - 1, math.ceil(c + s))
    if lo > hi:
        return math.nan
    peak_i = lo + int(np.argmax(p[lo : hi + 1]))
    top, bot = max(0, peak_i - b), min(n - 1, peak_i + b)
    if top == peak_i or bot == peak_i:
        return math.nan
    dark_up, dark_down = p[top:peak_i].min(), p[peak_i + 1 : bot + 1].min()
    if p[peak_i] - max(dark_up, dark_down) < min_contrast:
        return math.nan
    x_up = _crossing(p, peak_i, -1, (p[peak_i] + dark_up) / 2.0, top)
    x_down = _crossing(p, peak_i, +1, (p[peak_i] + dark_down) / 2.0, bot)
    return float((x_down - x_up) * spacing_mm)


def measure_jsw(
    volume, lines: Sequence[JswLine], spacing: Sequence[float], percentile: float = JSW_PERCENTILE, **kwargs
) -> float:
    """Minimum JSW (mm): the ``percentile`` of :func:`gap_from_profile` over ``lines`` (S->I profiles).

    Away from the contact point the condyle curves up and the gap widens, so a median over the
    compartment overstates the minimum width that defines (and grades) joint-space narrowing; a
    low percentile measures it without following one noisy line (``percentile=50``: the median).
    ``volume`` is ``(D, H, W)`` canonical (optional leading channel); ``spacing`` its voxel size (mm).
    Lines where no band is found are ignored; ``nan`` if none gives a value.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    vol = np.asarray(volume, dtype=np.float64).squeeze()
    if vol.ndim != 3:
        raise ValueError(f"volume: expected a 3-D volume, got shape {np.asarray(volume).shape}")
    vol = np.moveaxis(vol, (AP_AXIS, SI_AXIS, SAGITTAL_AXIS), (0, 1, 2))
    sh = float(spacing[SI_AXIS])
    gaps = [gap_from_profile(vol[ln.d, :, ln.w], sh, centre=ln.row, **kwargs) for ln in lines]
    gaps = [g for g in gaps if math.isfinite(g)]
    return float(np.percentile(gaps, percentile)) if gaps else math.nan


def joint_space_width(
    volume, labels, legend: Mapping[str, int], spacing: Sequence[float], **kwargs
) -> dict[str, float]:
    """Medial and lateral JSW (mm) measured on an intensity volume at places found from the GT labels.

    ``kwargs`` go to :func:`compartment_lines`'s ``slab_mm``/``band_mm`` and to :func:`gap_from_profile`.
    """
    line_keys = {"slab_mm", "band_mm", "plateau_depth_mm", "positions"}
    line_kw = {k: v for k, v in kwargs.items() if k in line_keys}
    gap_kw = {k: v for k, v in kwargs.items() if k not in line_keys}
    lines = compartment_lines(labels, legend, spacing, **line_kw)
    return {name: measure_jsw(volume, ls, spacing, **gap_kw) for name, ls in lines.items()}


def label_jsw(lines: Mapping[str, Sequence[JswLine]], percentile: float = JSW_PERCENTILE) -> dict[str, float]:
    """Femur-tibia gap (mm) of the ground-truth label map on the same lines and with the same statistic
    as :func:`measure_jsw` (voxel resolution)."""
    return {
        k: float(np.percentile([ln.label_gap_mm for ln in v], percentile)) if v else math.nan
        for k, v in lines.items()
    }


def _band_voxels(vol: np.ndarray, bone_rows: int, min_contrast: float) -> np.ndarray:
    """Voxels of a canonical ``(D, H, W)`` volume that are a bright S->I local maximum with darker
    voxels (by at least ``min_contrast``) within ``bone_rows`` both above and below: a joint band."""
    n_rows = vol.shape[1]
    up = np.full_like(vol, np.inf)
    down = np.full_like(vol, np.inf)
    for k in range(1, bone_rows + 1):
        if k >= n_rows:
            break
        up[:, k:] = np.minimum(up[:, k:], vol[:, :-k])
        down[:, :-k] = np.minimum(down[:, :-k], vol[:, k:])
    peak = np.ones_like(vol, dtype=bool)
    peak[:, 1:] &= vol[:, 1:] >= vol[:, :-1]
    peak[:, :-1] &= vol[:, :-1] >= vol[:, 1:]
    return peak & (vol - np.maximum(up, down) >= min_contrast)


def _busy_range(counts: np.ndarray, share: float) -> tuple[int, int] | None:
    """First and last index whose count reaches ``share`` of the largest count (None if all zero)."""
    if counts.size == 0 or counts.max() <= 0:
        return None
    idx = np.nonzero(counts >= share * counts.max())[0]
    return int(idx.min()), int(idx.max())


def compartment_lines_from_mri(
    volume,
    spacing: Sequence[float],
    slab_mm: float = JSW_SLAB_MM,
    band_mm: float = JSW_BAND_MM,
    positions: Mapping[str, float] | None = None,
    bone_mm: float = 10.0,
    search_mm: float = 6.0,
    min_contrast: float = 0.1,
    share: float = 0.25,
) -> dict[str, list[JswLine]]:
    """Where to measure joint-space width when there is no label map: found on the ground-truth MRI itself.

    For an acquired MRI (no tissue labels, no synthetic truth) the tibiofemoral joint is located the
    way :func:`gap_from_profile` sees it: a bright band (cartilage, fluid) between dark bone above and
    below on S->I lines. Every voxel that is such a band (a local maximum along S->I, at least
    ``min_contrast`` brighter than the darkest voxel within ``bone_mm`` above and below) votes for its
    row; the joint row is the row with most votes (smoothed over ``search_mm``). A line (d, w) is
    usable when it has a band within ``search_mm`` of that row; the joint's R->L extent is the range of
    columns holding at least ``share`` of the busiest column's usable lines, split at ``positions``
    (as :func:`compartment_lines`: lateral 0.25, medial 0.75 from the patient's right edge), and
    around each a ``band_mm`` band of columns in a ``slab_mm`` A->P slab centred on the median depth
    of that band's usable lines gives the lines. ``label_gap_mm`` is ``nan`` (there is no label map).

    Args:
        volume: ``(D, H, W)`` canonical MRI (mirrored right knee) on the [0, 1] scale.
        spacing: voxel size in mm along (D, H, W).
    Returns ``{"medial": [...], "lateral": [...]}`` of :class:`JswLine`; empty lists when no joint
    band is found.
    """
    vol = np.asarray(volume, dtype=np.float64).squeeze()
    if vol.ndim != 3:
        raise ValueError(f"volume: expected a 3-D volume, got shape {np.asarray(volume).shape}")
    vol = np.moveaxis(vol, (AP_AXIS, SI_AXIS, SAGITTAL_AXIS), (0, 1, 2))
    sd, sh, sw = (float(spacing[AP_AXIS]), float(spacing[SI_AXIS]), float(spacing[SAGITTAL_AXIS]))
    positions = dict(positions or JSW_POSITIONS)
    out: dict[str, list[JswLine]] = {k: [] for k in positions}
    band = _band_voxels(vol, max(1, round(bone_mm / sh)), min_contrast)
    votes = band.sum(axis=(0, 2)).astype(np.float64)
    if votes.max() <= 0:
        return out
    s = max(1, round(search_mm / sh))
    half = max(0, s // 2)
    smooth = np.convolve(votes, np.ones(2 * half + 1), mode="same")
    joint_row = int(np.argmax(smooth))
    lo, hi = max(0, joint_row - s), min(vol.shape[1] - 1, joint_row + s)
    window = band[:, lo : hi + 1, :]
    usable = window.any(axis=1)
    # the band row nearest the joint row on each line
    offsets = np.abs(np.arange(lo, hi + 1) - joint_row)
    nearest = np.where(window, offsets[None, :, None], np.iinfo(np.int64).max).argmin(axis=1) + lo
    cols = _busy_range(usable.sum(axis=0), share)
    if cols is None:
        return out
    w0, w1 = cols
    half_band = max(0, round(band_mm / sw / 2))
    half_slab = max(0, round(slab_mm / sd / 2))
    for name, frac in positions.items():
        wc = round(w0 + frac * (w1 - w0))
        cols_in = np.arange(max(0, wc - half_band), min(vol.shape[2], wc + half_band + 1))
        per_depth = usable[:, cols_in].sum(axis=1)
        if per_depth.sum() == 0:
            continue
        dc = int(np.searchsorted(np.cumsum(per_depth), per_depth.sum() / 2.0))  # the median usable depth
        for d in range(max(0, dc - half_slab), min(vol.shape[0], dc + half_slab + 1)):
            for w in cols_in:
                if usable[d, w]:
                    out[name].append(JswLine(int(d), int(w), float(nearest[d, w]), math.nan))
    return out
