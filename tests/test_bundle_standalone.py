"""The exported bundle on a machine without this project: a fresh venv with only what metadata.json lists.

The venv gets ``torch`` (``pytorch_version``: the CPU wheel on disk), ``monai`` and ``numpy`` at
the versions metadata.json states, and exactly its ``required_packages_version``, from the
package index; never ``xray2mri``. It is cached under the repository's ignored
``.venv-standalone/`` and rebuilt only when the metadata's package list changes, so a second run
costs the bundle commands alone. In it, from the unpacked zip of a tiny trained-shape bundle,
the commands the model card documents must work: ``verify_metadata`` (offline, the schema from
tests/schemas), ``verify_net_in_out``, ``inference.json`` on a radiograph DICOM (a NIfTI out) and
``evaluate.json`` on a two-subject datalist.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import pytest
from bundle_factory import make_tiny_bundle

from xray2mri.pipeline.serving.export import export_bundle

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "tests" / "schemas" / "meta_schema_20240725.json"
VENV = REPO / ".venv-standalone"
NAME = "knee_xray2mri"
# large enough for evaluate.json's 11-voxel 3-D SSIM window; the real bundle's 160 mm field
SIZES = {"xray_size": [32, 32], "xray_spacing": [5.0, 5.0], "mri_shape": [16, 16, 16], "mri_spacing": [10.0, 10.0, 10.0]}

pytestmark = pytest.mark.slow


def _requirements(metadata: dict) -> list[str]:
    """What a user installs for the bundle: torch first (its own step), then monai, numpy and the listed packages."""
    listed = [f"{name}=={version}" for name, version in sorted(metadata["required_packages_version"].items())]
    return [f"monai=={metadata['monai_version']}", f"numpy=={metadata['numpy_version']}", *listed]


def _clean_env() -> dict[str, str]:
    """The environment without anything that would let the venv see this project."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _standalone_python(metadata: dict) -> Path:
    """The cached venv's python for this package list (built when missing or when the list changed)."""
    torch_req = f"torch=={metadata['pytorch_version']}"
    key = hashlib.sha256(json.dumps([torch_req, *_requirements(metadata)]).encode()).hexdigest()
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if stamp.is_file() and stamp.read_text() == key and python.is_file():
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    env = _clean_env()
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(python), "-m", "pip", "install", "-q", torch_req],
        [str(python), "-m", "pip", "install", "-q", *_requirements(metadata)],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"{cmd}: {done.stderr[-3000:]}"
    stamp.write_text(key)
    return python


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> Path:
    """The unpacked zip of a tiny bundle (the real configs at test sizes, random weights)."""
    root = tmp_path_factory.mktemp("standalone")
    bundle = make_tiny_bundle(root / "src" / NAME, sizes=SIZES)
    zip_path = export_bundle(bundle, root / "dist", cohort="SYNTHETIC test cohort")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "unpacked")
    return root / "unpacked" / NAME


def test_the_exported_bundle_runs_with_only_the_packages_its_metadata_lists(unpacked, tmp_path, tiny_cohort):
    metadata = json.loads((unpacked / "configs" / "metadata.json").read_text())
    assert not [k for k in metadata["required_packages_version"] if k.lower() == "xray2mri"]
    python = _standalone_python(metadata)

    absent = _run(python, unpacked, "-c", "import importlib.util as u; print(u.find_spec('xray2mri'))")
    assert absent.returncode == 0 and absent.stdout.strip() == "None", absent.stderr  # this project is not there

    schema = tmp_path / SCHEMA.name  # verify_metadata downloads the schema unless it is already there
    shutil.copy(SCHEMA, schema)
    done = _run(python, unpacked, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
                "--filepath", str(schema))
    assert done.returncode == 0, done.stderr[-3000:]

    done = _run(python, unpacked, "-m", "monai.bundle", "verify_net_in_out", "--net_id", "network_def",
                "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]

    # inference.json on a radiograph DICOM, with the overrides the model card documents
    dcm = sorted(tiny_cohort.glob("SYN*/*_xray.dcm"))[0]
    done = _run(python, unpacked, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                "--input", str(dcm), "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    img = nib.load(tmp_path / "out" / f"{dcm.stem}_mri_synthetic.nii.gz")
    assert img.shape == tuple(SIZES["mri_shape"]) and bytes(img.header["descrip"]).startswith(b"SYNTHETIC")

    # evaluate.json over train.json on a two-subject datalist
    items = json.loads((tiny_cohort / "datalist.json").read_text())
    pool = [i for split in ("test", "validation", "training") for i in items[split]]
    two = pool[:2]
    datalist = tmp_path / "two.json"
    datalist.write_text(json.dumps({"description": "two SYNTHETIC subjects", "training": two, "validation": two,
                                    "test": two}))
    done = _run(python, unpacked, "-m", "monai.bundle", "run",
                "--config_file", "['configs/train.json','configs/evaluate.json']",
                "--dataset_dir", str(tiny_cohort), "--datalist", str(datalist), "--output_dir", str(tmp_path / "eval"),
                "--num_workers", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = dict(line.split(",")[:2] for line in (tmp_path / "eval" / "metrics.csv").read_text().splitlines())
    assert {"val_mri_psnr", "val_mri_ssim"} <= set(rows)
    for item in two:
        assert (tmp_path / "eval" / "predictions" / f"{item['subject']}_mri_pred.nii.gz").is_file()
