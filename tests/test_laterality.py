"""Laterality from DICOM, mirroring to the canonical side, and undoing it on outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xray_factory as xf
from monai.data import MetaTensor

from xray2mri.transforms.geometry import CANONICAL_SIDE, MIRRORED_KEY
from xray2mri.transforms.laterality import (
    MirrorBackd,
    MirrorToCanonicalSide,
    MirrorToCanonicalSided,
    mirror_back,
    normalise_side,
)
from xray2mri.transforms.xray import LoadXray, LoadXrayd

OTHER_SIDE = "L" if CANONICAL_SIDE == "R" else "R"


@pytest.mark.pydicom2
@pytest.mark.parametrize(
    ("image_laterality", "laterality", "expected"),
    [("L", None, "L"), ("R", None, "R"), (None, "R", "R"), (None, "L", "L"), ("L", "R", "L"),
     ("B", None, None), ("U", "L", None), (None, None, None)],
)
def test_laterality_from_image_laterality_then_laterality(tmp_path, image_laterality, laterality, expected):
    ds = xf.make_radiograph(image_laterality=image_laterality, laterality=laterality)
    assert LoadXray()(xf.save(ds, tmp_path / "x.dcm")).meta["laterality"] == expected


@pytest.mark.parametrize(
    ("image_laterality", "laterality", "expected"),
    [("L", None, "L"), (None, "R", "R"), ("L", "R", "L"), ("B", "L", None), (None, None, None)],
)
def test_every_reader_of_a_dicom_side_agrees(tmp_path, image_laterality, laterality, expected):
    """The loader, the datalist check and the MR series writer read a radiograph's side one way."""
    import pydicom

    from xray2mri.pipeline.data.manifests import _check_xray
    from xray2mri.pipeline.serving.writers import write_dicom_series
    from xray2mri.transforms.geometry import canonical_affine
    from xray2mri.transforms.laterality import dicom_laterality

    path = xf.save(xf.make_radiograph(image_laterality=image_laterality, laterality=laterality), tmp_path / "x.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert dicom_laterality(header) == expected
    assert LoadXray()(path).meta["laterality"] == expected
    assert _check_xray(str(path))[1] == expected
    series = write_dicom_series(np.zeros((2, 3, 4)), canonical_affine((2, 3, 4), 1.0), tmp_path / "mr", source=header)
    assert pydicom.dcmread(sorted(series.iterdir())[0]).get("Laterality") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("L", "L"), (" left ", "L"), ("r", "R"), ("RIGHT", "R"), ("B", None), ("U", None), ("", None), (None, None)],
)
def test_normalise_side(value, expected):
    assert normalise_side(value) == expected


def xray(side=None):
    img = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 3 * 2, 4)
    return MetaTensor(img, affine=torch.diag(torch.tensor([0.2, 0.3, 1.0, 1.0], dtype=torch.float64)),
                      meta={"laterality": side})


def mri():
    return MetaTensor(torch.rand(1, 3, 6, 4))


def test_left_image_is_mirrored_and_recorded_then_inverted():
    mirror = MirrorToCanonicalSide()
    img = xray(OTHER_SIDE)
    out = mirror(img)
    torch.testing.assert_close(out.as_tensor(), img.as_tensor().flip(-1))
    assert out.meta[MIRRORED_KEY] is True
    assert MIRRORED_KEY not in img.meta  # the input's meta is not changed
    torch.testing.assert_close(out.affine, img.affine)  # anatomical mirror: layout kept
    back = mirror.inverse(out)
    torch.testing.assert_close(back.as_tensor(), img.as_tensor())
    assert back.meta[MIRRORED_KEY] is False


@pytest.mark.parametrize("side", [CANONICAL_SIDE, None, "B"])
def test_canonical_or_unknown_side_is_not_mirrored(side):
    mirror = MirrorToCanonicalSide()
    img = xray(side)
    expected = img.as_tensor().clone()
    out = mirror(img)
    torch.testing.assert_close(out.as_tensor(), expected)
    assert out.meta[MIRRORED_KEY] is False
    torch.testing.assert_close(mirror.inverse(out).as_tensor(), expected)


def test_explicit_side_overrides_meta():
    out = MirrorToCanonicalSide()(xray(CANONICAL_SIDE), side=OTHER_SIDE)
    assert out.meta[MIRRORED_KEY] is True


def test_dict_version_applies_one_decision_to_xray_mri_and_labels():
    item = {"xray": xray(CANONICAL_SIDE), "mri": mri(), "labels": mri().round(), "side": OTHER_SIDE}
    originals = {k: item[k].as_tensor().clone() for k in ("xray", "mri", "labels")}
    mirror = MirrorToCanonicalSided(keys=["xray", "mri", "labels"])
    out = mirror(item)
    for key, original in originals.items():  # the item's side wins over the xray meta
        torch.testing.assert_close(out[key].as_tensor(), original.flip(-1))
        assert out[key].meta[MIRRORED_KEY] is True
    assert item["xray"] is not out["xray"] and out["side"] == OTHER_SIDE
    back = mirror.inverse(out)
    for key, original in originals.items():
        torch.testing.assert_close(back[key].as_tensor(), original)


def test_dict_version_reads_the_first_keys_laterality_without_a_side():
    item = {"xray": xray(OTHER_SIDE), "mri": mri()}
    out = MirrorToCanonicalSided(keys=["xray", "mri"])(item)
    assert out["xray"].meta[MIRRORED_KEY] is True and out["mri"].meta[MIRRORED_KEY] is True
    unknown = MirrorToCanonicalSided(keys=["mri", "xray"])({"xray": xray(OTHER_SIDE), "mri": mri()})
    # the first key (mri) has no laterality: nothing is mirrored, not even the radiograph
    assert unknown["xray"].meta[MIRRORED_KEY] is False and unknown["mri"].meta[MIRRORED_KEY] is False


@pytest.mark.pydicom2
def test_loadxrayd_mirrors_left_knees_when_asked(tmp_path):
    path = str(xf.save(xf.make_radiograph(image_laterality=OTHER_SIDE), tmp_path / "x.dcm"))
    plain = LoadXray()(path)
    out = LoadXrayd(keys="xray", mirror_to_canonical=True)({"xray": path})["xray"]
    torch.testing.assert_close(out.as_tensor(), plain.as_tensor().flip(-1))
    assert out.meta[MIRRORED_KEY] is True and out.meta["laterality"] == OTHER_SIDE
    kept = LoadXrayd(keys="xray", mirror_to_canonical=True)({"xray": path, "side": CANONICAL_SIDE})["xray"]
    torch.testing.assert_close(kept.as_tensor(), plain.as_tensor())


def test_mirror_back_restores_outputs_of_mirrored_inputs():
    volume = torch.rand(3, 6, 4)  # (D, H, W) prediction, no channel
    mirrored_input = MirrorToCanonicalSide()(xray(OTHER_SIDE))
    torch.testing.assert_close(mirror_back(volume.flip(-1), mirrored_input.meta), volume)
    torch.testing.assert_close(mirror_back(volume.flip(-1), True), volume)
    assert mirror_back(volume, False) is volume
    assert mirror_back(volume, {MIRRORED_KEY: False}) is volume


def test_mirror_backd_follows_the_source_image():
    source = MirrorToCanonicalSide()(xray(OTHER_SIDE))
    pred = MetaTensor(torch.rand(1, 3, 6, 4))
    out = MirrorBackd(keys="pred", source_key="xray")({"pred": pred, "xray": source})
    torch.testing.assert_close(out["pred"].as_tensor(), pred.as_tensor().flip(-1))
    same = MirrorBackd(keys="pred", source_key="xray")({"pred": pred, "xray": xray(CANONICAL_SIDE)})
    np.testing.assert_array_equal(same["pred"].numpy(), pred.numpy())
