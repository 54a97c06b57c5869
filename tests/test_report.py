"""The report end to end on a tiny fake run: a toy cohort on disk, a fake bundle, predictions, a TensorBoard log."""

from __future__ import annotations

import argparse
import csv
import json
import re

import nibabel as nib
import numpy as np
import pytest

from xray2mri.pipeline.commands import report as report_cmd
from xray2mri.pipeline.data.synth.tissues import to_classes
from xray2mri.pipeline.demo import DEMO_CRITERIA
from xray2mri.pipeline.evaluation import report as R
from xray2mri.pipeline.evaluation import summary as S
from xray2mri.pipeline.evaluation.baselines import BASELINE_NAMES
from xray2mri.pipeline.evaluation.clinical import GT_LABELS, TISSUE_LABELS_SUFFIX
from xray2mri.pipeline.evaluation.inputs import (
    bundle_preprocessing,
    load_cases,
    load_split,
    read_prediction,
    read_training_log,
)
from xray2mri.pipeline.evaluation.measure import GT_CHECK
from xray2mri.pipeline.evaluation.radiographic import RADIOGRAPHIC_NAME
from xray2mri.transforms.errors import InputError

SPACING = 2.0
SHAPE = (12, 24, 20)  # (A->P, S->I, R->L)
LEGEND = {"air": 0, "cortical_bone": 5, "femur": 6, "tibia": 7, "femoral_cartilage": 11}
SIGNAL = {0: 0.0, 5: 0.03, 6: 0.12, 7: 0.12, 11: 0.7}
#: affine of an array stored as (A->P, S->I, R->L) in RAS world mm (nibabel axcodes P, I, L)
PIL_AFFINE = np.array([[0, 0, -SPACING, 0], [-SPACING, 0, 0, 0], [0, -SPACING, 0, 0], [0, 0, 0, 1]], float)


def _toy_subject(rng, gap_lat: int, gap_med: int, row: int):
    """Canonical right-knee labels and a noisy DESS-like volume; the medial gap is at high columns."""
    d, h, w = SHAPE
    labels = np.zeros(SHAPE, np.uint8)
    for col in range(2, w - 2):
        gap = gap_lat if col < w // 2 else gap_med
        top = row - gap // 2
        labels[1:-1, 2 : top - 1, col] = 6
        labels[1:-1, top - 1, col] = 5
        labels[1:-1, top : top + gap, col] = 11
        labels[1:-1, top + gap, col] = 5
        labels[1:-1, top + gap + 1 : h - 2, col] = 7
    vol = np.vectorize(SIGNAL.get)(labels).astype(np.float32) + rng.normal(0, 0.01, SHAPE).astype(np.float32)
    return labels, np.clip(vol, 0, None)


def _make_cohort(root, n_train=5, n_test=3, seed=0):
    """A cohort folder in the project's layout (NIfTI stand-ins for the radiographs) and its datalist."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_train + n_test):
        subj, side = f"SYN{i:04d}", "L" if i % 2 else "R"
        gap_lat, gap_med, row = 4, int(rng.integers(1, 4)), int(rng.integers(11, 14))
        labels, vol = _toy_subject(rng, gap_lat, gap_med, row)
        xray = (labels > 0).sum(axis=0).astype(np.float32) + 3.0 * (labels == 11).sum(axis=0)
        if side == "L":  # stored as the patient's left knee: mirrored along R->L
            labels, vol, xray = labels[..., ::-1], vol[..., ::-1], xray[..., ::-1]
        folder = root / subj
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.ascontiguousarray(vol), PIL_AFFINE), folder / f"{subj}_mri.nii.gz")
        nib.save(nib.Nifti1Image(np.ascontiguousarray(labels), PIL_AFFINE), folder / f"{subj}_labels.nii.gz")
        nib.save(nib.Nifti1Image(np.ascontiguousarray(xray), np.eye(4)), folder / f"{subj}_xray.nii.gz")
        meta = {
            "subject": subj,
            "side": side,
            "grade": int(3 - gap_med),
            "jsw_medial_mm": gap_med * SPACING,
            "jsw_lateral_mm": gap_lat * SPACING,
            "synthetic": True,
        }
        (folder / f"{subj}_meta.json").write_text(json.dumps(meta))
        items.append(
            {
                "subject": subj,
                "side": side,
                "grade": meta["grade"],
                "xray": f"{subj}/{subj}_xray.nii.gz",
                "mri": f"{subj}/{subj}_mri.nii.gz",
                "labels": f"{subj}/{subj}_labels.nii.gz",
            }
        )
    (root / "tissues.json").write_text(json.dumps(LEGEND))
    datalist = {"training": items[:n_train], "validation": [], "test": items[n_train:]}
    (root / "datalist.json").write_text(json.dumps(datalist))
    return root / "datalist.json"


def _make_bundle(root):
    """A bundle whose train.json holds the sizes and a deterministic preprocessing chain."""
    config = {
        "imports": ["$import xray2mri.transforms.mri", "$import xray2mri.transforms.laterality"],
        "bundle_root": ".",
        "xray_size": [SHAPE[1], SHAPE[2]],
        "xray_spacing": [SPACING, SPACING],
        "mri_shape": list(SHAPE),
        "mri_spacing": [SPACING] * 3,
        "validate": {
            "preprocessing": {
                "_target_": "Compose",
                "transforms": [
                    {"_target_": "LoadImaged", "keys": "xray", "ensure_channel_first": True},
                    {"_target_": "ScaleIntensityd", "keys": "xray"},
                    {"_target_": "xray2mri.transforms.mri.LoadMrid", "keys": "mri"},
                    {
                        "_target_": "xray2mri.transforms.laterality.MirrorToCanonicalSided",
                        "keys": ["xray", "mri"],
                    },
                    {
                        "_target_": "xray2mri.transforms.mri.PreprocessMrid",
                        "keys": "mri",
                        "spacing": "@mri_spacing",
                        "shape": "@mri_shape",
                    },
                ],
            }
        },
    }
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "train.json").write_text(json.dumps(config))
    return root


def _write_predictions(folder, cases, make):
    (folder / "predictions").mkdir(parents=True)
    for case in cases:
        mri, xray = make(case)
        nib.save(
            nib.Nifti1Image(mri[None].astype(np.float32), PIL_AFFINE),
            folder / "predictions" / f"{case.subject}_mri_pred.nii.gz",
        )
        nib.save(
            nib.Nifti1Image(xray.astype(np.float32), np.eye(4)),
            folder / "predictions" / f"{case.subject}_xray_recon.nii.gz",
        )


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    datalist = _make_cohort(root / "cohort")
    bundle = _make_bundle(root / "bundle")
    preprocess, sizes = bundle_preprocessing(bundle)
    cases = load_cases(datalist, root / "cohort", preprocess)
    rng = np.random.default_rng(7)
    _write_predictions(
        root / "good",
        cases,
        lambda c: (
            np.clip(c.mri + rng.normal(0, 0.005, c.mri.shape), 0, 1),
            np.clip(c.xray + rng.normal(0, 0.01, c.xray.shape), 0, 1),
        ),
    )
    for case in cases:  # the good model has a tissue head: its label map is the ground truth's class map
        nib.save(
            nib.Nifti1Image(to_classes(case.labels, LEGEND).astype(np.uint8), PIL_AFFINE),
            root / "good" / "predictions" / f"{case.subject}{TISSUE_LABELS_SUFFIX}",
        )
    _write_predictions(root / "bad", cases, lambda c: (np.full(c.mri.shape, 0.5), np.full(c.xray.shape, 0.5)))
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(root / "train_log")) as writer:
        for step in range(1, 6):
            writer.add_scalar("train_loss", 1.0 / step, step)
            writer.add_scalar("train_loss_mri", 0.6 / step, step)
            writer.add_scalar("val_mri_psnr", 20 + step, step)
    return {"root": root, "datalist": datalist, "bundle": bundle, "cases": cases, "sizes": sizes}


def test_bundle_preprocessing_keeps_labels_aligned_with_the_mri_and_mirrors_left_knees(fake_run):
    cases = fake_run["cases"]
    assert fake_run["sizes"]["mri_shape"] == list(SHAPE)
    assert {c.side for c in cases} == {"L", "R"}
    for case in cases:
        assert case.mri.shape == case.labels.shape == SHAPE and case.xray.ndim == 2
        # cartilage voxels are the brightest in the MRI: the label map lies on the same grid
        assert case.mri[case.labels == 11].mean() > 0.8 > case.mri[case.labels == 6].mean()
        # after mirroring every knee is a right knee: the lateral (low-column) gap is the 4-voxel one
        assert (case.labels[:, :, 4] == 11).sum(axis=1).max() == 4
    # the datalist's training split goes through the same chain
    train = load_split(
        fake_run["datalist"],
        fake_run["root"] / "cohort",
        "training",
        bundle_preprocessing(fake_run["bundle"])[0],
    )
    assert len(train) == 5 and train[0]["mri"].shape == (1, *SHAPE)


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    report_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_report_end_to_end_writes_every_file_and_judges_the_quality_bar(fake_run, capsys):
    root = fake_run["root"]
    out = root / "report"
    status = _run_cli(
        [
            "report",
            "--datalist", str(fake_run["datalist"]),
            "--base-dir", str(root / "cohort"),
            "--predictions", f"good model={root / 'good'}", f"bad model={root / 'bad' / 'predictions'}",
            "--bundle", str(fake_run["bundle"]),
            "--out", str(out),
            "--train-log", str(root / "train_log"),
            "--criteria", str(DEMO_CRITERIA),
            "--montages", "1",
        ]
    )  # fmt: skip
    assert status == 0
    captured = capsys.readouterr()
    assert "report.md" in captured.out
    # progress while it works (stderr): loading each split, then measuring the cases
    assert "load training" in captured.err and "load test" in captured.err and "measure" in captured.err
    for name in ("metrics_per_subject.csv", "summary.json", "report.md"):
        assert (out / name).is_file()
    with open(out / "metrics_per_subject.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {"good model", "bad model", BASELINE_NAMES["mean"], BASELINE_NAMES["nn"], GT_CHECK}
    methods |= {GT_LABELS, RADIOGRAPHIC_NAME}  # the clinical readings' reference and the radiographic reading
    assert {r["method"] for r in rows} == methods and len(rows) == 3 * len(methods)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthetic_data"] is True and "data_range = 1.0" in summary["data_ranges"]["mri"]
    good, bad = summary["methods"]["good model"], summary["methods"]["bad model"]
    assert good["psnr_db"]["ci95_low"] <= good["psnr_db"]["mean"] <= good["psnr_db"]["ci95_high"]
    assert good["psnr_db"]["mean"] > 40
    # radiograph reconstruction PSNR: models only (the baselines reconstruct no radiograph)
    assert good["xray_psnr_db"]["n"] == 3 and good["xray_psnr_db"]["mean"] > 30 > bad["xray_psnr_db"]["mean"]
    assert summary["methods"][BASELINE_NAMES["nn"]]["xray_psnr_db"]["n"] == 0
    # the fake cohort's cartilage is the same in every subject, so the baselines read it perfectly too: the
    # good model ties them there (0 < 0 fails) and passes every other criterion, the readings' included
    good_fails = [c for c in summary["quality_bar"]["good model"]["criteria"] if not c["pass"]]
    assert good_fails and all(c["criterion"].startswith("cartilage_thickness_abs_err_mm") and c["value"] == 0.0
                              and c["threshold"] == 0.0 for c in good_fails)
    assert any(c["criterion"].startswith("jsw_abs_err_mm") and c["pass"]
               for c in summary["quality_bar"]["good model"]["criteria"])
    assert summary["quality_bar"]["bad model"]["pass"] is False
    assert len(summary["quality_bar"]["good model"]["criteria"]) == len(S.load_criteria(DEMO_CRITERIA).criteria)
    assert summary["quality_bar_headline"] == {
        "model": "good model",
        "passed": False,
        "rule": summary["quality_bar_headline"]["rule"],
    }
    assert bad["ssim3d"]["mean"] < good["ssim3d"]["mean"]
    # clinical readings: the good model's tissue map is the truth; the bad model has no tissue head
    assert good["dice_mean"]["mean"] == 1.0 and good["dice_femur"]["mean"] == 1.0
    assert good["cartilage_thickness_abs_err_mm"]["mean"] == 0.0 and good["jsw_abs_err_mm"]["mean"] == 0.0
    assert "dice_mean" not in bad and "cartilage_thickness_abs_err_mm" not in bad
    assert 0.0 < summary["methods"][BASELINE_NAMES["nn"]]["dice_mean"]["mean"] <= 1.0
    agree = summary["readings"]["agreement"]
    assert agree["good model"]["jsw_medial_mm"]["bias"] == 0.0
    assert "cartilage_thickness_medial_mm" not in agree[RADIOGRAPHIC_NAME]  # no radiographic counterpart
    # self-consistency: the good model's tissue map is the ground truth's, so it reprojects as well as it
    truth_ncc = summary["readings"]["methods"][GT_LABELS]["reprojection_ncc"]["mean"]
    assert good["reprojection_ncc"]["mean"] == pytest.approx(truth_ncc)
    assert good["reprojection_ncc"]["n"] == 3
    # JSW measured on the ground-truth MRI matches the meta JSON (the measurement check)
    check = summary["methods"][GT_CHECK]
    assert check["mri_jsw_abs_err_mm"]["mean"] < 0.5
    assert good["mri_jsw_abs_err_mm"]["mean"] < 0.5
    # report.md: states the data are synthetic and the data range; every image it shows exists
    md = (out / "report.md").read_text()
    assert "Synthetic data" in md and "data_range = 1.0" in md
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {"figures/metrics_by_grade.png", "figures/training_curves.png", "figures/readings_bland_altman.png"} <= set(pngs)
    assert "## Clinical readings from tissue maps" in md and "Tissue Dice" in md
    assert any(p.startswith("figures/montage_") for p in pngs)
    for rel in pngs:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 1000
    assert "✅ pass" in md and "❌ fail" in md
    assert "margin [95 % paired bootstrap]" in md  # every verdict shows how far it is from its threshold
    good_bar = summary["quality_bar"]["good model"]["criteria"]
    assert all(len(c["margin_ci95"]) == 2 and isinstance(c["clear"], bool) for c in good_bar)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".report.")]  # no temporary folders left


def test_report_without_training_log_says_so(fake_run, tmp_path):
    inputs = R.ReportInputs(
        cases=fake_run["cases"][:2],
        train_xrays=[c.xray for c in fake_run["cases"]],
        train_mris=[c.mri for c in fake_run["cases"]],
        train_ids=[c.subject for c in fake_run["cases"]],
        legend=LEGEND,
        spacing=(SPACING,) * 3,
    )
    R.build_report(
        inputs, {"m": fake_run["root"] / "good"}, tmp_path / "r", train_log=tmp_path / "absent", n_montage=0
    )
    md = (tmp_path / "r" / "report.md").read_text()
    assert (
        "training curves not drawn" in md
        and not (tmp_path / "r" / "figures" / "training_curves.png").exists()
    )


def test_failed_report_leaves_the_previous_one_untouched(fake_run, tmp_path, capsys):
    root = fake_run["root"]
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("previous report")
    partial = tmp_path / "partial"
    (partial / "predictions").mkdir(parents=True)  # no prediction files at all
    argv = ["report", "--datalist", str(fake_run["datalist"]), "--base-dir", str(root / "cohort")]
    argv += ["--predictions", str(partial), "--bundle", str(fake_run["bundle"]), "--out", str(out)]
    assert _run_cli(argv) == 1
    err = capsys.readouterr().err
    assert "_mri_pred.nii.gz" in err and "no predicted MRI" in err
    assert (out / "report.md").read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial", "report"]


def test_read_prediction_refuses_a_wrong_shape(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.float32), np.eye(4)), tmp_path / "S_mri_pred.nii.gz")
    with pytest.raises(InputError, match="3-D"):
        read_prediction(tmp_path, "S")


def test_parse_predictions_names_rows():
    assert report_cmd.parse_predictions(["runs/a"]) == {report_cmd.DEFAULT_MODEL_NAME: "runs/a"}
    assert report_cmd.parse_predictions(["paper=runs/a", "geometry-aware=runs/b"]) == {
        "paper": "runs/a",
        "geometry-aware": "runs/b",
    }
    with pytest.raises(argparse.ArgumentTypeError):
        report_cmd.parse_predictions(["x=a", "x=b"])


def test_training_log_keeps_runs_apart_and_reads_csv(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for run, scale in (("paper", 1.0), ("geometry", 0.5)):
        with SummaryWriter(str(tmp_path / "runs" / run / "tensorboard")) as writer:
            for step in range(3):
                writer.add_scalar("train_loss", scale / (step + 1), step)
    curves, note = read_training_log(tmp_path / "runs")
    assert set(curves) == {"paper/tensorboard: train_loss", "geometry/tensorboard: train_loss"}
    assert curves["geometry/tensorboard: train_loss"][1] == pytest.approx([0.5, 0.25, 0.5 / 3])
    assert "2 TensorBoard event file" in note
    (tmp_path / "csvlog").mkdir()
    (tmp_path / "csvlog" / "metrics.csv").write_text("epoch,val_psnr,comment\n1,20.5,ok\n2,22.0,ok\n")
    curves, _ = read_training_log(tmp_path / "csvlog")
    assert curves == {"metrics/val_psnr": ([1.0, 2.0], [20.5, 22.0])}


def test_quality_bar_margins_say_whether_a_verdict_is_outside_the_subjects_noise():
    """A model far above one threshold is a clear pass; one that passes on the mean only by a hair,
    with subjects on both sides, is flagged as within the noise; "<" criteria count a lower error as margin."""
    mean_name, nn_name = BASELINE_NAMES["mean"], BASELINE_NAMES["nn"]
    wobble = np.array([1.0, -1.0] * 10)  # per-subject scatter that averages to 0
    rows = []
    for i in range(20):
        base = {"subject": f"S{i:02d}", "grade": i % 3}
        rows.append({**base, "method": mean_name, "psnr_db": 20.0, "ssim3d": 0.5, "mri_jsw_abs_err_mm": 1.0})
        rows.append({**base, "method": nn_name, "psnr_db": 24.0, "ssim3d": 0.7, "mri_jsw_abs_err_mm": 0.8})
        rows.append(
            {
                **base,
                "method": "model",
                "psnr_db": 26.05 + wobble[i],  # +6.05 over the mean volume (bar +3), +2.05 over NN (bar +2)
                "ssim3d": 0.9,
                "mri_jsw_abs_err_mm": 0.75 + 0.2 * wobble[i],  # 0.25 below the mean volume, 0.05 below NN
            }
        )
    judged = [c for c in S.load_criteria(DEMO_CRITERIA).criteria if c.metric in ("psnr_db", "ssim3d")]
    judged += [S.Criterion("mri_jsw_abs_err_mm", "<", base, 0.0) for base in ("mean", "nn")]
    bar = S.summarize_rows(rows, ["model"], judged, n_boot=500)["quality_bar"]["model"]
    assert bar["pass"] is True
    crit = {c["criterion"]: c for c in bar["criteria"]}
    clear = crit[f"psnr_db >= {mean_name} + 3"]
    assert clear["margin"] == pytest.approx(3.05) and clear["clear"] is True
    assert clear["margin_ci95"][0] > 0
    hair = crit[f"psnr_db >= {nn_name} + 2"]
    assert hair["pass"] is True and hair["margin"] == pytest.approx(0.05)
    assert hair["margin_ci95"][0] < 0 < hair["margin_ci95"][1] and hair["clear"] is False
    jsw_nn = crit[f"mri_jsw_abs_err_mm < {nn_name}"]
    assert jsw_nn["margin"] == pytest.approx(0.05) and jsw_nn["clear"] is False
    jsw_mean = crit[f"mri_jsw_abs_err_mm < {mean_name}"]
    assert jsw_mean["margin"] == pytest.approx(0.25) and jsw_mean["margin_ci95"][0] > 0


def test_quality_bar_margin_is_undefined_without_paired_subjects():
    """A metric no subject has for both model and baseline (e.g. JSW where no band was found) gets no
    noise verdict rather than a false "within noise"."""
    mean_name, nn_name = BASELINE_NAMES["mean"], BASELINE_NAMES["nn"]
    rows = []
    for i in range(4):
        base = {"subject": f"S{i}", "grade": 0}
        rows.append({**base, "method": mean_name, "psnr_db": 20.0, "ssim3d": 0.5, "mri_jsw_abs_err_mm": 1.0})
        rows.append({**base, "method": nn_name, "psnr_db": 21.0, "ssim3d": 0.6, "mri_jsw_abs_err_mm": 1.0})
        rows.append({**base, "method": "model", "psnr_db": 30.0 + i, "ssim3d": 0.9, "mri_jsw_abs_err_mm": float("nan")})
    criteria = [c for c in S.load_criteria(DEMO_CRITERIA).criteria if c.metric in ("psnr_db", "ssim3d")]
    criteria += [S.Criterion("mri_jsw_abs_err_mm", "<", base, 0.0) for base in ("mean", "nn")]
    crit = {c["criterion"]: c for c in S.quality_bar(
        S.summarize_rows(rows, [], n_boot=200)["methods"], ["model"], criteria, rows, n_boot=200)["model"]["criteria"]}
    assert crit[f"mri_jsw_abs_err_mm < {nn_name}"]["clear"] is None
    assert crit[f"mri_jsw_abs_err_mm < {nn_name}"]["pass"] is False
    assert crit[f"psnr_db >= {mean_name} + 3"]["clear"] is True


def test_grade_figure_keeps_subjects_without_a_grade(tmp_path, monkeypatch):
    """OAI grades can be missing (``.T`` and the like): those subjects are drawn in a "no grade" group,
    not dropped."""
    import matplotlib.axes

    from xray2mri.pipeline.evaluation.figures import grade_distributions

    rows = [{"subject": f"S{i}", "grade": g, "method": m, "psnr_db": 20.0 + i, "ssim3d": 0.5, "mri_jsw_abs_err_mm": 1.0}
            for i, g in enumerate([0, 2, None, None]) for m in ("model", BASELINE_NAMES["mean"])]
    ticks = []
    original = matplotlib.axes.Axes.set_xticklabels
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xticklabels",
                        lambda self, labels, *a, **k: (ticks.append(list(labels)), original(self, labels, *a, **k))[1])
    grade_distributions(tmp_path / "g.png", rows, ["model", BASELINE_NAMES["mean"]], "acquired data")
    assert ticks and all(t == ["KL 0", "KL 2", "no grade"] for t in ticks)
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_report_no_progress_prints_no_bars(fake_run, capsys):
    root = fake_run["root"]
    status = _run_cli(
        ["report", "--datalist", str(fake_run["datalist"]), "--base-dir", str(root / "cohort"),
         "--predictions", f"good model={root / 'good'}", "--bundle", str(fake_run["bundle"]),
         "--out", str(root / "report_quiet"), "--montages", "0", "--no-progress"]
    )
    assert status == 0
    err = capsys.readouterr().err
    assert "load training" not in err and "measure" not in err
