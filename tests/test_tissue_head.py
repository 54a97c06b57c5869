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
    train_json.write_text(json.dumps({**json.loads(train_json.read_text()), "tissue_weight": 1.0}))
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
    assert "tissue_jsw_abs_err_mm" in row  # nan (n 0) where a one-epoch model draws no femur above a tibia
    assert 0.0 <= row["dice_mean"]["mean"] <= 1.0 and -1.0 <= row["reprojection_ncc"]["mean"] <= 1.0
