"""Import a small SYNTHETIC OAI-layout tree: pairs, awkward cases, grades, splits, check, crops, loading."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

from xray2mri.pipeline.commands._oai_options import add_oai_arguments, build_from_oai
from xray2mri.pipeline.data import manifests
from xray2mri.pipeline.data.oai import grades as grades_mod
from xray2mri.pipeline.data.oai import layout, pairing
from xray2mri.pipeline.data.oai.build import build_oai_datalist, read_centres
from xray2mri.pipeline.data.oai.synth_tree import AWKWARD_CASES, participant_id, write_oai_tree
from xray2mri.pipeline.data.synth.presets import SynthPreset

#: A tiny preset: MRI 24^3 at 6 mm, radiograph pixels of 1 mm.
TINY = SynthPreset(name="tiny", mri_shape=(24, 24, 24), mri_spacing_mm=6.0, supersample=1,
                   xray_shape=(0, 0), xray_pixel_mm=1.0)
PARTICIPANTS = len(AWKWARD_CASES)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("oai") / "tree"
    write_oai_tree(root, PARTICIPANTS, seed=3, visits=("00m", "12m"), preset=TINY, drr_spacing_mm=3.0)
    truth = json.loads((root / "oai_truth.json").read_text())
    return root, truth


@pytest.fixture(scope="module")
def built(tree):
    root, _ = tree
    return build_oai_datalist(root, grades=root / "clinical")


def _key(d):
    return (d["participant"], d["visit"], d["side"])


def test_every_expected_pair_is_found_with_its_side_and_visit(tree, built):
    root, truth = tree
    items = {(i["subject"], layout.visit_label(layout.parse_visit(i["visit"])), i["side"]): i for i in built.items}
    expected = {_key(p): p for p in truth["pairs"]}
    assert set(items) == set(expected)
    for key, pair in expected.items():
        assert items[key]["xray"] == pair["xray"] and items[key]["mri"] == pair["mri"], key
        assert items[key]["days_apart"] == pair["days_apart"]
    # the MRI of each item is the series of that knee (its SeriesDescription in the index says so)
    import pydicom

    for item in built.items[:6]:
        first = sorted((root / item["mri"]).iterdir())[0]
        assert pydicom.dcmread(first, stop_before_pixels=True).Laterality == item["side"]


def test_every_awkward_case_is_reported_once_with_its_reason(tree, built):
    _, truth = tree
    got = [(u.participant, "" if u.visit is None else layout.visit_label(u.visit), u.side, u.kind, u.reason)
           for u in built.pairing.unpaired]
    assert len(got) == len(set(got)), "a candidate is reported twice"
    expected = [(u["participant"], u["visit"], u["side"], u["kind"], u["reason"]) for u in truth["unpaired"]]
    assert sorted(got) == sorted(expected)
    reasons = {u.reason for u in built.pairing.unpaired}
    assert {pairing.NO_MRI, pairing.NO_XRAY, pairing.SUPERSEDED, pairing.OUTSIDE_WINDOW, pairing.UNREADABLE} <= reasons
    summary = built.summary
    assert summary["pairs"] == len(truth["pairs"])
    assert summary["unpaired: no MRI"] == 1 and summary["unpaired: superseded by a later rescan"] == 1
    assert summary["ignored: radiograph view not used"] == 1


def test_rescan_last_wins_and_weeks_apart_pair_within_window(tree, built):
    _, truth = tree
    rescanned = participant_id(AWKWARD_CASES.index("rescan_right"))
    item = next(i for i in built.items if i["subject"] == rescanned and i["visit"] == "V00" and i["side"] == "R")
    loser = next(u for u in built.pairing.unpaired if u.reason == pairing.SUPERSEDED)
    assert loser.participant == rescanned and item["mri"] > loser.path  # the later series folder won
    early = participant_id(AWKWARD_CASES.index("xray_weeks_early"))
    days = {i["days_apart"] for i in built.items if i["subject"] == early and i["visit"] == "V00"}
    assert days == {21}


def test_narrow_window_reports_the_early_radiograph(tree):
    root, _ = tree
    build = build_oai_datalist(root, visits=["00m"], window_days=14, centres=root / "known_centres.csv")
    early = participant_id(AWKWARD_CASES.index("xray_weeks_early"))
    outside = [u for u in build.pairing.unpaired if u.participant == early]
    assert {(u.side, u.kind, u.reason) for u in outside} == {
        (s, k, pairing.OUTSIDE_WINDOW) for s in "LR" for k in ("xray", "mri")}
    assert all(i["visit"] == "V00" for i in build.items)
    assert build.summary["ignored: other visit"] > 0


def test_grades_joined_missing_code_kept_missing(tree, built):
    _, truth = tree
    grades = {_key(g): g["kl"] for g in truth["grades"]}
    for item in built.items:
        kl = grades[(item["subject"], layout.visit_label(layout.parse_visit(item["visit"])), item["side"])]
        if kl.startswith("."):
            assert "grade" not in item and item["grade_missing"] == kl
        else:
            assert item["grade"] == int(kl)
    missing = participant_id(AWKWARD_CASES.index("missing_grade_right"))
    item = next(i for i in built.items if i["subject"] == missing and i["visit"] == "V00" and i["side"] == "R")
    assert "grade" not in item and item["grade_missing"] == ".T"


def test_no_participant_in_two_splits_and_check_passes(tree, built, tmp_path):
    root, _ = tree
    splits = {}
    for split in manifests.SPLITS:
        for item in built.datalist[split]:
            assert splits.setdefault(item["subject"], split) == split
    out = tmp_path / "oai.json"
    manifests.write_datalist(built.datalist, out)
    problems = manifests.check_datalist(out, base_dir=root)
    assert not [p for p in problems if p.is_error], problems
    from xray2mri.pipeline.cli import main

    assert main(["manifest", "check", str(out), "--base-dir", str(root)]) == 0


def test_localiser_crops_are_centred_on_the_known_joint_centres(tree, built):
    root, _ = tree
    known = read_centres(root / "known_centres.csv")
    assert all(i["centre_source"] == "localiser" for i in built.items)
    for item in built.items:
        row, col = known[(item["subject"], layout.parse_visit(item["visit"]), item["side"])]
        r0, c0, r1, c1 = item["crop_box"]
        # 1 mm detector pixels at a magnification of about 1.08: 5 mm is about 5.4 pixels
        assert np.hypot((r0 + r1 - 1) / 2 - row, (c0 + c1 - 1) / 2 - col) < 5.0, item
        assert 145 <= r1 - r0 <= 160 and r1 - r0 == c1 - c0  # 140 mm at about 0.93 mm per pixel


def test_mirrored_storage_honours_patient_orientation(tree, built):
    root, _ = tree
    mirrored = participant_id(AWKWARD_CASES.index("mirrored_storage"))
    items = [i for i in built.items if i["subject"] == mirrored and i["visit"] == "V00"]
    assert {i["side"] for i in items} == {"L", "R"} and all(i["crop_flip_columns"] for i in items)
    known = read_centres(root / "known_centres.csv")
    right = next(i for i in items if i["side"] == "R")
    assert (right["crop_box"][1] + right["crop_box"][3]) / 2 > known[(mirrored, 0, "L")][1]  # right knee on the image's right


def test_centres_csv_is_used_and_missing_knees_are_reported(tree, tmp_path):
    root, _ = tree
    rows = list(csv.DictReader(open(root / "known_centres.csv")))
    partial = tmp_path / "centres.csv"
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[1:])
    build = build_oai_datalist(root, centres=partial, localise=False)
    assert {i["centre_source"] for i in build.items} == {"csv"}
    not_placed = [u for u in build.pairing.unpaired if u.reason == pairing.NOT_PLACED]
    dropped = (rows[0]["participant"], layout.parse_visit(rows[0]["visit"]), rows[0]["side"])
    assert [(u.participant, u.visit, u.side) for u in not_placed] == [dropped]


def test_cli_options_write_datalist_report_and_crops(tree, tmp_path, capsys):
    root, truth = tree
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fractions", type=float, nargs=3, default=None)
    add_oai_arguments(parser)
    out = tmp_path / "lists" / "oai.json"
    args = parser.parse_args(["--oai-root", str(root), "--grades", str(root / "clinical"), "--visits", "00m",
                              "--centres", str(root / "known_centres.csv"), "--out", str(out),
                              "--export-crops", str(tmp_path / "crops")])
    assert build_from_oai(args) == 0
    assert "unpaired candidates" in capsys.readouterr().out
    report = list(csv.DictReader(open(tmp_path / "lists" / "oai.unpaired.csv")))
    assert {r["reason"] for r in report} >= {pairing.NO_MRI, pairing.SUPERSEDED}
    datalist = json.loads(out.read_text())
    crops = sorted((tmp_path / "crops").rglob("*.dcm"))
    assert len(crops) == sum(len(datalist[s]) for s in manifests.SPLITS)
    from xray2mri.transforms.xray import LoadXray

    crop = LoadXray()(crops[0])
    assert crop.shape[1] == crop.shape[2] and 145 <= crop.shape[1] <= 160
    bad = parser.parse_args(["--oai-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")])
    assert build_from_oai(bad) == 1
    assert "nowhere" in capsys.readouterr().err


def test_loading_chain_reads_a_cropped_item_end_to_end(tree, built):
    import torch

    from xray2mri.transforms.geometry import MIRRORED_KEY
    from xray2mri.transforms.knee_crop import CropKneed
    from xray2mri.transforms.laterality import MirrorToCanonicalSided
    from xray2mri.transforms.mri import LoadMrid, PreprocessMrid
    from xray2mri.transforms.xray import LoadXrayd, PreprocessXrayd

    root, _ = tree
    path = root / "list.json"
    manifests.write_datalist(built.datalist, path)
    item = next(i for s in manifests.SPLITS for i in manifests.load_datalist(path, s, root) if i["side"] == "L")
    chain = [LoadXrayd("xray"), CropKneed("xray"), LoadMrid("mri"), MirrorToCanonicalSided(["xray", "mri"]),
             PreprocessXrayd("xray", spacing=2.0, size=64), PreprocessMrid("mri", spacing=6.0, shape=(24, 24, 24))]
    d = dict(item)
    for t in chain:
        d = t(d)
    assert d["xray"].shape == (1, 64, 64) and d["mri"].shape == (1, 24, 24, 24)
    assert d["xray"].meta[MIRRORED_KEY] and d["mri"].meta[MIRRORED_KEY]
    assert torch.isfinite(d["xray"]).all() and torch.isfinite(d["mri"]).all()
    assert float(d["mri"].std()) > 0


def test_synth_layout_oai_command_and_an_unreadable_radiograph(tmp_path, capsys):
    from xray2mri.pipeline.commands._oai_options import add_synth_oai_arguments, synth_oai

    parser = argparse.ArgumentParser()
    add_synth_oai_arguments(parser)
    args = parser.parse_args(["--layout", "oai", "--visits", "00m"])
    assert args.layout == "oai"
    args.out, args.subjects, args.seed, args.preset, args.workers, args.no_progress = (
        str(tmp_path / "t"), 1, 0, TINY, 1, True)
    assert synth_oai(args) == 0 and "SYNTHETIC" in capsys.readouterr().out
    root = tmp_path / "t"
    assert (root / "README_SYNTHETIC.txt").exists()
    build = build_oai_datalist(root, centres=root / "known_centres.csv")
    assert [(i["side"], i["visit"]) for i in build.items] == [("R", "V00")]  # participant 0 has no left DESS
    (root / build.items[0]["xray"]).write_bytes(b"not a DICOM file")
    with pytest.raises(manifests.ManifestError, match="no knee radiograph paired"):
        build_oai_datalist(root, centres=root / "known_centres.csv")
    from xray2mri.pipeline.data.oai.build import build_items
    from xray2mri.pipeline.data.oai.index import read_indexes

    records, _ = read_indexes(root)
    items, dropped = build_items(root, pairing.pair_series(records).pairs)
    assert not items and [(d.side, d.reason) for d in dropped] == [("R", pairing.UNREADABLE)]
    assert "cannot read the DICOM header" in dropped[0].detail


@pytest.fixture(scope="module")
def reread_tree(tmp_path_factory):
    """A tree written by `synth --layout oai --grades-labelled --grades-reread` (a second reading project)."""
    from xray2mri.pipeline.commands._oai_options import add_synth_oai_arguments, synth_oai

    parser = argparse.ArgumentParser()
    add_synth_oai_arguments(parser)
    args = parser.parse_args(["--layout", "oai", "--visits", "00m,12m", "--grades-labelled", "--grades-reread"])
    root = tmp_path_factory.mktemp("oai_reread") / "tree"
    args.out, args.subjects, args.seed, args.preset, args.workers, args.no_progress = (
        str(root), 4, 3, TINY, 1, True)  # participant 1: a knee only the second project read; 3: a .T
    assert synth_oai(args) == 0
    return root, json.loads((root / "oai_truth.json").read_text())


def _expected_grades(truth, order):
    """knee -> (grade or missing code or None, READPRJ or None, problem) from the tree's truth, by hand:
    the first project of ``order`` with a known grade (else its missing code); a knee whose known
    grades differ is a disagreement; a knee none of ``order`` read, or read as missing while another
    project graded it, has no grade from the chosen project."""
    readings = {}
    for r in truth["grade_readings"]:
        readings.setdefault(_key(r), {})[r["project"]] = r["kl"]
    expected = {}
    for knee, by_project in readings.items():
        known = {kl for kl in by_project.values() if not kl.startswith(".")}
        read = [p for p in order if p in by_project]
        use = next((p for p in read if not by_project[p].startswith(".")), read[0] if read else None)
        kl = None if use is None else by_project[use]
        problem = grades_mod.DISAGREE if len(known) > 1 else ""
        if use is None or (kl.startswith(".") and known and not problem):
            problem = grades_mod.NO_CHOSEN_GRADE
        expected[knee] = (None if kl is None else (kl if kl.startswith(".") else int(kl)), use, problem)
    return expected


@pytest.mark.parametrize("choice", ["default", "any"])
def test_labelled_grades_with_a_disagreeing_project_end_to_end(reread_tree, tmp_path, capsys, choice):
    from xray2mri.pipeline.cli import main

    root, truth = reread_tree
    header = (root / "clinical" / "kxr_sq_bu00.txt").read_text().splitlines()[1]
    assert "1: Right" in header or "2: Left" in header  # the labelled form, as OAI distributes it
    out = tmp_path / "oai.json"
    argv = ["manifest", "build", "--oai-root", str(root), "--grades", str(root / "clinical"),
            "--centres", str(root / "known_centres.csv"), "--out", str(out)]
    assert main(argv + ([] if choice == "default" else ["--reading-project", "any"])) == 0
    printed = capsys.readouterr().out
    datalist = json.loads(out.read_text())
    items = {(i["subject"], layout.visit_label(layout.parse_visit(i["visit"])), i["side"]): i
             for s in manifests.SPLITS for i in datalist[s]}
    expected = _expected_grades(truth, (15,) if choice == "default" else (15, 37))
    report = list(csv.DictReader(open(tmp_path / "oai.unpaired.csv")))
    problems = {(r["participant"], r["visit"], r["side"]): r["reason"] for r in report if r["kind"] == "grade"}
    for knee, item in items.items():
        value, project, problem = expected[knee]
        got = item.get("grade", item.get("grade_missing"))
        assert (got, item.get("grade_project"), problems.get(knee, "")) == (value, project, problem), knee
    reasons = list(problems.values())
    assert reasons.count(grades_mod.DISAGREE) >= 2  # the second project disagrees on some paired knees
    assert f"grades: {grades_mod.DISAGREE}: {reasons.count(grades_mod.DISAGREE)}" in printed
    assert f"grades: {grades_mod.NO_CHOSEN_GRADE}: {reasons.count(grades_mod.NO_CHOSEN_GRADE)}" in printed
    if choice == "default":  # the central reading is kept where the other project disagrees
        assert reasons.count(grades_mod.NO_CHOSEN_GRADE) == 2 and "READPRJ 15 (the central reading)" in printed
        assert datalist["grade_source"] == {"files": ["kxr_sq_bu00.txt", "kxr_sq_bu01.txt"], "reading_project": 15}
        assert "READPRJ 15 (the central reading)" in datalist["description"]
        missing = participant_id(AWKWARD_CASES.index("missing_grade_right"))
        assert items[(missing, "00m", "R")]["grade_missing"] == ".T"
    else:
        assert reasons.count(grades_mod.NO_CHOSEN_GRADE) == 0
        assert datalist["grade_source"]["reading_project"] == "any"
        assert datalist["grade_source"]["fallback_order"] == list(grades_mod.READING_PROJECT_ORDER)
        assert {i.get("grade_project") for i in items.values()} == {15, 37}
    assert main(["manifest", "check", str(out), "--base-dir", str(root)]) == 0


def test_manifest_build_and_check_show_progress_unless_no_progress(tree, tmp_path, capsys):
    from xray2mri.pipeline.cli import main

    root, truth = tree
    out = tmp_path / "oai.json"
    build = ["manifest", "build", "--oai-root", str(root), "--centres", str(root / "known_centres.csv"),
             "--out", str(out)]
    check = ["manifest", "check", str(out), "--base-dir", str(root)]
    assert main(build) == 0
    radiographs = len({p["xray"] for p in truth["pairs"]})
    assert "manifest build: 100%" in capsys.readouterr().err and radiographs > 1
    assert main(check) == 0
    err = capsys.readouterr().err
    files = len({i[k] for s in manifests.SPLITS for i in json.loads(out.read_text())[s] for k in ("xray", "mri")})
    assert "manifest check: 100%" in err and f"{files}/{files}" in err
    assert main(build + ["--no-progress"]) == 0 and main(check + ["--no-progress"]) == 0
    assert "manifest" not in capsys.readouterr().err
