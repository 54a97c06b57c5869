"""``xray2mri demo`` in miniature: every step through the real commands, on the tiny cohort and a tiny bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
import torch
from bundle_factory import make_tiny_bundle

from xray2mri.pipeline.demo import DemoError, DemoSettings, make_cohort
from xray2mri.pipeline.training.checkpoints import BEST_NAME, load_checkpoint, model_state
from xray2mri.pipeline.training.engine import train_setting
from xray2mri.pipeline.training.networks import VARIANT_NAMES

EPOCHS = 5  # validated once, at the last epoch: one validation writes the best checkpoint
# the whole 160 mm field of the demo cohort, coarse; 16 voxels hold the 11-voxel SSIM window of the metrics
DEMO_TINY_SIZES = {"xray_size": [32, 32], "xray_spacing": [5.0, 5.0], "mri_shape": [16, 16, 16],
                   "mri_spacing": [10.0, 10.0, 10.0]}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_cohort) -> tuple[Path, Path, str]:
    """(bundle, run folder, console output) of one miniature demo."""
    tmp = tmp_path_factory.mktemp("demo")
    bundle = make_tiny_bundle(tmp / "bundle", whole=False, sizes=DEMO_TINY_SIZES)
    out = tmp / "run"
    cmd = [sys.executable, "-m", "xray2mri.pipeline.cli", "demo", "--bundle", str(bundle), "--cohort", str(tiny_cohort),
           "--datalist", str(tiny_cohort / "datalist.json"), "--out", str(out), "--epochs", str(EPOCHS), "--val-interval", str(EPOCHS),
           "--override", "num_workers", "0", "--ood-calibration", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return bundle, out, proc.stdout


def test_demo_trains_the_declared_variant_and_reports_it_against_the_baselines(demo_run):
    bundle, out, stdout = demo_run
    assert "[demo] cohort: reusing" in stdout  # an existing cohort is never remade
    report = (out / "report" / "report.md").read_text()
    summary = json.loads((out / "report" / "summary.json").read_text())
    declared = VARIANT_NAMES[train_setting(bundle, "variant")]
    for name in (declared, "mean training volume", "nearest-neighbour retrieval"):
        assert name in summary["methods"] and name in report
    assert set(summary["quality_bar"]) == {declared}
    # the paper's form is trained only when asked for (--variants), to keep make demo in its budget
    assert sorted(p.name for p in out.glob("train_*")) == [f"train_{train_setting(bundle, 'variant')}"]
    # the console ends with the headline numbers and where the report is
    assert "psnr_db" in stdout and f"[demo] report: {out / 'report' / 'report.md'}" in stdout
    assert " jsw_abs_err_mm " in stdout and "mri_jsw_abs_err_mm" in stdout  # the map reading and the MRI-intensity one


def test_demo_installs_the_declared_variant_and_predicts_with_it(demo_run, tiny_cohort):
    bundle, out, _ = demo_run
    declared = train_setting(bundle, "variant")
    best = model_state(load_checkpoint(out / f"train_{declared}" / "checkpoints" / BEST_NAME))
    installed = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert set(installed) == set(best)
    assert all(torch.equal(installed[k], best[k]) for k in best)
    test_items = json.loads((tiny_cohort / "datalist.json").read_text())["test"][:3]
    volumes = sorted((out / "predict").glob("*_mri_synthetic.nii.gz"))
    # one volume per knee: a bilateral radiograph of the cohort gives two, named with their sides
    expected = []
    for item in test_items:
        stem = Path(item["xray"]).name.removesuffix(".dcm")
        meta = json.loads((tiny_cohort / item["subject"] / f"{item['subject']}_meta.json").read_text())
        sides = ["R", "L"] if meta["xray"]["framing"] == "bilateral" else [meta["side"]]
        expected += [f"{stem}_{side}_mri_synthetic.nii.gz" if len(sides) == 2 else f"{stem}_mri_synthetic.nii.gz"
                     for side in sides]
    assert [v.name for v in volumes] == sorted(expected) and volumes
    assert all(nib.load(v).header["descrip"].tobytes().decode().startswith("SYNTHETIC") for v in volumes)
    # the demo calibrated the installed model on validation: each volume has its uncertainty map,
    # and the report measured the map's coverage on the test split
    maps = sorted((out / "predict").glob("*_uncertainty.nii.gz"))
    assert [m.name.replace("_uncertainty", "_mri_synthetic") for m in maps] == [v.name for v in volumes]
    calibration = json.loads((bundle / "models" / "uncertainty_calibration.json").read_text())
    # its OOD threshold also saw the held-out radiographs made beside the cohort (2 here; 200 in make demo)
    held_out = tiny_cohort.with_name(f"{tiny_cohort.name}_ood_calibration")
    assert len(list(held_out.glob("SYN*/*_xray.dcm"))) == 2
    assert calibration["fitted_on"]["held_out_ood_scores"] == 2
    summary = json.loads((out / "report" / "summary.json").read_text())
    for name in ("uncertainty_coverage_80", "uncertainty_coverage_90", "uncertainty_coverage_95",
                 "uncertainty_width_90", "uncertainty_error_spearman"):
        assert name in summary
    # the joint-region head: each knee's map beside its volume, and the report read every method on it
    joint = sorted((out / "predict").glob("*_joint_labels_synthetic.nii.gz"))
    assert [j.name.replace("_joint_labels_synthetic", "_mri_synthetic") for j in joint] == [v.name for v in volumes]
    assert summary["readings"]["map"].startswith("joint-region box")
    declared_row = summary["methods"][VARIANT_NAMES[declared]]
    for key in ("jsw_abs_err_mm", "cartilage_thickness_abs_err_mm", "dice_mean"):
        assert key in declared_row and key in summary["methods"]["nearest-neighbour retrieval"], key


def test_demo_variants_option_adds_the_papers_form():
    from xray2mri.pipeline.cli import build_parser

    args = build_parser().parse_args(["demo", "--variants", "bottleneck", "geometry"])
    assert args.variants == ["bottleneck", "geometry"]
    assert build_parser().parse_args(["demo"]).variants is None  # None: the declared variant only


def test_demo_refuses_epochs_whose_end_is_never_validated(capsys):
    """The demo installs the best validated weights: an interval that leaves the last epochs unvalidated is refused."""
    from xray2mri.pipeline.cli import main

    with pytest.raises(ValueError, match=r"epochs \(30\) must be a positive multiple of it, or the last 2 epochs"):
        DemoSettings(epochs=30, val_interval=7)
    with pytest.raises(ValueError, match=r"val_interval \(0\) must be at least 1"):
        DemoSettings(epochs=28, val_interval=0)
    assert DemoSettings(epochs=30, val_interval=10).val_interval == 10
    assert DemoSettings().epochs % DemoSettings().val_interval == 0
    assert main(["demo", "--epochs", "30"]) == 2
    assert "epochs (30) must be a positive multiple" in capsys.readouterr().err


def test_demo_refuses_a_cohort_made_with_other_settings(tmp_path, tiny_cohort):
    other = tmp_path / "other_datalist.json"
    other.write_text(json.dumps({"training": [], "validation": [], "test": []}))
    settings = DemoSettings(cohort=tiny_cohort, datalist=other, out_dir=tmp_path / "run")
    with pytest.raises(DemoError, match="differs"):
        make_cohort(settings)


def test_demo_regenerates_a_cohort_an_older_generator_made(tmp_path, capsys):
    """A cohort whose cohort.json names another generator version (or none: version 1) is made again."""
    from xray2mri.pipeline.data.synth.cohort import GENERATOR_VERSION, generate_cohort

    cohort = generate_cohort(tmp_path / "cohort", 2, seed=4, workers=1, progress=False)
    info = json.loads((cohort / "cohort.json").read_text())
    assert info["generator_version"] == GENERATOR_VERSION
    info.pop("generator_version")  # as the first generator wrote it
    (cohort / "cohort.json").write_text(json.dumps(info))
    settings = DemoSettings(cohort=cohort, datalist=tmp_path / "none.json", out_dir=tmp_path / "run", subjects=2,
                            seed=4, workers=1)
    make_cohort(settings)
    assert "made by generator version 1" in capsys.readouterr().out
    assert json.loads((cohort / "cohort.json").read_text())["generator_version"] == GENERATOR_VERSION
    make_cohort(settings)  # now current: reused
    assert "cohort: reusing" in capsys.readouterr().out


def test_demo_headline_prints_undefined_means_and_noisy_criteria(capsys):
    """summary.json writes a mean without finite values as null (JSW where no joint band was found):
    the closing lines say n/a instead of crashing, and name the criteria whose margin is within noise."""
    from xray2mri.pipeline import demo

    summary = {
        "methods": {"geometry-aware": {"psnr_db": {"mean": 25.5}, "mri_jsw_abs_err_mm": {"mean": None}}},
        "quality_bar_headline": {"model": "geometry-aware", "passed": False, "rule": "r"},
        "quality_bar": {"geometry-aware": {"criteria": [
            {"criterion": "psnr_db >= m + 3", "clear": True},
            {"criterion": "mri_jsw_abs_err_mm < nn", "clear": False},
        ]}},
    }
    demo._print_headline(summary, DemoSettings(out_dir=Path("runs/x")))
    out = capsys.readouterr().out
    assert "psnr_db 25.500" in out and "mri_jsw_abs_err_mm n/a" in out
    assert "NOT MET" in out and "within the noise" in out and "mri_jsw_abs_err_mm < nn" in out
    assert "psnr_db >= m + 3" not in out.split("within the noise")[1]


def test_demo_refuses_overrides_that_change_the_installed_network(tmp_path):
    """``--override tissue_weight 1.0`` trained a tissue head whose weights the bundle's own train.json (read by
    calibrate and predict) could not load, an hour later; now it is refused at once, saying where to set it."""
    from xray2mri.pipeline.demo import DemoError, DemoSettings, run_demo

    settings = DemoSettings(cohort=tmp_path / "cohort", out_dir=tmp_path / "out", bundle_overrides={"tissue_weight": 1.0})
    with pytest.raises(DemoError, match="tissue_weight.*train.json"):
        run_demo(settings)
    assert not (tmp_path / "cohort").exists() and not (tmp_path / "out").exists()
