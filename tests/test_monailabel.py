"""The MONAI Label app served by a real server: /info/ lists the task, /infer returns the SYNTHETIC volume.

The server runs in the MONAI Label venv (``make .venv-monailabel/.installed``; its pins clash with
the main venv's pydicom 3), on a free loopback port, with a tiny exported-like bundle (random
weights) and a studies folder holding a radiograph written by the test, and a NIfTI image standing
for what a DICOMweb datastore hands over (refused with its reason). The 3D Slicer path
(``apps/monailabel/slicer_load_volume.py``, run in Slicer's Python console) makes the same HTTP
call; its fetching half runs here against the server. One server start; the whole process group
is killed at the end, whatever happens.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bundle_factory import TINY_SIZES, make_tiny_bundle
from bundle_factory import write_dx as _dx

from xray2mri.pipeline.data.synth.tissues import NUM_CLASSES
from xray2mri.pipeline.serving.predict import Predictor

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-monailabel"
APP = REPO / "apps" / "monailabel"
SLICER_SNIPPET = APP / "slicer_load_volume.py"
TASK = "xray2mri"
#: Seconds allowed for the server to answer /info/ (it needs ~30 s on 2 busy cores), and for one inference.
START_TIMEOUT_S = 90
INFER_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _wait_for_info(url: str, proc: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"MONAI Label server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            return _get_json(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            time.sleep(1.0)
    pytest.fail(f"MONAI Label server did not answer {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Kill the server's process group (uvicorn workers included), TERM first, then KILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _slicer_snippet():
    """The Slicer snippet as a module (its fetching half needs only the standard library)."""
    spec = importlib.util.spec_from_file_location("slicer_load_volume", SLICER_SNIPPET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_server_lists_task_and_returns_synthetic_volume(tmp_path):
    python = VENV / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"{python} is missing: run `make .venv-monailabel/.installed` (MONAI Label lives in its own venv)")

    # with the tissue head, so the server also returns a label map
    bundle = make_tiny_bundle(tmp_path / "bundle" / "knee_xray2mri", tissue=True)
    studies = tmp_path / "studies"
    _dx(studies / "knee01.dcm", laterality="L")  # a left knee: the output is mirrored back to its side
    # what MONAI Label's DICOMweb datastore hands over: the radiograph converted to NIfTI
    nib.Nifti1Image(np.full((64, 64), 100, dtype=np.float32), np.eye(4)).to_filename(studies / "knee02.nii.gz")
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(VENV),
        "OMP_NUM_THREADS": "1",
        "MONAI_LABEL_APP_DIR": str(APP),
    }
    env.pop("PYTHONPATH", None)
    cmd = [str(python), "-m", "monailabel.main", "start_server", "--app", str(APP), "--studies", str(studies),
           "--host", "127.0.0.1", "--port", str(port), "--conf", "bundle", str(bundle)]
    log = tmp_path / "server.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        info = _wait_for_info(f"{base}/info/", proc, log)
        assert TASK in info["models"], info.get("models")
        assert info["models"][TASK]["type"] == "others"
        assert info["models"][TASK]["random_weights"] is False

        request = urllib.request.Request(f"{base}/infer/{TASK}?image=knee01&output=image", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=INFER_TIMEOUT_S) as r:
            body = r.read()
            disposition = r.headers.get("content-disposition", "")
        assert ".nii.gz" in disposition, disposition
        img = nib.Nifti1Image.from_stream(io.BytesIO(gzip.decompress(body)))
        assert img.shape == tuple(TINY_SIZES["mri_shape"])
        assert img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.header.get_zooms(), TINY_SIZES["mri_spacing"])
        assert nib.aff2axcodes(img.affine) == ("P", "I", "L")
        assert img.header["descrip"].tobytes().decode().startswith("SYNTHETIC")
        data = np.asarray(img.dataobj)
        assert np.isfinite(data).all() and data.std() > 0
        # nothing was stored as a label of the radiograph
        assert not [p for p in (studies / "labels").rglob("*") if p.is_file()]

        # the Slicer snippet's request gives the same volume
        snippet = _slicer_snippet()
        fetched = nib.load(snippet.fetch_generated_mri(base, "knee01", dest_dir=str(tmp_path)))
        np.testing.assert_allclose(np.asarray(fetched.dataobj), data, atol=1e-6)
        np.testing.assert_allclose(fetched.affine, img.affine)

        # the calibrated uncertainty map of the same knee (the tiny bundle is calibrated), on the same grid
        map_path = snippet.fetch_uncertainty_map(base, "knee01", dest_dir=str(tmp_path))
        assert map_path is not None and map_path != fetched.get_filename()
        umap = nib.load(map_path)
        assert umap.shape == img.shape
        np.testing.assert_allclose(umap.affine, img.affine)
        assert umap.header["descrip"].tobytes().decode().startswith("SYNTHETIC")
        spread = np.asarray(umap.dataobj, dtype=np.float32)
        assert np.isfinite(spread).all() and spread.min() >= 0 and spread.max() > 0
        assert not np.allclose(spread, data)
        # a bundle without a map answers with the words the snippet listens for
        assert snippet.NO_MAP_MARK in (APP / "lib" / "infers" / "xray2mri.py").read_text()

        # the tissue head's label map of the same knee: uint8 classes on the same grid, mirrored back like the volume
        labels_path = snippet.fetch_label_map(base, "knee01", dest_dir=str(tmp_path))
        assert labels_path is not None
        labels = nib.load(labels_path)
        assert labels.shape == img.shape and labels.get_data_dtype() == np.uint8
        np.testing.assert_allclose(labels.affine, img.affine)
        assert labels.header["descrip"].tobytes().decode().startswith("SYNTHETIC")
        served = np.asarray(labels.dataobj)
        assert served.max() < NUM_CLASSES
        local = Predictor.from_bundle(bundle).predict(studies / "knee01.dcm").labels  # what predict writes
        assert np.mean(served == local) > 0.99
        assert snippet.NO_LABELS_MARK in (APP / "lib" / "infers" / "xray2mri.py").read_text()

        # a study converted to NIfTI (DICOMweb) is refused, saying why and what to do
        with pytest.raises(RuntimeError) as info:
            snippet.fetch_generated_mri(base, "knee02", dest_dir=str(tmp_path))
        message = str(info.value)
        assert "HTTP 422" in message and "knee02.nii.gz: a NIfTI image" in message and "DICOM" in message, message
    finally:
        _stop(proc)
    assert proc.poll() is not None
