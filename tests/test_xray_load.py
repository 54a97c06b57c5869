"""LoadXray: transfer syntaxes, LUTs, MONOCHROME1/2, spacing, metadata and refusals (pydicom 2.4 and 3)."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
import torch
import xray_factory as xf
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from xray2mri.transforms import XrayInputError
from xray2mri.transforms.xray import LoadXray, LoadXrayd, XraySpacingWarning

pytestmark = pytest.mark.pydicom2


def load(path, **kwargs):
    return LoadXray(**kwargs)(path)


@pytest.fixture
def radiograph():
    return xf.make_radiograph()


# --- transfer syntaxes -------------------------------------------------------------------


@pytest.mark.parametrize("syntax", xf.UNCOMPRESSED, ids=lambda s: s.name)
def test_uncompressed_syntaxes_load_the_stored_values(tmp_path, radiograph, syntax):
    out = load(xf.save(radiograph, tmp_path / "x.dcm", syntax))
    expected = xf.phantom().astype(np.float32)
    assert out.dtype == torch.float32 and out.shape == (1, *expected.shape)
    np.testing.assert_array_equal(out[0].numpy(), expected)
    assert out.meta["transfer_syntax"] == syntax


@pytest.mark.parametrize(
    "syntax", [xf.RLELossless, xf.JPEG2000_LOSSLESS, xf.JPEG_LS_LOSSLESS, xf.JPEG_LOSSLESS_SV1]
)
def test_lossless_compression_loads_exactly(tmp_path, radiograph, syntax):
    out = load(xf.save(xf.encode(radiograph, syntax, tmp_path), tmp_path / "x.dcm"))
    np.testing.assert_array_equal(out[0].numpy(), xf.phantom().astype(np.float32))
    assert out.meta["transfer_syntax"] == syntax


@pytest.mark.parametrize(
    ("syntax", "bits", "max_mean_error"),
    [(xf.JPEG2000_LOSSY, 12, 0.01), (xf.JPEG_LS_NEAR, 12, 0.001), (xf.JPEG_BASELINE, 8, 0.01)],
)
def test_lossy_compression_loads_close(tmp_path, syntax, bits, max_mean_error):
    stored = xf.phantom(bits=bits)
    ds = xf.make_radiograph(stored, bits_stored=bits)
    out = load(xf.save(xf.encode(ds, syntax, tmp_path), tmp_path / "x.dcm"))[0].numpy()
    error = np.abs(out - stored.astype(np.float32))
    assert error.mean() <= max_mean_error * (2**bits - 1)
    if syntax == xf.JPEG_LS_NEAR:  # near-lossless bounds every pixel's error (here 3)
        assert error.max() <= 3


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "MR_small_bigendian.dcm", "MR_small_implicit.dcm"],
)
def test_third_party_encodings_match_the_uncompressed_file(name):
    """Files encoded by other toolkits (shipped with pydicom) load like their uncompressed twin."""
    expected = load(xf.testdata("MR_small.dcm"))
    out = load(xf.testdata(name))
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    assert out.meta["spacing"] == expected.meta["spacing"] and out.meta["spacing_source"] == "PixelSpacing"


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "image_dfl.dcm", "JPEG2000.dcm"])
def test_shipped_jpeg_extended_deflate_and_j2k_files_decode(name):
    """12-bit JPEG extended (process 4), deflated and lossy JPEG 2000 files as pydicom decodes them."""
    path = xf.testdata(name)
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XraySpacingWarning)
        out = load(path)
    assert out.shape == (1, ds.Rows, ds.Columns)
    np.testing.assert_array_equal(out[0].numpy(), ds.pixel_array.astype(np.float32))


# --- LUTs and photometric interpretation --------------------------------------------------


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    stored = xf.phantom()
    out = load(xf.save(xf.make_radiograph(stored, rescale=(2.5, -100.0)), tmp_path / "x.dcm"))
    np.testing.assert_allclose(out[0].numpy(), stored * 2.5 - 100.0, rtol=1e-6)


def test_modality_lut_sequence_is_applied(tmp_path):
    stored = xf.phantom(bits=8)
    table = (np.arange(256) ** 2 // 16).astype(np.uint16)  # non-linear, 12-bit output
    ds = xf.make_radiograph(stored, bits_stored=8)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 12]
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", table.tolist())  # LUTData
    ds.ModalityLUTSequence = Sequence([item])
    out = load(xf.save(ds, tmp_path / "x.dcm"))
    np.testing.assert_array_equal(out[0].numpy(), table[stored].astype(np.float32))


def test_voi_window_only_when_asked(tmp_path):
    stored = xf.phantom()
    ds = xf.make_radiograph(stored)
    ds.WindowCenter, ds.WindowWidth = 1500, 1001
    path = xf.save(ds, tmp_path / "x.dcm")
    plain = load(path)
    np.testing.assert_array_equal(plain[0].numpy(), stored.astype(np.float32))
    assert plain.meta["voi_lut_applied"] is False
    windowed = load(path, apply_voi_lut=True)
    assert windowed.meta["voi_lut_applied"] is True
    # DICOM LINEAR window onto the 12-bit output range: below c - w/2 -> 0, above c + w/2 -> 4095
    x = stored.astype(np.float64)
    expected = np.clip(((x - 1499.5) / 1000 + 0.5) * 4095, 0, 4095)
    np.testing.assert_allclose(windowed[0].numpy(), expected, atol=1e-2)
    assert windowed.min() == 0 and windowed.max() == 4095


@pytest.mark.parametrize(
    ("dtype", "bits", "rescale"),
    [(np.uint16, 12, None), (np.uint16, 12, (0.5, 10.0)), (np.int16, 12, (2.0, -1024.0)), (np.uint8, 8, None)],
)
def test_monochrome1_and_monochrome2_of_the_same_anatomy_load_equal(tmp_path, dtype, bits, rescale):
    top = 2**bits - 1
    m2 = xf.phantom(bits=bits).astype(np.int32)
    if np.issubdtype(dtype, np.signedinteger):
        m2 -= 2 ** (bits - 1)  # signed stored range [-2048, 2047]
        m1 = -1 - m2
    else:
        m1 = top - m2
    kwargs = {"bits_stored": bits, "rescale": rescale}
    a = load(xf.save(xf.make_radiograph(m2.astype(dtype), photometric="MONOCHROME2", **kwargs), tmp_path / "2.dcm"))
    b = load(xf.save(xf.make_radiograph(m1.astype(dtype), photometric="MONOCHROME1", **kwargs), tmp_path / "1.dcm"))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-3)
    assert (a.meta["photometric"], b.meta["photometric"]) == ("MONOCHROME2", "MONOCHROME1")


def test_monochrome1_bone_is_the_higher_value(tmp_path):
    """The phantom's bright block (bone) stored as MONOCHROME1 (dark) still loads higher."""
    bone = xf.phantom() > 0.5 * 4095
    m1 = 4095 - xf.phantom()
    out = load(xf.save(xf.make_radiograph(m1.astype(np.uint16), photometric="MONOCHROME1"), tmp_path / "x.dcm"))[0]
    assert out[torch.from_numpy(bone)].min() > out[torch.from_numpy(~bone)].max()


# --- spacing -------------------------------------------------------------------------------


def spacing_of(tmp_path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", XraySpacingWarning)  # these cases must not warn
        out = load(xf.save(xf.make_radiograph(**kwargs), tmp_path / "x.dcm"))
    return out.meta["spacing"], out.meta["spacing_source"], out.affine


def test_pixel_spacing_wins_and_keeps_row_col_order(tmp_path):
    spacing, source, affine = spacing_of(tmp_path, pixel_spacing=(0.1, 0.2), imager_spacing=(0.15, 0.15))
    assert spacing == pytest.approx((0.1, 0.2)) and source == "PixelSpacing"
    np.testing.assert_allclose(np.diag(affine.numpy())[:2], (0.1, 0.2))


def test_imager_pixel_spacing_is_used_when_pixel_spacing_is_absent(tmp_path):
    spacing, source, _ = spacing_of(tmp_path, imager_spacing=(0.139, 0.14))
    assert spacing == pytest.approx((0.139, 0.14)) and source == "ImagerPixelSpacing"


def test_imager_pixel_spacing_is_divided_by_the_magnification(tmp_path):
    spacing, source, affine = spacing_of(tmp_path, imager_spacing=(0.15, 0.15), magnification=1.2)
    assert spacing == pytest.approx((0.125, 0.125)) and source == "ImagerPixelSpacing"
    np.testing.assert_allclose(np.diag(affine.numpy())[:2], (0.125, 0.125))


def test_invalid_magnification_warns_and_is_ignored(tmp_path):
    with pytest.warns(XraySpacingWarning, match="Magnification"):
        out = load(xf.save(xf.make_radiograph(imager_spacing=(0.15, 0.15), magnification=0), tmp_path / "x.dcm"))
    assert out.meta["spacing"] == pytest.approx((0.15, 0.15))


def _patched(tmp_path, text: bytes):
    """A file whose PixelSpacing bytes are replaced by ``text`` (13 bytes) after writing."""
    ds = xf.make_radiograph(imager_spacing=None, pixel_spacing=("0.1234", "0.1234"))
    path = xf.save(ds, tmp_path / "x.dcm")
    raw = path.read_bytes()
    assert raw.count(b"0.1234\\0.1234") == 1 and len(text) == 13
    path.write_bytes(raw.replace(b"0.1234\\0.1234", text))
    return path


@pytest.mark.parametrize(
    "case",
    ["missing", "zero", "negative", "non_numeric", "one_value"],
)
def test_unusable_spacing_falls_back_with_a_warning_naming_the_file(tmp_path, case):
    if case == "non_numeric":
        path = _patched(tmp_path, b"abcdef\\ghijkl")
    else:
        spacing = {"missing": None, "zero": (0.0, 0.0), "negative": (-0.1, 0.1), "one_value": (0.1,)}[case]
        path = xf.save(xf.make_radiograph(imager_spacing=None, pixel_spacing=spacing), tmp_path / "x.dcm")
    with pytest.warns(XraySpacingWarning) as record:
        out = load(path, fallback_spacing=0.3)
    assert str(path) in str(record[0].message)
    assert out.meta["spacing"] == (0.3, 0.3) and out.meta["spacing_source"] == "fallback"
    np.testing.assert_allclose(np.diag(out.affine.numpy())[:2], (0.3, 0.3))


def test_missing_spacing_without_fallback_is_refused(tmp_path):
    path = xf.save(xf.make_radiograph(imager_spacing=None), tmp_path / "x.dcm")
    with pytest.raises(XrayInputError, match="no usable pixel spacing") as err:
        load(path, fallback_spacing=None)
    assert str(path) in str(err.value)


# --- metadata --------------------------------------------------------------------------------


def test_meta_describes_the_image(tmp_path):
    ds = xf.make_radiograph(image_laterality="L", pixel_spacing=(0.1, 0.12), body_part="KNEE", view_position="PA")
    path = xf.save(ds, tmp_path / "knee.dcm")
    out = load(path)
    meta = out.meta
    assert meta["filename_or_obj"] == str(path)
    assert (meta["laterality"], meta["modality"], meta["body_part"], meta["view_position"]) == ("L", "DX", "KNEE", "PA")
    assert meta["photometric"] == "MONOCHROME2" and meta["bits_stored"] == 12 and meta["frame"] == 0
    assert tuple(meta["spatial_shape"]) == (48, 40)


def test_dictionary_version_loads_each_key_and_leaves_the_input_alone(tmp_path, radiograph):
    path = str(xf.save(radiograph, tmp_path / "x.dcm"))
    item = {"xray": path, "other": 3}
    out = LoadXrayd(keys="xray")(item)
    assert item["xray"] == path  # input dict untouched
    assert out["other"] == 3 and out["xray"].shape == (1, 48, 40)
    assert LoadXrayd(keys=["xray", "absent"], allow_missing_keys=True)(item)["xray"].shape == (1, 48, 40)
    with pytest.raises(KeyError):
        LoadXrayd(keys=["xray", "absent"])(item)


# --- refusals -------------------------------------------------------------------------------


def assert_refused(path, reason, **kwargs):
    with pytest.raises(XrayInputError) as err:
        load(path, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert reason in message.lower(), message
    assert "Traceback" not in message
    return err.value


def test_missing_file_and_folder_are_refused(tmp_path):
    assert_refused(tmp_path / "nope.dcm", "no such file")
    assert_refused(tmp_path, "not a file")


def test_non_dicom_files_are_refused(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("this is not a radiograph\n" * 20)
    err = assert_refused(text, "not a dicom file")
    assert err.__cause__ is not None
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert_refused(png, "not a dicom file")


def test_truncated_files_are_refused(tmp_path, radiograph):
    full = xf.save(radiograph, tmp_path / "full.dcm").read_bytes()
    in_pixels = tmp_path / "cut_pixels.dcm"
    in_pixels.write_bytes(full[:-500])
    err = assert_refused(in_pixels, "cannot decode the pixel data")
    assert err.__cause__ is not None
    in_header = tmp_path / "cut_header.dcm"
    in_header.write_bytes(full[:300])
    assert_refused(in_header, "truncated")


def test_shipped_truncated_file_is_refused():
    assert_refused(xf.testdata("MR_truncated.dcm"), "cannot decode")


def test_files_without_pixel_data_are_refused(tmp_path, radiograph):
    del radiograph.PixelData
    assert_refused(xf.save(radiograph, tmp_path / "x.dcm"), "no pixel data")
    assert_refused(xf.testdata("rtplan.dcm"), "no pixel data")


@pytest.mark.parametrize(
    ("name", "what"),
    [("SC_rgb_small_odd.dcm", "rgb"), ("SC_ybr_full_422_uncompressed.dcm", "ybr_full_422"),
     ("SC_rgb_rle.dcm", "rgb")],
)
def test_colour_images_are_refused(name, what):
    assert_refused(xf.testdata(name), "colour or palette image")
    assert_refused(xf.testdata(name), what)


def test_palette_colour_images_are_refused(tmp_path):
    """One sample per pixel, but the values index a colour palette: not a radiograph."""
    ds = xf.make_radiograph(xf.phantom(bits=8), bits_stored=8, photometric="PALETTE COLOR")
    assert_refused(xf.save(ds, tmp_path / "palette.dcm"), "palette color")


def _multiframe(tmp_path, frames=3):
    stack = np.stack([xf.phantom(seed=i) for i in range(frames)])
    ds = xf.make_radiograph(stack[0])
    ds.NumberOfFrames = frames
    ds.PixelData = stack.tobytes()
    return xf.save(ds, tmp_path / "multi.dcm"), stack


def test_multiframe_needs_a_frame(tmp_path):
    path, stack = _multiframe(tmp_path)
    assert_refused(path, "multi-frame image (3 frames)")
    out = load(path, frame=1)
    np.testing.assert_array_equal(out[0].numpy(), stack[1].astype(np.float32))
    assert out.meta["frame"] == 1
    assert_refused(path, "frame 3 out of range", frame=3)


def test_frame_beyond_a_single_frame_file_is_refused(tmp_path, radiograph):
    path = xf.save(radiograph, tmp_path / "x.dcm")
    assert load(path, frame=0).shape == (1, 48, 40)
    assert_refused(path, "out of range", frame=1)


def test_monochrome2_with_an_inverse_presentation_lut_loads_like_monochrome1(tmp_path):
    """Some CR/DX systems store bone dark as MONOCHROME2 + PresentationLUTShape INVERSE; bone still loads higher."""
    m2 = xf.phantom().astype(np.uint16)
    stored_dark_bone = (4095 - m2).astype(np.uint16)
    ds = xf.make_radiograph(stored_dark_bone, photometric="MONOCHROME2")
    ds.PresentationLUTShape = "INVERSE"
    inverse = load(xf.save(ds, tmp_path / "inverse.dcm"))
    plain = load(xf.save(xf.make_radiograph(m2, photometric="MONOCHROME2"), tmp_path / "plain.dcm"))
    np.testing.assert_allclose(inverse.numpy(), plain.numpy(), atol=1e-3)
    assert (inverse.meta["presentation_lut_shape"], inverse.meta["inverted"]) == ("INVERSE", True)
    # MONOCHROME1 + INVERSE (what the DX standard requires) is one inversion, not two
    ds1 = xf.make_radiograph(stored_dark_bone, photometric="MONOCHROME1")
    ds1.PresentationLUTShape = "INVERSE"
    np.testing.assert_allclose(load(xf.save(ds1, tmp_path / "m1.dcm")).numpy(), plain.numpy(), atol=1e-3)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_pixel_padding_becomes_the_least_attenuating_value(tmp_path, photometric):
    """Padding outside the exposed field (here stored as the brightest code) must not pose as bone."""
    pixels = xf.phantom().astype(np.uint16)
    if photometric == "MONOCHROME1":
        pixels = (4095 - pixels).astype(np.uint16)
    pad_code = 0 if photometric == "MONOCHROME1" else 4095  # the most 'attenuating' code either way
    pixels[:, :6] = pad_code
    ds = xf.make_radiograph(pixels, photometric=photometric)
    ds.PixelPaddingValue = pad_code
    out = load(xf.save(ds, tmp_path / "padded.dcm"))
    image = out[0].numpy()
    assert out.meta["padding_pixels"] == pixels.shape[0] * 6
    assert np.all(image[:, :6] == image[:, 6:].min())
    # a padding range (PixelPaddingRangeLimit) marks every code in it
    ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = 4000, 4095
    ranged = load(xf.save(ds, tmp_path / "ranged.dcm"))
    stored_in_range = (pixels >= 4000).sum()
    assert ranged.meta["padding_pixels"] == stored_in_range
    # a file that is all padding has no image
    ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = 0, 4095
    with pytest.raises(XrayInputError, match="padding"):
        load(xf.save(ds, tmp_path / "all_padding.dcm"))
