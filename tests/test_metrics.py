"""Metrics against hand-computed values on small arrays; JSW on profiles and toy volumes with known gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xray2mri.pipeline.evaluation import metrics as M

LEGEND = {"air": 0, "cortical_bone": 5, "femur": 6, "tibia": 7, "femoral_cartilage": 11, "joint_fluid": 15}


def test_psnr_whole_volume_matches_hand_value_with_data_range_one():
    target = np.zeros((12, 12, 12), np.float32)
    pred = target.copy()
    pred[..., 0] = 0.1  # one sagittal slice wrong by 0.1: MSE = 0.01 / 12
    assert M.psnr(pred, target) == pytest.approx(10 * math.log10(1200), abs=1e-6)
    # the peak enters squared: data_range 2 adds 20 log10(2) dB
    assert M.psnr(pred, target, data_range=2.0) == pytest.approx(
        10 * math.log10(1200) + 20 * math.log10(2), abs=1e-6
    )
    # channel-first input and torch tensors give the same number
    assert M.psnr(torch.as_tensor(pred)[None], target[None]) == pytest.approx(M.psnr(pred, target))


def test_psnr_per_slice_is_the_mean_of_slice_psnrs_and_exceeds_whole_volume():
    offsets = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.3])
    target = np.full((11, 11, offsets.size), 0.4)
    pred = target + offsets[None, None, :]  # slices along R->L (last axis) each off by one constant
    per_slice = float(np.mean(-20 * np.log10(offsets)))
    whole = -10 * math.log10(np.mean(offsets**2))
    assert M.SAGITTAL_AXIS == 2
    assert M.psnr_per_slice(pred, target) == pytest.approx(per_slice, abs=1e-6)
    assert M.psnr(pred, target) == pytest.approx(whole, abs=1e-6)
    assert per_slice - whole > 3.0  # several dB apart, as the report warns
    # slicing along an axis where every slice has the same error gives the whole-volume figure
    assert M.psnr_per_slice(pred, target, axis=0) == pytest.approx(whole, abs=1e-6)


def test_psnr_per_slice_leaves_out_zero_error_slices():
    target = np.zeros((11, 11, 4))
    pred = target.copy()
    pred[..., 1] = 0.1
    assert M.psnr_per_slice(pred, target) == pytest.approx(20.0, abs=1e-6)
    assert M.psnr_per_slice(target, target) == math.inf


def test_ssim3d_is_one_for_identical_volumes_and_lower_otherwise():
    rng = np.random.default_rng(0)
    vol = rng.random((12, 13, 14)).astype(np.float32)
    assert M.ssim3d(vol, vol) == pytest.approx(1.0, abs=1e-5)
    noisy = np.clip(vol + rng.normal(0, 0.2, vol.shape), 0, 1)
    assert M.ssim3d(noisy, vol) < 0.9
    with pytest.raises(ValueError, match="win_size"):
        M.ssim3d(vol[:8], vol[:8])


def test_mae_and_mae_per_tissue_hand_values():
    target = np.zeros((4, 4, 4))
    labels = np.zeros((4, 4, 4), np.int64)
    labels[:2] = 6  # femur
    pred = target.copy()
    pred[:2] = 0.1
    pred[2:] = 0.3
    assert M.mae(pred, target) == pytest.approx(0.2)
    per = M.mae_per_tissue(pred, target, labels, {"air": 0, "femur": 6, "tibia": 7})
    assert per["femur"] == pytest.approx(0.1)
    assert per["air"] == pytest.approx(0.3)
    assert math.isnan(per["tibia"])  # absent tissue
    with pytest.raises(ValueError, match="shape"):
        M.mae(pred, target[:3])


def _partial_volume_profile(n: int, x0: float, x1: float, dark: float, bright: float) -> np.ndarray:
    """Samples of a bright band [x0, x1] (in sample units) on a dark background, each sample
    averaging its unit cell (the partial-volume effect of an MRI voxel)."""
    i = np.arange(n)
    overlap = np.clip(np.minimum(i + 0.5, x1) - np.maximum(i - 0.5, x0), 0, 1)
    return dark + (bright - dark) * overlap


@pytest.mark.parametrize("gap_samples", [2.6, 3.0, 4.3, 6.8])
def test_gap_from_profile_recovers_a_known_gap_to_sub_voxel_precision(gap_samples):
    spacing = 0.7
    x0 = 20.35
    p = _partial_volume_profile(48, x0, x0 + gap_samples, dark=0.1, bright=0.65)
    gap = M.gap_from_profile(p, spacing, centre=x0 + gap_samples / 2)
    assert gap == pytest.approx(gap_samples * spacing, abs=0.15 * spacing)


def test_gap_from_profile_handles_unequal_bone_levels_and_blur():
    # femur darker than tibia, smooth edges: each side uses its own half-way level
    x = np.arange(60, dtype=float)
    edge = lambda t: 1 / (1 + np.exp(-t / 0.6))  # noqa: E731
    p = 0.02 + 0.6 * edge(x - 25) - 0.45 * edge(x - 31)  # band 25..31, tibia level 0.17
    assert M.gap_from_profile(p, 1.0, centre=28) == pytest.approx(6.0, abs=0.1)


def test_gap_from_profile_without_a_bright_band_is_nan():
    assert math.isnan(M.gap_from_profile(np.full(30, 0.3), 1.0))
    assert math.isnan(M.gap_from_profile(np.linspace(0, 1, 30), 1.0, centre=29))


def _toy_knee(shape=(12, 30, 24), gap_lateral=4, gap_medial=2, joint_row=14):
    """Labels and a DESS-like intensity volume: femur above, tibia below, a bright joint band whose
    height (voxels) is ``gap_lateral`` at low and ``gap_medial`` at high column index (R->L)."""
    d, h, w = shape
    labels = np.zeros(shape, np.int64)
    vol = np.zeros(shape, np.float32)
    for col in range(2, w - 2):
        gap = gap_lateral if col < w // 2 else gap_medial
        top = joint_row - gap // 2
        labels[1:-1, 2:top, col] = LEGEND["femur"]
        labels[1:-1, top - 1, col] = LEGEND["cortical_bone"]  # cortex lines the marrow
        labels[1:-1, top : top + gap, col] = LEGEND["femoral_cartilage"]
        labels[1:-1, top + gap, col] = LEGEND["cortical_bone"]
        labels[1:-1, top + gap + 1 : h - 2, col] = LEGEND["tibia"]
    signal = {0: 0.0, 5: 0.02, 6: 0.1, 7: 0.1, 11: 0.6, 15: 0.95}
    for k, v in signal.items():
        vol[labels == k] = v
    return labels, vol


def test_joint_space_width_on_a_toy_volume_with_known_gaps():
    spacing = (2.0, 1.5, 1.0)  # (A-P, S-I, R-L) mm
    labels, vol = _toy_knee()
    jsw = M.joint_space_width(vol, labels, LEGEND, spacing)
    # medial is at high column index in the canonical right knee (columns run R->L)
    assert jsw["medial"] == pytest.approx(2 * 1.5, abs=0.2)
    assert jsw["lateral"] == pytest.approx(4 * 1.5, abs=0.2)
    lines = M.compartment_lines(labels, LEGEND, spacing)
    assert all(ln.w >= 12 for ln in lines["medial"]) and all(ln.w < 12 for ln in lines["lateral"])
    assert M.label_jsw(lines) == {"medial": pytest.approx(3.0), "lateral": pytest.approx(6.0)}
    # a blurred copy (as a generated volume might be) still measures close to the truth
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(vol, sigma=(0, 0.6, 0))
    jsw_b = M.joint_space_width(blurred, labels, LEGEND, spacing)
    assert jsw_b["medial"] == pytest.approx(3.0, abs=0.5) and jsw_b["lateral"] == pytest.approx(6.0, abs=0.3)
    # a volume without the bright band gives no measurement
    assert math.isnan(M.joint_space_width(np.full_like(vol, 0.1), labels, LEGEND, spacing)["medial"])


def test_measure_jsw_reports_the_minimum_width_of_a_compartment_not_its_median():
    # a condyle meeting the plateau: the bright band is 2 voxels high at the contact (two of ten A->P
    # lines) and wider away from it; JSW is the narrowing at the contact (mJSW)
    heights = [6, 5, 4, 3, 2, 2, 3, 4, 5, 6]
    vol = np.full((len(heights), 30, 3), 0.1, np.float32)
    lines = []
    for d, gap in enumerate(heights):
        vol[d, 14 - gap // 2 : 14 - gap // 2 + gap, :] = 0.9
        lines.append(M.JswLine(d=d, w=1, row=14.0, label_gap_mm=gap * 1.5))
    spacing = (2.0, 1.5, 1.0)
    assert M.measure_jsw(vol, lines, spacing) == pytest.approx(2 * 1.5, abs=0.2)
    assert M.measure_jsw(vol, lines, spacing, percentile=50) == pytest.approx(4 * 1.5, abs=0.2)
    assert M.label_jsw({"medial": lines}) == {"medial": pytest.approx(3.0)}
    with pytest.raises(ValueError, match="percentile"):
        M.measure_jsw(vol, lines, spacing, percentile=101)


def test_bone_label_ids_need_femur_and_tibia():
    femur, tibia, bone = M.bone_label_ids(LEGEND)
    assert femur == [6] and tibia == [7] and set(bone) == {5, 6, 7}
    with pytest.raises(ValueError, match="femur and tibia"):
        M.bone_label_ids({"air": 0, "muscle": 3})


def test_jsw_places_found_on_the_mri_itself_match_the_label_map_ones():
    """Without a label map (acquired data) the joint is located on the MRI: the same compartments, the
    same joint rows, and the same widths as the lines found from the labels."""
    spacing = (2.0, 1.5, 1.0)
    labels, vol = _toy_knee(joint_row=16)
    vol = vol + np.random.default_rng(0).normal(0, 0.01, vol.shape).astype(np.float32)
    from_labels = M.compartment_lines(labels, LEGEND, spacing)
    from_mri = M.compartment_lines_from_mri(vol, spacing)
    for side, gap in (("medial", 2), ("lateral", 4)):
        lines = from_mri[side]
        assert lines and all(math.isnan(ln.label_gap_mm) for ln in lines)
        assert {ln.w for ln in lines} == {ln.w for ln in from_labels[side]}
        assert np.median([ln.row for ln in lines]) == pytest.approx(np.median([ln.row for ln in from_labels[side]]), abs=1)
        assert M.measure_jsw(vol, lines, spacing) == pytest.approx(gap * 1.5, abs=0.3)
    # a knee moved down by 5 rows is found where it is, not where the field's centre is
    shifted = np.roll(vol, 5, axis=1)
    rows = [ln.row for ln in M.compartment_lines_from_mri(shifted, spacing)["medial"]]
    assert np.median(rows) == pytest.approx(np.median([ln.row for ln in from_mri["medial"]]) + 5, abs=1)
    # no joint band at all: no lines, so JSW is nan rather than a guess
    assert M.compartment_lines_from_mri(np.full_like(vol, 0.3), spacing) == {"medial": [], "lateral": []}


def test_boundary_sharpness_is_one_for_the_truth_and_falls_with_blur():
    labels = np.zeros((16, 16, 16), dtype=np.int16)
    labels[:, 6:, :] = 1
    labels[4:12, 9:13, 4:12] = 2
    truth = np.choose(labels, [0.1, 0.6, 0.9]).astype(np.float32)
    blurred = torch.nn.functional.avg_pool3d(torch.from_numpy(truth)[None, None], 3, 1, 1,
                                             count_include_pad=False)[0, 0].numpy()
    assert M.boundary_sharpness(truth, truth, labels) == pytest.approx(1.0)
    assert M.boundary_sharpness(blurred, truth, labels) < 0.9
    assert M.boundary_sharpness(np.full_like(truth, 0.5), truth, labels) == 0.0  # no edges at all
    assert math.isnan(M.boundary_sharpness(truth, truth, np.zeros_like(labels)))  # one tissue: no boundary
    with pytest.raises(ValueError, match="labels shape"):
        M.boundary_sharpness(truth, truth, labels[:8])
