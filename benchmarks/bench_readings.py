"""How accurate the clinical readings are on ground-truth tissue maps, by label resolution.

For SYNTHETIC knees drawn like the cohort's (right knees, every grade), the phantom's label map is
rendered at the demo's 2.5 mm and at 1.25 mm, and read with
:func:`~xray2mri.pipeline.evaluation.readings.read_tissue_map` three ways:

* hard 2.5 mm map (what ``DIR/SUBJ/SUBJ_labels.nii.gz`` holds in the demo preset),
* hard 1.25 mm map (the demo preset's fine grid, the ``full`` preset's MRI grid),
* 2.5 mm partial-volume probabilities: the 1.25 mm one-hot map averaged over 2x2x2 blocks (what a
  perfect tissue head's probabilities would look like at the demo's grid).

Each reading is compared with the generator's truth: the minimum joint-space width per compartment
(``jsw_medial_mm`` / ``jsw_lateral_mm``) and the tibial and femoral cartilage thickness at the contact
(the phantom's geometry). Prints the mean |error| and the mean signed error per reading and map.

Usage::

    python benchmarks/bench_readings.py [--subjects 12] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from xray2mri.pipeline.data.synth import tissues as T
from xray2mri.pipeline.data.synth.phantom import draw_params, render_labels, true_readings
from xray2mri.pipeline.evaluation import readings as R


def _axis(n: int, spacing: float) -> np.ndarray:
    return ((np.arange(n) - (n - 1) / 2.0) * spacing).astype(np.float32)


def _block_mean(probs: np.ndarray, k: int) -> np.ndarray:
    c, d, h, w = probs.shape
    return probs.reshape(c, d // k, k, h // k, k, w // k, k).mean(axis=(2, 4, 6))


def truth_of(p) -> dict[str, float]:
    """The generator's truth for the readings that have one (``cartilage_thickness_*``: tibial cartilage)."""
    return true_readings(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="coarse grid voxels per axis (2.5 mm each)")
    args = parser.parse_args(argv)
    legend = T.legend()
    errors: dict[str, dict[str, list[float]]] = {}
    for i in range(args.subjects):
        p = draw_params(np.random.default_rng([args.seed, i]), grade=i % 5, side="R")
        truth = truth_of(p)
        coarse = render_labels(p, *[_axis(args.size, 2.5)] * 3)
        fine = render_labels(p, *[_axis(2 * args.size, 1.25)] * 3)
        pv = _block_mean(R.class_probabilities(fine, legend), 2)
        maps = {
            "hard 2.5 mm": (coarse, 2.5, legend),
            "hard 1.25 mm": (fine, 1.25, legend),
            "partial-volume 2.5 mm": (pv, 2.5, None),
        }
        for name, (m, h, leg) in maps.items():
            r = R.read_tissue_map(m, (h, h, h), tissue_legend=leg)
            for key, t in truth.items():
                errors.setdefault(name, {}).setdefault(key, []).append(r[key] - t)
    print(f"{args.subjects} SYNTHETIC right knees (grades 0-4, seed {args.seed}); reading - truth, mm")
    keys = list(truth_of(draw_params(np.random.default_rng(0), grade=0, side="R")))
    print(f"{'reading':36s}" + "".join(f"{n:>26s}" for n in errors))
    for key in keys:
        cells = []
        for name in errors:
            e = np.asarray(errors[name][key], dtype=float)
            e = e[np.isfinite(e)]
            cells.append(f"|e| {np.abs(e).mean():5.2f} bias {e.mean():+5.2f} n{e.size:2d}")
        print(f"{key:36s}" + "".join(f"{c:>26s}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
