"""Clinical readings on tissue maps (pipeline/evaluation/readings.py) and the one tissue-class table.

The phantoms are made here: two flat bone surfaces with cartilage layers and fluid between them, as
partial-volume class probabilities (each voxel holds the share of its row interval each tissue
covers), so the distances and thicknesses are known to far below a voxel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from xray2mri.pipeline.data.synth import tissues as T
from xray2mri.pipeline.evaluation import metrics as M
from xray2mri.pipeline.evaluation import readings as R

# (D, H, W) = (A->P, S->I, R->L); lateral compartment at low columns, medial at high (right knee)
SHAPE = (8, 32, 32)
BONE_COLS = (4, 28)  # tibia and femur span these columns (end exclusive); soft tissue elsewhere


def _share(lo: float, hi: float, rows: np.ndarray, h: float) -> np.ndarray:
    """Share of each row interval [i h, (i+1) h] lying inside [lo, hi] (mm)."""
    return np.clip(np.minimum(hi, (rows + 1) * h) - np.maximum(lo, rows * h), 0.0, h) / h


def phantom(h: float, gap: dict, tib: dict, fem: dict, joint_mm: float | None = None, shape=SHAPE) -> np.ndarray:
    """Partial-volume class probabilities ``(C, D, H, W)`` at spacing ``h`` mm: femur above, tibia below,
    femoral/tibial cartilage of the given thickness on each surface, fluid between; per compartment
    (``{"lateral": mm, "medial": mm}``: lateral for the left half of the columns, medial the right)."""
    d, n_rows, n_cols = shape
    rows = np.arange(n_rows)
    joint = joint_mm if joint_mm is not None else n_rows * h / 2 + 0.37 * h  # off the voxel grid
    probs = np.zeros((T.NUM_CLASSES, *shape), dtype=np.float32)
    c = T.CLASS_INDEX
    for w in range(n_cols):
        if not BONE_COLS[0] <= w < BONE_COLS[1]:
            probs[c["soft_tissue"], :, :, w] = 1.0
            continue
        comp = "lateral" if w < n_cols // 2 else "medial"
        f_surf, t_surf = joint - gap[comp] / 2, joint + gap[comp] / 2
        layers = {
            "femur": (-np.inf, f_surf),
            "femoral_cartilage": (f_surf, f_surf + fem[comp]),
            "fluid": (f_surf + fem[comp], t_surf - tib[comp]),
            "tibial_cartilage": (t_surf - tib[comp], t_surf),
            "tibia": (t_surf, np.inf),
        }
        for name, (lo, hi) in layers.items():
            probs[c[name], :, :, w] = _share(lo, hi, rows, h)[None, :]
    return probs


GAP = {"lateral": 5.7, "medial": 3.1}
TIB = {"lateral": 1.9, "medial": 1.3}
FEM = {"lateral": 2.2, "medial": 1.1}


def _gt_lines(probs, h):
    return M.compartment_lines(R.class_map(probs), T.class_legend(), (h, h, h))


@pytest.mark.parametrize("h", [2.5, 1.25])
def test_partial_volume_map_reads_distances_and_thicknesses_below_a_voxel(h):
    probs = phantom(h, GAP, TIB, FEM)
    r = R.read_tissue_map(probs, (h, h, h))
    for comp in ("medial", "lateral"):
        assert r[f"jsw_{comp}_mm"] == pytest.approx(GAP[comp], abs=1e-4)
        assert r[f"tibial_cartilage_mean_{comp}_mm"] == pytest.approx(TIB[comp], abs=1e-4)
        assert r[f"tibial_cartilage_min_{comp}_mm"] == pytest.approx(TIB[comp], abs=1e-4)
        assert r[f"femoral_cartilage_mean_{comp}_mm"] == pytest.approx(FEM[comp], abs=1e-4)
        assert r[f"cartilage_thickness_{comp}_mm"] == r[f"tibial_cartilage_mean_{comp}_mm"]
    # tibial cartilage volume: thickness x the plateau's area (half the bone columns each compartment)
    half = (BONE_COLS[1] - BONE_COLS[0]) / 2 * h * SHAPE[0] * h
    assert r["tibial_cartilage_volume_mm3"] == pytest.approx(half * (TIB["lateral"] + TIB["medial"]), rel=1e-4)
    assert r["cartilage_volume_mm3"] == pytest.approx(
        sum(r[f"{c}_volume_mm3"] for c in R.CARTILAGE_CLASSES), rel=1e-9
    )
    assert set(r) == set(R.READING_KEYS)


def test_reading_follows_a_sub_voxel_narrowing():
    """A 0.4 mm narrowing at 2.5 mm voxels (a sixth of a voxel) shows as 0.4 mm."""
    h = 2.5
    wide = R.read_tissue_map(phantom(h, GAP, TIB, FEM), (h, h, h))
    narrow_gap = {**GAP, "medial": GAP["medial"] - 0.4}
    narrow_tib = {**TIB, "medial": TIB["medial"] - 0.2}
    narrow = R.read_tissue_map(phantom(h, narrow_gap, narrow_tib, FEM), (h, h, h))
    assert wide["jsw_medial_mm"] - narrow["jsw_medial_mm"] == pytest.approx(0.4, abs=1e-4)
    assert wide["cartilage_thickness_medial_mm"] - narrow["cartilage_thickness_medial_mm"] == pytest.approx(0.2, abs=1e-4)
    assert narrow["jsw_lateral_mm"] == pytest.approx(wide["jsw_lateral_mm"], abs=1e-6)


@pytest.mark.parametrize("h", [2.5, 1.25])
def test_hard_map_reads_whole_voxels_and_agrees_with_the_label_gap_of_metrics(h):
    """A hard map is read at voxel resolution: within one voxel of the truth, equal to metrics.label_jsw."""
    probs = phantom(h, GAP, TIB, FEM)
    hard = R.class_map(probs)
    lines = _gt_lines(probs, h)
    r = R.read_tissue_map(hard, (h, h, h), lines=lines)
    assert r["jsw_medial_mm"] == pytest.approx(M.label_jsw(lines)["medial"], abs=1e-9)
    assert r["jsw_lateral_mm"] == pytest.approx(M.label_jsw(lines)["lateral"], abs=1e-9)
    for comp in ("medial", "lateral"):
        assert abs(r[f"jsw_{comp}_mm"] - GAP[comp]) <= h
        assert r[f"jsw_{comp}_mm"] / h == pytest.approx(round(r[f"jsw_{comp}_mm"] / h), abs=1e-9)
        assert abs(r[f"tibial_cartilage_mean_{comp}_mm"] - TIB[comp]) <= h


def test_cohort_label_map_is_read_through_the_class_table():
    """A cohort label map (tissue label ids, cortex shared by both bones) reads like its class map."""
    h = 2.5
    hard = R.class_map(phantom(h, GAP, TIB, FEM))
    inverse = {c.index: T.LABEL[c.tissues[0]] for c in T.TISSUE_CLASSES}
    labels = np.vectorize(inverse.get)(hard).astype(np.uint8)
    # a cortex row on each bone surface: the bone distance must not change
    c = T.CLASS_INDEX
    for w in range(*BONE_COLS):
        tib_top = np.nonzero(hard[0, :, w] == c["tibia"])[0].min()
        fem_bot = np.nonzero(hard[0, :, w] == c["femur"])[0].max()
        labels[:, tib_top, w] = T.LABEL["cortical_bone"]
        labels[:, fem_bot, w] = T.LABEL["sclerotic_bone"]
    lines = M.compartment_lines(labels, T.legend(), (h, h, h))
    from_labels = R.read_tissue_map(labels, (h, h, h), lines=lines, tissue_legend=T.legend())
    from_classes = R.read_tissue_map(hard, (h, h, h), lines=lines)
    assert from_labels == pytest.approx(from_classes, nan_ok=True)
    assert from_labels["jsw_medial_mm"] == pytest.approx(M.label_jsw(lines)["medial"])


def test_readings_without_ground_truth_lines_find_the_joint_on_the_map_itself():
    h = 2.5
    probs = phantom(h, GAP, TIB, FEM)
    own = R.read_tissue_map(probs, (h, h, h))
    given = R.read_tissue_map(probs, (h, h, h), lines=_gt_lines(probs, h))
    assert own == pytest.approx(given, nan_ok=True)


def test_map_without_a_joint_gives_nan_not_a_number_made_up():
    probs = R.class_probabilities(np.full(SHAPE, T.CLASS_INDEX["soft_tissue"]))
    r = R.read_tissue_map(probs, (2.5, 2.5, 2.5))
    assert math.isnan(r["jsw_medial_mm"]) and math.isnan(r["cartilage_thickness_lateral_mm"])
    assert r["cartilage_volume_mm3"] == 0.0


def test_dice_per_class():
    h = 2.5
    truth = R.class_map(phantom(h, GAP, TIB, FEM))
    dice = R.dice_per_class(truth, truth)
    present = {T.TISSUE_CLASSES[i].name for i in np.unique(truth)}
    assert all(dice[n] == 1.0 for n in present)
    assert all(math.isnan(dice[n]) for n in set(dice) - present)
    moved = np.roll(truth, 1, axis=1)  # one row down: bones overlap less
    d = R.dice_per_class(moved, truth)
    femur_t, femur_p = truth == T.CLASS_INDEX["femur"], moved == T.CLASS_INDEX["femur"]
    expected = 2 * (femur_t & femur_p).sum() / (femur_t.sum() + femur_p.sum())
    assert d["femur"] == pytest.approx(expected) and d["femur"] < 1.0


def test_class_table_maps_every_cohort_tissue_and_rejects_unknown_ones():
    lut = T.class_lut()
    assert lut[T.LABEL["femur"]] == T.CLASS_INDEX["femur"]
    assert lut[T.LABEL["sclerotic_bone"]] == lut[T.LABEL["cortical_bone"]] == T.CLASS_INDEX["cortical_bone"]
    assert lut[T.LABEL["joint_fluid"]] == T.CLASS_INDEX["fluid"]
    assert lut[T.LABEL["muscle"]] == T.CLASS_INDEX["soft_tissue"]
    needed = {"femur", "tibia", "patella", "fibula", "femoral_cartilage", "tibial_cartilage",
              "patellar_cartilage", "meniscus", "fluid", "soft_tissue", "background"}
    assert needed <= set(T.CLASS_INDEX)
    with pytest.raises(ValueError, match="osteophyte"):
        T.class_lut({"air": 0, "osteophyte": 1})
    with pytest.raises(ValueError, match="outside"):
        R.class_probabilities(np.full(SHAPE, 40))
