"""Finding the knees: LocateKnee(d) on synthetic radiographs, and predict / inference.json per knee.

Bilateral radiographs come from the SYNTHETIC OAI-layout tree (its ``known_centres.csv`` holds the
true joint centres), long-leg fields from a cohort radiograph reframed by
:func:`xray2mri.pipeline.data.synth.framing.long_leg_field`, and the images that must be refused
(chest-like, hand-like, blank) from ``tests/xray_factory.py``. Predictions use a tiny bundle
(random weights): what is checked is where the knees are and what is written, not the volumes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import xray_factory
from bundle_factory import make_tiny_bundle
from bundle_factory import write_dx as _dx
from monai.data import MetaTensor

from xray2mri.pipeline import cli
from xray2mri.pipeline.data.oai.synth_tree import write_oai_tree
from xray2mri.pipeline.data.synth.dicom_writer import write_dx as write_synth_dx
from xray2mri.pipeline.data.synth.framing import long_leg_field
from xray2mri.pipeline.data.synth.presets import SynthPreset
from xray2mri.pipeline.serving.predict import Predictor
from xray2mri.transforms.augment import RandShiftCropCentred
from xray2mri.transforms.errors import XrayInputError
from xray2mri.transforms.locate_knee import LocateKnee, LocateKneed, NoKneeFound, locate_knees
from xray2mri.transforms.xray import LoadXray

TINY = SynthPreset(name="tiny", mri_shape=(16, 16, 16), mri_spacing_mm=8.0, supersample=1,
                   xray_shape=(0, 0), xray_pixel_mm=0.8)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "bundle", whole=False)


@pytest.fixture(scope="module")
def bilateral(tmp_path_factory) -> tuple[Path, dict[str, tuple[float, float]]]:
    """One SYNTHETIC bilateral PA radiograph of the OAI-layout tree and its known centres by side."""
    root = tmp_path_factory.mktemp("oai") / "tree"
    write_oai_tree(root, 1, seed=4, visits=("00m",), preset=TINY, awkward=False, drr_spacing_mm=3.0)
    truth = json.loads((root / "oai_truth.json").read_text())
    known = {row["side"]: (float(row["row"]), float(row["col"]))
             for row in csv.DictReader(open(root / "known_centres.csv"))}
    path = root / truth["centres"][0]["xray"]
    flat = root.parent / "bilateral.dcm"  # a plain file name, as a user's radiograph
    flat.write_bytes(path.read_bytes())
    return flat, known


def _mm(a, b, spacing) -> float:
    return float(np.hypot((a[0] - b[0]) * spacing[0], (a[1] - b[1]) * spacing[1]))


def test_bilateral_radiograph_gives_two_knees_with_sides_and_centres(bilateral, tiny_bundle, tmp_path, capsys):
    """predict on a bilateral PA view: <stem>_R and <stem>_L outputs, sidecars within 5 mm of the truth."""
    path, known = bilateral
    out = tmp_path / "out"
    assert cli.main(["predict", "--bundle", str(tiny_bundle), "--input", str(path), "--output", str(out)]) == 0
    assert "predicted 1 of 1" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"bilateral_{s}_{suffix}" for s in ("L", "R") for suffix in
                     ("joint_labels_synthetic.nii.gz", "mri_synthetic.json", "mri_synthetic.nii.gz", "preview.png",
                      "uncertainty.nii.gz")]
    spacing = LoadXray()(path).meta["spacing"]
    for side in ("R", "L"):
        facts = json.loads((out / f"bilateral_{side}_mri_synthetic.json").read_text())
        assert facts["side"] == side and facts["side_source"] == "position"
        assert facts["synthetic"] is True and facts["source"] == str(path) and facts["xray2mri_version"]
        assert facts["output"] == f"bilateral_{side}_mri_synthetic.nii.gz"
        assert _mm(facts["joint_centre_px"], known[side], spacing) < 5.0
        np.testing.assert_allclose(facts["pixel_spacing_mm"], spacing)
        assert facts["spacing_source"] == "ImagerPixelSpacing" and 0 < facts["locator_confidence"] <= 1
        r0, c0, r1, c1 = facts["crop_box_px"]
        assert (r1 - r0) * spacing[0] == pytest.approx(facts["field_mm"], abs=spacing[0])
        assert abs((r0 + r1) / 2 - facts["joint_centre_px"][0]) <= 1 and abs((c0 + c1) / 2 - facts["joint_centre_px"][1]) <= 1
        assert facts["mirrored_to_canonical"] == (side == "L")
    # the patient's right knee is on the image's left (PatientOrientation L\F)
    right = json.loads((out / "bilateral_R_mri_synthetic.json").read_text())["joint_centre_px"]
    left = json.loads((out / "bilateral_L_mri_synthetic.json").read_text())["joint_centre_px"]
    assert right[1] < left[1]


def test_inference_json_and_predict_give_the_same_volumes(bilateral, tiny_bundle, tmp_path):
    """The bundle's inference.json (python -m monai.bundle run) and Predictor agree knee for knee."""
    from monai.bundle import run

    path, _ = bilateral
    out = tmp_path / "bundle_run"
    run(run_id="run", config_file=str(tiny_bundle / "configs" / "inference.json"), bundle_root=str(tiny_bundle),
        input=str(path), output_dir=str(out), logging_file=False)
    predictions = Predictor.from_bundle(tiny_bundle).predict_knees(path)
    assert [p.side for p in predictions] == ["R", "L"]
    for p in predictions:
        img = nib.load(out / f"bilateral_{p.side}_mri_synthetic.nii.gz")
        np.testing.assert_allclose(np.asarray(img.dataobj), p.volume, atol=1e-5)
        np.testing.assert_allclose(img.affine, p.affine, atol=1e-6)
        facts = json.loads((out / f"bilateral_{p.side}_mri_synthetic.json").read_text())
        assert facts["joint_centre_px"] == p.facts["joint_centre_px"] and facts["side"] == p.side


def test_long_leg_field_with_the_knee_off_centre(tiny_cohort, tmp_path):
    """A cohort knee placed off centre in a 700 mm field with a side marker and a collimation edge."""
    meta = json.loads((tiny_cohort / "SYN0000" / "SYN0000_meta.json").read_text())
    assert meta["xray"]["framing"] == "knee"  # subject 0 of the cohort is framed as a knee field
    knee = LoadXray()(tiny_cohort / "SYN0000" / "SYN0000_xray.dcm")
    spacing = knee.meta["spacing"]
    image = knee[0].numpy()
    centre = tuple(meta["xray"]["joint_centre_px"])
    framed = long_leg_field(image, centre, spacing[0], np.random.default_rng(1))
    assert framed.image.shape[0] * spacing[0] > 650 and abs(framed.centre[0] - framed.image.shape[0] / 2) > 20
    path = tmp_path / "longleg.dcm"
    xray = meta["xray"]
    scaled = framed.image / float(xray["stored_units_per_neper"])  # back to log attenuation
    write_synth_dx(path, scaled, subject="SYNTHETIC", laterality="U", imager_pixel_mm=xray["imager_pixel_spacing_mm"],
                   sid_mm=xray["sid_mm"], sod_mm=xray["sod_mm"])  # "U": no side stated
    loaded = LoadXray()(path)
    (found,) = LocateKnee()(loaded)
    assert _mm(found.centre, framed.centre, loaded.meta["spacing"]) < 5.0
    assert found.side == meta["side"] and found.side_source == "anatomy"  # no tag: the fibula is lateral


def test_thick_limbs_whose_soft_tissue_is_as_bright_as_bone_beside_the_shafts():
    """Real radiographs: thigh and calf soft tissue (thicker, lifted by processing) passes the knee's bone threshold.

    Measured with the knee's threshold, the femoral shaft then looks as wide as the thigh and the knee
    was refused ("no femoral shaft narrower than the joint"), as 7 of the 32 hand-marked real knees of
    ``benchmarks/data/real_knee_marks.csv`` were; each shaft is measured with its own threshold.
    """
    image = xray_factory.knee_attenuation(560, 360, 0.5, (280.0, 180.0), "R", limb_lift=2.5)
    (found,) = locate_knees(image, (0.5, 0.5))
    assert _mm(found.centre, (280.0, 180.0), (0.5, 0.5)) < 5.0


def test_thick_limbs_brightest_in_the_middle_do_not_pass_for_a_wide_shaft():
    """Heavier limbs (or stronger processing): the soft tissue's brightness rises smoothly towards the limb's middle.

    The limb is a cylinder, thickest in the middle; split by intensity alone, the thick middle of
    the thigh passed for the femoral shaft, the shaft looked nearly as wide as the knee and the knee
    was refused, as a real standing AP knee and both knees of a real bilateral thumbnail were (or a
    wrong band was taken). The shaft is now split from what is left once the smooth profile is taken off.
    """
    image = xray_factory.knee_attenuation(700, 360, 0.5, (350.0, 180.0), "R", limb_lift=4.0)
    (found,) = locate_knees(image, (0.5, 0.5))
    assert _mm(found.centre, (350.0, 180.0), (0.5, 0.5)) < 5.0


def test_tilted_joint_line_centre_is_midway_between_the_compartments():
    """Real knees: the two compartments' joint lines are seldom level (tilted plateau, varus/valgus, rotation).

    With the lateral joint line 6 mm above the medial one, a level band sees half of each compartment's
    dark band and the knee was refused ("no joint space found"), as a real tight crop was; each
    compartment's band is now found on its own and the joint line is midway between them.
    """
    image = xray_factory.knee_attenuation(480, 360, 0.5, (240.0, 180.0), "R", tilt_mm=6.0)
    (found,) = locate_knees(image, (0.5, 0.5))
    assert _mm(found.centre, (240.0, 180.0), (0.5, 0.5)) < 2.0


def test_compartments_whose_joint_lines_lie_12_mm_apart():
    """A real tight crop: each compartment's joint space level, the image-right one 12 mm higher (a step at the notch).

    Each compartment's band was looked for only 4 mm above or below the row: no row reached both,
    the open compartment was taken for a collapsed one and the other's band alone gave the joint
    line, 6 mm off (a real tight crop 8.4 mm off). The bands are now looked for 5 mm either way, and the bone of a knee above the upper band and below the lower one.
    """
    image = xray_factory.knee_attenuation(480, 360, 0.5, (240.0, 180.0), "R", step_mm=12.0)
    (found,) = locate_knees(image, (0.5, 0.5))
    assert _mm(found.centre, (240.0, 180.0), (0.5, 0.5)) < 2.0


def test_locator_defaults_match_the_bundle_config():
    """Each threshold train.json's ``locate_knee`` block sets is ``LocatorParams``' default (the bundle passes its own)."""
    from dataclasses import asdict

    from xray2mri.transforms.locate_knee import LocatorParams

    config = Path(__file__).resolve().parents[1] / "bundles" / "knee_xray2mri" / "configs" / "train.json"
    block = json.loads(config.read_text())["locate_knee"]
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(LocatorParams()).items()}
    assert block == {k: defaults[k] for k in block}


def test_thumbnail_with_coarse_pixels_is_searched_at_the_grid():
    """Thumbnails and previews (figure panels, PACS previews: 2-3 mm pixels) hold a knee in about 150 x 80 pixels.

    At 2.8 mm the 5 mm joint space is under two pixels; searched at the image's own pixels (band offsets
    and smoothing in whole pixels, several times the millimetres they mean) it was not seen and the knee
    was refused ("no joint space found"). The image is now interpolated up to the 1 mm grid first.
    """
    from scipy.ndimage import zoom

    fine = xray_factory.knee_attenuation(800, 440, 0.5, (400.0, 220.0), "R")
    spacing = 2.8
    thumb = zoom(fine, 0.5 / spacing, order=1, grid_mode=True, mode="nearest")
    known = tuple((c + 0.5) * 0.5 / spacing - 0.5 for c in (400.0, 220.0))
    (found,) = locate_knees(thumb, (spacing, spacing))
    assert _mm(found.centre, known, (spacing, spacing)) < 5.0 and found.confidence > 0.5


def test_knee_replacement_whose_saturated_metal_would_set_the_thresholds():
    """A total knee replacement on a display-processed radiograph: the metal saturates, flat, far above bone.

    With the metal in the histogram, the three-class thresholds split air+soft tissue / bone / metal:
    the bone fell in with the soft tissue and the knee was refused ("bone below the dark band is 0 mm
    wide"), as a real replaced knee was found 37 mm off. Metal (a large textureless plateau near the
    brightest value) is now left out of the thresholds and counts as bone.
    """
    spacing = 0.5
    image = xray_factory.knee_attenuation(560, 400, spacing, (280.0, 200.0), "R")
    y, x = np.mgrid[0:560, 0:400].astype(float)
    y, x = (y - 280.0) * spacing, (x - 200.0) * spacing
    femoral = (y > -30) & (y < -3) & (np.abs(x) < 36) & ~((y < -12) & (np.abs(x) < 10))  # with its box
    tray = ((y > 4) & (y < 10) & (np.abs(x) < 36)) | ((y >= 10) & (y < 55) & (np.abs(x) < 8))  # and its stem
    image = np.where(femoral | tray, image.max() + 1.5, image)
    display = 255.0 * ((image - image.min()) / np.ptp(image)) ** 3.0  # a display LUT darkening the soft tissue
    (found,) = locate_knees(display, (spacing, spacing))
    assert _mm(found.centre, (280.0, 200.0), (spacing, spacing)) < 3.0


def test_stemmed_revision_knee_joint_is_the_band_between_the_metal_components():
    """A stemmed revision replacement: metal replaces the bone ends, a thin tray sits on a stem.

    Around the joint line there is no bone of a knee's shape (below the thin tray only the stem), so
    the band was rejected and another found 29 mm away, as on a real revision knee (72 mm off). The
    band between a metal component a knee's width across just above and another just below is now
    the joint line of a replaced knee.
    """
    spacing = 0.5
    image = xray_factory.knee_attenuation(700, 400, spacing, (350.0, 200.0), "R", fibula=False)
    y, x = np.mgrid[0:700, 0:400].astype(float)
    y, x = (y - 350.0) * spacing, (x - 200.0) * spacing
    soft = float(np.median(image[(np.abs(y) < 30) & (np.abs(x) > 45) & (np.abs(x) < 55)]))
    resected = (np.abs(y) < 30) & (np.abs(x) < 42)  # the bone ends the implant replaces
    image = np.where(resected, soft + np.random.default_rng(0).normal(0.0, 0.03, image.shape), image)
    femoral = ((y > -28) & (y < -3) & (np.abs(x) < 36)) | ((y >= -90) & (y <= -28) & (np.abs(x) < 8))
    tibial = ((y > 3) & (y < 6) & (np.abs(x) < 36)) | ((y >= 6) & (y < 90) & (np.abs(x) < 7))
    image = np.where(femoral | tibial, image.max() + 1.5, image)
    (found,) = locate_knees(image, (spacing, spacing))
    assert _mm(found.centre, (350.0, 200.0), (spacing, spacing)) < 3.0


@pytest.mark.parametrize("collapsed", ["image-left", "image-right"])
def test_bone_on_bone_compartment_leaves_the_joint_line_to_the_open_one(collapsed):
    """KL 4: one compartment's joint space is gone (femur on tibia, a sclerotic line), the other is open.

    The collapsed compartment has no dark band; its faint best row, up to 4 mm off, was averaged with
    the open one's and the centre came out 3-4 mm off. A band under a quarter of the other's is now
    taken for a collapsed compartment and the open one alone gives the joint line.
    """
    image = xray_factory.knee_attenuation(560, 400, 0.5, (280.0, 200.0), "R", collapsed=collapsed)
    (found,) = locate_knees(image, (0.5, 0.5))
    assert _mm(found.centre, (280.0, 200.0), (0.5, 0.5)) < 1.5


@pytest.mark.parametrize("notch_mm", [20.0, 22.0])
@pytest.mark.parametrize("collapsed", ["image-left", "image-right"])
def test_kl4_knee_whose_intercondylar_notch_is_not_a_joint_space(collapsed, notch_mm):
    """KL 4 with an adult's intercondylar notch (20-22 mm wide) and the tibial spines rising into it.

    One compartment is bone on bone, the other narrowed to a faint 1.5 mm band. Each compartment's
    dark band was measured 6-30 mm from the bone axis, which reaches 4-5 mm into the notch: its dark
    arch above the spines, 5-6 mm above the joint line, passed for the collapsed compartment's joint
    space and the joint line came out midway, 2.6-2.9 mm high (on two real KL 4 tight crops, where the
    narrowed compartment locked onto the notch too, 6 and 9 mm off). The bands are now measured
    10-30 mm from the axis (``compartment_columns_mm``), clear of the notch.
    """
    image = xray_factory.knee_attenuation(560, 400, 0.5, (280.0, 200.0), "R", collapsed=collapsed,
                                          notch_mm=notch_mm, jsw_mm=1.5, jsw_fill=0.5)
    (found,) = locate_knees(image, (0.5, 0.5))
    assert _mm(found.centre, (280.0, 200.0), (0.5, 0.5)) < 1.5


@pytest.mark.parametrize(("offset_mm", "tilt_deg", "width_mm"), [(0.0, 4.0, 15.0), (8.0, 0.0, 15.0), (8.0, 4.0, 25.0),
                                                             (-8.0, -4.0, 20.0)])
def test_ruler_between_the_legs_of_a_bilateral_standing_view(offset_mm, tilt_deg, width_mm):
    """A bilateral standing AP view (knees 160 mm apart) with a radiopaque calibration ruler between the legs.

    The ruler (a strip as bright as the knee's bone, with metal ticks, running the whole field,
    tilted up to 4 degrees, touching the thighs) was split off with one leg: the leg's bone axis
    moved towards it, its "knee" was over 130 mm of bone and refused, as on a real standing view
    (133-140 mm). Long straight bright strips along the columns are now left out before the legs are split.
    """
    spacing, half = 0.5, 160
    right = xray_factory.knee_attenuation(800, 2 * half, spacing, (400.0, half), "R", seed=1)
    left = xray_factory.knee_attenuation(800, 2 * half, spacing, (406.0, half), "L", seed=2)
    image = xray_factory.add_ruler(np.concatenate([right, left], axis=1), spacing, 2 * half + offset_mm / spacing,
                                   width_mm=width_mm, tilt_deg=tilt_deg)
    knees = locate_knees(image, (spacing, spacing), patient_orientation="L\\F")
    assert [k.side for k in knees] == ["R", "L"]
    for knee, known in zip(knees, [(400.0, half), (406.0, 3 * half)]):
        assert _mm(knee.centre, known, (spacing, spacing)) < 2.0


def test_bilateral_view_on_a_black_canvas_with_grey_air():
    """A screenshot or padded export: the radiograph (air windowed to grey, 30 % of the range) on a
    constant black canvas, legs with more soft tissue on one side. The canvas was the image's darkest
    class, the air between the legs counted as body, and one leg's bone threshold took the whole
    leg (the left knee was not found). Constant bands at the lowest value along the borders are now
    left out as a collimation band is."""
    spacing, half = 1.0, 110
    x = np.arange(2 * half) - half
    right = xray_factory.knee_attenuation(400, 2 * half, spacing, (200.0, half), "R", seed=1)
    left = xray_factory.knee_attenuation(400, 2 * half, spacing, (203.0, half), "L", seed=2)
    right = right + 0.02 * xray_factory._chord(x - 45.0, 30.0)[None, :]  # heavier soft tissue medially
    left = left + 0.02 * xray_factory._chord(x + 45.0, 30.0)[None, :]
    image = np.concatenate([right, left], axis=1)
    shown = 0.3 + 0.7 * (image - image.min()) / np.ptp(image)
    canvas = np.zeros((image.shape[0] + 80, image.shape[1] + 160))
    canvas[40:-40, 80:-80] = shown
    knees = locate_knees(canvas, (spacing, spacing), patient_orientation="L\\F")
    assert [k.side for k in knees] == ["R", "L"]
    for knee, known in zip(knees, [(240.0, 80.0 + half), (243.0, 80.0 + 3 * half)]):
        assert _mm(knee.centre, known, (spacing, spacing)) < 5.0


@pytest.mark.parametrize("offset_mm", [-50.0, 55.0])
def test_burned_in_marker_over_the_leg_beside_the_joint(offset_mm):
    """A burned-in side marker (an "R", 30 mm tall, 3.5 mm strokes, above any anatomy) over the soft tissue beside the knee.

    Small bright blobs were only dropped away from the body: over the leg, the letter's strokes were
    taken for bone and the band between them for a joint space, 8-13 mm from the knee. Strokes
    brighter than anything filling a 5 mm square are now erased first.
    """
    spacing = 0.5
    image = xray_factory.knee_attenuation(700, 440, spacing, (350.0, 220.0), "R")
    h, w = 60, 42  # pixels
    letter = np.zeros((h, w), dtype=bool)
    t = w // 6
    letter[:, :t] = letter[:t, :] = letter[h // 2 - t // 2: h // 2 + t // 2 + 1, :] = True  # stem, top, bar
    letter[: h // 2, -t:] = True  # the bowl's right side
    for i in range(h // 2, h):  # the leg
        c = int((i - h // 2) / (h / 2) * (w - t))
        letter[i, c:c + t] = True
    r0, c0 = 350 - h // 2, int(220 + offset_mm / spacing - w / 2)
    image[r0:r0 + h, c0:c0 + w][letter] = 1.3 * image.max()
    (found,) = locate_knees(image, (spacing, spacing))
    assert _mm(found.centre, (350.0, 220.0), (spacing, spacing)) < 3.0


@pytest.mark.parametrize("kind", ["chest", "hand", "blank"])
def test_images_without_a_knee_are_refused_with_a_reason(kind, tiny_bundle, tmp_path, capsys):
    """A chest-like, a hand-like and a blank radiograph: rejected with the reason, exit 2, no output."""
    make = {
        "chest": lambda: xray_factory.to_stored(xray_factory.chest_attenuation(700, 860, 0.5)),
        "hand": lambda: xray_factory.to_stored(xray_factory.hand_attenuation(480, 400, 0.5)),
        "blank": lambda: np.full((400, 400), 1200, dtype=np.uint16),
    }[kind]
    ds = xray_factory.make_radiograph(make(), imager_spacing=(0.5, 0.5))
    path = xray_factory.save(ds, tmp_path / f"{kind}.dcm")
    out = tmp_path / "out"
    assert cli.main(["predict", "--bundle", str(tiny_bundle), "--input", str(path), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    (line,) = [e for e in err.splitlines() if ": rejected: " in e]
    assert line.startswith(f"{path}: rejected: ")
    assert ("blank" if kind == "blank" else "no knee found") in line
    assert not out.exists() or not any(out.rglob("*"))


def test_given_centre_and_centres_csv_replace_the_search(bilateral, tiny_bundle, tmp_path):
    """--centre ROW,COL (one file) and --centres CSV (file,row,col,side) place the knees instead."""
    path, known = bilateral
    row, col = known["L"]
    out = tmp_path / "one"
    args = ["predict", "--bundle", str(tiny_bundle), "--input", str(path), "--output", str(out)]
    assert cli.main([*args, "--centre", f"{row},{col}", "--side", "L"]) == 0
    facts = json.loads((out / "bilateral_mri_synthetic.json").read_text())
    assert facts["joint_centre_px"] == [round(row, 2), round(col, 2)] and facts["side"] == "L"
    assert facts["side_source"] == "given" and facts["locator_confidence"] == 1.0

    table = tmp_path / "centres.csv"
    table.write_text("file,row,col,side\n" + "".join(f"{path.name},{r},{c},{s}\n" for s, (r, c) in known.items()))
    out = tmp_path / "many"
    assert cli.main(["predict", "--bundle", str(tiny_bundle), "--input", str(path.parent / "bilateral.dcm"),
                     "--output", str(out), "--centres", str(table)]) == 0
    for side, centre in known.items():
        facts = json.loads((out / f"bilateral_{side}_mri_synthetic.json").read_text())
        assert facts["side"] == side and facts["joint_centre_px"] == [round(v, 2) for v in centre]


def test_dicom_output_carries_the_knee_facts(tiny_bundle, tmp_path):
    dcm = _dx(tmp_path / "knee.dcm", "L")
    out = tmp_path / "out"
    assert cli.main(["predict", "--bundle", str(tiny_bundle), "--input", str(dcm), "--output", str(out),
                     "--format", "dicom"]) == 0
    facts = json.loads((out / "knee_mri_synthetic.json").read_text())
    ds = pydicom.dcmread(next((out / "knee_mri_synthetic").iterdir()))
    assert "Knee L of knee.dcm" in ds.DerivationDescription
    assert str(facts["crop_box_px"]) in ds.DerivationDescription and "synthetic" in ds.DerivationDescription


def test_locate_kneed_routes_training_items():
    """A datalist knee (side given) gets that knee as one item; a precomputed box passes; no side: every knee."""
    image = xray_factory.to_stored(np.concatenate([
        xray_factory.knee_attenuation(360, 300, 0.5, (170, 150), "R"),
        xray_factory.knee_attenuation(360, 300, 0.5, (190, 150), "L")], axis=1)).astype(np.float32)
    xray = MetaTensor(torch.from_numpy(image)[None], meta={"spacing": (0.5, 0.5), "filename_or_obj": "b.dcm",
                                                          "patient_orientation": "L\\F", "laterality": None})
    locate = LocateKneed("xray", field_mm=100.0)
    both = locate({"xray": xray})
    assert [k["side"] for k in both] == ["R", "L"]
    assert _mm(both[0]["joint_centre_px"], (170, 150), (0.5, 0.5)) < 5 and _mm(both[1]["joint_centre_px"], (190, 450), (0.5, 0.5)) < 5
    assert both[0]["xray"].meta["knee_side"] == "R" and both[1]["xray"].meta["knee_side"] == "L"
    left = locate({"xray": xray, "side": "L"})
    assert isinstance(left, dict) and left["crop_box"] == both[1]["crop_box"]
    kept = locate({"xray": xray, "side": "R", "crop_box": [1, 2, 3, 4]})
    assert kept["crop_box"] == [1, 2, 3, 4]
    xray.meta["patient_orientation"] = "R\\F"  # stored mirrored: the image's left knee is the patient's left
    mirrored = locate({"xray": xray})
    assert [k["side"] for k in mirrored] == ["R", "L"] and mirrored[0]["crop_flip_columns"] is True
    assert mirrored[0]["joint_centre_px"] == both[1]["joint_centre_px"]
    with pytest.raises(XrayInputError, match="b.dcm: blank image"):
        LocateKneed("xray")({"xray": MetaTensor(torch.zeros(1, 300, 300), meta={"spacing": (0.5, 0.5),
                                                                                 "filename_or_obj": "b.dcm"})})
    # a datalist's knee (training, evaluation) that cannot be found: the message says how to place it
    blank = MetaTensor(torch.zeros(1, 300, 300), meta={"spacing": (0.5, 0.5), "filename_or_obj": "b.dcm"})
    with pytest.raises(XrayInputError, match="b.dcm: blank image.*datalist item a 'centre'.*'crop_box'"):
        LocateKneed("xray")({"xray": blank, "side": "R"})
    placed = LocateKneed("xray", field_mm=100.0)({"xray": blank, "side": "R", "centre": [150, 150]})
    r0, c0, r1, c1 = placed["crop_box"]
    assert (r1 - r0, c1 - c0) == (200, 200) and abs((r0 + r1 - 1) / 2 - 150) <= 0.5 and placed["side"] == "R"


@pytest.mark.parametrize(("spacing", "gamma"), [(0.5, 3.0), (2.0, 1.0), (2.0, 3.0), (2.8, 3.0)])
def test_hand_is_refused_as_a_thumbnail_and_under_a_harsh_lut(spacing, gamma):
    """A hand stays refused when small (2-2.8 mm pixels) or under a harsh display LUT (its bones' peaks then stand out thin and bright).

    Guards the thumbnail search (interpolated up to the grid) and the erasing of burned-in strokes
    (a bone's bright peak is not a flat stroke): a 2 mm thumbnail of a hand was taken for a knee before.
    """
    from scipy.ndimage import zoom

    hand = xray_factory.hand_attenuation(480, 400, 0.5)
    image = hand if spacing == 0.5 else zoom(hand, 0.5 / spacing, order=1, grid_mode=True, mode="nearest")
    image = ((image - image.min()) / np.ptp(image)) ** gamma
    with pytest.raises(NoKneeFound):
        locate_knees(image, (spacing, spacing))


def test_refusal_reasons_name_what_was_seen():
    with pytest.raises(NoKneeFound, match="wide"):
        locate_knees(xray_factory.chest_attenuation(700, 860, 0.5), (0.5, 0.5))
    with pytest.raises(NoKneeFound, match="no knee found"):
        locate_knees(xray_factory.hand_attenuation(480, 400, 0.5), (0.5, 0.5))


def test_crop_shift_draws_once_per_item_within_the_limit():
    shift = RandShiftCropCentred("xray", max_shift_mm=4.0, spacing=(1.0, 1.0), prob=1.0)
    shift.set_random_state(3)
    base = torch.zeros(1, 32, 32)
    base[0, 16, 16] = 1.0
    seen = set()
    for _ in range(30):
        moved = shift({"xray": base})["xray"]
        (r, c), = (moved[0] == 1).nonzero().tolist()
        assert np.hypot(r - 16, c - 16) <= 4.0 + 0.75  # within the radius (rounded to pixels)
        assert (16 - r, 16 - c) == shift.shifter.shift_px  # a crop centred (dr, dc) off: content moved by -(dr, dc)
        seen.add((r, c))
    assert len(seen) > 5
    off = RandShiftCropCentred("xray", prob=0.0)
    assert off({"xray": base})["xray"] is base


def test_one_volume_clients_choose_the_knee_of_a_bilateral_study(bilateral, tiny_bundle):
    """What the MONAI Label task returns (its run_inferer: predict_knees + choose_knee): the knee asked for
    with ``side``, else the patient's right knee with a note naming both; one-knee predict refuses to guess."""
    from xray2mri.pipeline.serving.predict import choose_knee

    path, _ = bilateral
    predictor = Predictor.from_bundle(tiny_bundle)
    knees = predictor.predict_knees(path)
    left, note = choose_knee(knees, "L")
    assert left.side == "L" and left.mirrored and "L knee, as asked" in note
    first, note = choose_knee(knees)
    assert first.side == "R" and "R, L" in note and "side=L" in note
    with pytest.raises(XrayInputError, match="2 knees found"):
        predictor.predict(path)
    np.testing.assert_allclose(predictor.predict(path, side="L").volume, left.volume)


def test_a_failed_sidecar_leaves_no_output_of_any_knee(bilateral, tiny_bundle, tmp_path, monkeypatch, capsys):
    """Volume, sidecar and preview come together: the second knee's failure removes the first knee's files too."""
    from xray2mri.pipeline.serving import writers

    path, _ = bilateral
    real_write = writers.write_sidecar
    calls = []

    def fail_second(facts, where):
        calls.append(where)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(facts, where)

    monkeypatch.setattr(writers, "write_sidecar", fail_second)
    out = tmp_path / "out"
    assert cli.main(["predict", "--bundle", str(tiny_bundle), "--input", str(path), "--output", str(out)]) == 2
    assert "No space left" in capsys.readouterr().err and len(calls) == 2
    assert not any(p.is_file() for p in out.rglob("*"))
