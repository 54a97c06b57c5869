"""Self-consistency: a tissue map projected with the project's DRR against the input radiograph."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xray2mri.pipeline.evaluation import reprojection as RP
from xray2mri.pipeline.evaluation.inputs import bundle_preprocessing, load_cases, read_legend


def test_ncc_ignores_brightness_and_contrast_and_says_nan_for_flat_images():
    rng = np.random.default_rng(0)
    a = rng.random((20, 30))
    assert RP.ncc(a, 3.0 * a + 1.0) == pytest.approx(1.0)
    assert RP.ncc(a, -a) == pytest.approx(-1.0)
    assert math.isnan(RP.ncc(a, np.ones_like(a)))
    with pytest.raises(ValueError, match="differ"):
        RP.ncc(a, a[:10])


def test_projection_of_a_block_lands_where_the_block_is():
    """A bone block in the right half (R->L columns) of the volume projects to the right half of the image."""
    classes = np.ones((16, 16, 16), np.int64)  # soft tissue
    classes[4:12, 2:8, 9:14] = 3  # femur, upper rows, high columns
    proj = RP.project_tissue_map(classes, (10.0,) * 3, (32, 32), (5.0, 5.0))
    assert proj.shape == (32, 32)
    assert proj[4:16, 18:28].mean() > proj[4:16, 2:14].mean() + 0.5
    assert proj[4:16, 18:28].mean() > proj[20:30, 18:28].mean() + 0.5
    with pytest.raises(ValueError, match="isotropic"):
        RP.project_tissue_map(classes, (10.0, 5.0, 5.0), (32, 32), (5.0, 5.0))


@pytest.mark.slow
def test_ground_truth_labels_reproject_onto_their_own_radiograph(tiny_cohort, bundle_dir):
    """On the synthetic cohort (DRR radiographs), a subject's label map projects closer to its own
    preprocessed radiograph than to another subject's."""
    preprocess, sizes = bundle_preprocessing(bundle_dir)
    legend = read_legend(tiny_cohort)
    cases = load_cases(tiny_cohort / "datalist.json", tiny_cohort, preprocess, "training")
    assert len(cases) >= 2
    for i, case in enumerate(cases):
        own = RP.reprojection_ncc(case.labels, case.xray, sizes["mri_spacing"], sizes["xray_spacing"], legend)
        other = cases[(i + 1) % len(cases)]
        wrong = RP.reprojection_ncc(other.labels, case.xray, sizes["mri_spacing"], sizes["xray_spacing"], legend)
        assert own > 0.98 and own > wrong
