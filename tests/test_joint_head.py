"""The joint-region head: its box, its detachment from the MRI, its loss term, its readings and outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xray2mri.pipeline.data.synth.tissues import CLASS_INDEX, NUM_CLASSES
from xray2mri.pipeline.evaluation import readings as R
from xray2mri.pipeline.training.losses import HybridLoss
from xray2mri.pipeline.training.networks import Xray2MRI
from xray2mri.transforms.geometry import canonical_affine, centred_box_affine

SMALL = dict(xray_size=(32, 32), mri_shape=(16, 16, 16), cae_channels=(8, 16), cae_strides=(2, 2),
             gen_channels=(8,), gen_strides=(2, 2), gen_start_channels=8, latent_size=16, variant="geometry")
JOINT = (8, 8, 8)  # 8 MRI voxels along A->P and R->L, 8 radiograph rows: whole cells of the 8^3 features


def test_joint_head_gives_logits_on_its_box_and_leaves_the_mri_untouched():
    torch.manual_seed(0)
    plain = Xray2MRI(uncertainty=True, **SMALL)
    torch.manual_seed(0)
    net = Xray2MRI(uncertainty=True, joint_classes=NUM_CLASSES, joint_shape=JOINT, joint_hidden=8,
                   joint_xray_channels=4, **SMALL)
    shared = plain.state_dict()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in shared.items())  # same init of everything else
    x = torch.rand(2, 1, 32, 32)
    out = net(x)
    assert out["joint_logits"].shape == (2, NUM_CLASSES, *JOINT)
    assert torch.equal(out["mri"], plain(x)["mri"])
    # the joint term's gradient stays in the head: the MRI is trained exactly as without it
    out["joint_logits"].square().mean().backward()
    touched = {name for name, p in net.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert touched and all(name.startswith("joint_head.") for name in touched)
    # the MRI-only form and a network without the head are unchanged
    assert set(Xray2MRI(**SMALL)(x)) == {"xray", "mri"}


def test_joint_head_reads_the_radiographs_joint_rows():
    """The head sees the radiograph's rows of the box at their own spacing: changing a row there changes its
    output, changing a row outside the box does not (through the head's own branch; the features are fixed)."""
    torch.manual_seed(0)
    net = Xray2MRI(joint_classes=NUM_CLASSES, joint_shape=JOINT, joint_hidden=8, joint_xray_channels=4, **SMALL).eval()
    head = net.joint_head
    feats = torch.rand(1, 8 + 16, 8, 8, 8)  # fixed features: the generator's last-layer input
    r0, r1, c0, c1 = head.box.xray_box
    assert (r0, r1, c0, c1) == (12, 20, 8, 24)
    x = torch.rand(1, 1, 32, 32)
    base = head(x, feats)
    inside, outside = x.clone(), x.clone()
    inside[..., 15, 10:20] += 1.0
    outside[..., 2, :] += 1.0
    assert not torch.allclose(head(inside, feats), base)
    assert torch.equal(head(outside, feats), base)


def test_a_box_off_the_feature_grid_is_refused_with_the_sizes():
    with pytest.raises(ValueError, match="joint box"):
        Xray2MRI(joint_classes=NUM_CLASSES, joint_shape=(8, 7, 8), **SMALL)
    with pytest.raises(ValueError, match="fit"):
        Xray2MRI(joint_classes=NUM_CLASSES, joint_shape=(32, 8, 8), **SMALL)
    with pytest.raises(ValueError, match="joint_classes"):
        Xray2MRI(joint_classes=1, **SMALL)


def test_joint_term_learns_class_fractions_and_is_skipped_without_them():
    torch.manual_seed(0)
    frac = torch.softmax(torch.randn(2, 4, 4, 6, 4) * 3, dim=1)  # soft targets: partial-volume fractions
    pred = {"mri": torch.rand(2, 1, 8, 8, 8), "joint_logits": torch.randn(2, 4, 4, 6, 4, requires_grad=True)}
    target = {"mri": torch.rand(2, 1, 8, 8, 8), "joint_labels": frac}
    loss = HybridLoss(xray_weight=0.0, mri_weight=1.0, joint_weight=0.5)
    total = loss(pred, target)
    assert set(loss.last_terms) == {"mri", "joint", "total"}
    assert total.item() == pytest.approx(loss.last_terms["mri"] + 0.5 * loss.last_terms["joint"], rel=1e-5)
    total.backward()
    assert pred["joint_logits"].grad is not None
    wrong = loss.last_terms["joint"]
    loss({**pred, "joint_logits": torch.log(frac)}, target)  # logits whose softmax is the target
    assert loss.last_terms["joint"] < wrong
    loss(pred, {"mri": target["mri"]})  # a datalist without joint label maps: the other terms alone
    assert set(loss.last_terms) == {"mri", "total"}
    with pytest.raises(KeyError, match="joint_classes"):
        loss({"mri": pred["mri"]}, target)


def test_box_affine_shares_the_volumes_centre_and_axes():
    affine = canonical_affine((64, 64, 64), 2.5, centre=(10.0, -5.0, 3.0))
    box = centred_box_affine(affine, (64, 64, 64), (40, 32, 40), (2.5, 1.25, 2.5))
    centre = lambda a, shape: a[:3, :3] @ ((np.asarray(shape) - 1) / 2) + a[:3, 3]  # noqa: E731
    np.testing.assert_allclose(centre(box, (40, 32, 40)), centre(affine, (64, 64, 64)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(box[:3, :3], axis=0), (2.5, 1.25, 2.5))
    np.testing.assert_allclose(box[:3, :3] / np.linalg.norm(box[:3, :3], axis=0), affine[:3, :3] / 2.5)
    # a box voxel on the volume's grid lands on that volume voxel: box voxel 0 along D is volume voxel 12
    world = box @ np.array([0, 0, 0, 1.0])
    vox = np.linalg.solve(affine, world)
    np.testing.assert_allclose(vox[[0, 2]], (12, 12), atol=1e-9)


def _fraction_knee(gap_rows: float, shape=(10, 24, 12), row_mm: float = 1.25) -> np.ndarray:
    """Class fractions of a flat joint: femur above, a gap of ``gap_rows`` rows (partial at its lower edge), tibia."""
    d, h, w = shape
    probs = np.zeros((NUM_CLASSES, d, h, w), np.float32)
    top = 8
    whole = int(gap_rows)
    probs[CLASS_INDEX["femur"], :, :top] = 1
    probs[CLASS_INDEX["fluid"], :, top:top + whole] = 1
    part = gap_rows - whole
    probs[CLASS_INDEX["fluid"], :, top + whole] = part
    probs[CLASS_INDEX["tibia"], :, top + whole] = 1 - part
    probs[CLASS_INDEX["tibia"], :, top + whole + 1:] = 1
    return probs


def test_readings_on_class_fractions_are_sub_voxel():
    """A partial-volume map of a 3.3-row gap reads 3.3 rows: what the joint head's soft targets make possible."""
    spacing = (2.5, 1.25, 2.5)
    probs = _fraction_knee(3.3)
    lines = {c: [R.M.JswLine(d=5, w=w, row=10, label_gap_mm=float("nan"))] for c, w in (("medial", 8), ("lateral", 3))}
    r = R.read_tissue_map(probs, spacing, lines=lines)
    assert r["jsw_medial_mm"] == pytest.approx(3.3 * 1.25, abs=1e-4)
    hard = R.read_tissue_map(R.class_probabilities(R.class_map(probs)), spacing, lines=lines)
    assert hard["jsw_medial_mm"] == pytest.approx(3.0 * 1.25, abs=1e-4)  # whole voxels on a hard map


def test_prediction_writes_the_joint_map_and_reads_it_into_the_sidecar(tmp_path):
    """A bundle with the joint-region head: predict writes ``<stem>_joint_labels_synthetic.nii.gz`` on its box
    (the bundle's box clipped to its tiny field, centred on the volume) and the sidecar says its readings come from it."""
    import nibabel as nib
    from bundle_factory import make_tiny_bundle
    from bundle_factory import write_dx as _dx

    from xray2mri.pipeline.serving.predict import Predictor, save_prediction

    bundle = make_tiny_bundle(tmp_path / "bundle", whole=False)
    predictor = Predictor.from_bundle(bundle)
    got = {}
    for side in ("R", "L"):
        pred = predictor.predict(_dx(tmp_path / f"{side}.dcm", side))
        paths = save_prediction(pred, tmp_path / "out", f"knee_{side}")
        joint = tmp_path / "out" / f"knee_{side}_joint_labels_synthetic.nii.gz"
        assert joint in paths
        img, vol = nib.load(joint), nib.load(tmp_path / "out" / f"knee_{side}_mri_synthetic.nii.gz")
        assert img.shape == (8, 16, 8) and "SYNTHETIC" in str(img.header["descrip"])
        np.testing.assert_allclose(img.affine, centred_box_affine(vol.affine, vol.shape, (8, 16, 8), (4.0, 2.0, 4.0)))
        sidecar = json.loads((tmp_path / "out" / f"knee_{side}_mri_synthetic.json").read_text())
        assert sidecar["joint_labels_output"] == joint.name
        assert sidecar["readings_map"].startswith("joint-region tissue map (4 x 2 x 4 mm")
        assert {"jsw_medial_mm", "cartilage_thickness_lateral_mm"} <= set(sidecar)
        got[side] = np.asarray(img.dataobj)
    assert got["R"].shape == got["L"].shape


def test_box_reprojection_tells_the_knees_own_joint_from_another():
    """The joint box's projection correlates with the radiograph's rows and columns over the box, on edges:
    the map of the knee in the radiograph scores higher than the same knee with its joint space moved."""
    from xray2mri.pipeline.data.synth.tissues import class_attenuation_lut
    from xray2mri.pipeline.evaluation.reprojection import box_reprojection_ncc

    spacing, xray_spacing = (2.5, 1.25, 2.5), (1.25, 1.25)
    own = _fraction_knee(3.3, shape=(10, 24, 12))
    own[:, :, :, :3] = 0  # a leg narrower than the box: soft tissue beside it
    own[CLASS_INDEX["soft_tissue"], :, :, :3] = 1
    moved = np.roll(own, 5, axis=2)  # the same knee, its joint line 5 rows lower
    mu = np.tensordot(class_attenuation_lut(), own, axes=(0, 0)).sum(axis=0)  # (24, 12)
    xray = np.zeros((40, 40), np.float32)
    xray[8:32, 8:32] = np.repeat(mu, 2, axis=1)  # the radiograph's box: rows as they are, columns twice as fine
    xray += np.random.default_rng(0).normal(0, 0.01 * mu.std(), xray.shape)
    assert box_reprojection_ncc(own, xray, spacing, xray_spacing) > 0.9
    assert box_reprojection_ncc(moved, xray, spacing, xray_spacing) < box_reprojection_ncc(own, xray, spacing, xray_spacing) - 0.3
    with pytest.raises(ValueError, match="rows must be the radiograph's"):
        box_reprojection_ncc(own, xray, (2.5, 2.5, 2.5), xray_spacing)
