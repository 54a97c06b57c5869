"""Shared pytest fixtures: a tiny synthetic cohort made once per session with the real synth API.

``tiny_cohort`` renders a handful of subjects of the ``demo`` preset with
:func:`xray2mri.pipeline.data.synth.cohort.generate_cohort` (the same code as ``xray2mri synth``) into
a session temporary folder, with its ``datalist.json``. Tests must treat it as read-only: copy a
file before changing it. Everything in it is SYNTHETIC (marked so by the synth writers).

``bundle_dir`` is the repository's ``bundles/knee_xray2mri`` and ``tiny_bundle_overrides`` the
config overrides that shrink the bundle to test size (radiograph 32x32 at 5 mm, MRI 16^3 at
10 mm: the same 160 mm field of view as the real configuration), so bundle tests run in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: Subjects in the tiny cohort: enough for non-empty training/validation/test splits.
TINY_COHORT_SUBJECTS: int = 6
#: Seed of the tiny cohort.
TINY_COHORT_SEED: int = 0


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a 6-subject synthetic cohort (demo preset, seed 0) with ``datalist.json``; read-only."""
    from xray2mri.pipeline.data.synth.cohort import generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    return generate_cohort(out, TINY_COHORT_SUBJECTS, seed=TINY_COHORT_SEED, preset="demo", workers=1, progress=False)


@pytest.fixture(scope="session")
def bundle_dir() -> Path:
    """The repository's knee_xray2mri bundle folder (its configs are read, never written)."""
    return Path(__file__).resolve().parents[1] / "bundles" / "knee_xray2mri"


@pytest.fixture(scope="session")
def tiny_bundle_overrides(tiny_cohort: Path, bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Config overrides running the bundle on ``tiny_cohort`` at test size, on CPU, without workers.

    ``weights`` points into a temporary folder: training installs its best weights there, never
    into the repository's bundle.
    """
    return {
        "bundle_root": str(bundle_dir),
        "weights": str(tmp_path_factory.mktemp("installed") / "model.pt"),
        "dataset_dir": str(tiny_cohort),
        "datalist": str(tiny_cohort / "datalist.json"),
        "xray_size": [32, 32],
        "xray_spacing": [5.0, 5.0],
        "mri_shape": [16, 16, 16],
        "mri_spacing": [10.0, 10.0, 10.0],
        "batch_size": 2,
        "val_batch_size": 2,
        "num_workers": 0,
        "progress_bar": False,
        "device": "$torch.device('cpu')",
    }
