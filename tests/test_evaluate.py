"""``xray2mri evaluate`` on an OAI-layout import in miniature: import -> train one epoch -> evaluate -> report.

The tree ``xray2mri synth --layout oai`` writes is SYNTHETIC data in OAI's layout with no label maps and
no ``<subject>_meta.json``: the evaluation must measure JSW on the ground-truth MRI itself and call the
data what its datalist says. The same predictions are reported once with the import's own datalist
(which says SYNTHETIC) and once with a copy described as a real OAI release.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import pytest
from bundle_factory import make_tiny_bundle

from xray2mri.pipeline.data import manifests
from xray2mri.pipeline.data.oai.synth_tree import write_oai_tree
from xray2mri.pipeline.data.synth.presets import SynthPreset
from xray2mri.pipeline.demo import DEMO_CRITERIA
from xray2mri.pipeline.evaluation.baselines import BASELINE_NAMES
from xray2mri.pipeline.evaluation.inputs import describe_data
from xray2mri.pipeline.evaluation.measure import GT_CHECK, JSW_FROM_MRI
from xray2mri.pipeline.evaluation.run import bundle_command
from xray2mri.pipeline.evaluation.summary import load_criteria
from xray2mri.pipeline.training.checkpoints import BEST_NAME

#: MRI 24^3 at 6 mm (a 144 mm field); radiograph pixels of 1 mm.
TINY = SynthPreset(name="tiny", mri_shape=(24, 24, 24), mri_spacing_mm=6.0, supersample=1,
                   xray_shape=(0, 0), xray_pixel_mm=1.0)
#: The tiny bundle on the same 144 mm field; 24 voxels hold the metrics' 11-voxel SSIM window.
SIZES = {"xray_size": [24, 24], "xray_spacing": [6.0, 6.0], "mri_shape": [24, 24, 24], "mri_spacing": [6.0] * 3}
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
MODEL = "geometry-aware"  # the row name of the bundle's declared variant


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xray2mri.pipeline.cli", *argv], capture_output=True, text=True,
                          timeout=600, env=ENV)


@pytest.fixture(scope="module")
def oai_run(tmp_path_factory):
    """(tree, datalist, bundle, weights, evaluate output folder, console output) of one miniature run."""
    tmp = tmp_path_factory.mktemp("oai_eval")
    tree = write_oai_tree(tmp / "tree", 8, seed=3, visits=(0,), preset=TINY, drr_spacing_mm=3.0)
    datalist = tmp / "oai.json"
    built = _cli("manifest", "build", "--oai-root", str(tree), "--grades", str(tree / "clinical"),
                 "--centres", str(tree / "known_centres.csv"), "--out", str(datalist))
    assert built.returncode == 0, built.stdout + built.stderr
    bundle = make_tiny_bundle(tmp / "bundle", whole=False, sizes=SIZES)
    train = subprocess.run(
        bundle_command(bundle, ["train.json", "oai.json"],
                       {"dataset_dir": str(tree), "datalist": str(datalist), "output_dir": str(tmp / "train"),
                        "epochs": 1, "val_interval": 1, "num_workers": 0, "progress_bar": False}),
        capture_output=True, text=True, timeout=600, env=ENV)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    weights = tmp / "train" / "checkpoints" / BEST_NAME
    out = tmp / "eval"
    proc = _cli("evaluate", "--bundle", str(bundle), "--datalist", str(datalist), "--base-dir", str(tree),
                "--out", str(out), "--weights", str(weights), "--override", "num_workers", "0",
                "--criteria", str(DEMO_CRITERIA), "--montages", "1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return tree, datalist, bundle, weights, out, proc.stdout


def _finite(stats: dict) -> bool:
    return stats["n"] > 0 and stats["mean"] is not None and math.isfinite(stats["mean"])


@pytest.mark.slow
def test_evaluate_an_oai_import_gives_image_metrics_and_jsw_against_the_acquired_mri(oai_run):
    tree, datalist, _, _, out, stdout = oai_run
    assert f"report: {out / 'report' / 'report.md'}" in stdout
    test_items = json.loads(datalist.read_text())["test"]
    assert sorted((out / "evaluate" / "predictions").glob("*_mri_pred.nii.gz"))  # evaluate.json ran
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["n_test_cases"] == len(test_items)  # each knee is a case, not each participant
    for method in (MODEL, BASELINE_NAMES["mean"], BASELINE_NAMES["nn"]):
        stats = summary["methods"][method]
        for key in ("psnr_db", "psnr_slice_db", "ssim3d", "mae", "mri_jsw_abs_err_mm"):
            assert _finite(stats[key]), (method, key)
    assert _finite(summary["methods"][MODEL]["xray_psnr_db"])
    # no label map, no meta JSON: JSW places and reference come from the ground-truth MRI
    assert summary["jsw_reference"] == [JSW_FROM_MRI]
    gt = summary["methods"][GT_CHECK]
    assert _finite(gt["jsw_medial_mm"]) and _finite(gt["jsw_lateral_mm"]) and "mri_jsw_abs_err_mm" not in gt
    assert not any(k.startswith("mae_") for k in summary["methods"][MODEL])  # no tissue labels, no tissue MAE
    with open(out / "report" / "metrics_per_subject.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == GT_CHECK]
    assert {(r["subject"], r["side"]) for r in rows} == {(i["subject"], i["side"]) for i in test_items}
    # the quality bar judged the demo's criteria file; the version is recorded
    assert len(summary["quality_bar"][MODEL]["criteria"]) == len(load_criteria(DEMO_CRITERIA).criteria)
    assert summary["xray2mri_version"] not in ("", None, "unknown")
    # the import says SYNTHETIC, so the report does, and never calls it acquired
    md = (out / "report" / "report.md").read_text()
    assert summary["synthetic_data"] is True and "**Synthetic data.**" in md and "Acquired data" not in md
    assert "measured on the ground-truth MRI" in md and f"xray2mri {summary['xray2mri_version']}" in md


@pytest.mark.slow
def test_the_same_run_described_as_a_real_release_is_never_called_synthetic(oai_run, tmp_path):
    from xray2mri.pipeline.evaluation.report import report_from_files

    tree, datalist, bundle, _, out, _ = oai_run
    data = json.loads(datalist.read_text())
    assert "SYNTHETIC" in data["description"]
    data["description"] = "OAI image release: PA knee radiographs paired with SAG_3D_DESS MRI"
    real = tmp_path / "oai_real.json"
    real.write_text(json.dumps(data))
    summary = report_from_files(real, tree, {MODEL: out / "evaluate" / "predictions"}, bundle, tmp_path / "report",
                                n_montage=1, n_boot=200)
    assert summary["synthetic_data"] is False and summary["quality_bar"] == {}
    assert _finite(summary["methods"][MODEL]["mri_jsw_abs_err_mm"])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "**Acquired data.**" in md and "Synthetic data" not in md and "## Quality bar" not in md
    # figures carry the same word: rendered titles are not searchable, so check what the report was told
    assert summary["data"]["description"].startswith("OAI image release")


def test_describe_data_reads_the_manifest_and_the_items(tiny_cohort, tmp_path):
    """The synthetic cohort says SYNTHETIC; a CSV-built datalist of its files is still synthetic (their
    meta JSON says so); the same layout without meta JSON and a plain description is acquired data."""
    assert describe_data(tiny_cohort / "datalist.json", tiny_cohort)["synthetic"] is True
    items = [i for s in manifests.SPLITS for i in json.loads((tiny_cohort / "datalist.json").read_text())[s]]
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["subject", "visit", "side", "xray", "mri"])
        writer.writeheader()
        writer.writerows({"subject": i["subject"], "visit": "V00", "side": i["side"], "xray": i["xray"],
                          "mri": i["mri"]} for i in items)
    from_csv = tmp_path / "from_csv.json"
    manifests.write_datalist(manifests.build_from_csv(pairs, seed=0), from_csv)
    described = describe_data(from_csv, tiny_cohort)
    assert described["synthetic"] is True and "meta JSON" in described["evidence"]
    # an acquired cohort: same datalist, files somewhere without meta JSON beside them
    (tmp_path / "acquired").mkdir()
    plain = describe_data(from_csv, tmp_path / "acquired")
    assert plain["synthetic"] is False and plain["description"].startswith("Paired knee X-ray/MRI datalist")
    flagged = json.loads(from_csv.read_text())
    flagged["test"][0]["synthetic"] = True
    (tmp_path / "flagged.json").write_text(json.dumps(flagged))
    assert describe_data(tmp_path / "flagged.json", tmp_path / "acquired")["synthetic"] is True


def test_evaluate_refuses_missing_weights_without_partial_output(tiny_cohort, tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", whole=False, sizes=SIZES)
    (bundle / "models" / "model.pt").unlink()
    proc = _cli("evaluate", "--bundle", str(bundle), "--datalist", str(tiny_cohort / "datalist.json"),
                "--base-dir", str(tiny_cohort), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1 and "model.pt" in proc.stderr and "no weights" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failed_bundle_run_leaves_no_partial_predictions(tiny_cohort, tmp_path):
    import torch

    bundle = make_tiny_bundle(tmp_path / "bundle", whole=False, sizes=SIZES)
    wrong = tmp_path / "wrong.pt"
    torch.save({"not_a_layer.weight": torch.zeros(2)}, wrong)  # weights of another network
    out = tmp_path / "out"
    proc = _cli("evaluate", "--bundle", str(bundle), "--datalist", str(tiny_cohort / "datalist.json"),
                "--base-dir", str(tiny_cohort), "--out", str(out), "--weights", str(wrong),
                "--override", "num_workers", "0")
    assert proc.returncode == 1 and "step 'evaluate' failed" in proc.stderr
    assert (out / "evaluate.log").is_file()  # what went wrong is kept
    assert not (out / "evaluate").exists() and not (out / "report").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".evaluate.")]
