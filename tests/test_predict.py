"""Prediction from DICOM radiographs: round trip through the command, geometry, mirroring back, bad folders.

A tiny bundle is made per module: the real bundle's configs with tiny sizes and a tiny
network, and random weights saved as its models/model.pt. Radiographs are small DX DICOMs
written by the tests (tests/xray_factory.py) or files shipped inside pydicom.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
import xray_factory
from bundle_factory import TINY_SIZES, make_tiny_bundle, run_inference_json
from bundle_factory import write_dx as _dx

from xray2mri.pipeline import cli
from xray2mri.pipeline.serving import writers
from xray2mri.pipeline.serving.files import find_radiographs, output_stem
from xray2mri.pipeline.serving.predict import Predictor
from xray2mri.transforms.geometry import canonical_affine
from xray2mri.transforms.mri import LoadMri


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """The real bundle's configs at tiny sizes, with random weights of the tiny network as models/model.pt."""
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "bundle", whole=False)


def _predict(*args: str) -> int:
    return cli.main(["predict", *args])


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_canonical_affine_is_pil_centred_on_the_field():
    aff = canonical_affine((4, 6, 8), (1.0, 2.0, 3.0))
    assert nib.aff2axcodes(aff) == ("P", "I", "L")
    np.testing.assert_allclose(nib.affines.voxel_sizes(aff), (1.0, 2.0, 3.0))
    np.testing.assert_allclose(aff @ [1.5, 2.5, 3.5, 1.0], [0, 0, 0, 1], atol=1e-12)
    # one number is an isotropic voxel; the centre voxel lands on the given RAS point (the synthetic cohort's use)
    iso = canonical_affine((5, 5, 5), 2.0, (10.0, -20.0, 30.0))
    np.testing.assert_allclose(nib.affines.voxel_sizes(iso), (2.0, 2.0, 2.0))
    np.testing.assert_allclose(iso @ [2, 2, 2, 1], [10.0, -20.0, 30.0, 1], atol=1e-12)


def test_round_trip_nifti_and_dicom(tiny_bundle, tmp_path, capsys):
    """DICOM in -> NIfTI and DICOM series out, with the model's grid, the canonical frame and synthetic marks."""
    dcm = _dx(tmp_path / "in" / "knee01.dcm")
    expected = Predictor.from_bundle(tiny_bundle).predict(dcm).volume

    assert _predict("--bundle", str(tiny_bundle), "--input", str(dcm), "--output", str(tmp_path / "nii")) == 0
    assert _files(tmp_path / "nii") == ["knee01_joint_labels_synthetic.nii.gz", "knee01_mri_synthetic.json",
                                        "knee01_mri_synthetic.nii.gz", "knee01_preview.png", "knee01_uncertainty.nii.gz"]
    img = nib.load(tmp_path / "nii" / "knee01_mri_synthetic.nii.gz")
    assert img.shape == tuple(TINY_SIZES["mri_shape"])
    np.testing.assert_allclose(img.header.get_zooms(), TINY_SIZES["mri_spacing"])
    assert nib.aff2axcodes(img.affine) == ("P", "I", "L")
    np.testing.assert_allclose(img.affine @ [3.5, 3.5, 3.5, 1.0], [0, 0, 0, 1], atol=1e-6)  # centred on the field
    assert img.header["descrip"].tobytes().decode().startswith("SYNTHETIC")
    np.testing.assert_allclose(np.asarray(img.dataobj), expected, atol=1e-6)
    assert "predicted 1 of 1" in capsys.readouterr().out

    args = ["--bundle", str(tiny_bundle), "--input", str(dcm), "--output", str(tmp_path / "dcm"), "--format", "dicom"]
    assert _predict(*args) == 0
    series = tmp_path / "dcm" / "knee01_mri_synthetic"
    assert sorted(p.name for p in (tmp_path / "dcm").iterdir()) == [  # the joint box's map stays NIfTI
        "knee01_joint_labels_synthetic.nii.gz", "knee01_mri_synthetic", "knee01_mri_synthetic.json", "knee01_preview.png",
        "knee01_uncertainty.nii.gz"]
    assert len(list(series.iterdir())) == TINY_SIZES["mri_shape"][0]
    # read back by the project's loader (canonical PIL, RAS affine) and by SimpleITK (LPS)
    from_dicom, from_nifti = LoadMri()(series), LoadMri()(tmp_path / "nii" / "knee01_mri_synthetic.nii.gz")
    np.testing.assert_allclose(from_dicom.numpy(), from_nifti.numpy(), atol=writers.DICOM_RESCALE_SLOPE)
    np.testing.assert_allclose(from_dicom.affine.numpy(), img.affine, atol=1e-4)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    itk = reader.Execute()
    np.testing.assert_allclose(itk.GetSpacing(), TINY_SIZES["mri_spacing"], rtol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(itk), expected, atol=writers.DICOM_RESCALE_SLOPE)
    ds = pydicom.dcmread(next(series.iterdir()))
    assert ds.Modality == "MR" and list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert "SYNTHETIC" in ds.SeriesDescription.upper() and "xray2mri" in ds.SeriesDescription
    assert str(ds.PatientName) == "" and ds.PatientID == writers.pseudonymise_patient_id("PAT-0042")
    assert ds.StudyInstanceUID != pydicom.dcmread(dcm).StudyInstanceUID


class _ColumnRamp(torch.nn.Module):
    """Ignores the radiograph; outputs a volume rising from the first column to the last."""

    def __init__(self, shape):
        super().__init__()
        self.register_buffer("ramp", torch.linspace(0.0, 1.0, shape[2]).expand(*shape).clone())

    def forward(self, x):
        return self.ramp.expand(x.shape[0], 1, *self.ramp.shape)


class _Unproject(torch.nn.Module):
    """Spreads the radiograph (area-resized to the volume's H x W) along the A-P axis."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        plane = torch.nn.functional.interpolate(x, size=self.shape[1:], mode="area")
        return plane.unsqueeze(2).expand(-1, -1, self.shape[0], -1, -1)


def test_left_knee_is_mirrored_back(tiny_bundle, tmp_path):
    """Outputs of left knees are mirrored back: the volume's columns run like the radiograph's."""
    shape = TINY_SIZES["mri_shape"]
    # knees symmetric about their centre column: the same crop whatever the tag says
    right, left = _dx(tmp_path / "r.dcm", "R", fibula=False), _dx(tmp_path / "l.dcm", "L", fibula=False)
    predictor = Predictor.from_bundle(tiny_bundle)

    predictor.network = _ColumnRamp(shape)  # the network always answers the same asymmetric volume
    out_r, out_l = predictor.predict(right), predictor.predict(left)
    assert not out_r.mirrored and out_l.mirrored
    assert out_r.volume[0, 0, 0] < out_r.volume[0, 0, -1]
    np.testing.assert_allclose(out_l.volume, out_r.volume[..., ::-1])
    np.testing.assert_allclose(out_l.affine, out_r.affine)  # same frame; only the anatomy is mirrored

    predictor.network = _Unproject(shape)  # the network copies the radiograph into the volume
    out_r, out_l = predictor.predict(right), predictor.predict(left)
    np.testing.assert_allclose(out_l.volume, out_r.volume, atol=1e-6)
    columns = out_l.volume.mean(axis=(0, 1))
    assert columns[: shape[2] // 2].mean() > columns[shape[2] // 2 :].mean()  # marker on the image's left stays there


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = _dx(folder / "corrupt.dcm")
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])  # truncated in the pixel data
    sr = shutil.copy(xray_factory.testdata("test-SR.dcm"), folder / "report")
    colour = shutil.copy(xray_factory.testdata("SC_rgb_small_odd.dcm"), folder / "colour.dcm")
    return {"corrupt.dcm": corrupt, "report": Path(sr), "colour.dcm": Path(colour)}


def test_bad_folder_keeps_the_good_ones(tiny_bundle, tmp_path, capsys):
    """Corrupt, non-image and colour files are rejected one line each; good ones (and an odd view) are written."""
    inp, out = tmp_path / "in", tmp_path / "out"
    _dx(inp / "good.dcm", "R")
    _dx(inp / "series2" / "IM0001", "L")  # no extension, in a sub-folder
    _dx(inp / "chest.dcm", "R", body_part="CHEST", view_position="LL")
    bad = _bad_files(inp)

    assert _predict("--bundle", str(tiny_bundle), "--input", str(inp), "--output", str(out)) == 1
    captured = capsys.readouterr()
    rejected = [line for line in captured.err.splitlines() if ": rejected: " in line]
    assert len(rejected) == len(bad)
    for path in bad.values():
        (line,) = [r for r in rejected if r.startswith(f"{path}: rejected: ")]
        assert len(line.split(": rejected: ", 1)[1]) > 5, line  # a reason is given
    warnings = [line for line in captured.err.splitlines() if ": warning: " in line]
    assert any("chest.dcm" in w and "CHEST" in w for w in warnings)
    assert any("chest.dcm" in w and "LL" in w for w in warnings)
    assert "predicted 3 of 6" in captured.out and "rejected 3" in captured.out
    assert _files(out) == [
        "chest_joint_labels_synthetic.nii.gz",
        "chest_mri_synthetic.json",
        "chest_mri_synthetic.nii.gz",
        "chest_preview.png",
        "chest_uncertainty.nii.gz",
        "good_joint_labels_synthetic.nii.gz",
        "good_mri_synthetic.json",
        "good_mri_synthetic.nii.gz",
        "good_preview.png",
        "good_uncertainty.nii.gz",
        "series2/IM0001_joint_labels_synthetic.nii.gz",
        "series2/IM0001_mri_synthetic.json",
        "series2/IM0001_mri_synthetic.nii.gz",
        "series2/IM0001_preview.png",
        "series2/IM0001_uncertainty.nii.gz",
    ]  # nothing for the rejected files, no temporary files

    only_bad = tmp_path / "only_bad"
    _bad_files(only_bad)
    assert _predict("--bundle", str(tiny_bundle), "--input", str(only_bad), "--output", str(tmp_path / "o2")) == 2
    assert len([line for line in capsys.readouterr().err.splitlines() if ": rejected: " in line]) == 3
    assert _files(tmp_path / "o2") == []


def test_failed_write_leaves_no_partial_output(tiny_bundle, tmp_path, monkeypatch, capsys):
    """If the preview cannot be written, the volume already written is removed and the file is reported."""
    dcm = _dx(tmp_path / "in" / "knee.dcm")

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers, "write_preview_png", no_space)
    for fmt in ("nifti", "dicom"):
        out = tmp_path / f"out_{fmt}"
        assert _predict("--bundle", str(tiny_bundle), "--input", str(dcm), "--output", str(out), "--format", fmt) == 2
        assert "No space left" in capsys.readouterr().err
        assert not out.exists() or not any(out.rglob("*"))


def test_missing_weights_or_input_is_reported(tiny_bundle, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle / "configs", bundle / "configs")
    assert _predict("--bundle", str(bundle), "--input", str(tmp_path), "--output", str(tmp_path / "o")) == 2
    assert "model.pt" in capsys.readouterr().err
    assert _predict("--bundle", str(tiny_bundle), "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_find_radiographs_and_output_stems(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for name in ("a/1.2.840.5", "a/x.DCM", "a/.DS_Store", "a/.hidden/y.dcm", "out/z.dcm", "b.dcm"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = find_radiographs(tmp_path, exclude=[tmp_path / "out"])
    assert [str(p.relative_to(tmp_path)) for p in found] == ["b.dcm", "a/1.2.840.5", "a/x.DCM"]
    assert output_stem(tmp_path / "a" / "1.2.840.5", tmp_path) == Path("a/1.2.840.5")  # UID names stay whole
    assert output_stem(tmp_path / "a" / "x.DCM", tmp_path) == Path("a/x")
    assert output_stem(tmp_path / "b.dcm") == Path("b")


def test_radiograph_without_a_side_is_predicted_with_a_warning(tiny_bundle, tmp_path, capsys):
    src = _dx(tmp_path / "in" / "noside.dcm", laterality=None)
    assert "ImageLaterality" not in pydicom.dcmread(src) and "Laterality" not in pydicom.dcmread(src)
    assert _predict("--bundle", str(tiny_bundle), "--input", str(src), "--output", str(tmp_path / "out")) == 0
    assert (tmp_path / "out" / "noside_mri_synthetic.nii.gz").exists()
    err = capsys.readouterr().err
    assert "noside.dcm: warning: no ImageLaterality/Laterality" in err


def test_predict_and_inference_json_take_the_same_files_and_agree(tiny_bundle, tmp_path, capsys):
    """One input rule: nested folders and extensionless DICOM are taken, hidden names skipped, by both ways in."""
    from xray2mri.pipeline.serving.volume_outputs import inference_items

    inp = tmp_path / "in"
    _dx(inp / "top.dcm", "R")
    _dx(inp / "visit1" / "001", "L")  # OAI-style: no extension, in a sub-folder
    _dx(inp / "visit2" / "001", "R")  # the same name elsewhere must not collide
    _dx(inp / ".cache" / "old.dcm", "R")  # hidden folder
    _dx(inp / "visit1" / ".001.swp", "R")  # hidden file
    (inp / "README.txt").write_text("not a radiograph")
    expected = ["README.txt", "top.dcm", "visit1/001", "visit2/001"]
    assert [str(p.relative_to(inp)) for p in find_radiographs(inp)] == expected
    items = inference_items(str(inp))
    assert [str(Path(i["xray"]).relative_to(inp)) for i in items] == expected[1:]  # README left out, with a warning

    assert _predict("--bundle", str(tiny_bundle), "--input", str(inp), "--output", str(tmp_path / "p")) == 1
    assert f"{inp / 'README.txt'}: rejected: " in capsys.readouterr().err
    run_inference_json(tiny_bundle, inp, tmp_path / "i")
    volumes = ["top_mri_synthetic.nii.gz", "visit1/001_mri_synthetic.nii.gz", "visit2/001_mri_synthetic.nii.gz"]
    maps = [v.replace("_mri_synthetic", suffix) for v in volumes for suffix in ("_uncertainty", "_joint_labels_synthetic")]
    assert [f for f in _files(tmp_path / "p") if f.endswith(".nii.gz")] == sorted(volumes + maps)
    assert [f for f in _files(tmp_path / "i") if f.endswith(".nii.gz")] == sorted(volumes + maps)
    sidecars = [v.replace(".nii.gz", ".json") for v in volumes]  # both write the same sidecars beside them
    assert [f for f in _files(tmp_path / "i") if f.endswith(".json")] == sidecars
    assert [f for f in _files(tmp_path / "p") if f.endswith(".json")] == sidecars
    for name in volumes + maps:  # the volumes and their uncertainty maps agree, on one grid
        by_predict, by_bundle = nib.load(tmp_path / "p" / name), nib.load(tmp_path / "i" / name)
        np.testing.assert_allclose(by_bundle.affine, by_predict.affine)
        np.testing.assert_allclose(np.asarray(by_bundle.dataobj), np.asarray(by_predict.dataobj), atol=1e-6)
    for sidecar in sidecars:  # both record the out-of-distribution check the same way
        by_predict, by_bundle = (json.loads((tmp_path / d / sidecar).read_text()) for d in ("p", "i"))
        assert {k: by_predict[k] for k in ("ood_score", "ood_threshold", "ood_flag")} == {
            k: by_bundle[k] for k in ("ood_score", "ood_threshold", "ood_flag")}


def test_a_write_error_in_a_folder_is_reported_for_its_file_only(tiny_bundle, tmp_path, monkeypatch, capsys):
    """Writes run in the background; a file whose preview cannot be written loses its volume too, the others keep theirs."""
    inp, out = tmp_path / "in", tmp_path / "out"
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        _dx(inp / name)
    real_preview = writers.write_preview_png

    def preview_fails_for_b(volume, affine, path, title="", **panel):
        if Path(path).name.startswith("b_"):
            raise OSError(28, "No space left on device")
        return real_preview(volume, affine, path, title, **panel)

    monkeypatch.setattr(writers, "write_preview_png", preview_fails_for_b)
    assert _predict("--bundle", str(tiny_bundle), "--input", str(inp), "--output", str(out)) == 1
    captured = capsys.readouterr()
    (line,) = [r for r in captured.err.splitlines() if ": rejected: " in r]
    assert line.startswith(f"{inp / 'b.dcm'}: rejected: ") and "No space left" in line
    assert "predicted 2 of 3" in captured.out
    assert _files(out) == [f"{k}{suffix}" for k in "ac" for suffix in (
        "_joint_labels_synthetic.nii.gz", "_mri_synthetic.json", "_mri_synthetic.nii.gz", "_preview.png", "_uncertainty.nii.gz")]
