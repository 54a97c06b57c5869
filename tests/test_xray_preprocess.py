"""PreprocessXray: physical extent kept across spacings, target size, [0, 1] range, dict contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xray_factory as xf
from monai.data.utils import affine_to_spacing
from monai.transforms import Spacing

from xray2mri.transforms.xray import LoadXray, PreprocessXray, PreprocessXrayd

RADIUS_MM = 9.0


def disc_image(tmp_path, spacing, shape):
    pixels = xf.disc(*shape, spacing=spacing, radius_mm=RADIUS_MM)
    return LoadXray()(xf.save(xf.make_radiograph(pixels, pixel_spacing=spacing), tmp_path / "disc.dcm"))


def measured_radius_mm(img, spacing):
    """Radius from the area above half height (sub-pixel through the partial-volume values)."""
    values = img[0].numpy()
    lo, hi = np.percentile(values, [1, 99.9])
    fraction = np.clip((values - lo) / (hi - lo), 0, 1).sum()
    return math.sqrt(fraction * spacing[0] * spacing[1] / math.pi)


def test_monai_spacing_accepts_the_loaded_radiograph(tmp_path):
    img = disc_image(tmp_path, (0.2, 0.2), (100, 100))
    out = Spacing(pixdim=(0.4, 0.4))(img)
    assert out.shape[1:] == (50, 50)
    np.testing.assert_allclose(affine_to_spacing(out.affine, r=2).numpy(), (0.4, 0.4))


@pytest.mark.parametrize(
    ("source", "target", "anti_alias"),
    [((0.1, 0.1), 0.5, True), ((0.1, 0.1), 0.5, False), ((0.1, 0.2), 0.4, True), ((0.4, 0.4), 0.25, True)],
)
def test_resampling_keeps_the_physical_radius(tmp_path, source, target, anti_alias):
    shape = (round(40 / source[0]), round(40 / source[1]))  # 40 mm field of view
    img = disc_image(tmp_path, source, shape)
    assert measured_radius_mm(img, source) == pytest.approx(RADIUS_MM, rel=0.02)
    size = round(48 / target)  # larger than the image: padded
    out = PreprocessXray(spacing=target, size=size, lower=0.0, upper=100.0, anti_alias=anti_alias)(img)
    assert out.shape == (1, size, size)
    assert measured_radius_mm(out, (target, target)) == pytest.approx(RADIUS_MM, rel=0.03)
    np.testing.assert_allclose(affine_to_spacing(out.affine, r=2).numpy(), (target, target))
    assert out.meta["spacing"] == (target, target)
    # the affine still places the disc where it was, and the crop/pad kept it central
    centre_mm = [(n - 1) / 2 * s for n, s in zip(shape, source)]
    weights = out[0].numpy()
    centroid = np.array([(weights.sum(axis=1 - a) * np.arange(size)).sum() / weights.sum() for a in (0, 1)])
    world = out.affine.numpy()[:2, :2] @ centroid + out.affine.numpy()[:2, 3]
    np.testing.assert_allclose(world, centre_mm, atol=0.1 * target)
    np.testing.assert_allclose(centroid, [(size - 1) / 2] * 2, atol=1.0)


def test_output_has_the_target_size_in_the_unit_range(tmp_path):
    img = LoadXray()(xf.save(xf.make_radiograph(xf.phantom(60, 50)), tmp_path / "x.dcm"))  # 0.15 mm
    out = PreprocessXray(spacing=(0.3, 0.25), size=(20, 24))(img)
    assert out.shape == (1, 20, 24) and out.dtype == torch.float32
    assert out.min() == 0.0 and out.max() == 1.0
    small = PreprocessXray(spacing=0.3, size=64)(img)  # 30 x 25 pixels of image, padded with 0
    assert small.shape == (1, 64, 64) and small.min() == 0.0 and small.max() <= 1.0
    assert torch.count_nonzero(small[0, :, :10]) == 0 and torch.count_nonzero(small[0, :5]) == 0


def test_percentiles_clip_the_extremes(tmp_path):
    stored = xf.phantom(60, 50)
    stored[0, 0] = 4095  # one hot pixel must not set the scale
    img = LoadXray()(xf.save(xf.make_radiograph(stored), tmp_path / "x.dcm"))
    out = PreprocessXray(spacing=0.15, size=(60, 50), lower=1.0, upper=99.0)(img)
    assert out[0, 0, 0] == 1.0
    assert (out == 1.0).float().mean() < 0.03 and (out == 0.0).float().mean() < 0.03


def test_a_burned_in_marker_does_not_set_the_grey_scale(tmp_path):
    """A marker or collimation band at the brightest value (here 4 % of the field) leaves the knee's grey levels as they were."""
    stored = xf.phantom(60, 50)
    marked = stored.copy()
    marked[2:14, 2:12] = 4095  # a burned-in letter at the brightest stored value
    plain_img = LoadXray()(xf.save(xf.make_radiograph(stored), tmp_path / "plain.dcm"))
    marked_img = LoadXray()(xf.save(xf.make_radiograph(marked), tmp_path / "marked.dcm"))
    prep = PreprocessXray(spacing=0.15, size=(60, 50), lower=1.0, upper=99.0)
    plain, with_marker = prep(plain_img)[0].numpy(), prep(marked_img)[0].numpy()
    away = np.ones_like(plain, dtype=bool)
    away[:16, :14] = False
    np.testing.assert_allclose(with_marker[away], plain[away], atol=0.02)
    assert with_marker[5:10, 5:10].min() == 1.0  # the marker itself is clipped to white


def test_log_compresses_but_keeps_the_order(tmp_path):
    img = LoadXray()(xf.save(xf.make_radiograph(xf.phantom(60, 50)), tmp_path / "x.dcm"))
    linear = PreprocessXray(spacing=0.15, size=(60, 50), lower=0, upper=100)(img)
    logged = PreprocessXray(spacing=0.15, size=(60, 50), lower=0, upper=100, log=True)(img)
    assert logged.min() == 0.0 and logged.max() == 1.0
    assert not torch.allclose(linear, logged)
    order = torch.argsort(linear.flatten())
    assert torch.all(torch.diff(logged.flatten()[order]) >= -1e-6)


def test_plain_tensors_are_refused():
    with pytest.raises(TypeError, match="MetaTensor"):
        PreprocessXray(spacing=0.5, size=32)(torch.rand(1, 40, 40))


def test_dictionary_version_keeps_the_map_transform_contract(tmp_path):
    img = LoadXray()(xf.save(xf.make_radiograph(), tmp_path / "x.dcm"))
    item = {"xray": img, "mri": "untouched"}
    transform = PreprocessXrayd(keys="xray", spacing=0.3, size=16)
    out = transform(item)
    assert item["xray"] is img and img.shape == (1, 48, 40)  # input left alone
    assert out["mri"] == "untouched" and out["xray"].shape == (1, 16, 16)
    assert out["xray"].meta["filename_or_obj"] == img.meta["filename_or_obj"]
    assert PreprocessXrayd(keys=["xray", "other"], spacing=0.3, size=16, allow_missing_keys=True)(item)["xray"].shape == (
        1, 16, 16)
    with pytest.raises(KeyError):
        PreprocessXrayd(keys=["xray", "other"], spacing=0.3, size=16)(item)
