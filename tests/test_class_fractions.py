"""ClassFractions / ClassFractionsd: a fine class map -> per-class fractions of each coarse voxel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, MapLabelValued

from xray2mri.pipeline.data.synth import tissues
from xray2mri.pipeline.data.synth.cohort import make_subject, write_subject
from xray2mri.transforms import ClassFractions, ClassFractionsd
from xray2mri.transforms.geometry import MIRRORED_KEY, canonical_affine
from xray2mri.transforms.laterality import MirrorToCanonicalSided
from xray2mri.transforms.mri import LoadMrid, PreprocessMrid


def _reference(labels: np.ndarray, num_classes: int, factors: tuple[int, int, int]) -> np.ndarray:
    """Block fractions by reshaping (the obvious, slow-to-write way)."""
    (d, h, w), (f0, f1, f2) = labels.shape, factors
    blocks = labels.reshape(d // f0, f0, h // f1, f1, w // f2, f2)
    return np.stack([(blocks == c).mean(axis=(1, 3, 5)) for c in range(num_classes)]).astype(np.float32)


def test_fractions_sum_to_one_and_match_the_block_mean():
    labels = np.random.default_rng(0).integers(0, 5, size=(4, 8, 6))
    out = ClassFractions(num_classes=5, factors=(2, 4, 3))(torch.as_tensor(labels[None], dtype=torch.float32))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and tuple(out.shape) == (5, 2, 2, 2)
    np.testing.assert_allclose(out.sum(0).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), _reference(labels, 5, (2, 4, 3)), atol=1e-6)


def test_one_row_of_four_gives_a_quarter():
    rows = np.array([0, 0, 2, 0, 1, 1, 1, 1]).reshape(1, 1, 8, 1)  # two 4-row blocks
    out = ClassFractions(num_classes=3, factors=(1, 4, 1))(rows)
    assert isinstance(out, np.ndarray) and out.shape == (3, 1, 2, 1)
    np.testing.assert_allclose(out[:, 0, :, 0], [[0.75, 0.0], [0.0, 1.0], [0.25, 0.0]])


def test_the_output_affine_is_the_coarse_grid_centred_on_each_block():
    affine = canonical_affine((4, 8, 6), (1.0, 0.3125, 2.0), centre=(10.0, -5.0, 3.0))
    img = MetaTensor(torch.zeros(1, 4, 8, 6), affine=torch.as_tensor(affine), meta={"laterality": "R"})
    out = ClassFractions(num_classes=2, factors=(2, 4, 3))(img)
    assert isinstance(out, MetaTensor) and tuple(out.shape) == (2, 2, 2, 2) and out.meta["laterality"] == "R"
    # the same volume centre, voxels f times larger
    np.testing.assert_allclose(out.affine.numpy(), canonical_affine((2, 2, 2), (2.0, 1.25, 6.0), (10.0, -5.0, 3.0)))
    np.testing.assert_allclose(out.pixdim.numpy(), [2.0, 1.25, 6.0])
    # any affine (rotated, sheared): a coarse voxel's centre is the mean of its block's centres
    rng = np.random.default_rng(1)
    general = np.eye(4)
    general[:3] = rng.normal(size=(3, 4))
    out = ClassFractions(num_classes=2, factors=(2, 4, 3))(MetaTensor(torch.zeros(1, 4, 8, 6), affine=general))
    block = np.stack(np.meshgrid(np.arange(2, 4), np.arange(4, 8), np.arange(3, 6), indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(out.affine.numpy() @ [1, 1, 1, 1], general @ [*block.mean(0), 1], atol=1e-9)


def test_errors_name_the_shapes_and_the_values():
    with pytest.raises(ValueError, match=r"\(4, 7, 6\) is not divisible by the factors \(2, 4, 3\)"):
        ClassFractions(5, (2, 4, 3))(torch.zeros(1, 4, 7, 6))
    for bad in (-1.0, 5.0, 1.5):
        labels = torch.zeros(1, 2, 4, 3)
        labels[0, 1, 2, 0] = bad
        with pytest.raises(ValueError, match=r"shape \(1, 2, 4, 3\) holds values .*expected integer classes 0\.\.4"):
            ClassFractions(5, (2, 4, 3))(labels)
    with pytest.raises(ValueError, match=r"\(1, D, H, W\) class map, got shape \(2, 4, 4, 3\)"):
        ClassFractions(5, (2, 4, 3))(torch.zeros(2, 4, 4, 3))
    for factors in ((2, 4), (2, 0, 1), (2, 1.5, 1)):
        with pytest.raises(ValueError, match="factors must be 3 positive integers"):
            ClassFractions(5, factors)


def test_dictionary_version_converts_its_keys_only():
    labels = torch.tensor([0.0, 1.0, 1.0, 1.0]).reshape(1, 1, 4, 1)
    out = ClassFractionsd(keys=("a", "b"), num_classes=2, factors=(1, 2, 1), allow_missing_keys=True)(
        {"a": labels, "c": labels})
    np.testing.assert_allclose(out["a"][:, 0, :, 0].numpy(), [[0.5, 0.0], [0.5, 1.0]])
    assert out["c"] is labels and "b" not in out


def test_training_chain_turns_a_cohort_joint_label_file_into_partial_volume_fractions(tmp_path):
    """Load -> mirror -> 0.3125 mm rows, +-20 mm about the joint line -> tissue classes -> 1.25 mm fractions."""
    subject = make_subject(1, seed=0, side="L")  # a left knee: mirrored at load time like `labels`
    folder = write_subject(tmp_path, subject)
    chain = Compose([
        LoadMrid(keys="joint_labels"),
        MirrorToCanonicalSided(keys="joint_labels", side_key="side"),
        PreprocessMrid(keys="joint_labels", label_keys="joint_labels", spacing=(2.5, 0.3125, 2.5),
                       shape=(40, 128, 40)),
        MapLabelValued(keys="joint_labels", orig_labels=list(range(len(tissues.class_lut()))),
                       target_labels=tissues.class_lut().tolist()),
        ClassFractionsd(keys="joint_labels", num_classes=tissues.NUM_CLASSES, factors=(1, 4, 1)),
    ])
    out = chain({"joint_labels": str(folder / f"{subject.subject}_joint_labels.nii.gz"), "side": "L"})["joint_labels"]
    assert tuple(out.shape) == (tissues.NUM_CLASSES, 40, 32, 40) and out.dtype == torch.float32
    np.testing.assert_allclose(out.pixdim.numpy(), [2.5, 1.25, 2.5])
    frac = out.numpy()
    np.testing.assert_allclose(frac.sum(0), 1.0, atol=1e-5)
    femur, tibia = tissues.CLASS_INDEX["femur"], tissues.CLASS_INDEX["tibia"]
    centre = (slice(16, 24), slice(16, 24))  # the central 20 mm x 20 mm columns
    assert frac[femur, centre[0], :2, centre[1]].mean() > 0.9  # top rows: femur
    assert frac[tibia, centre[0], -2:, centre[1]].mean() > 0.9  # bottom rows: tibia
    partial = (frac > 0.0) & (frac < 1.0)
    assert partial.any() and partial[femur].any() and partial[tibia].any()  # bone surfaces cut through voxels
    assert out.meta[MIRRORED_KEY] is True  # the left knee's meta still says it was mirrored
    # the grid matches the file's voxel for voxel: mirrored, the central 40 x 128 x 40 kept, no resampling
    canonical = tissues.class_lut()[subject.joint_labels[:, :, ::-1]][2:42, 16:144, 2:42]
    np.testing.assert_allclose(frac, _reference(canonical, tissues.NUM_CLASSES, (1, 4, 1)), atol=1e-6)
