"""The radiographic baseline: JSW read on the radiograph, calibrated to the 3-D truth on training only."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from xray2mri.pipeline.evaluation.radiographic import RadiographicJsw, raw_radiograph_jsw

SPACING = (1.25, 1.25)


def radiograph(gap_lat_mm: float, gap_med_mm: float, shape=(96, 96), seed=0) -> np.ndarray:
    """An AP radiograph stand-in (rows S->I, cols R->L, bone bright): femur above, tibia below, a dark
    joint band of the given width in each half (lateral: low columns), soft tissue either side."""
    h, w = shape
    up = 4  # drawn 4x finer, then averaged: sub-pixel band edges
    rows = (np.arange(h * up) + 0.5) / up * SPACING[0]
    img = np.full((h * up, w * up), 0.25)
    joint = h * SPACING[0] / 2 + 0.3
    for col in range(w * up):
        c = col // up
        if not 16 <= c < w - 16:
            continue
        gap = gap_lat_mm if c < w // 2 else gap_med_mm
        bone = (rows < joint - gap / 2) | (rows > joint + gap / 2)
        img[:, col] = np.where(bone, 0.85, 0.35)
    img = img.reshape(h, up, w, up).mean(axis=(1, 3))
    img = gaussian_filter(img, 0.5) + np.random.default_rng(seed).normal(0, 0.005, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def test_raw_reading_finds_the_joint_and_measures_each_compartment_below_a_pixel():
    r = raw_radiograph_jsw(radiograph(6.1, 3.3), SPACING)
    assert r["lateral"] == pytest.approx(6.1, abs=0.4)
    assert r["medial"] == pytest.approx(3.3, abs=0.4)
    narrower = raw_radiograph_jsw(radiograph(6.1, 2.5), SPACING)
    assert narrower["medial"] < r["medial"] - 0.4
    assert narrower["lateral"] == pytest.approx(r["lateral"], abs=0.2)


def test_no_joint_no_reading():
    r = raw_radiograph_jsw(np.full((64, 64), 0.5, np.float32), SPACING)
    assert math.isnan(r["medial"]) and math.isnan(r["lateral"])


def test_calibration_is_fitted_on_training_pairs_and_applied_to_new_radiographs():
    """The 3-D truth is a linear function of the projected width; the fit recovers it from training only."""
    rng = np.random.default_rng(1)
    gaps = [(float(rng.uniform(4, 8)), float(rng.uniform(1.5, 5))) for _ in range(8)]
    xrays = [radiograph(lat, med, seed=i) for i, (lat, med) in enumerate(gaps)]
    truths = [{"lateral": 0.8 * lat + 0.5, "medial": 0.8 * med + 0.5} for lat, med in gaps]
    rad = RadiographicJsw(SPACING).fit(xrays, truths)
    a, b = rad.coef["medial"]
    assert a == pytest.approx(0.8, abs=0.15) and b == pytest.approx(0.5, abs=0.5)
    test = rad(radiograph(6.0, 2.2, seed=99))
    assert test["medial"] == pytest.approx(0.8 * 2.2 + 0.5, abs=0.3)
    assert test["lateral"] == pytest.approx(0.8 * 6.0 + 0.5, abs=0.3)


def test_calibration_without_enough_pairs_keeps_the_raw_reading():
    x = radiograph(6.0, 3.0)
    rad = RadiographicJsw(SPACING).fit([x], [{"medial": 10.0, "lateral": 10.0}])
    assert rad.coef == {"medial": (1.0, 0.0), "lateral": (1.0, 0.0)}
    assert rad(x) == pytest.approx(raw_radiograph_jsw(x, SPACING))
    with pytest.raises(ValueError, match="truths"):
        RadiographicJsw(SPACING).fit([x, x], [{}])
