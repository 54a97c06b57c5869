"""The bundle's model-zoo checks, its evaluation and inference configs, and the engine glue.

* ``verify_metadata`` (against the local copy of the schema), ``verify_net_in_out`` and
  ``ckpt_export`` pass; the TorchScript model gives the checkpoint's output;
* metadata.json states the sizes train.json sets (the one place they are written);
* ``install_weights`` puts the weights alone into ``models/model.pt``, atomically; train.json does it
  when it finishes (so ``inference.json`` runs right after), and inference without weights says how
  to get them;
* ``ConfigWorkflow(workflow_type="infer"/"train").check_properties()`` is clean;
* evaluate.json writes per-subject NIfTI predictions on the target's grid, marked SYNTHETIC,
  and the metrics files;
* inference.json writes a SYNTHETIC NIfTI in the "PIL" frame at ``mri_spacing`` and mirrors
  left knees back;
* prepare_batch, the output transforms and the paired zoom behave as the configs rely on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

from xray2mri.pipeline.serving import volume_outputs
from xray2mri.pipeline.training import checkpoints, engine, tb_logging
from xray2mri.transforms.augment import RandPairedZoomd
from xray2mri.transforms.geometry import MRI_AXCODES

SCHEMA = Path(__file__).resolve().parent / "schemas" / "meta_schema_20240725.json"  # MONAI's published schema, for offline checks
TINY_NET = {"xray_size": [32, 32], "mri_shape": [16, 16, 16]}


def _train_config(bundle_dir: Path) -> dict:
    return ConfigParser.load_config_file(bundle_dir / "configs" / "train.json")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, bundle_dir) -> Path:
    """A bundle-like folder whose models/model.pt holds random tiny-network weights, installed from a checkpoint."""
    torch.manual_seed(0)
    net = engine.network_from_bundle(bundle_dir, return_dict=True, **TINY_NET)
    root = tmp_path_factory.mktemp("tiny_bundle")
    ckpt = checkpoints.save_atomic({"model": net.state_dict(), "epoch": 3, "metric": {"val_mri_psnr": 1.0}}, root / "best.pt")
    checkpoints.install_weights(ckpt, root)
    return root / "models" / "model.pt"


def test_metadata_verifies_against_the_schema(tmp_path, bundle_dir):
    schema = tmp_path / SCHEMA.name
    shutil.copy(SCHEMA, schema)
    verify_metadata(meta_file=str(bundle_dir / "configs" / "metadata.json"), filepath=str(schema))


def test_metadata_states_the_sizes_train_json_sets(bundle_dir):
    meta = ConfigParser.load_config_file(bundle_dir / "configs" / "metadata.json")["network_data_format"]
    train = _train_config(bundle_dir)
    image, pred = meta["inputs"]["image"], meta["outputs"]["pred"]
    assert image["spatial_shape"] == train["xray_size"] and image["pixel_spacing_mm"] == train["xray_spacing"]
    assert pred["spatial_shape"] == train["mri_shape"] and pred["voxel_spacing_mm"] == train["mri_spacing"]
    assert image["num_channels"] == pred["num_channels"] == 1


def test_verify_net_in_out_at_the_bundle_size(bundle_dir):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        config_file=str(bundle_dir / "configs" / "inference.json"),
        device="cpu",
        bundle_root=str(bundle_dir),
    )


def test_install_weights_writes_the_state_dict_alone(tiny_weights):
    state = torch.load(tiny_weights, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "model" not in state and any(k.startswith("cae.") for k in state)
    assert sorted(p.name for p in tiny_weights.parent.iterdir()) == ["model.pt"]


def test_model_state_refuses_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="not a network state dict"):
        checkpoints.model_state({"optimizer": {"lr": 0.1}})
    with pytest.raises(FileNotFoundError, match="missing.pt: checkpoint not found"):
        checkpoints.load_checkpoint(tmp_path / "missing.pt")


def test_ckpt_export_torchscript_matches_the_checkpoint(tmp_path, bundle_dir, tiny_weights):
    ts_path = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(tiny_weights),
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        config_file=str(bundle_dir / "configs" / "inference.json"),
        bundle_root=str(bundle_dir),
        **TINY_NET,
    )
    scripted = torch.jit.load(str(ts_path))
    eager = engine.network_from_bundle(bundle_dir, return_dict=False, **TINY_NET)
    eager.load_state_dict(torch.load(tiny_weights, weights_only=True))
    eager.eval()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = eager(x)
        got = scripted(x)
    assert expected.shape == (2, 1, 16, 16, 16)
    torch.testing.assert_close(got, expected)


def _run_workflow(bundle_dir: Path, configs: list[str], overrides: dict) -> ConfigWorkflow:
    files = [str(bundle_dir / "configs" / c) for c in configs]
    wf = ConfigWorkflow(config_file=files if len(files) > 1 else files[0], logging_file=False, workflow_type=None,
                        meta_file=str(bundle_dir / "configs" / "metadata.json"), **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def test_evaluate_writes_predictions_on_the_target_grid_and_metrics(
    tmp_path, bundle_dir, tiny_bundle_overrides, tiny_weights, tiny_cohort
):
    best = tiny_weights.parents[1] / "best.pt"  # a training checkpoint ({"model": ..., "epoch": ...}) loads too
    _run_workflow(bundle_dir, ["train.json", "evaluate.json"],
                  {**tiny_bundle_overrides, "output_dir": str(tmp_path), "weights": str(best)})
    test_subjects = [item["subject"] for item in json.loads((tiny_cohort / "datalist.json").read_text())["test"]]
    assert test_subjects
    for subject in test_subjects:
        pred = nib.load(tmp_path / "predictions" / f"{subject}_mri_pred.nii.gz")
        target = nib.load(tmp_path / "predictions" / f"{subject}_mri_target.nii.gz")
        recon = nib.load(tmp_path / "predictions" / f"{subject}_xray_recon.nii.gz")
        assert pred.shape == target.shape == (16, 16, 16)
        np.testing.assert_allclose(pred.affine, target.affine)
        assert "".join(nib.aff2axcodes(pred.affine)) == MRI_AXCODES
        np.testing.assert_allclose(pred.header.get_zooms(), (10.0, 10.0, 10.0))
        assert recon.shape[:2] == (32, 32)
        for img in (pred, recon):
            assert bytes(img.header["descrip"]).startswith(b"SYNTHETIC")
        assert not bytes(target.header["descrip"]).startswith(b"SYNTHETIC: generated")
        data = np.asarray(pred.dataobj)
        assert 0.0 <= data.min() and data.max() <= 1.0
    rows = dict(line.split(",") for line in (tmp_path / "metrics.csv").read_text().splitlines())
    assert set(rows) == {"val_mri_psnr", "val_mri_ssim", "val_mri_mae", "val_xray_psnr"}
    raw = (tmp_path / "val_mri_psnr_raw.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in raw[1:]] == test_subjects


def _mirrored_copy(src: Path, dst: Path) -> Path:
    """The radiograph with its columns reversed and its laterality swapped: the other knee, seen the same way."""
    ds = pydicom.dcmread(src)
    pixels = ds.pixel_array[:, ::-1].copy()
    ds.PixelData = pixels.tobytes()
    for keyword in ("ImageLaterality", "Laterality"):
        if keyword in ds:
            ds.data_element(keyword).value = {"L": "R", "R": "L"}[str(ds.data_element(keyword).value)]
    ds.save_as(dst)
    return dst


def test_inference_writes_synthetic_nifti_and_mirrors_left_knees_back(
    tmp_path, bundle_dir, tiny_bundle_overrides, tiny_weights, tiny_cohort
):
    subject = next(p for p in sorted(tiny_cohort.glob("SYN*")) if json.loads(next(p.glob("*_meta.json")).read_text())["side"] == "L")
    left = subject / f"{subject.name}_xray.dcm"
    right = _mirrored_copy(left, tmp_path / "right_xray.dcm")
    assert pydicom.dcmread(right).ImageLaterality == "R"
    overrides = {k: tiny_bundle_overrides[k] for k in ("bundle_root", "xray_size", "xray_spacing", "mri_shape", "mri_spacing")}
    _run_workflow(bundle_dir, ["inference.json"], {
        **overrides, "device": "$torch.device('cpu')", "weights": str(tiny_weights),
        "input": [str(left), str(right)], "output_dir": str(tmp_path / "out"),
    })
    out_left = nib.load(tmp_path / "out" / f"{subject.name}_xray_mri_synthetic.nii.gz")
    out_right = nib.load(tmp_path / "out" / "right_xray_mri_synthetic.nii.gz")
    for img in (out_left, out_right):
        assert img.shape == (16, 16, 16)
        assert "".join(nib.aff2axcodes(img.affine)) == MRI_AXCODES
        np.testing.assert_allclose(img.header.get_zooms(), (10.0, 10.0, 10.0))
        assert bytes(img.header["descrip"]).startswith(b"SYNTHETIC")
    # both radiographs look the same to the network (mirrored to the right knee), so the left
    # knee's output is the right knee's, mirrored back along R-L
    left_data, right_data = np.asarray(out_left.dataobj), np.asarray(out_right.dataobj)
    assert not np.allclose(left_data, left_data[..., ::-1], atol=1e-4)
    np.testing.assert_allclose(left_data, right_data[..., ::-1], atol=1e-5)


def test_inference_accepts_a_radiograph_that_states_no_side(tmp_path, bundle_dir, tiny_bundle_overrides, tiny_weights,
                                                           tiny_cohort):
    """Many exports carry neither ImageLaterality nor Laterality: the knee is taken as it is (not mirrored)."""
    ds = pydicom.dcmread(sorted(tiny_cohort.glob("SYN*/*_xray.dcm"))[0])
    for keyword in ("ImageLaterality", "Laterality"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(tmp_path / "noside.dcm")
    overrides = {k: tiny_bundle_overrides[k] for k in ("bundle_root", "xray_size", "xray_spacing", "mri_shape", "mri_spacing")}
    _run_workflow(bundle_dir, ["inference.json"], {
        **overrides, "device": "$torch.device('cpu')", "weights": str(tiny_weights),
        "input": str(tmp_path / "noside.dcm"), "output_dir": str(tmp_path / "out"),
    })
    img = nib.load(tmp_path / "out" / "noside_mri_synthetic.nii.gz")
    assert img.shape == (16, 16, 16) and bytes(img.header["descrip"]).startswith(b"SYNTHETIC")


def test_inference_without_input_says_what_to_give(bundle_dir):
    with pytest.raises(ValueError, match="--input"):
        volume_outputs.inference_items(None)


def test_prepare_batch_gives_the_input_and_both_targets():
    from monai.data import MetaTensor

    batch = {"xray": MetaTensor(torch.rand(2, 1, 8, 8)), "mri": MetaTensor(torch.rand(2, 1, 4, 4, 4)), "subject": ["a", "b"]}
    inputs, targets = engine.prepare_batch(batch, "cpu")
    assert set(targets) == {"xray", "mri"}
    assert targets["xray"] is inputs
    assert type(inputs) is torch.Tensor and type(targets["mri"]) is torch.Tensor  # no MetaTensor overhead in training
    torch.testing.assert_close(targets["mri"], batch["mri"].as_tensor())
    inputs, targets = engine.prepare_batch({"xray": batch["xray"]})
    assert set(targets) == {"xray"}


def test_output_transforms_pick_heads_and_loss_terms():
    pred = {"xray": torch.zeros(2, 1, 4, 4), "mri": torch.ones(2, 1, 2, 2, 2)}
    label = {"xray": torch.ones(2, 1, 4, 4), "mri": torch.zeros(2, 1, 2, 2, 2)}
    y_pred, y = engine.pred_target("mri")({"pred": pred, "label": label})
    assert y_pred is pred["mri"] and y is label["mri"]
    items = [{"pred": {k: v[i] for k, v in pred.items()}, "label": {k: v[i] for k, v in label.items()}} for i in range(2)]
    y_pred, y = engine.pred_target("xray")(items)
    assert len(y_pred) == 2 and y_pred[0].shape == (1, 4, 4)

    class _Loss:
        last_terms = {"xray": 0.25, "mri": 0.5, "total": 0.75}

    assert engine.loss_terms(_Loss())({"loss": torch.tensor(0.75)}) == {"loss": 0.75, "loss_xray": 0.25, "loss_mri": 0.5}


def test_paired_zoom_scales_radiograph_and_volume_alike():
    xray = torch.zeros(1, 32, 32)
    xray[:, 8:24, 8:24] = 1.0  # a square covering half the field
    mri = torch.zeros(1, 16, 16, 16)
    mri[:, 4:12, 4:12, 4:12] = 1.0  # a cube covering half the field
    zoom = RandPairedZoomd(["xray", "mri"], prob=1.0, min_zoom=1.2, max_zoom=1.3, padding_mode="constant")
    zoom.set_random_state(0)
    out = zoom({"xray": xray, "mri": mri})
    assert 1.2 <= zoom._zoom <= 1.3
    xray_fraction = float(out["xray"][0, 16].gt(0.5).float().mean())
    mri_fraction = float(out["mri"][0, 8, 8].gt(0.5).float().mean())
    assert out["xray"].shape == xray.shape and out["mri"].shape == mri.shape
    assert xray_fraction > 0.55 and mri_fraction > 0.55  # both magnified ...
    assert abs(xray_fraction - mri_fraction) <= 1 / 16 + 1e-6  # ... by the same factor of their field
    never = RandPairedZoomd(["xray", "mri"], prob=0.0)
    assert never({"xray": xray, "mri": mri})["xray"] is xray


def test_tensorboard_slices_put_target_and_prediction_side_by_side():
    class _Writer:
        def __init__(self):
            self.images = {}

        def add_image(self, tag, img, step, dataformats):
            self.images[tag] = (img, step)

        def flush(self):
            pass

    class _State:
        epoch = 5
        output = {"pred": {"mri": torch.full((1, 1, 4, 6, 8), 0.25), "xray": torch.zeros(1, 1, 6, 8)},
                  "label": {"mri": torch.full((1, 1, 4, 6, 8), 0.75), "xray": torch.ones(1, 1, 6, 8)}}

    class _Engine:
        state = _State()

    writer = _Writer()
    tb_logging.TensorBoardSlices(writer)(_Engine())
    assert set(writer.images) == {"val/mri_coronal", "val/mri_sagittal", "val/mri_axial", "val/xray"}
    coronal, step = writer.images["val/mri_coronal"]
    assert step == 5 and coronal.shape == (1, 6, 16)
    assert float(coronal[0, :, :8].mean()) == 0.75 and float(coronal[0, :, 8:].mean()) == 0.25
    assert writer.images["val/mri_sagittal"][0].shape == (1, 6, 8)
    assert writer.images["val/mri_axial"][0].shape == (1, 4, 16)


# --------------------------------------------------------------------------------------------
# the bundle after training: weights installed, inference right away, zoo workflow properties

#: test_bundle_train's sizes (the real 160 mm field), written into a tiny bundle's configs.
_TRAIN_SIZES = {"xray_size": [32, 32], "xray_spacing": [5.0, 5.0], "mri_shape": [16, 16, 16],
                "mri_spacing": [10.0, 10.0, 10.0]}


def _monai_run(cwd: Path, config_file: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file CONFIG`` in ``cwd``, with train.json's default ``bundle_root``."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config_file.relative_to(cwd)), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_installs_the_best_weights_and_inference_runs_right_after(tmp_path, tiny_cohort, tiny_bundle_overrides):
    from bundle_factory import make_tiny_bundle

    # laid out as in the repository, and run from its root with the configs' own bundle_root
    bundle = make_tiny_bundle(tmp_path / "bundles" / "knee_xray2mri", whole=False, sizes=_TRAIN_SIZES)
    assert json.loads((bundle / "configs" / "inference.json").read_text())["bundle_root"] == "bundles/knee_xray2mri"
    (bundle / "models" / "model.pt").unlink()
    dcm = sorted(tiny_cohort.glob("SYN*/*_xray.dcm"))[0]
    inference = bundle / "configs" / "inference.json"

    before = _monai_run(tmp_path, inference, "--input", str(dcm), "--output_dir", str(tmp_path / "out0"))
    assert before.returncode != 0
    assert "MissingWeightsError" in before.stderr and "xray2mri bundle install-weights" in before.stderr, before.stderr[-2000:]

    overrides = {k: v for k, v in tiny_bundle_overrides.items() if k not in ("bundle_root", "weights", *_TRAIN_SIZES)}
    run_dir = tmp_path / "run"
    train = _monai_run(tmp_path, bundle / "configs" / "train.json",
                       *(f"--{k}={v if isinstance(v, str) else repr(v) if isinstance(v, bool) else json.dumps(v)}"
                         for k, v in overrides.items()),
                       f"--output_dir={run_dir}", "--epochs=2", "--val_interval=1")
    assert train.returncode == 0, train.stderr[-3000:]
    installed = torch.load(bundle / "models" / "model.pt", weights_only=True)
    best = torch.load(run_dir / "checkpoints" / checkpoints.BEST_NAME, weights_only=True)
    assert set(installed) == set(best["model"])  # the state dict alone, zoo style
    for key, value in best["model"].items():
        torch.testing.assert_close(installed[key], value)

    after = _monai_run(tmp_path, inference, "--input", str(dcm), "--output_dir", str(tmp_path / "out"))
    assert after.returncode == 0, after.stderr[-3000:]
    img = nib.load(tmp_path / "out" / f"{dcm.stem}_mri_synthetic.nii.gz")
    assert img.shape == (16, 16, 16) and bytes(img.header["descrip"]).startswith(b"SYNTHETIC")

    # the documented way for a run that did not install (install_weights false, or stopped early)
    from xray2mri.pipeline import cli

    (bundle / "models" / "model.pt").unlink()
    assert cli.main(["bundle", "install-weights", str(run_dir), "--bundle", str(bundle)]) == 0
    again = torch.load(bundle / "models" / "model.pt", weights_only=True)
    for key, value in installed.items():
        torch.testing.assert_close(again[key], value)
    assert cli.main(["bundle", "install-weights", str(tmp_path / "nowhere"), "--bundle", str(bundle)]) == 1


def test_a_run_without_validation_installs_nothing(tmp_path, bundle_dir, tiny_bundle_overrides):
    weights = tmp_path / "models" / "model.pt"
    _run_workflow(bundle_dir, ["train.json"], {**tiny_bundle_overrides, "output_dir": str(tmp_path / "run"),
                                               "weights": str(weights), "epochs": 1, "val_interval": 5})
    assert not weights.exists()


def test_zoo_workflow_properties_are_complete(tmp_path, bundle_dir, tiny_bundle_overrides, tiny_weights, tiny_cohort):
    """``ConfigWorkflow(workflow_type="infer"/"train").check_properties()`` finds every property the zoo requires."""
    sizes = {k: tiny_bundle_overrides[k] for k in ("xray_size", "xray_spacing", "mri_shape", "mri_spacing")}
    infer = ConfigWorkflow(config_file=str(bundle_dir / "configs" / "inference.json"), workflow_type="infer",
                           meta_file=str(bundle_dir / "configs" / "metadata.json"), logging_file=False,
                           bundle_root=str(bundle_dir), dataset_dir=str(next(tiny_cohort.glob("SYN*"))),
                           weights=str(tiny_weights), device="$torch.device('cpu')", **sizes)
    infer.initialize()
    assert infer.check_properties() == []
    assert infer.dataset_dir and infer.dataset_data  # dataset_dir declared; the input defaults to it
    train = ConfigWorkflow(config_file=str(bundle_dir / "configs" / "train.json"), workflow_type="train",
                           meta_file=str(bundle_dir / "configs" / "metadata.json"), logging_file=False,
                           **{**tiny_bundle_overrides, "output_dir": str(tmp_path)})
    train.initialize()
    assert train.check_properties() == []
