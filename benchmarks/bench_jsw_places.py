"""JSW without label maps: joint places found on the MRI itself against those found from the label map.

An acquired cohort (OAI) has no tissue labels, so ``xray2mri evaluate`` locates the JSW lines on the
ground-truth MRI (:func:`~xray2mri.pipeline.evaluation.metrics.compartment_lines_from_mri`). On a
SYNTHETIC cohort, where both are possible, this script measures each subject's ground-truth MRI
on both sets of lines (the bundle's preprocessing, canonical space) and prints how far apart the two
JSW figures are, how often each locator finds a compartment, both errors against the generator's
truth, and the time of each locator (as a ratio: the machine is shared).

Usage (after ``make demo`` made the cohort, or on any ``xray2mri synth`` folder)::

    python benchmarks/bench_jsw_places.py [--cohort data/synthetic_knee] [--split test] [--bundle bundles/knee_xray2mri]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from xray2mri.pipeline.evaluation import metrics as M
from xray2mri.pipeline.evaluation.inputs import bundle_preprocessing, load_cases, read_legend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, default=Path("data/synthetic_knee"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--bundle", type=Path, default=Path("bundles/knee_xray2mri"))
    args = parser.parse_args(argv)
    if not (args.cohort / "datalist.json").exists():
        print(f"no cohort in {args.cohort}: run `make demo` or `xray2mri synth --out {args.cohort}` first",
              file=sys.stderr)
        return 2
    preprocess, sizes = bundle_preprocessing(args.bundle)
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(sizes["mri_spacing"], float), (3,)))
    legend = read_legend(args.cohort)
    cases = load_cases(args.cohort / "datalist.json", args.cohort, preprocess, args.split)
    diffs, err_lab, err_mri, found = [], [], [], {"labels": 0, "mri": 0}
    t_lab = t_mri = 0.0
    for case in cases:
        t = time.perf_counter()
        from_labels = M.compartment_lines(case.labels, legend, spacing)
        t_lab += time.perf_counter() - t
        t = time.perf_counter()
        from_mri = M.compartment_lines_from_mri(case.mri, spacing)
        t_mri += time.perf_counter() - t
        for side in ("medial", "lateral"):
            a = M.measure_jsw(case.mri, from_labels[side], spacing)
            b = M.measure_jsw(case.mri, from_mri[side], spacing)
            found["labels"] += math.isfinite(a)
            found["mri"] += math.isfinite(b)
            truth = case.jsw_truth[side] if case.jsw_truth else math.nan
            if math.isfinite(a) and math.isfinite(b):
                diffs.append(abs(a - b))
                err_lab.append(abs(a - truth))
                err_mri.append(abs(b - truth))
    n = 2 * len(cases)
    d = np.asarray(diffs)
    print(f"{len(cases)} {args.split} subjects of {args.cohort} (SYNTHETIC), MRI {sizes['mri_shape']} at {spacing[0]:g} mm")
    print(f"compartments measured: label-map places {found['labels']}/{n}, MRI places {found['mri']}/{n}")
    print(f"|JSW(label places) - JSW(MRI places)| on the ground-truth MRI: mean {d.mean():.3f} mm, "
          f"median {np.median(d):.3f} mm, 95th percentile {np.percentile(d, 95):.3f} mm, max {d.max():.3f} mm")
    print(f"|error| against the generator's truth: label places {np.mean(err_lab):.3f} mm, "
          f"MRI places {np.mean(err_mri):.3f} mm")
    print(f"locator time, MRI places / label places: {t_mri / max(t_lab, 1e-9):.2f}x "
          f"({1000 * t_mri / len(cases):.1f} ms per subject)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
