"""Baselines on toy splits where the answer is known, and loading a split through a preprocessing callable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xray2mri.pipeline.evaluation.baselines import (
    Baselines,
    mean_volume,
    nearest_neighbour_indices,
)
from xray2mri.pipeline.evaluation.inputs import load_split
from xray2mri.transforms.errors import InputError


def test_mean_volume_is_the_voxelwise_mean():
    vols = [np.full((2, 3, 4), v, np.float32) for v in (0.0, 0.3, 0.9)]
    vols[1][0, 0, 0] = 1.5
    expected = np.full((2, 3, 4), 0.4, np.float32)
    expected[0, 0, 0] = (0.0 + 1.5 + 0.9) / 3
    np.testing.assert_allclose(mean_volume(vols), expected, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        mean_volume([np.zeros((2, 2)), np.zeros((2, 3))])


def test_nearest_neighbour_picks_the_exact_match_and_the_closest():
    rng = np.random.default_rng(0)
    train = [rng.random((1, 8, 8)) for _ in range(6)]
    queries = [train[4].copy(), train[1] + rng.normal(0, 0.01, (1, 8, 8)), train[2] * 0 + 10.0]
    idx = nearest_neighbour_indices(queries, train)
    assert idx[0] == 4 and idx[1] == 1
    # the far query goes to the training image with the largest values (smallest distance to 10)
    assert idx[2] == int(np.argmin([((10.0 - t) ** 2).sum() for t in train]))


def test_baselines_predict_returns_mean_and_retrieved_volume():
    rng = np.random.default_rng(1)
    xrays = [rng.random((1, 6, 6)) for _ in range(4)]
    mris = [np.full((1, 5, 6, 6), i / 4, np.float32) for i in range(4)]
    b = Baselines(xrays, mris, ["A", "B", "C", "D"])
    pred = b.predict(xrays[2])
    np.testing.assert_allclose(pred["nn"], mris[2])
    np.testing.assert_allclose(pred["mean"], np.full((1, 5, 6, 6), 0.375), atol=1e-6)
    assert b.train_ids[b.neighbour(xrays[3])] == "D"
    with pytest.raises(ValueError, match="training"):
        Baselines(xrays, mris[:3])


def test_load_split_resolves_paths_and_returns_arrays(tmp_path):
    datalist = {
        "training": [
            {
                "subject": "S0",
                "side": "L",
                "grade": 2,
                "xray": "S0/x.npy",
                "mri": "S0/m.npy",
                "labels": "S0/l",
            }
        ],
        "test": [],
    }
    (tmp_path / "S0").mkdir()
    np.save(tmp_path / "S0" / "x.npy", np.ones((1, 4, 4)))
    np.save(tmp_path / "S0" / "m.npy", np.zeros((1, 3, 4, 4)))
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(datalist))
    seen = []

    def preprocess(item):  # a stand-in for the bundle's chain: loads the paths it is given
        seen.append(dict(item))
        return {k: np.load(item[k]) for k in ("xray", "mri")}

    [rec] = load_split(path, tmp_path, "training", preprocess)
    assert rec["subject"] == "S0" and rec["side"] == "L" and rec["grade"] == 2
    assert rec["xray"].shape == (1, 4, 4) and rec["mri"].shape == (1, 3, 4, 4)
    assert seen[0]["xray"] == str(tmp_path / "S0" / "x.npy")
    assert "labels" not in seen[0]  # only the requested keys are loaded
    with pytest.raises(InputError, match="validation"):
        load_split(path, tmp_path, "validation", preprocess)
    with pytest.raises(InputError, match="S0"):
        load_split(path, tmp_path, "training", lambda item: 1 / 0)


def test_load_split_keeps_the_datalist_order_on_several_threads(tmp_path):
    """Items are preprocessed in parallel; the records still follow the datalist, and a failing item is named."""
    import time

    items = []
    for i in range(6):
        (tmp_path / f"S{i}").mkdir()
        np.save(tmp_path / f"S{i}" / "x.npy", np.full((1, 2, 2), float(i)))
        np.save(tmp_path / f"S{i}" / "m.npy", np.full((1, 2, 2, 2), float(i)))
        items.append({"subject": f"S{i}", "xray": f"S{i}/x.npy", "mri": f"S{i}/m.npy"})
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": items}))

    def preprocess(item):  # the first items finish last
        x = np.load(item["xray"])
        time.sleep(0.05 * (6 - float(x.max())))
        return {"xray": x, "mri": np.load(item["mri"])}

    recs = load_split(path, tmp_path, "training", preprocess, workers=3)
    assert [r["subject"] for r in recs] == [f"S{i}" for i in range(6)]
    assert [float(r["xray"].max()) for r in recs] == [float(i) for i in range(6)]

    def fail_on_s4(item):
        if "S4" in item["xray"]:
            raise ValueError("unreadable")
        return preprocess(item)

    with pytest.raises(InputError, match="S4"):
        load_split(path, tmp_path, "training", fail_on_s4, workers=3)
