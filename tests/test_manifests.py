"""Datalists: subject-level splits, building from a cohort folder or a CSV, loading, checking."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from xray2mri.pipeline.cli import main
from xray2mri.pipeline.data import manifests
from xray2mri.pipeline.data.manifests import (
    ManifestError,
    build_from_cohort,
    build_from_csv,
    check_datalist,
    load_datalist,
    split_by_subject,
    validate_datalist,
    write_datalist,
)
from xray2mri.transforms.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SOP_CLASS = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}


# ---------------------------------------------------------------- tiny files made by the tests


def write_dicom(path: Path, modality: str = "DX", laterality: str | None = None, size: int = 6) -> Path:
    """A tiny valid DICOM image file (works with pydicom 2.4 and 3)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS.get(modality, SOP_CLASS["DX"])
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    if laterality:
        ds.ImageLaterality = laterality
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(size * size, dtype="<u2").tobytes()
    if int(pydicom.__version__.split(".")[0]) < 3:
        ds.is_little_endian, ds.is_implicit_VR = True, False
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path))
    return path


def write_nifti(path: Path, shape: tuple[int, ...] = (4, 5, 6), dtype=np.int16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.zeros(shape, dtype), np.eye(4)).to_filename(str(path))
    return path


def make_cohort(root: Path, grades: list[int], labels: bool = True, synthetic: bool = True) -> Path:
    """A folder laid out like `xray2mri synth` output, with tiny real files."""
    for index, grade in enumerate(grades):
        subject = f"SYN{index:04d}"
        folder = root / subject
        side = "LR"[index % 2]
        write_dicom(folder / f"{subject}_xray.dcm", laterality=side)
        write_nifti(folder / f"{subject}_mri.nii.gz")
        if labels:
            write_nifti(folder / f"{subject}_labels.nii.gz")
            write_nifti(folder / f"{subject}_joint_labels.nii.gz", (4, 16, 6), np.uint8)
        meta = {"subject": subject, "side": side, "grade": grade, "visit": "V00", "synthetic": synthetic,
                "jsw_medial_mm": 4.0}
        (folder / f"{subject}_meta.json").write_text(json.dumps(meta))
    return root


def items_of(n_subjects: int, grades=None, per_subject: int = 1) -> list[dict]:
    items = []
    for s in range(n_subjects):
        for v in range(per_subject):
            item = {"subject": f"S{s:03d}", "side": "LR"[(s + v) % 2], "visit": f"V{v:02d}",
                    "xray": f"S{s:03d}/V{v}_x.dcm", "mri": f"S{s:03d}/V{v}_m.nii.gz"}
            if grades is not None:
                item["grade"] = grades[s]
            items.append(item)
    return items


def run_cli(*argv: str) -> int:
    return main(["manifest", *argv])


# ---------------------------------------------------------------- splitting


def test_split_keeps_each_subject_in_one_split_and_loses_nothing():
    items = items_of(30, grades=[s % 5 for s in range(30)], per_subject=3)
    splits = split_by_subject(items, seed=3)
    assert set(splits) == {"training", "validation", "test"}
    subjects = {name: {i["subject"] for i in split} for name, split in splits.items()}
    assert not subjects["training"] & subjects["validation"]
    assert not subjects["training"] & subjects["test"]
    assert not subjects["validation"] & subjects["test"]
    written = sorted(json.dumps(i, sort_keys=True) for split in splits.values() for i in split)
    assert written == sorted(json.dumps(i, sort_keys=True) for i in items)
    # sizes follow the fractions, counted in subjects
    assert [len(subjects[n]) for n in manifests.SPLITS] == [21, 4, 5] or \
        [len(subjects[n]) for n in manifests.SPLITS] == [21, 5, 4]


def test_split_is_deterministic_for_a_seed_and_ignores_input_order():
    items = items_of(40, grades=[s % 5 for s in range(40)])
    shuffled = list(items)
    random.Random(7).shuffle(shuffled)
    assert split_by_subject(items, seed=5) == split_by_subject(shuffled, seed=5)
    assert split_by_subject(items, seed=5) != split_by_subject(items, seed=6)


def test_split_stratifies_by_grade():
    grades = [0] * 40 + [1] * 20 + [2] * 20 + [3] * 10 + [4] * 10
    splits = split_by_subject(items_of(100, grades=grades), seed=11)
    totals = collections.Counter(grades)
    for name, fraction in zip(manifests.SPLITS, manifests.DEFAULT_FRACTIONS):
        counts = collections.Counter(i["grade"] for i in splits[name])
        for grade, total in totals.items():
            assert abs(counts[grade] - fraction * total) <= 1, (name, grade, counts)


def test_split_places_a_subject_by_its_worst_grade():
    items = [{"subject": "A", "grade": 0}, {"subject": "A", "grade": 4}] + \
        [{"subject": f"B{i}", "grade": 0} for i in range(6)] + [{"subject": f"C{i}", "grade": 4} for i in range(2)]
    splits = split_by_subject(items, fractions=(0.5, 0.5, 0.0), seed=0)
    # 3 grade-4 subjects (A, C0, C1) over two halves: 2 and 1; A's two items stay together
    for split in splits.values():
        assert len({i["grade"] for i in split if i["subject"] == "A"}) in (0, 2)
    assert splits["test"] == []


def test_every_split_gets_a_subject_when_there_are_three():
    for seed in range(5):
        splits = split_by_subject(items_of(3, grades=[0, 0, 0]), seed=seed)
        assert all(len(split) == 1 for split in splits.values())


def test_split_refuses_bad_fractions_and_items_without_subject():
    with pytest.raises(ValueError, match="fractions"):
        split_by_subject(items_of(5), fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="subject"):
        split_by_subject([{"side": "L"}])


# ---------------------------------------------------------------- building, writing, loading


def test_build_from_cohort_writes_relative_paths_and_the_same_bytes(tmp_path):
    cohort = make_cohort(tmp_path / "cohort", grades=[0, 1, 2, 3, 4, 2, 1, 0])
    datalist = build_from_cohort(cohort, seed=2)
    items = [i for s in manifests.SPLITS for i in datalist[s]]
    assert len(items) == 8 and all(datalist[s] for s in manifests.SPLITS)
    first = next(i for i in items if i["subject"] == "SYN0001")
    assert first == {"subject": "SYN0001", "side": "R", "grade": 1, "visit": "V00",
                     "xray": "SYN0001/SYN0001_xray.dcm", "mri": "SYN0001/SYN0001_mri.nii.gz",
                     "labels": "SYN0001/SYN0001_labels.nii.gz",
                     "joint_labels": "SYN0001/SYN0001_joint_labels.nii.gz"}
    assert "SYNTHETIC" in datalist["description"]
    write_datalist(datalist, tmp_path / "a.json")
    write_datalist(build_from_cohort(cohort, seed=2), tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_build_from_cohort_names_a_missing_radiograph(tmp_path):
    cohort = make_cohort(tmp_path / "cohort", grades=[0, 1, 2], labels=False)
    datalist = build_from_cohort(cohort)
    assert all("labels" not in i and "joint_labels" not in i for s in manifests.SPLITS for i in datalist[s])
    (cohort / "SYN0001" / "SYN0001_xray.dcm").unlink()
    with pytest.raises(ManifestError, match="SYN0001_xray.dcm"):
        build_from_cohort(cohort)
    with pytest.raises(InputError, match="no SUBJ/SUBJ_meta.json"):
        build_from_cohort(tmp_path / "empty")


def test_write_datalist_refuses_an_invalid_datalist_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "d.json"
    out.write_text("old")
    with pytest.raises(ManifestError, match="side"):
        write_datalist({"training": [{"subject": "a", "side": "X", "xray": "x", "mri": "m"}],
                        "validation": [], "test": []}, out)
    assert out.read_text() == "old"


def write_csv(path: Path, rows: list[str], header: str = "subject,visit,side,xray,mri,grade") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_build_from_csv_splits_by_subject_and_makes_absolute_paths_relative(tmp_path):
    rows = [f"{9000000 + s},V{v:02d},{'left' if s % 2 else 'R'},/data/oai/{s}/{v}/x.dcm,{s}/{v}/mri,{s % 5}"
            for s in range(20) for v in range(2)]
    datalist = build_from_csv(write_csv(tmp_path / "pairs.csv", rows), base_dir="/data/oai", seed=1)
    items = [i for s in manifests.SPLITS for i in datalist[s]]
    assert len(items) == 40
    item = next(i for i in items if i["subject"] == "9000003" and i["visit"] == "V01")
    assert item == {"subject": "9000003", "visit": "V01", "side": "L", "xray": "3/1/x.dcm",
                    "mri": "3/1/mri", "grade": 3}
    homes = collections.defaultdict(set)
    for name in manifests.SPLITS:
        for i in datalist[name]:
            homes[i["subject"]].add(name)
    assert all(len(h) == 1 for h in homes.values())
    validate_datalist(datalist)


@pytest.mark.parametrize(
    "header, row, message",
    [
        ("subject,side,xray,mri", "s1,L,x.dcm,m.nii", "missing column.*visit"),
        ("subject,visit,side,xray,mri", "s1,V00,B,x.dcm,m.nii", ":2: side must be L or R"),
        ("subject,visit,side,xray,mri", "s1,V00,L,,m.nii", ":2: empty 'xray'"),
        ("subject,visit,side,xray,mri,grade", "s1,V00,L,x.dcm,m.nii,5", ":2: grade must be"),
    ],
)
def test_build_from_csv_names_the_file_and_the_reason(tmp_path, header, row, message):
    csv_path = write_csv(tmp_path / "pairs.csv", [row], header=header)
    with pytest.raises(InputError, match=message) as caught:
        build_from_csv(csv_path)
    assert "pairs.csv" in str(caught.value)


def test_load_datalist_joins_path_keys_only(tmp_path):
    cohort = make_cohort(tmp_path / "cohort", grades=[0, 1, 2, 3])
    out = tmp_path / "manifests" / "d.json"
    write_datalist(build_from_cohort(cohort), out)
    items = [i for s in manifests.SPLITS for i in load_datalist(out, s, base_dir=cohort)]
    assert len(items) == 4
    for item in items:
        for key in ("xray", "mri", "labels"):
            assert Path(item[key]).is_absolute() and Path(item[key]).is_file()
        assert item["subject"].startswith("SYN")  # not turned into a path, though cohort/SYN000x exists
    with pytest.raises(ManifestError, match="no list 'train'"):
        load_datalist(out, "train")


def test_monai_reads_the_datalist(tmp_path):
    from monai.data import load_decathlon_datalist

    cohort = make_cohort(tmp_path / "cohort", grades=[0, 1, 2])
    write_datalist(build_from_cohort(cohort), cohort / "datalist.json")
    for split in manifests.SPLITS:
        ours = load_datalist(cohort / "datalist.json", split)
        theirs = load_decathlon_datalist(cohort / "datalist.json", data_list_key=split, base_dir=cohort)
        assert [(i["xray"], i["mri"]) for i in theirs] == [(i["xray"], i["mri"]) for i in ours]


# ---------------------------------------------------------------- schema


def test_schema_file_is_the_schema_the_code_uses():
    assert json.loads((REPO / "data_manifests" / "schema.json").read_text()) == manifests.SCHEMA


BAD = [
    [],
    {"training": [], "validation": []},
    {"training": [{"subject": "a", "side": "X", "xray": "", "mri": 3, "grade": 7}], "validation": [], "test": []},
    {"training": [{"subject": "a", "side": "L", "xray": "x", "mri": "m", "grade": True}], "validation": [],
     "test": [{"side": "R"}]},
]


@pytest.mark.parametrize("bad", BAD)
def test_fallback_validator_finds_what_jsonschema_finds(bad):
    with_jsonschema = manifests.schema_problems(bad)
    fallback = manifests._mini_validate(bad, manifests.SCHEMA, "$")
    assert with_jsonschema
    assert sorted(where for where, _ in fallback) == sorted(p.split(": ", 1)[0] for p in with_jsonschema)
    with pytest.raises(ManifestError, match="not a valid datalist"):
        validate_datalist(bad)


# ---------------------------------------------------------------- check, through the real CLI


@pytest.fixture
def cohort_list(tmp_path):
    """A valid cohort and its datalist (written by the CLI) at cohort/datalist.json."""
    cohort = make_cohort(tmp_path / "cohort", grades=[0, 1, 2, 3, 4, 2])
    assert run_cli("build", "--cohort", str(cohort), "--out", str(cohort / "datalist.json"), "--seed", "4") == 0
    return cohort, cohort / "datalist.json"


def edit(path: Path, change) -> None:
    datalist = json.loads(path.read_text())
    change(datalist)
    path.write_text(json.dumps(datalist))


@pytest.mark.pydicom2
def test_check_passes_on_a_good_datalist(cohort_list, capsys):
    cohort, datalist = cohort_list
    assert run_cli("check", str(datalist), "--base-dir", str(cohort)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("OK ") and "6 items of 6 subjects" in out[0]


@pytest.mark.pydicom2
def test_check_reports_a_subject_in_two_splits(cohort_list, capsys):
    cohort, datalist = cohort_list
    moved = {}

    def leak(d):
        moved.update(d["training"][0])
        d["test"].append({**d["training"][0], "visit": "V01", "side": "L" if moved["side"] == "R" else "R"})
    edit(datalist, leak)
    assert run_cli("check", str(datalist), "--base-dir", str(cohort)) == 1
    out = capsys.readouterr().out
    assert f"ERROR leak: {datalist}: subject {moved['subject']} is in training (1 item) and test (1 item)" in out
    assert "duplicate" in out and "same mri" in out


@pytest.mark.pydicom2
def test_check_reports_a_missing_file(cohort_list, capsys):
    cohort, datalist = cohort_list
    victim = json.loads(datalist.read_text())["validation"][0]
    (cohort / victim["mri"]).unlink()
    assert run_cli("check", str(datalist), "--base-dir", str(cohort)) == 1
    lines = capsys.readouterr().out.splitlines()
    errors = [line for line in lines if line.startswith("ERROR")]
    assert errors == [f"ERROR missing: validation[0] {victim['subject']}: {cohort / victim['mri']} does not exist"]
    assert lines[-1].startswith("FAILED")


@pytest.mark.pydicom2
def test_check_reports_wrong_modality_and_unreadable_files(cohort_list, capsys):
    cohort, datalist = cohort_list
    items = json.loads(datalist.read_text())["training"]
    write_dicom(cohort / items[0]["xray"], modality="MR")  # an MR image given as radiograph
    write_dicom(cohort / items[1]["xray"], modality="OT")  # secondary capture: only a warning
    (cohort / items[2]["xray"]).write_text("not a dicom")
    write_dicom(cohort / "ct.dcm", modality="CT")
    edit(datalist, lambda d: d["training"][3].update(mri="ct.dcm"))
    assert run_cli("check", str(datalist), "--base-dir", str(cohort)) == 1
    out = capsys.readouterr().out
    assert f"ERROR modality: training[0] {items[0]['subject']}: {cohort / items[0]['xray']} has Modality MR" in out
    assert f"WARNING modality: training[1] {items[1]['subject']}: {cohort / items[1]['xray']} has Modality OT" in out
    assert f"ERROR unreadable: training[2] {items[2]['subject']}: {cohort / items[2]['xray']} is not a DICOM" in out
    assert f"{cohort / 'ct.dcm'} has Modality CT; an MRI must be MR" in out


@pytest.mark.pydicom2
def test_check_reports_duplicate_pairs(cohort_list, capsys):
    cohort, datalist = cohort_list
    first = json.loads(datalist.read_text())["training"][0]
    edit(datalist, lambda d: d["training"].append(dict(first)))
    assert run_cli("check", str(datalist), "--base-dir", str(cohort)) == 1
    out = capsys.readouterr().out
    n = len(json.loads(datalist.read_text())["training"]) - 1
    assert (f"ERROR duplicate: training[{n}] {first['subject']}: repeats training[0] {first['subject']} "
            "(same mri, same xray and side, same subject, visit and side)") in out
    assert "leak" not in out  # same split: a duplicate, not a leak


@pytest.mark.pydicom2
def test_check_accepts_the_same_bilateral_radiograph_for_both_knees(tmp_path, capsys):
    xray = write_dicom(tmp_path / "s1" / "pa.dcm")
    for side in "LR":
        write_nifti(tmp_path / "s1" / f"{side}.nii.gz")
    items = [{"subject": "s1", "side": side, "visit": "V00", "xray": "s1/pa.dcm", "mri": f"s1/{side}.nii.gz"}
             for side in "LR"]
    (tmp_path / "d.json").write_text(json.dumps({"training": items, "validation": [], "test": []}))
    assert run_cli("check", str(tmp_path / "d.json")) == 0  # base dir defaults to the datalist's folder
    out = capsys.readouterr().out
    assert "WARNING empty" in out and out.splitlines()[-1].startswith("OK")
    assert xray.is_file()


@pytest.mark.pydicom2
def test_check_mri_shapes_series_folders_and_label_grids(tmp_path):
    for i in range(7):
        write_dicom(tmp_path / f"x{i}.dcm", laterality="L")
    write_nifti(tmp_path / "good.nii.gz", (4, 5, 6))
    write_nifti(tmp_path / "vol1.nii.gz", (4, 5, 6, 1))  # 4-D with one volume counts as 3-D
    write_nifti(tmp_path / "fmri.nii.gz", (4, 5, 6, 3))
    write_nifti(tmp_path / "slice.nii.gz", (4, 5, 1))
    write_nifti(tmp_path / "lab.nii.gz", (4, 5, 7))
    for k in range(3):
        write_dicom(tmp_path / "series" / f"{k:03d}.dcm", modality="MR")
    write_dicom(tmp_path / "one_mr_slice.dcm", modality="MR")
    items = [{"subject": f"s{i}", "side": "L", "xray": f"x{i}.dcm", "mri": mri, **({"labels": lab} if lab else {})} for i, (mri, lab) in
             enumerate([("good.nii.gz", None), ("vol1.nii.gz", None), ("fmri.nii.gz", None), ("slice.nii.gz", None),
                        ("series", None), ("one_mr_slice.dcm", None), ("good.nii.gz", "lab.nii.gz")])]
    (tmp_path / "d.json").write_text(json.dumps({"training": items, "validation": [], "test": []}))
    found = {(p.where.split()[1], p.kind) for p in check_datalist(tmp_path / "d.json") if p.is_error}
    assert found == {("s2", "shape"), ("s3", "shape"), ("s5", "shape"), ("s6", "shape"), ("s6", "duplicate")}
    messages = [str(p) for p in check_datalist(tmp_path / "d.json") if p.where.startswith("training[6]")]
    assert any("has shape (4, 5, 7) but the MRI" in m for m in messages)


@pytest.mark.pydicom2
def test_check_reads_joint_labels_as_an_integer_label_map_on_its_own_grid(tmp_path):
    for i in range(4):
        write_dicom(tmp_path / f"x{i}.dcm", laterality="L")
        write_nifti(tmp_path / f"m{i}.nii.gz", (4, 5, 6))
    write_nifti(tmp_path / "joint.nii.gz", (4, 40, 6), np.uint8)  # finer rows than the MRI: not a shape problem
    write_nifti(tmp_path / "float.nii.gz", (4, 40, 6), np.float32)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    joints = ["joint.nii.gz", "float.nii.gz", "broken.nii.gz", "absent.nii.gz"]
    items = [{"subject": f"s{i}", "side": "L", "xray": f"x{i}.dcm", "mri": f"m{i}.nii.gz", "joint_labels": j}
             for i, j in enumerate(joints)]
    (tmp_path / "d.json").write_text(json.dumps({"training": items, "validation": [], "test": []}))
    problems = [p for p in check_datalist(tmp_path / "d.json") if p.is_error]
    assert {(p.where.split()[1], p.kind) for p in problems} == {("s1", "dtype"), ("s2", "unreadable"),
                                                                 ("s3", "missing")}
    assert any("float.nii.gz stores float32" in p.message for p in problems)
    loaded = load_datalist(tmp_path / "d.json", base_dir=tmp_path / "base")
    assert loaded[0]["joint_labels"] == str(tmp_path / "base" / "joint.nii.gz")


def test_csv_reads_the_optional_joint_labels_column(tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text("subject,visit,side,xray,mri,joint_labels\n"
                   + "".join(f"S{i},V00,L,x{i}.dcm,m{i}.nii.gz,{f'j{i}.nii.gz' if i % 2 else ''}\n"
                             for i in range(4)))
    items = {i["subject"]: i for s in manifests.SPLITS for i in build_from_csv(csv)[s]}
    assert items["S1"]["joint_labels"] == "j1.nii.gz" and "joint_labels" not in items["S0"]


@pytest.mark.pydicom2
def test_check_warns_when_the_side_contradicts_the_radiograph(tmp_path):
    write_dicom(tmp_path / "x.dcm", laterality="L")
    write_nifti(tmp_path / "m.nii.gz")
    item = {"subject": "s", "side": "R", "xray": "x.dcm", "mri": "m.nii.gz"}
    (tmp_path / "d.json").write_text(json.dumps({"training": [item], "validation": [], "test": []}))
    sides = [p for p in check_datalist(tmp_path / "d.json") if p.kind == "side"]
    assert len(sides) == 1 and sides[0].severity == "warning" and "laterality L" in sides[0].message


def test_check_reports_schema_violations_and_unreadable_datalists(tmp_path, capsys):
    (tmp_path / "bad.json").write_text(json.dumps({"training": [{"subject": "s", "side": "left"}]}))
    assert run_cli("check", str(tmp_path / "bad.json")) == 1
    out = capsys.readouterr().out
    assert "ERROR schema" in out and "'test' is a required property" in out and "'left' is not one of" in out
    (tmp_path / "broken.json").write_text("{")
    assert run_cli("check", str(tmp_path / "broken.json")) == 1
    assert "ERROR unreadable" in capsys.readouterr().out
    assert run_cli("check", str(tmp_path / "absent.json")) == 1
    assert "ERROR missing" in capsys.readouterr().out


def test_build_cli_reports_bad_input_without_writing(tmp_path, capsys):
    csv_path = write_csv(tmp_path / "pairs.csv", ["s1,V00,L,x.dcm"], header="subject,visit,side,xray")
    out = tmp_path / "d.json"
    assert run_cli("build", "--csv", str(csv_path), "--out", str(out)) == 1
    assert "pairs.csv: missing column(s) mri" in capsys.readouterr().err
    assert not out.exists()
    rows = [f"s{i},V00,R,{i}.dcm,{i}.nii.gz" for i in range(10)]
    write_csv(csv_path, rows, header="subject,visit,side,xray,mri")
    assert run_cli("build", "--csv", str(csv_path), "--out", str(out), "--fractions", "0.6", "0.2", "0.2") == 0
    assert "10 items of 10 subjects (training 6, validation 2, test 2)" in capsys.readouterr().out


def test_validation_works_without_jsonschema(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "jsonschema", None)  # import now raises ImportError
    assert manifests.schema_problems(BAD[2]) == [f"{w}: {m}" for w, m in manifests._mini_validate(BAD[2], manifests.SCHEMA, "$")]
    with pytest.raises(ManifestError, match="'X' is not one of"):
        validate_datalist(BAD[2])
