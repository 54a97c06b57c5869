"""The optional tissue head: network output, its Dice + cross-entropy term, and training it from the bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from xray2mri.pipeline.data.synth.tissues import NUM_CLASSES
from xray2mri.pipeline.training.losses import HybridLoss
from xray2mri.pipeline.training.networks import Xray2MRI

SMALL = dict(xray_size=(32, 32), mri_shape=(16, 16, 16), cae_channels=(8, 16), cae_strides=(2, 2),
             gen_channels=(8,), gen_strides=(2, 2), gen_start_channels=8, latent_size=16)


@pytest.mark.parametrize("variant", ["bottleneck", "geometry"])
def test_tissue_head_adds_class_logits_and_leaves_the_mri_form_alone(variant):
    torch.manual_seed(0)
    net = Xray2MRI(variant=variant, tissue_classes=NUM_CLASSES, **SMALL)
    out = net(torch.rand(2, 1, 32, 32))
    assert out["tissue_logits"].shape == (2, NUM_CLASSES, 16, 16, 16)
    assert out["mri"].shape == (2, 1, 16, 16, 16) and 0 <= out["mri"].min() and out["mri"].max() <= 1
    infer = Xray2MRI(variant=variant, tissue_classes=NUM_CLASSES, return_dict=False, **SMALL)
    infer.load_state_dict(net.state_dict())
    net.eval(), infer.eval()
    x = torch.rand(1, 1, 32, 32)
    assert torch.equal(infer(x), net(x)["mri"])


def test_without_the_head_the_network_is_todays():
    plain = Xray2MRI(**SMALL)
    off = Xray2MRI(tissue_classes=0, **SMALL)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in off.state_dict().items()}
    assert set(off(torch.rand(1, 1, 32, 32))) == {"xray", "mri"}
    with pytest.raises(ValueError, match="tissue_classes"):
        Xray2MRI(tissue_classes=1, **SMALL)


def test_tissue_term_is_dice_ce_and_skipped_for_batches_without_labels():
    torch.manual_seed(0)
    pred = {"mri": torch.rand(2, 1, 8, 8, 8), "tissue_logits": torch.randn(2, 4, 8, 8, 8, requires_grad=True)}
    target = {"mri": torch.rand(2, 1, 8, 8, 8), "labels": torch.randint(0, 4, (2, 1, 8, 8, 8)).float()}
    loss = HybridLoss(xray_weight=0.0, mri_weight=1.0, tissue_weight=0.5)
    total = loss(pred, target)
    assert set(loss.last_terms) == {"mri", "tissue", "total"}
    assert total.item() == pytest.approx(loss.last_terms["mri"] + 0.5 * loss.last_terms["tissue"], rel=1e-5)
    total.backward()
    assert pred["tissue_logits"].grad is not None
    # a perfect, confident prediction has a lower tissue term than a random one
    perfect = torch.nn.functional.one_hot(target["labels"][:, 0].long(), 4).permute(0, 4, 1, 2, 3).float() * 20
    loss({**pred, "tissue_logits": perfect}, target)
    assert loss.last_terms["tissue"] < 0.05
    # no labels (e.g. an OAI datalist): the other terms alone
    loss(pred, {"mri": target["mri"]})
    assert set(loss.last_terms) == {"mri", "total"}
    with pytest.raises(KeyError, match="tissue_classes"):
        loss({"mri": pred["mri"]}, target)
    # weight 0 (the default): no tissue term even with labels
    off = HybridLoss(xray_weight=0.0, mri_weight=1.0)
    off(pred, target)
    assert "tissue" not in off.last_terms


def _workflow(bundle_dir: Path, overrides: dict) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=str(bundle_dir / "configs" / "train.json"),
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        **overrides,
    )


@pytest.mark.slow
def test_bundle_trains_the_tissue_head_on_the_cohorts_label_maps(tmp_path, bundle_dir, tiny_bundle_overrides):
    """``--tissue_weight 1``: the training items carry tissue-class maps on the MRI grid, the network has the
    head and the loss logs a tissue term; the default (0) loads no labels and builds today's network."""
    wf = _workflow(bundle_dir, {**tiny_bundle_overrides, "output_dir": str(tmp_path / "on"), "epochs": 1,
                                "val_interval": 5, "tissue_weight": 1.0})
    wf.initialize()
    item = wf.parser.get_parsed_content("train#dataset")[0]
    labels = np.asarray(item["labels"])
    assert labels.shape == (1, 16, 16, 16) and item["mri"].shape == labels.shape
    assert set(np.unique(labels).astype(int)) <= set(range(NUM_CLASSES)) and len(np.unique(labels)) > 3
    trainer, loss = wf.parser.get_parsed_content("train#trainer"), wf.parser.get_parsed_content("loss")
    terms = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: terms.append(dict(loss.last_terms)))
    wf.run()
    assert terms and all("tissue" in t and np.isfinite(t["tissue"]) for t in terms)
    assert wf.parser.get_parsed_content("network").tissue_classes == NUM_CLASSES
    wf.finalize()

    off = _workflow(bundle_dir, {**tiny_bundle_overrides, "output_dir": str(tmp_path / "off"), "epochs": 1})
    off.initialize()
    assert "labels" not in off.parser.get_parsed_content("train#dataset")[0]
    assert off.parser.get_parsed_content("network_def").tissue_classes == 0


@pytest.mark.slow
def test_evaluate_reads_the_tissue_heads_maps_into_the_report(tmp_path, tiny_cohort):
    """Train the tissue head one epoch on the synthetic cohort, then ``xray2mri evaluate``: the model's row
    gets Dice per class, the clinical readings' errors and the reprojection consistency."""
    import json
    import os
    import subprocess
    import sys

    from bundle_factory import make_tiny_bundle

    from xray2mri.pipeline.evaluation.run import bundle_command
    from xray2mri.pipeline.training.checkpoints import BEST_NAME

    sizes = {"xray_size": [32, 32], "xray_spacing": [5.0, 5.0], "mri_shape": [16, 16, 16], "mri_spacing": [10.0] * 3}
    bundle = make_tiny_bundle(tmp_path / "bundle", whole=False, sizes=sizes)
    train_json = bundle / "configs" / "train.json"
    # the whole-volume head alone (the joint-region head, on by default, would be read instead: test_joint_head)
    train_json.write_text(json.dumps({**json.loads(train_json.read_text()), "tissue_weight": 1.0, "joint_weight": 0.0}))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    train = subprocess.run(
        bundle_command(bundle, ["train.json"],
                       {"dataset_dir": str(tiny_cohort), "datalist": str(tiny_cohort / "datalist.json"),
                        "output_dir": str(tmp_path / "train"), "epochs": 1, "num_workers": 0, "progress_bar": False}),
        capture_output=True, text=True, timeout=600, env=env)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "xray2mri.pipeline.cli", "evaluate", "--bundle", str(bundle),
         "--datalist", str(tiny_cohort / "datalist.json"), "--base-dir", str(tiny_cohort), "--out", str(out),
         "--weights", str(tmp_path / "train" / "checkpoints" / BEST_NAME), "--override", "num_workers", "0",
         "--montages", "0"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert sorted((out / "evaluate" / "predictions").glob("*_tissue_probs.nii.gz"))
    summary = json.loads((out / "report" / "summary.json").read_text())
    row = summary["methods"]["geometry-aware"]  # the row name of the bundle's declared variant
    for key in ("dice_mean", "dice_femur", "cartilage_thickness_abs_err_mm", "reprojection_ncc"):
        assert row[key]["n"] > 0, key
    assert "jsw_abs_err_mm" in row  # nan (n 0) where a one-epoch model draws no femur above a tibia
    assert 0.0 <= row["dice_mean"]["mean"] <= 1.0 and -1.0 <= row["reprojection_ncc"]["mean"] <= 1.0


class _TissuePhantomNet(torch.nn.Module):
    """Stands in for a trained network with the tissue head: answers a known tissue phantom (canonical)."""

    tissue_classes = NUM_CLASSES
    return_dict = False

    def __init__(self, probs: np.ndarray) -> None:
        super().__init__()
        self.logits = torch.log(torch.as_tensor(probs) + 1e-6)

    def forward(self, x):
        out = {"mri": torch.full((x.shape[0], 1, *self.logits.shape[1:]), 0.5),
               "tissue_logits": self.logits[None].expand(x.shape[0], -1, -1, -1, -1)}
        return out if self.return_dict else out["mri"]


def test_prediction_writes_the_label_map_and_the_readings_into_the_sidecar(tmp_path):
    """predict with a tissue-head model: ``<stem>_labels_synthetic.nii.gz`` (uint8 classes, mirrored back for a
    left knee) and the sidecar's ``jsw_*_mm``, ``cartilage_thickness_*_mm`` and ``reprojection_ncc``."""
    import json

    import nibabel as nib
    from bundle_factory import make_tiny_bundle
    from bundle_factory import write_dx as _dx
    from test_readings import FEM, GAP, TIB, phantom

    from xray2mri.pipeline.serving.predict import Predictor, save_prediction

    h, shape = 1.0, (8, 32, 32)
    sizes = {"xray_size": [32, 32], "xray_spacing": [h, h], "mri_shape": list(shape), "mri_spacing": [h] * 3}
    bundle = make_tiny_bundle(tmp_path / "bundle", whole=False, sizes=sizes)
    probs = phantom(h, GAP, TIB, FEM, shape=shape)
    tiny = Predictor.from_bundle(bundle, random_init=True)  # the bundle's preprocessing and spacing
    predictor = Predictor(_TissuePhantomNet(probs), tiny.preprocess, tiny.mri_spacing, image_key=tiny.image_key)
    assert predictor.network.return_dict  # a network with the head runs in its dict form
    outputs = {}
    for side in ("R", "L"):
        pred = predictor.predict(_dx(tmp_path / f"{side}.dcm", side, fibula=False))
        paths = save_prediction(pred, tmp_path / "out", f"knee_{side}")
        labels_path = tmp_path / "out" / f"knee_{side}_labels_synthetic.nii.gz"
        assert labels_path in paths
        img = nib.load(labels_path)
        assert img.get_data_dtype() == np.uint8 and "SYNTHETIC" in str(img.header["descrip"])
        sidecar = json.loads((tmp_path / "out" / f"knee_{side}_mri_synthetic.json").read_text())
        outputs[side] = (np.asarray(img.dataobj), sidecar)
    right, left = outputs["R"], outputs["L"]
    np.testing.assert_array_equal(right[0], np.argmax(probs, axis=0))
    np.testing.assert_array_equal(left[0], right[0][..., ::-1])  # mirrored back like the MRI
    for sidecar in (right[1], left[1]):
        assert sidecar["jsw_medial_mm"] == pytest.approx(GAP["medial"], abs=0.01)
        assert sidecar["jsw_lateral_mm"] == pytest.approx(GAP["lateral"], abs=0.01)
        assert sidecar["cartilage_thickness_medial_mm"] == pytest.approx(TIB["medial"], abs=0.01)
        assert -1.0 <= sidecar["reprojection_ncc"] <= 1.0
        assert sidecar["labels_output"].endswith("_labels_synthetic.nii.gz")
        assert sidecar["tissue_classes"]["femur"] == int(np.argmax(probs[:, 0, 0, 5]))


def test_inference_json_writes_the_label_map_and_readings_as_predict_does(tmp_path):
    """A bundle trained with the tissue head: inference.json writes ``<stem>_labels_synthetic.nii.gz`` and the
    sidecar's readings, the same as ``xray2mri predict`` on the same radiographs (left knee mirrored back)."""
    import json

    import nibabel as nib
    from bundle_factory import make_tiny_bundle, run_inference_json
    from bundle_factory import write_dx as _dx

    from xray2mri.pipeline.serving.predict import Predictor, save_prediction
    from xray2mri.pipeline.serving.tissue_outputs import SIDECAR_READINGS

    bundle = make_tiny_bundle(tmp_path / "bundle", whole=False, tissue=True)
    inp = tmp_path / "in"
    for side in ("R", "L"):
        _dx(inp / f"knee_{side}.dcm", side)

    predictor = Predictor.from_bundle(bundle)
    for side in ("R", "L"):
        save_prediction(predictor.predict(inp / f"knee_{side}.dcm"), tmp_path / "p", f"knee_{side}")
    run_inference_json(bundle, inp, tmp_path / "i")
    for side in ("R", "L"):
        by_predict, by_bundle = (nib.load(tmp_path / d / f"knee_{side}_labels_synthetic.nii.gz") for d in ("p", "i"))
        assert by_bundle.get_data_dtype() == np.uint8 and "SYNTHETIC" in str(by_bundle.header["descrip"])
        np.testing.assert_allclose(by_bundle.affine, by_predict.affine)
        np.testing.assert_array_equal(np.asarray(by_bundle.dataobj), np.asarray(by_predict.dataobj))
        sidecars = [json.loads((tmp_path / d / f"knee_{side}_mri_synthetic.json").read_text()) for d in ("p", "i")]
        for key in (*SIDECAR_READINGS, "tissue_classes", "labels_output"):
            assert key in sidecars[1], key
            assert sidecars[1][key] == pytest.approx(sidecars[0][key]) if isinstance(sidecars[0][key], float) \
                else sidecars[1][key] == sidecars[0][key]
