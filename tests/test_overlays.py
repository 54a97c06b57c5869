"""Burned-in overlays: a side marker is found and painted over, in the network's field too; anatomy never is."""

from __future__ import annotations

import numpy as np
import pytest
import xray_factory as xf
from scipy import ndimage

from xray2mri.pipeline.data.synth.cohort import make_subject
from xray2mri.pipeline.data.synth.framing import burn_marker, saturated_value
from xray2mri.transforms.overlays import burned_in_mask, erase_burned_in
from xray2mri.transforms.xray import LoadXray, PreprocessXray

MARKER_AT = (150, 45)  # beside the calf of a knee-field radiograph of the demo preset, inside the network's 160 mm


def knee_field(index: int) -> tuple[np.ndarray, float]:
    """A cohort knee radiograph (log-attenuation, no marker) and its pixel spacing."""
    subject = make_subject(index, 0, "demo", framing="knee")
    return subject.xray, subject.meta["xray"]["imager_pixel_spacing_mm"]


def with_marker(image: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with a lead "L" burned in at :data:`MARKER_AT`, and the marker's pixels."""
    marked = image.copy()
    burn_marker(marked, MARKER_AT, spacing, saturated_value(image))
    return marked, marked != image


def as_loaded(image: np.ndarray, spacing: float, top: float, path) -> object:
    """``image`` stored as a 12-bit DX (``top`` maps to near full scale) and loaded as the pipeline does."""
    lo = float(image.min())
    stored = np.rint((np.clip(image, lo, top) - lo) / (top - lo) * 4000 + 50).astype(np.uint16)
    return LoadXray()(xf.save(xf.make_radiograph(stored, pixel_spacing=(spacing, spacing)), path))


@pytest.mark.parametrize("index", [0, 4])
def test_a_side_marker_is_found_and_nothing_else(index):
    image, spacing = knee_field(index)
    assert not burned_in_mask(image, (spacing, spacing)).any(), "anatomy (the cortices' bright tangents) was taken for an overlay"
    marked, marker = with_marker(image, spacing)
    mask = burned_in_mask(marked, (spacing, spacing))
    assert mask[marker].all()
    assert not (mask & ~ndimage.binary_dilation(marker, iterations=3)).any()
    erased = erase_burned_in(marked, (spacing, spacing))
    span = float(image.max() - np.percentile(image, 1))
    assert np.abs(erased - image)[marker].mean() < 0.05 * span  # painted with the soft tissue around it
    assert np.array_equal(erased[~mask], marked[~mask])


def test_a_collimation_band_as_bright_as_the_marker_does_not_hide_it():
    image, spacing = knee_field(0)
    marked, marker = with_marker(image, spacing)
    band = np.zeros_like(marker)
    band[:, -12:] = True  # 9 mm of unexposed detector at the border, at the marker's value
    marked[band] = saturated_value(image)
    mask = burned_in_mask(marked, (spacing, spacing))
    assert mask[marker].all()
    assert not mask[:, -10:].any()  # the band is thick: not an overlay


def test_the_network_field_is_the_same_with_or_without_a_marker(tmp_path):
    """PreprocessXray paints the marker over before the grey scale is set: the network sees the knee as it is."""
    image, spacing = knee_field(0)
    marked, _ = with_marker(image, spacing)
    top = saturated_value(image)
    plain_img = as_loaded(image, spacing, top, tmp_path / "plain.dcm")
    marked_img = as_loaded(marked, spacing, top, tmp_path / "marked.dcm")
    diff = {}
    for erase in (True, False):
        prep = PreprocessXray(spacing=1.25, size=128, erase_overlays=erase)
        diff[erase] = np.abs(prep(plain_img)[0].numpy() - prep(marked_img)[0].numpy())
    assert diff[False].max() > 0.5  # the marker is in the field
    assert diff[True].max() < 0.15 and diff[True].mean() < 0.001


@pytest.mark.parametrize("index", [1, 2, 3])  # the long-leg, marked and bilateral framings
def test_the_cohorts_own_side_letters_are_found(index):
    """The built-in cohort's lead letters are what the eraser takes away: no more (the collimation band,
    as bright, stays), no less."""
    subject = make_subject(index, 0, "demo")
    image, spacing = subject.xray, subject.meta["xray"]["imager_pixel_spacing_mm"]
    assert subject.meta["xray"]["burned_in_annotation"]
    saturated = image >= image.max()
    labels, n = ndimage.label(saturated)
    thin = [k for k in range(1, n + 1) if not ndimage.binary_erosion(labels == k, np.ones((7, 7))).any()]
    letter = np.isin(labels, thin)
    mask = burned_in_mask(image, (spacing, spacing))
    assert letter.any() and mask[letter].all()
    assert not (mask & ~ndimage.binary_dilation(letter, structure=np.ones((3, 3)), iterations=2)).any()
