"""Sharing a bundle: the exported zip carries its code and runs on its own, its three weight forms
agree, every file is checksummed and a changed weight, script or config is refused, and
``download_large_files`` fetches the weights the zoo's way.

A tiny bundle is made per module (the real bundle's configs at test_predict's tiny sizes, random
weights as models/model.pt) and exported once; each test unpacks the zip into its own tmp folder.
(The same zip in a fresh venv without this project: tests/test_bundle_standalone.py.)
"""

from __future__ import annotations

import json
import os
import shutil
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
from xray2mri.pipeline.serving.bundle import open_bundle
from xray2mri.pipeline.serving.export import (
    DATA_LICENSE,
    LARGE_FILES,
    TRAINING_DATA_KEY,
    WEIGHT_FILES,
    data_license_text,
    export_bundle,
)
from xray2mri.pipeline.serving.integrity import CHECKSUM_KEY, BundleIntegrityError, verify_bundle
from xray2mri.pipeline.serving.predict import Predictor
from xray2mri.pipeline.serving.uncertainty import CALIBRATION_FILE
from xray2mri.pipeline.serving.vendor import RUNTIME_EXTRAS
from xray2mri.pipeline.training.engine import network_from_bundle
from xray2mri.transforms.errors import XrayInputError

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
    """(source bundle, zip) exported with a run folder holding evaluate.json's metrics.csv and a datalist.

    large_files.yml points at ``<root>/mirror`` (a local folder standing for where the weights are published).
    """
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
    assert cli.main(["bundle", "export", "--bundle", str(bundle), "--out", str(root / "dist"), "--run", str(run),
                     "--weights-url", str(root / "mirror")]) == 0
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
                f"{NAME}/configs/metadata.json", f"{NAME}/{LARGE_FILES}", f"{NAME}/{DATA_LICENSE}",
                f"{NAME}/scripts/__init__.py", f"{NAME}/scripts/transforms/xray.py",
                f"{NAME}/scripts/pipeline/training/engine.py", *(f"{NAME}/{w}" for w in WEIGHT_FILES)}
    assert expected <= names
    assert not [n for n in names if "/." in n or n.endswith(".tmp") or "__pycache__" in n]
    # only what the configs need: no CLI, demo, report or data generation code (the tissue table, which
    # the training chain maps label maps to tissue classes with, is data, not generation code; the readings
    # and the DRR that inference.json's writer takes on a tissue head's map are runtime code)
    table = {f"{NAME}/scripts/pipeline/{m}.py" for m in (
        "data/synth/tissues", "data/synth/__init__", "data/synth/presets", "data/synth/drr",
        "evaluation/__init__", "evaluation/readings", "evaluation/reprojection", "evaluation/metrics")}
    assert not [n for n in names - table
                if "/commands/" in n or "/synth/" in n or "/evaluation/" in n or n.endswith("demo.py")]
    unpacked = _unpack(zip_path, tmp_path)
    meta = json.loads((unpacked / "configs" / "metadata.json").read_text())
    every_file = {n[len(NAME) + 1:] for n in names} - {"configs/metadata.json"}
    assert set(meta[CHECKSUM_KEY]) == every_file  # configs, scripts, docs, weights, large_files.yml
    assert verify_bundle(unpacked) == sorted(every_file)  # untouched: passes
    # installable packages only, the DICOM decoders among them; never this project
    required = meta["required_packages_version"]
    assert "xray2mri" not in {k.lower() for k in required}
    assert {"pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg", "pyjpegls", "pydicom", "pytorch-ignite"} <= set(required)
    assert set(RUNTIME_EXTRAS) - {"PyYAML"} <= set(required) and all(v[0].isdigit() for v in required.values())
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]
    # every config names the vendored code, none the package
    for config in (unpacked / "configs").glob("*.json"):
        text = config.read_text()
        assert "xray2mri.pipeline" not in text and "xray2mri.transforms" not in text, config.name
        assert json.loads(text).get("bundle_root", ".") == "."
    assert "scripts.pipeline.training.engine" in (unpacked / "configs" / "inference.json").read_text()
    data = meta[TRAINING_DATA_KEY]
    assert data["cohort"] == "test cohort (synthetic)"
    assert data["splits"]["training"] == {"items": 5, "subjects": 5}
    assert data["splits"]["test"] == {"items": 2, "subjects": 1}
    assert meta["eval_metrics"]["val_mri_psnr"] == pytest.approx(17.25)
    # the report row of the exported variant (train.json's "geometry"), not the headline model's
    assert data["report"]["method"] == "geometry-aware" and data["report"]["n_test_subjects"] == 2
    assert meta["eval_metrics"]["test_psnr_db_mean"] == pytest.approx(21.5)
    assert "SYNTHETIC cohort" in (unpacked / DATA_LICENSE).read_text()
    jsonschema.validate(meta, json.loads(SCHEMA.read_text()))
    # the source bundle is left as it was
    assert CHECKSUM_KEY not in json.loads((bundle / "configs" / "metadata.json").read_text())
    assert not (bundle / "scripts").exists()


def test_data_license_names_the_oai_terms_for_an_oai_import():
    oai = data_license_text("OAI image release: PA knee radiographs paired with DESS MRI ...", NAME, "0.1.0")
    assert "Osteoarthritis Initiative" in oai and "Data Use Agreement" in oai and "SYNTHETIC" not in oai
    synthetic_tree = data_license_text("SYNTHETIC OAI-layout tree made by xray2mri (not patient data): ...", NAME, "0.1.0")
    assert "SYNTHETIC cohort" in synthetic_tree and "Data Use Agreement" not in synthetic_tree
    other = data_license_text("my hospital's knees", NAME, "0.1.0")
    assert "state its source" in other


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
    """Inference from only the zip; one changed byte or a truncated weight file is refused naming the file."""
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
    # the same bundle opened in this process runs its own vendored code and gives the same volume
    assert verify_bundle(unpacked)  # the run left only __pycache__ behind, which is not checked
    np.testing.assert_allclose(Predictor.from_bundle(unpacked).predict(dcm).volume, reference, atol=1e-5)
    assert type(open_bundle(unpacked).network()).__module__.startswith("scripts.")
    # a bad radiograph is the input error this process knows, so `xray2mri predict` skips and lists it
    bad = tmp_path / "not_a_radiograph.dcm"
    bad.write_bytes(b"not DICOM")
    with pytest.raises(XrayInputError, match="not_a_radiograph.dcm"):
        Predictor.from_bundle(unpacked).predict(bad)

    weights = unpacked / "models" / "model.pt"
    original = weights.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    for name, content in (("tampered", bytes(tampered)), ("truncated", original[: len(original) // 2])):
        weights.write_bytes(content)
        with pytest.raises(BundleIntegrityError, match="SHA-256 mismatch") as info:
            verify_bundle(unpacked)
        assert info.value.filename == str(weights), name
        done = _run_inference(unpacked, dcm, tmp_path / f"out_{name}")
        assert done.returncode != 0, name
        assert "BundleIntegrityError" in done.stderr and "model.pt: SHA-256 mismatch" in done.stderr, done.stderr[-2000:]
        assert not (tmp_path / f"out_{name}").exists()
    weights.write_bytes(original)
    assert cli.main(["bundle", "verify", "--bundle", str(unpacked)]) == 0
    (unpacked / "models" / "model.pt2").write_bytes(b"")
    assert cli.main(["bundle", "verify", "--bundle", str(unpacked)]) == 1


def test_a_changed_script_or_config_is_refused_like_a_changed_weight(exported, tmp_path):
    """Loading an exported bundle runs its code: an edited script, an edited config or an added module stops it."""
    _, zip_path = exported
    unpacked = _unpack(zip_path, tmp_path / "unpacked")
    dcm = _dx(tmp_path / "in" / "knee01.dcm")
    script = unpacked / "scripts" / "transforms" / "xray.py"
    config = unpacked / "configs" / "inference.json"
    added = unpacked / "scripts" / "pipeline" / "extra.py"
    edits = [
        (script, lambda: script.write_text(script.read_text() + "\nprint('changed')\n"), "SHA-256 mismatch"),
        (config, lambda: config.write_text(config.read_text().replace('"batch_size": 1', '"batch_size": 2')),
         "SHA-256 mismatch"),
        (added, lambda: added.write_text("import os\n"), "not listed"),
    ]
    for path, edit, reason in edits:
        original = path.read_bytes() if path.exists() else None
        edit()
        with pytest.raises(BundleIntegrityError, match=reason) as info:
            verify_bundle(unpacked)
        assert info.value.filename == str(path)
        with pytest.raises(BundleIntegrityError, match=reason):  # the opener refuses before parsing or importing
            Predictor.from_bundle(unpacked)
        assert cli.main(["bundle", "verify", "--bundle", str(unpacked)]) == 1
        if path == script:  # and python -m monai.bundle run refuses too
            done = _run_inference(unpacked, dcm, tmp_path / "out_script")
            assert done.returncode != 0 and "xray.py: SHA-256 mismatch" in done.stderr, done.stderr[-2000:]
            assert not (tmp_path / "out_script").exists()
        if original is None:
            path.unlink()
        else:
            path.write_bytes(original)
    assert cli.main(["bundle", "verify", "--bundle", str(unpacked)]) == 0


def _download_large_files(bundle: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_download_large_files_fetches_from_a_local_path_and_refuses_a_wrong_hash(exported, tmp_path):
    """large_files.yml in the zoo's format: MONAI's own downloader fetches the weights and checks their SHA-256."""
    _, zip_path = exported
    unpacked = _unpack(zip_path, tmp_path / "unpacked")
    mirror = zip_path.parents[1] / "mirror"  # the --weights-url the fixture exported with
    shutil.rmtree(mirror, ignore_errors=True)
    shutil.copytree(unpacked / "models", mirror / "models")
    listed = (unpacked / LARGE_FILES).read_text()
    # the weight files and the uncertainty calibration that belongs to them (the tiny bundle has one)
    assert listed.count("hash_type: \"sha256\"") == len(WEIGHT_FILES) + 1 and mirror.as_uri() in listed
    assert CALIBRATION_FILE in listed
    shutil.rmtree(unpacked / "models")
    done = _download_large_files(unpacked)
    assert done.returncode == 0, done.stderr[-2000:]
    assert cli.main(["bundle", "verify", "--bundle", str(unpacked)]) == 0  # every weight file back, as exported

    served = mirror / "models" / "model.pt"
    served.write_bytes(served.read_bytes()[:-16])  # the published copy is damaged
    (unpacked / "models" / "model.pt").unlink()
    done = _download_large_files(unpacked)
    assert done.returncode != 0 and "hash check" in done.stderr, done.stderr[-2000:]
    assert not (unpacked / "models" / "model.pt").exists()


def test_export_refuses_weights_of_another_network(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "src")
    torch.save({"encoder.weight": torch.zeros(3)}, bundle / "models" / "model.pt")
    with pytest.raises(ValueError, match="model.pt: weights do not fit"):
        export_bundle(bundle, tmp_path / "dist")
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_an_exported_bundle_without_its_checksums_is_refused(exported, tmp_path):
    """Deleting the checksums (or metadata.json) of a bundle that carries code does not switch verification off."""
    _, zip_path = exported
    unpacked = _unpack(zip_path, tmp_path)
    meta_path = unpacked / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta[CHECKSUM_KEY]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleIntegrityError, match="carries code"):
        open_bundle(unpacked)
    meta_path.unlink()
    with pytest.raises(Exception, match="metadata.json"):
        verify_bundle(unpacked)
