"""Tiny bundles and radiographs for the prediction, export and MONAI Label tests.

A tiny bundle is the real bundle (its configs, and docs and LICENSE when ``whole``) with tiny
sizes and a tiny network written into the configs, and random weights of that network saved as
``models/model.pt``; a test radiograph is a DX DICOM of an analytic knee at 0.5 mm, which the
bundle's knee finder places and crops to the tiny bundle's 32 mm field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import xray_factory

from xray2mri.pipeline.serving.uncertainty import CALIBRATION_FILE, UncertaintyCalibration, save_calibration
from xray2mri.pipeline.training.engine import network_from_bundle

REAL_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "knee_xray2mri"
# 16 px at 2 mm = 32 mm field; the MRI covers the same 32 mm with 8 voxels of 4 mm.
TINY_SIZES = {"xray_size": [16, 16], "xray_spacing": [2.0, 2.0], "mri_shape": [8, 8, 8], "mri_spacing": [4.0, 4.0, 4.0]}
TINY_NET = {
    "cae_channels": [4, 8],
    "cae_strides": [2, 2],
    "cae_num_res_units": 0,
    "latent_size": 8,
    "gen_start_channels": 4,
    "gen_channels": [4],
    "gen_strides": [2, 1],
}
#: The uncertainty calibration a tiny bundle gets (no validation data to fit one on): plain factors,
#: OOD components relative to 1, no threshold (nothing flagged); tests that need a fit make their own.
TINY_CALIBRATION = UncertaintyCalibration(
    factors={"80": 1.0, "90": 1.5, "95": 2.0}, ood_reference={"uncertainty": 1.0, "reconstruction": 1.0},
    fitted_on={"note": "tests/bundle_factory.py placeholder, not fitted"},
)
ROWS = COLS = 64  # the tiny bundle's 32 mm field at 0.5 mm
#: Size (px, 0.5 mm) of the test radiographs and their knee's joint centre (row, col).
KNEE_ROWS, KNEE_COLS = 360, 300
KNEE_CENTRE = (170, 150)


def make_tiny_bundle(bundle: Path, seed: int = 0, whole: bool = True, sizes: dict | None = None,
                     tissue: bool = False) -> Path:
    """Write a tiny bundle at ``bundle`` (configs only unless ``whole``) with random weights; returns it.

    ``sizes`` replaces :data:`TINY_SIZES` (e.g. volumes large enough for the 11-voxel SSIM window);
    ``tissue`` trains-as-declared a tissue head (train.json ``tissue_weight`` 1.0, weights with the head).
    """
    if whole:
        shutil.copytree(REAL_BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    else:
        shutil.copytree(REAL_BUNDLE / "configs", bundle / "configs")
    sizes = sizes or TINY_SIZES
    for config in (bundle / "configs").glob("*.json"):
        cfg = json.loads(config.read_text())
        cfg.update({k: v for k, v in sizes.items() if k in cfg})
        if "uncertainty" in cfg:  # tiny bundles test the path with the head, whatever the real bundle says
            cfg["uncertainty"] = True
        if tissue and "tissue_weight" in cfg:
            cfg["tissue_weight"] = 1.0
        if isinstance(cfg.get("network_def"), dict):
            cfg["network_def"].update(TINY_NET)
        if "network_data_format" in cfg:  # metadata.json states the sizes train.json sets
            image, pred = cfg["network_data_format"]["inputs"]["image"], cfg["network_data_format"]["outputs"]["pred"]
            image.update(spatial_shape=sizes["xray_size"], pixel_spacing_mm=sizes["xray_spacing"])
            pred.update(spatial_shape=sizes["mri_shape"], voxel_spacing_mm=sizes["mri_spacing"])
        config.write_text(json.dumps(cfg, indent=2))
    torch.manual_seed(seed)
    (bundle / "models").mkdir()
    torch.save(network_from_bundle(bundle).state_dict(), bundle / "models" / "model.pt")
    save_calibration(TINY_CALIBRATION, bundle / CALIBRATION_FILE)
    return bundle


def write_dx(
    path: Path, laterality: str | None = "R", marker_cols: slice = slice(4, 20), fibula: bool = True, **tags
) -> Path:
    """A DX knee radiograph (analytic knee, 0.5 mm pixels) with a bright block in ``marker_cols``.

    The knee's joint centre is at :data:`KNEE_CENTRE`; the block lies above the joint line,
    inside the tiny bundle's 32 mm field around it, at ``marker_cols`` of that field's 64
    columns. The fibula is on the side ``laterality`` says (right when None); ``fibula=False``
    draws a knee symmetric about its centre column.
    """
    r, c = KNEE_CENTRE
    att = xray_factory.knee_attenuation(KNEE_ROWS, KNEE_COLS, 0.5, KNEE_CENTRE, side=laterality or "R", fibula=fibula)
    pixels = xray_factory.to_stored(att)
    field = slice(c - COLS // 2, c + COLS // 2)
    pixels[r - COLS // 2 + 4: r - COLS // 2 + 20, field][:, marker_cols] = 4095  # saturated, as burned in
    ds = xray_factory.make_radiograph(pixels, imager_spacing=(0.5, 0.5), laterality=laterality, **tags)
    ds.PatientID = "PAT-0042"
    path.parent.mkdir(parents=True, exist_ok=True)
    return xray_factory.save(ds, path)


def run_inference_json(bundle: Path, inputs: Path, output_dir: Path) -> None:
    """Run the bundle's inference.json on ``inputs`` (a file or folder) into ``output_dir``, on the CPU."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"), logging_file=False, workflow_type=None,
        meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle),
        input=str(inputs), output_dir=str(output_dir), device="$torch.device('cpu')",
    )
    wf.initialize()
    wf.run()
    wf.finalize()
