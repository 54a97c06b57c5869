"""OAI import, piece by piece: layout facts, index and grade files, pairing rules, crops, localiser."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from xray2mri.pipeline.data.oai import layout, pairing
from xray2mri.pipeline.data.oai.grades import (
    ANY_PROJECT,
    DISAGREE,
    NO_CHOSEN_GRADE,
    choose_grade,
    parse_reading_project,
    read_grades,
    read_grades_file,
    read_readings,
)
from xray2mri.pipeline.data.oai.index import OaiIndexError, SeriesRecord, read_index, read_indexes
from xray2mri.pipeline.data.oai.synth_tree import participant_knees, render_bilateral
from xray2mri.pipeline.data.synth.presets import SynthPreset
from xray2mri.transforms.errors import InputError, XrayInputError
from xray2mri.transforms.geometry import MIRRORED_KEY
from xray2mri.transforms.knee_crop import CropKnee, CropKneed, crop_box_for
from xray2mri.transforms.locate_knee import NoKneeFound, locate_knees

HEADER = '"Folder","ParticipantID","StudyDate","Barcode","StudyDescription","SeriesDescription"\n'


def test_visits_and_releases():
    assert [layout.parse_visit(v) for v in ("00m", "12m", "V03", "96", 48)] == [0, 12, 24, 96, 48]
    assert layout.visit_prefix(72) == "V08" and layout.visit_label(0) == "00m"
    assert layout.release_visit("2.D.2") == 18 and layout.release_visit("10.E.1") == 96
    for bad in ("13m", "V12", "baseline"):
        with pytest.raises(ValueError):
            layout.parse_visit(bad)
    assert layout.series_kind("01234567") == "xray" and layout.series_kind("10876803") == "mri"
    assert layout.series_kind("2087680") is None
    assert layout.mri_side("SAG_3D_DESS_RIGHT ", "SAG_3D_DESS") == "R"
    assert layout.mri_side("COR_IW_TSE_LEFT", "SAG_3D_DESS") is None
    assert layout.xray_knees("Bilateral PA Fixed Flexion Knee ") == "B" and layout.xray_knees("Full Limb") is None


def test_index_quotes_trailing_spaces_and_both_index_places(tmp_path):
    row = '"2.D.2/9000798/20060303/10876803","9000798","20060303","10876803","OAI^MR^18 MONTH^RIGHT ","SAG_3D_DESS_RIGHT "\n'
    (tmp_path / "18m").mkdir()
    (tmp_path / "18m" / "contents.csv").write_text("\ufeff" + HEADER + row, encoding="utf-8")
    inside = tmp_path / "24m" / "3.C.2"
    inside.mkdir(parents=True)
    (inside / "contents.csv").write_text(HEADER + row.replace("2.D.2", "3.C.2"))
    records, problems = read_indexes(tmp_path)
    assert not problems
    by_visit = {r.visit: r for r in records}
    assert by_visit[18].path == "18m/2.D.2/9000798/20060303/10876803"
    assert by_visit[24].path == "24m/3.C.2/9000798/20060303/10876803"
    r = by_visit[18]
    assert (r.participant, r.kind, r.series_description, r.study_description) == \
        ("9000798", "mri", "SAG_3D_DESS_RIGHT", "OAI^MR^18 MONTH^RIGHT")
    assert r.study_date == datetime.date(2006, 3, 3)


def test_index_bad_rows_are_problems_and_bad_header_is_refused(tmp_path):
    index = tmp_path / "contents.csv"
    index.write_text(HEADER + '"9.Z.9/9000798/20060303/10876803","9000798","20060303","1","a","b"\n'
                     + '"2.D.2/9000798/20060303/10876803","9000798","2006-03-03","1","a","b"\n')
    records, problems = read_index(index, tmp_path)
    assert not records and len(problems) == 2
    assert "unknown release" in problems[0].reason and "yyyymmdd" in problems[1].reason
    assert problems[1].source == f"{index}:3"
    index.write_text('"Folder","ParticipantID"\n')
    with pytest.raises(OaiIndexError, match="missing column"):
        read_index(index, tmp_path)
    with pytest.raises(OaiIndexError, match="not a folder"):
        read_indexes(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OaiIndexError, match="no contents.csv"):
        read_indexes(tmp_path / "empty")


def test_grades_missing_codes_stay_missing(tmp_path):
    path = tmp_path / "kxr_sq_bu01.txt"
    path.write_text("ID|SIDE|READPRJ|V01XRKL|V01XRJSM\n9000099|1|15|3|2\n9000099|2|15|.T|.T\n"
                    "9000100|1|15|0|0\n9000100|2|15|.P|.P\n9000100|2|37|2|1\n9000101|1|15||\n")
    grades = read_grades(tmp_path)
    assert grades[("9000099", 12, "R")].value == 3
    assert grades[("9000099", 12, "L")].value is None and grades[("9000099", 12, "L")].code == ".T"
    assert grades[("9000099", 12, "L")].reason == "technical problem"
    assert grades[("9000100", 12, "R")].value == 0
    # the central reading (READPRJ 15, the default) says prosthesis: missing, not the other project's grade
    assert grades[("9000100", 12, "L")].value is None and grades[("9000100", 12, "L")].code == ".P"
    assert read_grades(tmp_path, reading_project="any")[("9000100", 12, "L")].value == 2  # falls back to 37
    assert grades[("9000101", 12, "R")].value is None
    path.write_text("ID|SIDE|V01XRKL\n9000099|1|7\n")
    with pytest.raises(OaiIndexError, match=r"kxr_sq_bu01.txt:2.*0-4"):
        read_grades_file(path)
    path.write_text("ID|SIDE|V01XRKL\n9000099|3|1\n")
    with pytest.raises(OaiIndexError, match="SIDE"):
        read_grades_file(path)


#: One grade file's content, as (ID, SIDE code, READPRJ, KL code): four knees, every missing-value form.
GRADE_ROWS = [("9000099", "1", "15", "3"), ("9000099", "2", "15", "."), ("9000100", "1", "15", ".A"),
              ("9000100", "2", "15", ".P"), ("9000100", "2", "37", "2"), ("9000101", "1", "15", ".T")]
LABELS = {"1": "Right", "2": "Left", ".": "Missing Form/Incomplete Workbook", ".A": "Not Expected",
          ".P": "Prosthesis", ".T": "Technical problem"}


def _grade_file(path, delimiter="|", labelled=False, quoted=False, lower=False, newline="\n"):
    """Write GRADE_ROWS as OAI distributes them: plain or labelled codes, either delimiter, quoted or not."""
    def cell(text):
        return f'"{text}"' if quoted else text

    header = ["ID", "SIDE", "READPRJ", "VERSION", "V01XRKL"]
    lines = [delimiter.join(cell(h.lower() if lower else h) for h in header)]
    for pid, side, project, kl in GRADE_ROWS:
        if labelled:
            side, kl = f"{side}: {LABELS[side]}", f"{kl}: {LABELS.get(kl, kl)}"
        lines.append(delimiter.join(cell(v) for v in (pid, side, project, "1.2", kl)))
    path.write_text(newline.join(lines) + newline)
    return path


@pytest.mark.parametrize("form", [
    {}, {"labelled": True}, {"delimiter": ",", "quoted": True}, {"delimiter": ",", "labelled": True},
    {"labelled": True, "quoted": True, "lower": True, "newline": "\r\n"},
])
def test_grade_file_forms_read_alike(tmp_path, form):
    path = _grade_file(tmp_path / "kxr_sq_bu01.txt", **form)
    got = {key: [(g.value, g.code, g.project) for g in grades] for key, grades in read_grades_file(path).items()}
    assert got == {
        ("9000099", 12, "R"): [(3, "", 15)], ("9000099", 12, "L"): [(None, ".", 15)],
        ("9000100", 12, "R"): [(None, ".A", 15)], ("9000100", 12, "L"): [(None, ".P", 15), (2, "", 37)],
        ("9000101", 12, "R"): [(None, ".T", 15)],
    }
    assert read_grades_file(path)[("9000099", 12, "R")][0].source == f"{path}:2"


@pytest.mark.parametrize("row, line, reason", [
    ("9000099|3: Other|15|1.2|1: 1", 3, "SIDE '3: Other' is not 1"),
    ("9000099|1|central|1.2|1", 3, "READPRJ 'central' is not a project number"),
    ("9000099|1|15", 3, "3 fields where the header has 5"),
    ("9000099|1: Right|15|1.2|5: 5", 3, "'5: 5' is not a Kellgren-Lawrence grade"),
    ("9000099|1|15|1.2|Grade 2", 3, "neither 0-4 nor an OAI missing code"),
])
def test_malformed_grade_file_names_file_line_and_reason(tmp_path, row, line, reason):
    path = tmp_path / "kxr_sq_bu01.txt"
    path.write_text(f"ID|SIDE|READPRJ|VERSION|V01XRKL\n9000098|2|15|1.2|0\n{row}\n")
    with pytest.raises(InputError, match=rf"kxr_sq_bu01.txt:{line}.*{reason}"):
        read_grades_file(path)
    path.write_text("ID SIDE V01XRKL\n9000099 1 2\n")
    with pytest.raises(OaiIndexError, match="kxr_sq_bu01.txt:1.*single column"):
        read_grades_file(path)


def test_reading_projects_default_central_any_in_order_and_disagreements_reported(tmp_path):
    path = tmp_path / "kxr_sq_bu00.txt"
    path.write_text("ID|SIDE|READPRJ|V00XRKL\n"
                    "1|1|15|2\n1|1|37|3\n"                   # A: the projects disagree
                    "2|1|37|1\n"                              # B: not read by the central reading
                    "3|1|15|.T\n3|1|42|3\n3|1|37|2\n"        # C: central missing, 37 and 42 disagree
                    "4|1|99|4\n4|1|42|1\n"                   # D: projects outside the order come last
                    "5|1|15|1\n5|1|15|3\n"                   # E: two rows of one project disagree
                    "6|1|15|.P\n6|1|37|2\n")                 # F: central missing, another project graded it
    readings = read_readings(path)

    def chosen(pid, project):
        choice = choose_grade(readings[(pid, 0, "R")], project)
        return (None if choice.grade is None else (choice.grade.value or choice.grade.code, choice.grade.project),
                choice.problem)

    assert [chosen(p, 15) for p in "123456"] == [
        ((2, 15), DISAGREE), (None, NO_CHOSEN_GRADE), ((".T", 15), DISAGREE), (None, NO_CHOSEN_GRADE), (None, DISAGREE),
        ((".P", 15), NO_CHOSEN_GRADE)]
    assert [chosen(p, 37) for p in "123"] == [((3, 37), DISAGREE), ((1, 37), ""), ((2, 37), DISAGREE)]
    assert [chosen(p, ANY_PROJECT) for p in "123456"] == [
        ((2, 15), DISAGREE), ((1, 37), ""), ((2, 37), DISAGREE), ((1, 42), DISAGREE), (None, DISAGREE), ((2, 37), "")]
    detail = choose_grade(readings[("1", 0, "R")], 15).detail
    assert "READPRJ 15: 2" in detail and "READPRJ 37: 3" in detail and "used READPRJ 15 (chosen)" in detail
    assert "first in the fallback order" in choose_grade(readings[("1", 0, "R")], ANY_PROJECT).detail
    assert "no reading by READPRJ 15" in choose_grade(readings[("2", 0, "R")], 15).detail
    assert set(read_grades(path)) == {("1", 0, "R"), ("3", 0, "R"), ("6", 0, "R")}  # knees with a chosen reading only
    path.write_text("ID|SIDE|V00XRKL\n1|1|2\n")  # no READPRJ column: one reading, nothing to choose
    assert read_grades(path)[("1", 0, "R")].value == 2


def test_parse_reading_project():
    assert parse_reading_project("15") == 15 and parse_reading_project(" ANY ") == ANY_PROJECT
    with pytest.raises(ValueError, match="neither a READPRJ number"):
        parse_reading_project("central")


def _record(series: str, description: str, date=(2005, 1, 10), participant="9000001", visit=0) -> SeriesRecord:
    return SeriesRecord(path=f"00m/0.C.2/{participant}/x/{series}", participant=participant, visit=visit,
                        release="0.C.2", study_date=datetime.date(*date), series=series, barcode=series,
                        kind=layout.series_kind(series), study_description="", series_description=description,
                        source="test")


def test_pairing_rules():
    records = [
        _record("00000001", "PA Fixed Flexion Left Knee"),
        _record("00000002", "PA Fixed Flexion Left Knee", date=(2005, 1, 12)),  # rescan: wins
        _record("00000003", "Lateral Left Knee"),
        _record("10000001", "SAG_3D_DESS_LEFT"),
        _record("10000002", "SAG_3D_DESS_RIGHT"),
        _record("10000003", "COR_MPR_LEFT"),
    ]
    result = pairing.pair_series(records)
    assert [(p.side, p.xray.series, p.mri.series, p.days_apart) for p in result.pairs] == [("L", "00000002", "10000001", -2)]
    assert sorted((u.side, u.kind, u.reason) for u in result.unpaired) == [
        ("L", "xray", pairing.SUPERSEDED), ("R", "mri", pairing.NO_XRAY)]
    assert result.summary["ignored: radiograph view not used"] == 1
    assert result.summary["ignored: MRI series other than SAG_3D_DESS"] == 1
    cor = pairing.pair_series(records, sequence="COR_MPR")
    assert [(p.side, p.mri.series) for p in cor.pairs] == [("L", "10000003")]


def _image(h=40, w=50, spacing=(0.5, 0.5)):
    data = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w)
    affine = torch.diag(torch.tensor([spacing[0], spacing[1], 1.0, 1.0], dtype=torch.float64))
    return MetaTensor(data, affine=affine, meta={"spacing": spacing, "filename_or_obj": "x.dcm"})


def test_crop_box_and_padding():
    assert crop_box_for((100.0, 200.0), (0.5, 0.25), 10.0) == [90, 180, 110, 220]
    img = _image()
    out = CropKnee()(img, box=[-2, 45, 8, 55], side="R")
    assert out.shape == (1, 10, 10)
    assert torch.equal(out[0, 2:, :5], img[0, :8, 45:])
    assert float(out[0, 0, 0]) == float(img.min()) and float(out[0, 5, 7]) == float(img.min())
    assert np.allclose(out.affine[:2, 3].numpy(), [-1.0, 22.5])  # origin moved to the box corner, mm
    assert out.meta["crop_box"] == [-2, 45, 8, 55] and out.meta["laterality"] == "R"
    by_centre = CropKnee(size_mm=5.0)(img, centre=(20.0, 25.0))
    assert by_centre.shape == (1, 10, 10) and torch.equal(by_centre[0], img[0, 15:25, 20:30])
    with pytest.raises(XrayInputError, match="does not overlap"):
        CropKnee()(img, box=[50, 0, 60, 10])


def test_cropkneed_mirrors_left_knees_only_when_asked():
    img = _image()
    item = {"xray": img, "side": "L", "crop_box": [0, 0, 10, 20]}
    plain = CropKneed("xray")(item)["xray"]
    mirrored = CropKneed("xray", mirror_to_canonical=True)(item)["xray"]
    assert torch.equal(mirrored[0], plain[0].flip(-1)) and mirrored.meta[MIRRORED_KEY]
    right = CropKneed("xray", mirror_to_canonical=True)({**item, "side": "R"})["xray"]
    assert torch.equal(right[0], plain[0]) and not right.meta[MIRRORED_KEY]
    flipped = CropKneed("xray")({**item, "crop_flip_columns": True})["xray"]
    assert torch.equal(flipped[0], plain[0].flip(-1))
    assert CropKneed("xray")({"xray": img, "side": "L"})["xray"] is img  # no box: nothing to crop


def test_left_crop_mirrored_shows_its_own_anatomy():
    """Two knees made different on purpose. The mirrored left crop matches the left knee's anatomy
    drawn as a right knee at the same place (a second radiograph, same geometry and noise draws),
    not the right knee's crop, and has a right knee's layout (fibula on the low-column side)."""
    pre = SynthPreset(name="t", mri_shape=(8, 8, 8), mri_spacing_mm=8.0, supersample=1, xray_shape=(0, 0),
                      xray_pixel_mm=1.0)
    knees = participant_knees(0, 0)
    knees = {"R": dataclasses.replace(knees["R"], scale=0.9, plateau_ml_radius=0.9 * 36.0),
             "L": dataclasses.replace(knees["L"], scale=1.1, plateau_ml_radius=1.1 * 40.0)}
    twin = {"R": dataclasses.replace(knees["L"], side="R"), "L": knees["L"]}  # left anatomy, mirrored, on the right

    def crops(pair, mirror=True):
        radiograph = render_bilateral(pair, pre, np.random.default_rng(1), drr_spacing_mm=3.0)
        spacing = (pre.xray_pixel_mm / radiograph.magnification,) * 2
        img = MetaTensor(torch.from_numpy(radiograph.image)[None], meta={"spacing": spacing})
        return {side: CropKnee(mirror_to_canonical=mirror)(img, centre=radiograph.centres[side], side=side)[0].numpy()
                for side in ("R", "L")}, spacing

    (got, spacing), (plain, _) = crops(knees), crops(knees, mirror=False)
    reference = crops(twin)[0]["R"]
    own = np.abs(got["L"] - reference).mean()
    other, unmirrored = np.abs(got["L"] - got["R"]).mean(), np.abs(plain["L"] - reference).mean()
    assert own < 0.75 * other and own < 0.75 * unmirrored

    def lateral_minus_medial(crop):  # fibula head: 16-34 mm below the joint, 30-40 mm lateral
        c, m = crop.shape[0] // 2, crop.shape[1] // 2
        rows, off = slice(c + int(16 / spacing[0]), c + int(34 / spacing[0])), (int(30 / spacing[1]), int(40 / spacing[1]))
        return crop[rows, m - off[1]: m - off[0]].mean() - crop[rows, m + off[0]: m + off[1]].mean()

    assert lateral_minus_medial(got["R"]) > 0 and lateral_minus_medial(got["L"]) > 0
    assert lateral_minus_medial(plain["L"]) < 0


def test_localiser_reports_what_it_cannot_place():
    with pytest.raises(NoKneeFound, match="blank"):
        locate_knees(np.zeros((200, 300)), (1.0, 1.0))
    legs = np.zeros((200, 300))
    legs[:, 20:280] = 1.0  # soft tissue and a bone block, but no joint space anywhere
    # bone has texture (a flat block that bright is metal to the finder: an implant, not bone)
    legs[80:120, 60:100] = 3.0 + 0.3 * np.random.default_rng(0).random((40, 40))
    # quantum noise everywhere, air included (air without any is padding, left out like collimation)
    legs += np.random.default_rng(1).normal(0.0, 0.01, legs.shape)
    with pytest.raises(NoKneeFound, match="no knee found: no joint space"):
        locate_knees(legs, (1.0, 1.0))


def test_localiser_finds_a_single_knee():
    pre = SynthPreset(name="t", mri_shape=(8, 8, 8), mri_spacing_mm=8.0, supersample=1, xray_shape=(0, 0),
                      xray_pixel_mm=0.8)
    radiograph = render_bilateral(participant_knees(5, 2), pre, np.random.default_rng(2), drr_spacing_mm=3.0)
    half = radiograph.image.shape[1] // 2
    spacing = (pre.xray_pixel_mm / radiograph.magnification,) * 2
    finding, = locate_knees(radiograph.image[:, half:], spacing)
    row, col = radiograph.centres["L"]
    assert np.hypot((finding.centre[0] - row) * spacing[0], (finding.centre[1] + half - col) * spacing[1]) < 5.0
    assert finding.side == "L" and finding.side_source == "anatomy"  # no tags: the fibula is lateral
