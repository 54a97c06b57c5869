"""Clinical readings in the evaluation: references, per-method rows and agreement statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_readings import FEM, GAP, TIB, phantom

from xray2mri.pipeline.data.synth import tissues as T
from xray2mri.pipeline.evaluation import clinical as C
from xray2mri.pipeline.evaluation import readings as R
from xray2mri.pipeline.evaluation.measure import Case

H = 2.5


def _case(truth: dict | None) -> Case:
    probs = phantom(H, GAP, TIB, FEM)
    return Case(subject="S1", xray=np.zeros((32, 32), np.float32), mri=np.zeros(probs.shape[1:], np.float32),
                labels=R.class_map(probs).astype(np.int16), readings_truth=truth)


def test_reference_is_the_generators_truth_where_known_and_the_label_map_is_checked_against_it():
    truth = {"jsw_medial_mm": GAP["medial"], "jsw_lateral_mm": GAP["lateral"],
             "cartilage_thickness_medial_mm": TIB["medial"], "cartilage_thickness_lateral_mm": TIB["lateral"]}
    probs = phantom(H, GAP, TIB, FEM)
    rows = C.measure_readings([_case(truth)], {"perfect head": lambda c: probs}, T.class_legend(), (H, H, H),
                              jsw_readers={"radiographic": lambda c: {"medial": 3.0, "lateral": 6.0}})
    by = {r["method"]: r for r in rows}
    # the partial-volume map (a perfect head) reads the truth; the hard label map is off by part of a voxel
    assert by["perfect head"]["tissue_jsw_medial_mm_err"] == pytest.approx(0.0, abs=1e-4)
    assert by["perfect head"]["cartilage_thickness_abs_err_mm"] == pytest.approx(0.0, abs=1e-4)
    check = by[C.GT_LABELS]
    assert check["tissue_jsw_medial_mm_err"] == pytest.approx(check["tissue_jsw_medial_mm"] - GAP["medial"])
    assert 0 < abs(check["tissue_jsw_medial_mm_err"]) <= H
    assert by["radiographic"]["jsw_abs_err_mm"] == pytest.approx(
        (abs(3.0 - GAP["medial"]) + abs(6.0 - GAP["lateral"])) / 2)
    assert by["perfect head"]["dice_mean"] == 1.0


def test_without_a_truth_the_label_maps_readings_are_the_reference():
    probs = phantom(H, GAP, TIB, FEM)
    hard = R.class_map(probs)
    rows = C.measure_readings([_case(None)], {"hard": lambda c: hard}, T.class_legend(), (H, H, H))
    by = {r["method"]: r for r in rows}
    assert by["hard"]["jsw_abs_err_mm"] == 0.0
    assert "tissue_jsw_medial_mm_err" not in by[C.GT_LABELS]  # nothing to check the label map against


def test_agreement_gives_bias_limits_correlation_and_spreads():
    rows = []
    truth = [1.0, 2.0, 3.0, 4.0, 5.0]
    model = [1.5, 2.0, 3.5, 4.0, 5.5]  # + 0.5 on odd subjects
    for i, (t, m) in enumerate(zip(truth, model)):
        rows.append({"subject": f"S{i}", "method": "m", "tissue_jsw_medial_mm": m, "tissue_jsw_medial_mm_err": m - t})
    a = C.agreement(rows, "m", "jsw_medial_mm")
    d = np.subtract(model, truth)
    assert a["n"] == 5 and a["bias"] == pytest.approx(d.mean())
    assert a["loa_high"] - a["loa_low"] == pytest.approx(2 * 1.96 * d.std(ddof=1))
    assert a["pearson_r"] == pytest.approx(np.corrcoef(model, truth)[0, 1])
    assert a["std_truth"] == pytest.approx(np.std(truth, ddof=1)) and a["std_method"] == pytest.approx(np.std(model, ddof=1))
    assert C.agreement(rows, "other", "jsw_medial_mm") == {"n": 0}
    flat = [{**r, "tissue_jsw_medial_mm": 2.0, "tissue_jsw_medial_mm_err": 0.0} for r in rows]
    assert math.isnan(C.agreement(flat, "m", "jsw_medial_mm")["pearson_r"])
