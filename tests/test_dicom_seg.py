"""The tissue label map as a DICOM SEG on the generated MR series (``--format dicom`` with the tissue head)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from bundle_factory import make_tiny_bundle
from bundle_factory import write_dx as _dx

from xray2mri.pipeline.data.synth.tissues import NUM_CLASSES, TISSUE_CLASSES
from xray2mri.pipeline.serving import dicom_seg
from xray2mri.pipeline.serving.dicom_seg import SEG_UNAVAILABLE, SEGMENT_CODES, write_dicom_seg
from xray2mri.pipeline.serving.writers import write_dicom_series
from xray2mri.transforms.geometry import canonical_affine


def _hd():
    """highdicom (a dev dependency; imported here, not at collection, as the pydicom 2.4 run collects this file)."""
    import highdicom

    return highdicom


def _series(tmp_path: Path, shape=(6, 10, 12)) -> tuple[Path, list[pydicom.Dataset]]:
    folder = write_dicom_series(np.random.default_rng(0).random(shape, dtype=np.float32),
                                canonical_affine(shape, 2.5), tmp_path / "knee_mri_synthetic")
    return folder, [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]


def test_seg_holds_every_class_on_the_slices_of_the_mr_series(tmp_path):
    folder, slices = _series(tmp_path)
    labels = np.random.default_rng(1).integers(0, NUM_CLASSES, (6, 10, 12)).astype(np.uint8)
    path = write_dicom_seg(labels, folder, tmp_path / "knee_seg.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.SegmentationType == "LABELMAP"
    assert ds.SeriesDescription.startswith("SYNTHETIC")
    assert ds.StudyInstanceUID == slices[0].StudyInstanceUID and ds.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    seg = _hd().seg.Segmentation.from_dataset(ds)
    back = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in slices], combine_segments=True)
    np.testing.assert_array_equal(back, labels)  # slice i of the label map on the series' i-th file
    described = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    for tissue in TISSUE_CLASSES[1:]:  # every tissue class, SNOMED-coded, marked synthetic
        s = described[tissue.index]
        assert tissue.name in s.SegmentLabel and "SYNTHETIC" in s.SegmentLabel
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == SEGMENT_CODES[tissue.name][1][0]
    assert set(SEGMENT_CODES) == {t.name for t in TISSUE_CLASSES[1:]}


def test_seg_refuses_a_label_map_that_is_not_the_series(tmp_path):
    folder, _ = _series(tmp_path)
    with pytest.raises(ValueError, match="does not match the series"):
        write_dicom_seg(np.zeros((5, 10, 12), np.uint8), folder, tmp_path / "x_seg.dcm")
    with pytest.raises(ValueError, match="not a tissue class"):
        write_dicom_seg(np.full((6, 10, 12), NUM_CLASSES, np.uint8), folder, tmp_path / "x_seg.dcm")
    assert not (tmp_path / "x_seg.dcm").exists()


def _tissue_bundle(tmp_path: Path) -> Path:
    return make_tiny_bundle(tmp_path / "bundle", whole=False, tissue=True)


@pytest.mark.parametrize("side", ["R", "L"])
def test_predict_dicom_output_writes_the_label_map_as_seg_on_its_series(tmp_path, side):
    """``--format dicom``: the SEG references the written MR series and holds the label map predict's NIfTI holds."""
    import nibabel as nib

    from xray2mri.pipeline.serving.predict import Predictor, save_prediction

    bundle = _tissue_bundle(tmp_path)
    pred = Predictor.from_bundle(bundle).predict(_dx(tmp_path / "knee.dcm", side))
    save_prediction(pred, tmp_path / "d", "knee", fmt="dicom")
    save_prediction(pred, tmp_path / "n", "knee", fmt="nifti")
    sidecar = json.loads((tmp_path / "d" / "knee_mri_synthetic.json").read_text())
    assert sidecar["labels_output"] == "knee_seg.dcm"
    slices = [pydicom.dcmread(f) for f in sorted((tmp_path / "d" / "knee_mri_synthetic").glob("*.dcm"))]
    seg = _hd().seg.Segmentation.from_dataset(pydicom.dcmread(tmp_path / "d" / "knee_seg.dcm"))
    back = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in slices], combine_segments=True)
    nifti = np.asarray(nib.load(tmp_path / "n" / "knee_labels_synthetic.nii.gz").dataobj)
    np.testing.assert_array_equal(back, nifti)


def test_without_highdicom_dicom_output_keeps_the_nifti_label_map_and_says_why(tmp_path, monkeypatch):
    from xray2mri.pipeline.serving.predict import Predictor, predict_batch

    monkeypatch.setattr(dicom_seg, "seg_available", lambda: False)
    bundle = _tissue_bundle(tmp_path)
    _dx(tmp_path / "in" / "knee.dcm", "R")
    said: list[str] = []
    result = predict_batch(Predictor.from_bundle(bundle), tmp_path / "in", tmp_path / "out", fmt="dicom",
                           echo=said.append)
    assert not result.rejected
    assert (tmp_path / "out" / "knee_labels_synthetic.nii.gz").is_file()
    assert not (tmp_path / "out" / "knee_seg.dcm").exists()
    sidecar = json.loads((tmp_path / "out" / "knee_mri_synthetic.json").read_text())
    assert SEG_UNAVAILABLE in sidecar["warnings"] and any(SEG_UNAVAILABLE in line for line in said)
