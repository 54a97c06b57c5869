"""PreprocessMri / PreprocessMrid: physical size survives resampling, range and shape are the caller's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from mri_factory import save_nifti, sphere_volume

from xray2mri.transforms import LoadMri, PreprocessMri, PreprocessMrid

RADIUS_MM = 6.0


def _loaded(tmp_path, data: np.ndarray, affine: np.ndarray, name: str = "volume.nii.gz"):
    return LoadMri()(save_nifti(tmp_path / name, data, affine))


def _sphere(tmp_path, spacing=(0.6, 1.0, 1.4), value=1.0, name="sphere.nii.gz"):
    shape = [int(np.ceil(30.0 / s)) for s in spacing]  # a 30 mm field of view around a 12 mm ball
    return _loaded(tmp_path, *sphere_volume(shape, spacing, RADIUS_MM, value), name=name)


def _radius_and_centre(volume) -> tuple[float, np.ndarray]:
    """Equivalent-volume radius (mm) and world centroid of the voxels above 0.5."""
    inside = volume[0].numpy() > 0.5
    voxel_mm3 = float(np.prod(volume.pixdim.numpy()))
    radius = (3.0 * inside.sum() * voxel_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0)
    centroid = np.argwhere(inside).mean(axis=0)
    return radius, (volume.affine.numpy() @ [*centroid, 1.0])[:3]


@pytest.mark.parametrize("is_label", [False, True])
def test_resampling_keeps_radius_and_position_of_a_sphere(tmp_path, is_label):
    volume = _sphere(tmp_path)
    radius_before, centre_before = _radius_and_centre(volume)
    assert radius_before == pytest.approx(RADIUS_MM, rel=0.03)
    out = PreprocessMri(spacing=0.75, shape=48, lower=0.0, upper=100.0, is_label=is_label)(volume)
    np.testing.assert_allclose(out.pixdim.numpy(), [0.75, 0.75, 0.75])
    radius_after, centre_after = _radius_and_centre(out)
    assert radius_after == pytest.approx(RADIUS_MM, rel=0.03)
    np.testing.assert_allclose(centre_after, centre_before, atol=0.75)


def test_anisotropic_target_spacing_and_shape_come_from_the_caller(tmp_path):
    out = PreprocessMri(spacing=(1.0, 0.5, 0.8), shape=(20, 40, 30))(_sphere(tmp_path))
    assert tuple(out.shape) == (1, 20, 40, 30)
    np.testing.assert_allclose(out.pixdim.numpy(), [1.0, 0.5, 0.8])
    assert _radius_and_centre(out)[0] == pytest.approx(RADIUS_MM, rel=0.05)


def test_intensities_are_robust_percentiles_to_unit_range(tmp_path):
    values = np.random.default_rng(0).normal(300.0, 80.0, size=(20, 20, 20)).astype(np.float32)
    volume = _loaded(tmp_path, values, np.eye(4))
    out = PreprocessMri(spacing=1.0, shape=20, lower=10.0, upper=90.0)(volume)  # same grid: no resampling
    array = out[0].numpy()
    assert out.dtype == torch.float32 and array.shape == (20, 20, 20)
    assert array.min() == 0.0 and array.max() == 1.0
    assert np.mean(array == 0.0) == pytest.approx(0.10, abs=0.01)  # below the 10th percentile
    assert np.mean(array == 1.0) == pytest.approx(0.10, abs=0.01)  # above the 90th
    source = volume[0].numpy()
    low, high = np.percentile(source, [10.0, 90.0])
    np.testing.assert_allclose(array, np.clip((source - low) / (high - low), 0.0, 1.0), atol=1e-5)


def test_crop_and_pad_are_centred_and_keep_the_affine_true(tmp_path):
    volume = _sphere(tmp_path, spacing=(1.0, 1.0, 1.0))  # 30 mm cube, ball in the middle
    out = PreprocessMri(spacing=1.0, shape=(16, 40, 30), lower=0.0, upper=100.0)(volume)
    assert tuple(out.shape) == (1, 16, 40, 30)
    array = out[0].numpy()
    assert array[:, :5].max() == 0.0 and array[:, -5:].max() == 0.0  # axis 1 padded by 5 each side
    _, centre = _radius_and_centre(out)
    np.testing.assert_allclose(centre, _radius_and_centre(volume)[1], atol=0.5)
    assert out.meta["filename_or_obj"].endswith("sphere.nii.gz")


def test_label_maps_stay_integer_with_the_same_labels(tmp_path):
    labels = np.zeros((24, 20, 16), np.float32)
    labels[3:12, 4:16, 2:8] = 1
    labels[12:20, 4:16, 2:14] = 2
    labels[8:16, 8:12, 9:15] = 5
    volume = _loaded(tmp_path, labels, np.diag([0.7, 0.9, 1.6, 1.0]))
    out = PreprocessMri(spacing=(0.5, 0.5, 0.5), shape=(40, 30, 40), is_label=True)(volume)
    values = out[0].numpy()
    assert np.array_equal(values, np.round(values))
    assert set(np.unique(values).tolist()) == {0.0, 1.0, 2.0, 5.0}


def test_dictionary_version_puts_image_and_labels_on_one_grid(tmp_path):
    image = _sphere(tmp_path, value=800.0)
    labels = _sphere(tmp_path, value=3.0, name="labels.nii.gz")
    transform = PreprocessMrid(["mri", "labels"], spacing=0.9, shape=(32, 30, 28), label_keys="labels")
    item = transform({"mri": image, "labels": labels, "subject": "SYN0000"})
    assert item["subject"] == "SYN0000"
    assert item["mri"].shape == item["labels"].shape == (1, 32, 30, 28)
    torch.testing.assert_close(item["mri"].affine, item["labels"].affine)
    assert item["mri"].max() == 1.0 and set(torch.unique(item["labels"]).tolist()) == {0.0, 3.0}
    inside_image, inside_labels = item["mri"][0] > 0.5, item["labels"][0] > 0
    assert (inside_image ^ inside_labels).float().mean() < 0.01


def test_bundle_config_supplies_every_parameter(tmp_path):
    parser = ConfigParser(
        {
            "mri_spacing": [1.2, 1.2, 1.2],
            "mri_shape": [24, 24, 24],
            "preprocess": {
                "_target_": "xray2mri.transforms.PreprocessMrid",
                "keys": ["mri", "labels"],
                "label_keys": ["labels"],
                "spacing": "@mri_spacing",
                "shape": "@mri_shape",
                "lower": 1.0,
                "upper": 99.0,
            },
        }
    )
    transform = parser.get_parsed_content("preprocess")
    item = transform({"mri": _sphere(tmp_path), "labels": _sphere(tmp_path, name="labels.nii.gz")})
    assert item["mri"].shape == (1, 24, 24, 24)
    np.testing.assert_allclose(item["labels"].pixdim.numpy(), [1.2, 1.2, 1.2])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spacing": 0.0, "shape": 16},
        {"spacing": 1.0, "shape": (16, 0, 16)},
        {"spacing": 1.0, "shape": 16, "lower": 60.0, "upper": 40.0},
        {"spacing": 1.0, "shape": 16, "upper": 101.0},
    ],
)
def test_impossible_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        PreprocessMri(**kwargs)


def test_label_keys_must_be_among_keys():
    with pytest.raises(ValueError, match="label_keys"):
        PreprocessMrid(["mri"], spacing=1.0, shape=16, label_keys=["labels"])
