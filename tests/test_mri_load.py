"""LoadMri / LoadMrid: NIfTI, DICOM series and enhanced DICOM land in the contract's orientation.

The volumes are made here (tests/mri_factory.py) or ship inside nibabel/pydicom; DICOM
tests also run under pydicom 2.4 (``make test-pydicom2``).
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from mri_factory import (
    MARKER_VALUE,
    marked_volume,
    reorient,
    save_nifti,
    write_dicom_series,
    write_enhanced_mr,
)
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from xray2mri.transforms import MRI_AXCODES, LoadMri, LoadMrid, MriInputError

NIBABEL_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")
LAYOUTS = ("RAS", "LPS", "PIR", "ILA")  # axial RAS and LPS, sagittal as DICOM stores it, an odd one


def _nifti(tmp_path, codes: str = "RAS", **kwargs) -> str:
    data, affine = reorient(*marked_volume(**kwargs), codes)
    return save_nifti(tmp_path / f"{codes}.nii.gz", data, affine)


def _reference(tmp_path):
    """The marked volume loaded from a RAS NIfTI: what every other layout must equal."""
    (tmp_path / "reference").mkdir()
    return LoadMri()(_nifti(tmp_path / "reference", "RAS"))


def _assert_same_volume(actual, expected) -> None:
    np.testing.assert_array_equal(actual.numpy(), expected.numpy())
    np.testing.assert_allclose(actual.affine.numpy(), expected.affine.numpy(), atol=1e-4)


@pytest.mark.parametrize("codes", LAYOUTS)
def test_any_nifti_layout_loads_to_the_same_array_and_affine(tmp_path, codes):
    loaded = LoadMri()(_nifti(tmp_path, codes))
    assert loaded.dtype.is_floating_point and loaded.dtype.itemsize == 4
    assert loaded.shape == (1, 12, 10, 14)  # RAS shape (14, 12, 10) read as (A-P, S-I, R-L)
    assert "".join(nib.aff2axcodes(loaded.affine.numpy())) == MRI_AXCODES
    _assert_same_volume(loaded, _reference(tmp_path))


@pytest.mark.parametrize("codes", LAYOUTS)
def test_axis_0_runs_anterior_to_posterior_axis_1_superior_to_inferior_axis_2_right_to_left(tmp_path, codes):
    array = LoadMri()(_nifti(tmp_path, codes))[0].numpy()
    # the marker fills the anterior-superior-right corner in world coordinates: the start of every axis
    assert np.all(array[:3, :3, :3] == MARKER_VALUE)
    assert np.count_nonzero(array == MARKER_VALUE) == 27


def test_affine_is_world_ras_and_spacing_is_physical(tmp_path):
    path = _nifti(tmp_path, "LPS", spacing=(0.8, 1.0, 1.5))
    loaded = LoadMri()(path)
    affine = loaded.affine.numpy()
    first, last = affine @ [0, 0, 0, 1], affine @ [*(np.array(loaded.shape[1:]) - 1), 1]
    assert first[1] > last[1] and first[2] > last[2] and first[0] > last[0]  # more anterior, superior, right
    np.testing.assert_allclose(loaded.pixdim.numpy(), [1.0, 1.5, 0.8])  # A-P, S-I, R-L spacings
    np.testing.assert_allclose(loaded.meta["original_affine"], nib.load(path).affine)  # the file's own
    assert loaded.meta["filename_or_obj"].endswith("LPS.nii.gz")


@pytest.mark.pydicom2
def test_dicom_series_equals_nifti_despite_shuffled_extensionless_files_and_slice_wise_rescale(tmp_path):
    data, affine = reorient(*marked_volume(), "PIR")  # sagittal slices, as knee DESS is acquired
    data = data * 2  # even values: representable with a 0.5 slope too
    slopes = [1.0, 0.5, 2.0] * 4 + [1.0, 0.5]
    paths = write_dicom_series(tmp_path / "series", data, affine, slopes=slopes, intercept=-50.0)
    assert all("." not in os.path.basename(p) for p in paths)
    (tmp_path / "series" / "README.txt").write_text("not DICOM; the loader skips it")
    from_dicom = LoadMri()(tmp_path / "series")
    from_nifti = LoadMri()(save_nifti(tmp_path / "same.nii", data, affine))
    _assert_same_volume(from_dicom, from_nifti)
    assert from_dicom.meta["source_format"] == "dicom_series"
    assert from_dicom.meta["series_uid"] == pydicom.dcmread(paths[0]).SeriesInstanceUID


@pytest.mark.pydicom2
def test_factory_series_geometry_is_what_simpleitk_reads(tmp_path):
    """Guards the comparison above: the test writer's DICOM geometry, read by GDCM, not by us."""
    data, affine = reorient(*marked_volume(), "PIR")
    write_dicom_series(tmp_path, data, affine)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, affine, atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), data)


@pytest.mark.pydicom2
def test_enhanced_multiframe_uses_per_frame_positions_and_shared_groups(tmp_path):
    data, affine = reorient(*marked_volume(spacing=(0.5, 0.6, 1.2)), "PIR")
    path = write_enhanced_mr(tmp_path / "enhanced.dcm", data, affine, slope=0.5, intercept=-100.0)
    assert pydicom.dcmread(path).SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1"
    loaded = LoadMri()(path)
    assert loaded.shape == (1, 12, 10, 14)
    np.testing.assert_allclose(loaded.pixdim.numpy(), [0.6, 1.2, 0.5], rtol=1e-5)
    _assert_same_volume(loaded, LoadMri()(save_nifti(tmp_path / "same.nii", data, affine)))
    assert loaded.meta["source_format"] == "dicom_enhanced"


@pytest.mark.pydicom2
def test_four_d_dicom_takes_the_chosen_volume(tmp_path):
    data, affine = reorient(*marked_volume(), "PIR")
    enhanced = write_enhanced_mr(tmp_path / "dynamic.dcm", data, affine, volumes=3)
    write_dicom_series(tmp_path / "echoes", data, affine, echoes=2)
    expected = LoadMri()(save_nifti(tmp_path / "plus20.nii", data + 20.0, affine))
    _assert_same_volume(LoadMri(volume_index=2)(enhanced), expected)
    expected = LoadMri()(save_nifti(tmp_path / "plus10.nii", data + 10.0, affine))
    _assert_same_volume(LoadMri(volume_index=1)(tmp_path / "echoes"), expected)
    for source in (enhanced, tmp_path / "echoes"):
        with pytest.raises(MriInputError, match="volume_index"):
            LoadMri()(source)


@pytest.mark.pydicom2
def test_folder_with_two_series_needs_a_series_uid(tmp_path):
    data, affine = marked_volume()
    first, second = generate_uid(), generate_uid()
    write_dicom_series(tmp_path, data, affine, series_uid=first, seed=1)
    write_dicom_series(tmp_path, data + 2.0, affine, series_uid=second, seed=2)
    with pytest.raises(MriInputError, match="2 series") as refused:
        LoadMri()(tmp_path)
    assert first in refused.value.reason and second in refused.value.reason
    assert refused.value.filename == str(tmp_path)
    picked = LoadMri(series_uid=second)(tmp_path)
    expected = LoadMri()(save_nifti(tmp_path / "second.nii", data + 2.0, affine))
    _assert_same_volume(picked, expected)
    with pytest.raises(MriInputError, match="no series '1.2.3'"):
        LoadMri(series_uid="1.2.3")(tmp_path)


def test_real_nibabel_anatomical_matches_nibabel_own_reorientation():
    path = os.path.join(NIBABEL_DATA, "anatomical.nii")
    img = nib.load(path)
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(tuple(MRI_AXCODES))
    )
    expected = img.as_reoriented(ornt)
    loaded = LoadMri()(path)
    np.testing.assert_array_equal(loaded[0].numpy(), expected.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(loaded.affine.numpy(), expected.affine, atol=1e-5)


def test_real_nibabel_4d_is_refused_without_an_index_and_sliced_with_one():
    path = os.path.join(NIBABEL_DATA, "example4d.nii.gz")
    with pytest.raises(MriInputError, match=r"4-D input with 2 volumes.*volume_index=0\.\.1") as refused:
        LoadMri()(path)
    assert refused.value.filename == path
    volume = LoadMri(volume_index=1)(path)
    expected = np.asarray(nib.load(path).dataobj[..., 1], dtype=np.float32)
    assert volume.shape[1:] != expected.shape  # really reoriented (LAS on disk)...
    assert np.sort(volume.numpy().ravel()).tolist() == np.sort(expected.ravel()).tolist()  # ...same voxels
    with pytest.raises(MriInputError, match="volume_index=2 but the input has 2"):
        LoadMri(volume_index=2)(path)


def test_dictionary_version_loads_each_key_and_leaves_the_rest(tmp_path):
    path = _nifti(tmp_path, "LPS")
    item = LoadMrid(keys=["mri", "labels"], allow_missing_keys=True)({"mri": path, "subject": "SYN0000"})
    assert item["subject"] == "SYN0000" and "labels" not in item
    _assert_same_volume(item["mri"], LoadMri()(path))
    with pytest.raises(KeyError):
        LoadMrid(keys="labels")({"mri": path})


# -- refusals -------------------------------------------------------------------------------
def _nan_nifti(tmp_path):
    data, affine = marked_volume()
    data[3, 4, 5] = np.nan
    return save_nifti(tmp_path / "nan.nii.gz", data, affine)


def _inf_nifti(tmp_path):
    data, affine = marked_volume()
    data[1, 1, 1] = -np.inf
    return save_nifti(tmp_path / "inf.nii", data, affine)


def _flat_nifti(tmp_path):
    return save_nifti(tmp_path / "slice.nii", np.ones((8, 9), np.float32), np.eye(4))


def _truncated_nifti(tmp_path):
    path = _nifti(tmp_path)
    with open(path, "rb") as f:
        head = f.read(200)
    with open(path, "wb") as f:
        f.write(head)
    return path


def _not_an_image(tmp_path):
    path = tmp_path / "notes"
    path.write_text("this is not a volume")
    return str(path)


def _single_frame_dicom(tmp_path):
    return get_testdata_file("MR_small.dcm")  # a real MR slice that ships with pydicom


def _multiframe_without_groups(tmp_path):
    """A 10-frame MR file whose frames have no functional groups (a legacy multi-frame export)."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = ds.pixel_array
    ds.NumberOfFrames = 10
    ds.PixelData = np.stack([pixels + k for k in range(10)]).astype(pixels.dtype).tobytes()
    path = str(tmp_path / "legacy_multiframe.dcm")
    ds.save_as(path)
    assert pydicom.dcmread(path).pixel_array.shape == (10, ds.Rows, ds.Columns)
    return path


def _empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("no images here")
    return str(tmp_path / "empty")


def _series(tmp_path, **kwargs):
    data, affine = marked_volume()
    return write_dicom_series(tmp_path / "series", data, affine, **kwargs)


def _missing_slice(tmp_path):
    paths = _series(tmp_path)
    os.remove(paths[4])
    return str(tmp_path / "series")


def _uneven_spacing(tmp_path):
    _series(tmp_path, slice_offsets_mm=[0.0] * 6 + [0.3] * 4)
    return str(tmp_path / "series")


def _mixed_orientation(tmp_path):
    _series(tmp_path, orientations=[None] * 9 + [[0, 1, 0, 0, 0, -1]])
    return str(tmp_path / "series")


def _sheared_stack(tmp_path):
    _series(tmp_path, in_plane_shift_mm=0.5)
    return str(tmp_path / "series")


def _frame_without_position(tmp_path):
    data, affine = marked_volume()
    path = write_enhanced_mr(tmp_path / "enhanced.dcm", data, affine)
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence
    ds.save_as(path)
    return path


def _repeated_slice(tmp_path):
    paths = _series(tmp_path)
    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(str(tmp_path / "series" / "copy"))
    return str(tmp_path / "series")


def _missing_path(tmp_path):
    return str(tmp_path / "nowhere.nii.gz")


NIFTI_REFUSALS = {
    "nan": (_nan_nifti, "1 voxels are NaN or infinite", False),
    "inf": (_inf_nifti, "1 voxels are NaN or infinite", False),
    "2-D": (_flat_nifti, "expected a 3-D volume", False),
    "truncated": (_truncated_nifti, "cannot be read as NIfTI", True),
    "not an image": (_not_an_image, "not a NIfTI", True),
    "missing": (_missing_path, "no such file", False),
}
DICOM_REFUSALS = {
    "single frame": (_single_frame_dicom, "single-frame DICOM image is one slice", False),
    "multi-frame without groups": (
        _multiframe_without_groups,
        "multi-frame DICOM of 10 frames without PerFrameFunctionalGroupsSequence",
        False,
    ),
    "empty folder": (_empty_folder, "no DICOM images", False),
    "missing slice": (_missing_slice, "non-uniform slice spacing: 3 mm between slices 3 and 4", False),
    "uneven spacing": (_uneven_spacing, "non-uniform slice spacing", False),
    "mixed orientation": (_mixed_orientation, "different ImageOrientationPatient", False),
    "sheared": (_sheared_stack, "do not follow the slice normal", False),
    "frame without position": (
        _frame_without_position,
        "ImagePositionPatient missing in PlanePositionSequence",
        False,
    ),
    "repeated slice": (_repeated_slice, "1 to 2 images per slice position", False),
}


def _assert_refused(tmp_path, make, reason: str, chained: bool) -> None:
    source = make(tmp_path)
    with pytest.raises(MriInputError) as refused:
        LoadMri()(source)
    assert refused.value.filename == os.fspath(source)
    assert reason in refused.value.reason
    assert str(refused.value).startswith(os.fspath(source))
    assert (refused.value.__cause__ is not None) == chained


@pytest.mark.parametrize("case", sorted(NIFTI_REFUSALS))
def test_bad_nifti_input_is_refused_with_the_file_and_reason(tmp_path, case):
    _assert_refused(tmp_path, *NIFTI_REFUSALS[case])


@pytest.mark.pydicom2
@pytest.mark.parametrize("case", sorted(DICOM_REFUSALS))
def test_bad_dicom_input_is_refused_with_the_file_and_reason(tmp_path, case):
    _assert_refused(tmp_path, *DICOM_REFUSALS[case])


@pytest.mark.pydicom2
def test_a_spacing_within_tolerance_is_accepted(tmp_path):
    _series(tmp_path, slice_offsets_mm=[0.0] * 6 + [0.005] * 4)  # 0.3 % of the 1.5 mm step
    assert LoadMri()(tmp_path / "series").shape == (1, 12, 10, 14)
    with pytest.raises(MriInputError, match="non-uniform"):
        LoadMri(spacing_tolerance=0.001)(tmp_path / "series")
