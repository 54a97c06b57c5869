"""Sharing a bundle: the exported zip runs on its own, its three weight forms agree, tampering is refused.

A tiny bundle is made per module (the real bundle's configs at test_predict's tiny sizes, random
weights as models/model.pt) and exported once; each test unpacks the zip into its own tmp folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_factory import TINY_SIZES, make_tiny_bundle
from bundle_factory import write_dx as _dx

from xray2mri.pipeline import cli
from xray2mri.pipeline.serving.export import (
    CHECKSUM_KEY,
    TRAINING_DATA_KEY,
    WEIGHT_FILES,
    BundleIntegrityError,
    export_bundle,
    verify_bundle_weights,
)
from xray2mri.pipeline.serving.predict import Predictor
from xray2mri.pipeline.training.engine import network_from_bundle

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "tests" / "schemas" / "meta_schema_20240725.json"  # MONAI's published schema
NAME = "knee_xray2mri"


def _datalist(path: Path) -> Path:
    item = {"xray": "a.dcm", "mri": "a.nii.gz"}
    data = {
        "description": "test cohort (synthetic)",
        "training": [{**item, "subject": f"S{i}"} for i in range(5)],
        "validation": [{**item, "subject": "S5"}],
        "test": [{**item, "subject": "S6", "side": "L"}, {**item, "subject": "S6", "side": "R"}],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(source bundle, zip) exported with a run folder holding evaluate.json's metrics.csv and a datalist."""
    root = tmp_path_factory.mktemp("export")
    bundle = make_tiny_bundle(root / "src" / NAME)
    run = root / "run"
    (run / "eval_geometry").mkdir(parents=True)
    (run / "eval_geometry" / "metrics.csv").write_text("val_mri_psnr\t17.25\nval_mri_ssim\t0.5\n")
    _datalist(run / "datalist.json")
    (run / "report").mkdir()
    stats = {"psnr_db": {"mean": 21.5, "std": 1.0, "n": 2}}
    summary = {"n_test_subjects": 2, "synthetic_data": True,
               "methods": {"geometry-aware": stats, "CAE+generator (paper)": {"psnr_db": {"mean": 30.0}}},
               "quality_bar_headline": {"model": "CAE+generator (paper)"}}
    (run / "report" / "summary.json").write_text(json.dumps(summary))
    assert cli.main(["bundle", "export", "--bundle", str(bundle), "--out", str(root / "dist"), "--run", str(run)]) == 0
    return bundle, root / "dist" / f"{NAME}_v0.1.0.zip"


def _unpack(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest / NAME


def test_zip_layout_metadata_and_checksums(exported, tmp_path):
    bundle, zip_path = exported
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
    expected = {f"{NAME}/LICENSE", f"{NAME}/configs/inference.json", f"{NAME}/configs/train.json",
                f"{NAME}/configs/metadata.json", *(f"{NAME}/{w}" for w in WEIGHT_FILES)}
    assert expected <= names
    assert not [n for n in names if "/." in n or n.endswith(".tmp")]
    unpacked = _unpack(zip_path, tmp_path)
    meta = json.loads((unpacked / "configs" / "metadata.json").read_text())
    for key in WEIGHT_FILES:
        assert len(meta[CHECKSUM_KEY][key]) == 64
    verify_bundle_weights(unpacked)  # untouched: passes
    data = meta[TRAINING_DATA_KEY]
    assert data["cohort"] == "test cohort (synthetic)"
    assert data["splits"]["training"] == {"items": 5, "subjects": 5}
    assert data["splits"]["test"] == {"items": 2, "subjects": 1}
    assert meta["eval_metrics"]["val_mri_psnr"] == pytest.approx(17.25)
    # the report row of the exported variant (train.json's "geometry"), not the headline model's
    assert data["report"]["method"] == "geometry-aware" and data["report"]["n_test_subjects"] == 2
    assert meta["eval_metrics"]["test_psnr_db_mean"] == pytest.approx(21.5)
    jsonschema.validate(meta, json.loads(SCHEMA.read_text()))
    # the source bundle is left as it was
    assert CHECKSUM_KEY not in json.loads((bundle / "configs" / "metadata.json").read_text())


def test_torchscript_and_torch_export_give_the_checkpoint_output(exported, tmp_path):
    bundle, zip_path = exported
    unpacked = _unpack(zip_path, tmp_path)
    network = network_from_bundle(bundle, return_dict=True).eval()  # training form; its MRI head is exported
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    x = torch.rand(1, 1, *TINY_SIZES["xray_size"], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = network(x)["mri"]
        scripted = torch.jit.load(str(unpacked / "models" / "model.ts"))(x)
        program = torch.export.load(str(unpacked / "models" / "model.pt2")).module()(x)
    assert expected.shape == (1, 1, *TINY_SIZES["mri_shape"])
    torch.testing.assert_close(scripted, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(program, expected, atol=1e-5, rtol=1e-4)


def _run_inference(bundle: Path, dcm: Path, out: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file configs/inference.json`` from the unpacked folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--input", str(dcm), "--output_dir", str(out)]
    return subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=180)


def test_monai_bundle_run_from_the_unpacked_zip_and_refusals(exported, tmp_path):
    """Inference from only the zip; one changed byte or a truncated file is refused naming the file."""
    bundle, zip_path = exported
    unpacked = _unpack(zip_path, tmp_path / "unpacked")
    dcm = _dx(tmp_path / "in" / "knee01.dcm")
    done = _run_inference(unpacked, dcm, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    img = nib.load(tmp_path / "out" / "knee01_mri_synthetic.nii.gz")
    assert img.shape == tuple(TINY_SIZES["mri_shape"])
    assert img.header["descrip"].tobytes().decode().startswith("SYNTHETIC")
    np.testing.assert_allclose(img.header.get_zooms(), TINY_SIZES["mri_spacing"])
    reference = Predictor.from_bundle(bundle).predict(dcm).volume
    np.testing.assert_allclose(np.asarray(img.dataobj), reference, atol=1e-5)

    weights = unpacked / "models" / "model.pt"
    original = weights.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    for name, content in (("tampered", bytes(tampered)), ("truncated", original[: len(original) // 2])):
        weights.write_bytes(content)
        with pytest.raises(BundleIntegrityError, match="SHA-256 mismatch") as info:
            verify_bundle_weights(unpacked)
        assert info.value.filename == str(weights), name
        done = _run_inference(unpacked, dcm, tmp_path / f"out_{name}")
        assert done.returncode != 0, name
        assert "BundleIntegrityError" in done.stderr and "model.pt: SHA-256 mismatch" in done.stderr, done.stderr[-2000:]
        assert not (tmp_path / f"out_{name}").exists()
    weights.write_bytes(original)
    assert cli.main(["bundle", "verify", "--bundle", str(unpacked)]) == 0
    (unpacked / "models" / "model.pt2").write_bytes(b"")
    assert cli.main(["bundle", "verify", "--bundle", str(unpacked)]) == 1


def test_export_refuses_weights_of_another_network(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "src")
    torch.save({"encoder.weight": torch.zeros(3)}, bundle / "models" / "model.pt")
    with pytest.raises(ValueError, match="model.pt: weights do not fit"):
        export_bundle(bundle, tmp_path / "dist")
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())
