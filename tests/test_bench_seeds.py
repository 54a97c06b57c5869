"""``benchmarks/bench_seeds.py`` in miniature: the demo's training at two seeds, one report judging each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from bundle_factory import make_tiny_bundle
from test_demo import DEMO_TINY_SIZES

from xray2mri.pipeline.demo import DEMO_CRITERIA
from xray2mri.pipeline.evaluation.summary import load_criteria
from xray2mri.pipeline.training.checkpoints import BEST_NAME, load_checkpoint, model_state

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_seeds.py"


def test_bench_seeds_trains_each_seed_and_judges_each_against_the_same_baselines(tmp_path, tiny_cohort):
    bundle = make_tiny_bundle(tmp_path / "bundle", whole=False, sizes=DEMO_TINY_SIZES)
    out = tmp_path / "seeds"
    cmd = [sys.executable, str(SCRIPT), "--seeds", "1", "2", "--bundle", str(bundle), "--cohort", str(tiny_cohort),
           "--epochs", "5", "--val-interval", "5", "--out", str(out), "--override", "num_workers", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # the seed reaches training: the two runs learn different weights from the same data
    a, b = (model_state(load_checkpoint(out / f"seed{s}" / "train_geometry" / "checkpoints" / BEST_NAME)) for s in (1, 2))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((out / "report" / "summary.json").read_text())
    models = ["geometry-aware, seed 1", "geometry-aware, seed 2"]
    assert set(summary["quality_bar"]) == set(models)
    for model in models:
        criteria = summary["quality_bar"][model]["criteria"]
        assert len(criteria) == len(load_criteria(DEMO_CRITERIA).criteria)
        assert all(len(c["margin_ci95"]) == 2 for c in criteria)
        assert f"  {model}: " in proc.stdout
    assert "quality bar per seed" in proc.stdout and str(out / "report" / "report.md") in proc.stdout
