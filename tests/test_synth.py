"""The synthetic paired knee cohort: determinism, files that load, physics that holds, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from scipy.ndimage import map_coordinates

from xray2mri.pipeline.cli import main
from xray2mri.pipeline.data.synth.bone_texture import trabecular_attenuation
from xray2mri.pipeline.data.synth.cohort import generate_cohort, joint_label_axes, make_subject, subject_rng
from xray2mri.pipeline.data.synth.framing import COHORT_FRAMINGS
from xray2mri.pipeline.data.synth.phantom import (
    compartment_centres,
    compartment_halfwidths,
    draw_params,
    render_labels,
)
from xray2mri.pipeline.data.synth.presets import PRESETS, SynthPreset
from xray2mri.pipeline.data.synth.tissues import BONE_LABELS, LABEL, attenuation_lut
from xray2mri.transforms.mri import LoadMrid
from xray2mri.transforms.xray import LoadXrayd

N_SUBJECTS = 6  # covers every photometric x transfer syntax combination (index % 6)
SEED = 3


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("cohort2w"), N_SUBJECTS, seed=SEED, workers=2, progress=False)


def _metas(cohort: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cohort.glob("*/*_meta.json"))]


def _pixel_digest(cohort: Path) -> dict[str, str]:
    """Hash of the decoded pixels of every radiograph and volume (not the file bytes)."""
    out = {}
    for path in sorted(cohort.glob("*/*")):
        if path.suffix == ".dcm":
            data = pydicom.dcmread(path).pixel_array.tobytes()
        elif path.name.endswith(".nii.gz"):
            data = np.asarray(nib.load(path).dataobj).tobytes()
        else:
            continue
        out[path.name] = hashlib.sha256(data).hexdigest()
    return out


def test_same_seed_same_pixels_and_datalist_whatever_the_workers(cohort, tmp_path):
    again = generate_cohort(tmp_path / "one_worker", N_SUBJECTS, seed=SEED, workers=1, progress=False)
    first = _pixel_digest(cohort)
    assert len(first) == 4 * N_SUBJECTS
    assert _pixel_digest(again) == first
    assert json.loads((again / "datalist.json").read_text()) == json.loads((cohort / "datalist.json").read_text())
    other = make_subject(0, seed=SEED + 1)
    assert not np.array_equal(other.mri, make_subject(0, seed=SEED).mri)


def test_cohort_folder_layout_and_meta(cohort):
    legend = json.loads((cohort / "tissues.json").read_text())
    assert legend == LABEL and legend["air"] == 0
    metas = _metas(cohort)
    assert [m["subject"] for m in metas] == [f"SYN{i:04d}" for i in range(N_SUBJECTS)]
    for m in metas:
        folder = cohort / m["subject"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{m['subject']}_{k}" for k in ("xray.dcm", "mri.nii.gz", "labels.nii.gz", "joint_labels.nii.gz",
                                            "meta.json")
        )
        assert m["synthetic"] is True and m["visit"] == "00m" and m["side"] in ("L", "R") and 0 <= m["grade"] <= 4
        assert 0 < m["jsw_medial_mm"] <= m["jsw_lateral_mm"]
        can = m["geometry"]["canonical"]
        med, lat = can["medial_columns"], can["lateral_columns"]
        # medial is towards the midline: patient-left columns (high) for a right knee
        assert (med[0] > lat[1]) if m["side"] == "R" else (med[1] < lat[0])
    datalist = json.loads((cohort / "datalist.json").read_text())
    listed = sorted(item["subject"] for split in ("training", "validation", "test") for item in datalist[split])
    assert listed == [m["subject"] for m in metas]
    assert all(item["joint_labels"] == f"{item['subject']}/{item['subject']}_joint_labels.nii.gz"
               for split in ("training", "validation", "test") for item in datalist[split])
    assert "SYNTHETIC" in datalist["description"]


def test_files_load_through_the_project_loaders_to_the_canonical_arrays(cohort):
    load = LoadMrid(keys=("mri", "labels"))
    load_x = LoadXrayd(keys="xray")
    orientations, photometrics, syntaxes = set(), set(), set()
    for m in _metas(cohort):
        subj, folder = m["subject"], cohort / m["subject"]
        item = load({"mri": str(folder / f"{subj}_mri.nii.gz"), "labels": str(folder / f"{subj}_labels.nii.gz")})
        truth = make_subject(m["index"], seed=SEED)
        np.testing.assert_array_equal(item["labels"][0].numpy().astype(np.uint8), truth.labels)
        np.testing.assert_array_equal(item["mri"][0].numpy().astype(np.int16), truth.mri)
        orientations.add("".join(nib.aff2axcodes(nib.load(folder / f"{subj}_mri.nii.gz").affine)))
        assert b"SYNTHETIC" in nib.load(folder / f"{subj}_mri.nii.gz").header["descrip"].tobytes()

        x = load_x({"xray": str(folder / f"{subj}_xray.dcm")})["xray"]
        assert tuple(x.shape) == (1, *m["xray"]["shape"])
        if m["xray"]["framing"] == "knee":
            assert tuple(x.shape) == (1, *m["preset"]["xray_shape"])
        expect = m["xray"]["imager_pixel_spacing_mm"] / m["xray"]["magnification"]
        np.testing.assert_allclose(np.asarray(x.meta["spacing"], dtype=float), [expect, expect], rtol=1e-4)
        bilateral = m["xray"]["framing"] == "bilateral"
        assert x.meta["laterality"] == (None if bilateral else m["side"])
        assert (x.meta["modality"], x.meta["body_part"], x.meta["view_position"]) == ("DX", "KNEE", "AP")
        ds = pydicom.dcmread(folder / f"{subj}_xray.dcm", stop_before_pixels=True)
        assert ds.ImageLaterality == ("B" if bilateral else m["side"]) and ("Laterality" in ds) != bilateral
        burned = "YES" if m["xray"]["burned_in_annotation"] else "NO"
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.BurnedInAnnotation == burned
        assert "SYNTHETIC" in ds.SeriesDescription and "SYNTHETIC" in ds.ImageComments
        assert ds.PatientID == subj and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
        photometrics.add(ds.PhotometricInterpretation)
        syntaxes.add(ds.file_meta.TransferSyntaxUID.name)
    assert len(orientations) == N_SUBJECTS
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    assert len(syntaxes) == 3


def _canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI's array re-laid out in the canonical "PIL" order, and the affine of that array."""
    img = nib.load(path)
    transform = ornt_transform(io_orientation(img.affine), axcodes2ornt("PIL"))
    return apply_orientation(np.asarray(img.dataobj), transform), img.affine @ inv_ornt_aff(transform, img.shape)


def test_joint_label_file_shares_the_mri_columns_and_has_finer_rows_at_the_same_places(cohort):
    """The joint-region file's A->P/R->L voxel centres are MRI voxels 10..53, its rows 1/8 of the MRI's,
    and in world space it shows what the MRI-grid label file shows."""
    for m in _metas(cohort):
        subj, folder = m["subject"], cohort / m["subject"]
        joint, joint_affine = _canonical(folder / f"{subj}_joint_labels.nii.gz")
        labels, mri_affine = _canonical(folder / f"{subj}_labels.nii.gz")
        grid = m["geometry"]["canonical"]["joint_labels"]
        assert joint.dtype == np.uint8 and list(joint.shape) == grid["shape"] == [44, 160, 44]
        assert grid["spacing_mm"] == [2.5, 0.3125, 2.5] and grid["first_mri_voxel_ap_rl"] == [10, 10]
        assert b"joint-region tissue labels" in nib.load(folder / f"{subj}_joint_labels.nii.gz").header["descrip"].tobytes()
        # joint voxel (i, j, k) -> MRI voxel (i + 10, 31.5 + (j - 79.5) / 8, k + 10)
        to_mri = np.linalg.inv(mri_affine) @ joint_affine
        expect = np.array([[1, 0, 0, 10], [0, 1 / 8, 0, 31.5 - 79.5 / 8], [0, 0, 1, 10], [0, 0, 0, 1]])
        np.testing.assert_allclose(to_mri, expect, atol=1e-6)
        # no joint row is centred on an MRI row (8 rows per MRI voxel, both grids centred on the joint
        # line), so re-render the subject at the world positions both files' rows name
        p = draw_params(subject_rng(SEED, m["index"]))

        def mm(vox):  # MRI voxel index -> canonical mm
            return (np.asarray(vox, dtype=float) - 31.5) * 2.5

        cols = mm(np.arange(10, 54))
        rows = mm((to_mri @ np.stack([np.zeros(160), np.arange(160), np.zeros(160), np.ones(160)]))[1])
        a, s, lr = joint_label_axes(PRESETS["demo"])  # exact coordinates: a point sampler is exact at edges
        for got, want in ((cols, a), (rows, s), (cols, lr)):
            np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_array_equal(render_labels(p, a, s, lr), joint)
        inside = np.flatnonzero(np.abs(mm(np.arange(64))) < 25.0)  # MRI rows within the joint box
        np.testing.assert_array_equal(render_labels(p, a, mm(inside), lr), labels[10:54, inside, 10:54])
        # and the joint rows nearest the MRI's (0.16 mm away) mostly agree with the MRI-grid file
        nearest = np.rint((inside - to_mri[1, 3]) / to_mri[1, 1]).astype(int)
        assert np.mean(joint[:, nearest, :] == labels[10:54, inside, 10:54]) > 0.95


def test_joint_label_box_is_clipped_and_kept_centred_on_a_small_mri():
    tiny = SynthPreset(name="t", mri_shape=(24, 31, 23), mri_spacing_mm=6.0, supersample=1, xray_shape=(8, 8),
                       xray_pixel_mm=1.0)
    assert tiny.joint_label_shape == (24, 160, 23) and tiny.joint_label_first_voxel == (0, 0)
    odd = dataclasses.replace(tiny, mri_shape=(24, 31, 24), joint_label_extent_vox=23)
    assert odd.joint_label_shape == (22, 160, 22) and odd.joint_label_first_voxel == (1, 1)
    a, s, lr = joint_label_axes(odd)
    assert a.mean() == 0 and lr.mean() == 0 and s.mean() == 0 and np.allclose(np.diff(s), 6.0 / 8)
    demo, full = PRESETS["demo"], PRESETS["full"]
    for pre in (demo, full):  # both presets: the same 110 x 50 x 110 mm box, 0.3125 mm rows
        extent = np.multiply(pre.joint_label_shape, pre.joint_label_spacing_mm)
        np.testing.assert_allclose(extent, [110.0, 50.0, 110.0])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids) / np.maximum(w0, 1)
    m1 = ((hist * mids).sum() - np.cumsum(hist * mids)) / np.maximum(w1, 1)
    return float(mids[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def test_radiograph_bone_is_bright_and_lies_where_the_label_maps_bone_projects(cohort):
    load_x = LoadXrayd(keys="xray")
    load = LoadMrid(keys="labels")
    for m in _metas(cohort):
        subj, folder = m["subject"], cohort / m["subject"]
        xt = load_x({"xray": str(folder / f"{subj}_xray.dcm")})["xray"]
        sp = float(xt.meta["spacing"][0])  # mm at the knee (magnification corrected by the loader)
        x = xt[0].numpy()
        lab = load({"labels": str(folder / f"{subj}_labels.nii.gz")})["labels"][0].numpy().astype(int)
        n, mri_sp = lab.shape[1], m["preset"]["mri_spacing_mm"]
        # radiograph resampled onto the MRI's (rows, cols) grid, both centred on the knee
        mm = (np.arange(n) - (n - 1) / 2) * mri_sp
        r0, c0 = m["xray"]["joint_centre_px"]  # where the framing put the knee centre
        rr, cc = np.meshgrid(mm / sp + r0, mm / sp + c0, indexing="ij")
        xr = map_coordinates(x, [rr, cc], order=1)
        bone = np.isin(lab, BONE_LABELS).any(axis=0)
        limb = (lab > 0).any(axis=0)
        assert xr[bone].mean() > xr[limb & ~bone].mean() + 0.5 * xr[limb & ~bone].std()
        bright = xr > _otsu(xr[limb])
        assert _dice(bright & limb, bone) > 0.8, subj
        assert _dice(bright[:, ::-1] & limb, bone) < _dice(bright & limb, bone)


def test_radiographs_are_framed_in_turn_and_the_meta_says_where_each_knee_is(cohort):
    """Knee field, long-leg field, marked knee field and bilateral view, each knee where the meta says."""
    from xray2mri.transforms.locate_knee import LocateKnee
    from xray2mri.transforms.xray import LoadXray

    metas = _metas(cohort)
    assert [m["xray"]["framing"] for m in metas] == [COHORT_FRAMINGS[i % len(COHORT_FRAMINGS)] for i in range(N_SUBJECTS)]
    assert set(COHORT_FRAMINGS) <= {m["xray"]["framing"] for m in metas}
    locate = LocateKnee(field_mm=160.0)
    for m in metas:
        x = LoadXray()(cohort / m["subject"] / f"{m['subject']}_xray.dcm")
        knees = {k.side: k for k in locate(x)}
        truth = {m["side"]: m["xray"]["joint_centre_px"]}
        if m["xray"]["framing"] == "bilateral":
            truth[{"R": "L", "L": "R"}[m["side"]]] = m["xray"]["other_knee_centre_px"]
            assert x.shape[-1] > 2 * m["preset"]["xray_shape"][1] * 0.9  # both knees on one detector
        else:
            assert m["xray"]["other_knee_centre_px"] is None
        if m["xray"]["framing"] == "long_leg":
            assert x.shape[-2] * float(x.meta["spacing"][0]) > 500  # a long-leg field
        assert sorted(knees) == sorted(truth), m["subject"]
        for side, (row, col) in truth.items():
            err = np.hypot(*(np.subtract(knees[side].centre, (row, col)) * np.asarray(x.meta["spacing"], dtype=float)))
            assert err < 5.0, (m["subject"], side, err)


def test_framing_and_texture_change_the_radiograph_only():
    """The anatomy, MRI and labels do not depend on how the radiograph is framed; the marrow is textured."""
    plain, framed = make_subject(1, seed=SEED, framing="knee"), make_subject(1, seed=SEED)
    assert framed.meta["xray"]["framing"] == "long_leg"
    np.testing.assert_array_equal(plain.mri, framed.mri)
    np.testing.assert_array_equal(plain.labels, framed.labels)
    assert plain.meta["params"] == framed.meta["params"] and plain.xray.shape != framed.xray.shape
    with pytest.raises(ValueError, match="unknown framing"):
        make_subject(0, seed=SEED, framing="lateral")


def test_trabecular_texture_varies_the_marrow_and_nothing_else():
    labels = np.full((24, 24, 24), LABEL["muscle"], dtype=np.uint8)
    labels[6:18, 6:18, 6:18] = LABEL["tibia"]
    labels[6:18, 6:18, 6] = LABEL["cortical_bone"]
    mu = attenuation_lut()[labels]
    out = trabecular_attenuation(mu, labels, 1.0, np.random.default_rng(0), amplitude=0.3)
    marrow = labels == LABEL["tibia"]
    np.testing.assert_array_equal(out[~marrow], mu[~marrow])  # cortex and soft tissue as they were
    rel = out[marrow] / mu[marrow]
    assert 0.15 < rel.std() < 0.4 and abs(rel.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(trabecular_attenuation(mu, labels, 1.0, np.random.default_rng(0), amplitude=0.0), mu)


def _measured_jsw(p, centre, halfwidth, step=0.05) -> float:
    """Minimal S-I gap between bone above and below the joint line, in a fine window of the compartment."""
    a = np.arange(centre[0] - 10, centre[0] + 10.01, 0.5)
    lr = np.arange(centre[2] - halfwidth + 1.5, centre[2] + halfwidth - 1.49, 0.75)
    s = np.arange(-8, 8 + step / 2, step)
    bone = np.isin(render_labels(p, a, s, lr), BONE_LABELS)
    up = np.where(bone & (s[None, :, None] < 0), s[None, :, None], -np.inf).max(axis=1)
    down = np.where(bone & (s[None, :, None] > 0), s[None, :, None], np.inf).min(axis=1)
    return float((down - up).min() - step)


def test_joint_space_width_in_meta_is_what_the_label_map_shows(cohort):
    for m in _metas(cohort):
        p = make_subject(m["index"], seed=SEED).params
        centres, halfw = compartment_centres(p), compartment_halfwidths(p)
        for comp in ("medial", "lateral"):
            got = _measured_jsw(p, centres[comp], halfw[comp])
            assert got == pytest.approx(m[f"jsw_{comp}_mm"], abs=0.08), (m["subject"], comp)
        # and on the written 2.5 mm label map, to within a voxel
        lab = LoadMrid(keys="labels")({"labels": str(cohort / m["subject"] / f"{m['subject']}_labels.nii.gz")})
        lab = np.isin(lab["labels"][0].numpy().astype(int), BONE_LABELS)
        c0, c1 = m["geometry"]["canonical"]["medial_columns"]
        centre_row = m["geometry"]["canonical"]["joint_line_row"]
        rows = np.arange(lab.shape[1])
        col = lab[:, :, c0 : c1 + 1]
        up = np.where(col & (rows[None, :, None] < centre_row), rows[None, :, None], -1).max(axis=1)
        down = np.where(col & (rows[None, :, None] > centre_row), rows[None, :, None], 10**6).min(axis=1)
        gap_mm = ((down - up)[(up >= 0) & (down < 10**6)].min() - 1) * m["preset"]["mri_spacing_mm"]
        assert abs(gap_mm - m["jsw_medial_mm"]) <= m["preset"]["mri_spacing_mm"]


def test_higher_grade_means_narrower_medial_joint_space_in_the_label_map():
    means, lateral = [], []
    for grade in range(5):
        got = []
        for i in range(3):
            p = draw_params(np.random.default_rng([11, grade, i]), grade=grade)
            got.append(_measured_jsw(p, compartment_centres(p)["medial"], compartment_halfwidths(p)["medial"]))
            lateral.append(p.jsw_lateral_mm)
        means.append(np.mean(got))
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert means[4] < np.mean(lateral) - 2.0  # medial narrows more than lateral


def test_left_knee_is_the_mirror_image_of_the_right():
    p = draw_params(np.random.default_rng(5), grade=2, side="R")
    ax = (np.arange(32) - 15.5) * 5.0
    right = render_labels(p, ax, ax, ax)
    left = render_labels(dataclasses.replace(p, side="L"), ax, ax, ax)
    np.testing.assert_array_equal(left, right[:, :, ::-1])
    assert not np.array_equal(right, right[:, :, ::-1])  # the knee is not symmetric (fibula, condyles)


def test_grade_changes_the_bone_the_radiograph_sees():
    """KL 4 brings osteophytes and subchondral sclerosis that KL 0 does not have."""
    base = draw_params(np.random.default_rng(8), grade=0, side="R")
    oa = draw_params(np.random.default_rng(8), grade=4, side="R")
    ax = (np.arange(64) - 31.5) * 2.5
    assert not (render_labels(base, ax, ax, ax) == LABEL["sclerotic_bone"]).any()
    assert (render_labels(oa, ax, ax, ax) == LABEL["sclerotic_bone"]).sum() > 20
    assert oa.osteophyte_mm > 3 and base.osteophyte_mm == 0


def test_cli_writes_a_cohort_that_manifest_check_accepts_and_a_preview(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--subjects", "3", "--seed", "1", "--workers", "1",
                 "--no-progress", "--preview"]) == 0
    assert main(["manifest", "check", str(out / "datalist.json"), "--base-dir", str(out)]) == 0
    png = out / "preview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 1000 and img[..., :3].std() > 0.1
    assert main(["synth", "--out", str(out), "--subjects", "0"]) == 2
