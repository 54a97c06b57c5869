"""Writers of generated volumes: geometry survives NIfTI and DICOM, everything is marked synthetic, writes are atomic."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from xray2mri.pipeline.serving import writers
from xray2mri.transforms.geometry import canonical_affine


def _volume(shape=(5, 6, 7), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _affines() -> dict[str, np.ndarray]:
    ras = np.diag([0.9, 1.1, 1.7, 1.0])
    ras[:3, 3] = (-10.0, 4.0, 22.0)
    return {"PIL": canonical_affine((5, 6, 7), (1.5, 1.0, 0.8)), "RAS": ras}


def _source() -> Dataset:
    src = Dataset()
    src.PatientName = "Doe^Jane"
    src.PatientID = "12345"
    src.PatientBirthDate = "19600101"
    src.StudyInstanceUID = generate_uid()
    src.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    src.SOPInstanceUID = generate_uid()
    src.Laterality = "L"
    src.BodyPartExamined = "KNEE"
    return src


def _read_series(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_nifti_keeps_data_affine_and_says_synthetic(tmp_path):
    vol, aff = _volume(), _affines()["PIL"]
    out = writers.write_nifti(vol, aff, tmp_path / "sub" / "x_mri_synthetic.nii.gz")
    img = nib.load(out)
    np.testing.assert_array_equal(np.asarray(img.dataobj), vol)
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)
    assert nib.aff2axcodes(img.affine) == ("P", "I", "L")
    assert img.header["descrip"].tobytes().decode().startswith("SYNTHETIC")
    assert sorted(p.name for p in out.parent.iterdir()) == ["x_mri_synthetic.nii.gz"]  # no temp left


@pytest.mark.parametrize("frame", ["PIL", "RAS"])
def test_dicom_series_matches_nifti_in_world_space(tmp_path, frame):
    """Every voxel of the DICOM series lands at the same LPS point with the same value as in the NIfTI."""
    vol, aff = _volume(), _affines()[frame]
    nii = sitk.ReadImage(str(writers.write_nifti(vol, aff, tmp_path / "v.nii.gz")))
    series = _read_series(writers.write_dicom_series(vol, aff, tmp_path / "v_dcm"))
    arr = sitk.GetArrayFromImage(series)  # (slices, rows, cols), slices in the reader's order
    assert arr.shape == vol.shape
    spacing = np.linalg.norm(aff[:3, :3], axis=0)  # per array axis (0, 1, 2)
    np.testing.assert_allclose(series.GetSpacing(), spacing[::-1], rtol=1e-5)
    for k, r, c in np.ndindex(vol.shape):
        p_nii = nii.TransformIndexToPhysicalPoint((k, r, c))
        ras = aff @ np.array([k, r, c, 1.0])
        np.testing.assert_allclose(p_nii, [-ras[0], -ras[1], ras[2]], atol=1e-4)  # LPS = RAS with x, y negated
        i, j, s = series.TransformPhysicalPointToIndex(p_nii)
        np.testing.assert_allclose(series.TransformIndexToPhysicalPoint((i, j, s)), p_nii, atol=1e-4)
        assert abs(arr[s, j, i] - vol[k, r, c]) <= writers.DICOM_RESCALE_SLOPE / 2 + 1e-7


def test_dicom_series_is_marked_synthetic_with_new_uids_and_no_name(tmp_path):
    src = _source()
    folder = writers.write_dicom_series(_volume(), _affines()["PIL"], tmp_path / "s", source=src)
    files = sorted(folder.iterdir())
    assert len(files) == 5
    dss = [pydicom.dcmread(f) for f in files]
    ds = dss[0]
    assert ds.Modality == "MR"
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert "SYNTHETIC" in ds.SeriesDescription.upper() and "xray2mri" in ds.SeriesDescription
    assert str(ds.PatientName) == ""
    assert ds.PatientID == writers.pseudonymise_patient_id("12345") != "12345"
    assert "PatientBirthDate" not in ds or not ds.PatientBirthDate
    assert ds.StudyInstanceUID != src.StudyInstanceUID
    assert len({d.SOPInstanceUID for d in dss}) == 5 and src.SOPInstanceUID not in {d.SOPInstanceUID for d in dss}
    assert len({d.SeriesInstanceUID for d in dss}) == 1
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ds.Laterality == "L"
    assert (ds.BitsAllocated, ds.PixelRepresentation) == (16, 0)
    np.testing.assert_allclose(float(ds.RescaleSlope), writers.DICOM_RESCALE_SLOPE)
    assert float(ds.RescaleIntercept) == 0.0


def test_dicom_patient_id_policies(tmp_path):
    copied = writers.write_dicom_series(_volume((2, 3, 4)), np.eye(4), tmp_path / "c", _source(), patient_id="copy")
    none = writers.write_dicom_series(_volume((2, 3, 4)), np.eye(4), tmp_path / "n", _source(), patient_id="none")
    assert pydicom.dcmread(next(copied.iterdir())).PatientID == "12345"
    assert pydicom.dcmread(next(none.iterdir())).PatientID == ""
    assert writers.pseudonymise_patient_id("12345") == writers.pseudonymise_patient_id(" 12345 ")
    assert writers.pseudonymise_patient_id("12345") != writers.pseudonymise_patient_id("12346")
    assert writers.pseudonymise_patient_id("") == ""


def test_dicom_values_outside_unit_range_are_clipped(tmp_path):
    vol = np.array([-0.5, 0.25, 1.5, np.nan], dtype=np.float32).reshape(1, 2, 2)
    arr = sitk.GetArrayFromImage(_read_series(writers.write_dicom_series(vol, np.eye(4), tmp_path / "c")))
    np.testing.assert_allclose(arr.ravel(), [0.0, 0.25, 1.0, 0.0], atol=1e-5)


def test_rewriting_a_series_replaces_it_whole(tmp_path):
    writers.write_dicom_series(_volume((6, 3, 3)), np.eye(4), tmp_path / "s")
    writers.write_dicom_series(_volume((2, 3, 3)), np.eye(4), tmp_path / "s")
    assert len(list((tmp_path / "s").iterdir())) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_failed_writes_leave_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_save = Dataset.save_as

    def flaky_save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_as", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        writers.write_dicom_series(_volume(), np.eye(4), tmp_path / "s")

    def broken_save(img, filename):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        writers.write_nifti(_volume(), np.eye(4), tmp_path / "v.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_preview_png_is_written(tmp_path):
    out = writers.write_preview_png(_volume((8, 10, 12)), _affines()["PIL"], tmp_path / "p_preview.png", "knee.dcm")
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out) as im:
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 0  # the planes are drawn, not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["p_preview.png"]


def test_rle_gzip_stores_the_same_nifti_as_nibabels_gzip(tmp_path):
    """``gzip_rle`` changes only how the bytes are compressed: a gzip file holding nibabel's exact NIfTI."""
    import gzip

    vol, aff = _volume((9, 10, 11)), _affines()["PIL"]
    plain = writers.write_nifti(vol, aff, tmp_path / "plain.nii.gz", data_dtype="uint16")
    rle = writers.write_nifti(vol, aff, tmp_path / "rle.nii.gz", data_dtype="uint16", gzip_rle=True)
    assert gzip.decompress(rle.read_bytes()) == gzip.decompress(plain.read_bytes())
    img = nib.load(rle)
    np.testing.assert_allclose(np.asarray(img.dataobj), vol, atol=1e-4)  # uint16 with scl_slope
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.nii.gz", "rle.nii.gz"]  # no temp left


def test_rle_gzip_that_fails_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(img, path):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(writers, "_save_gzip_rle", broken)
    with pytest.raises(OSError, match="disk full"):
        writers.write_nifti(_volume(), np.eye(4), tmp_path / "u.nii.gz", gzip_rle=True)
    assert list(tmp_path.iterdir()) == []


def test_preview_with_a_radiograph_is_grey_with_a_yellow_crop_box(tmp_path):
    """A palette PNG: every pixel a grey level, but the knee's box and centre, drawn in the mark colour."""
    from PIL import Image

    radiograph = np.random.default_rng(1).random((200, 160), dtype=np.float32)
    out = writers.write_preview_png(_volume((8, 10, 12)), _affines()["PIL"], tmp_path / "p_preview.png", "knee.dcm",
                                    radiograph=radiograph, crop_box=[50, 40, 150, 120], uncertainty=_volume((8, 10, 12)))
    with Image.open(out) as im:
        assert im.mode == "P" and im.size == (writers.PREVIEW_SIZE[0] * 4 // 3, im.size[1])
        rgb = np.asarray(im.convert("RGB")).astype(int)
    mark = np.all(rgb == writers._MARK_RGB, axis=-1)
    assert mark.sum() > 2 * (100 + 80)  # the box's outline (2 px wide) at least
    grey = rgb[~mark]
    assert np.all(grey[:, 0] == grey[:, 1]) and np.all(grey[:, 1] == grey[:, 2])
    assert grey[:, 0].std() > 0  # panels drawn


@pytest.mark.parametrize("size", [1, 2, 100, 101, 4097])
def test_percentile_99_is_numpys(size):
    values = np.random.default_rng(size).random(size, dtype=np.float32).reshape(-1, 1)
    assert writers._percentile_99(values) == pytest.approx(float(np.percentile(values, 99)), rel=1e-6)
