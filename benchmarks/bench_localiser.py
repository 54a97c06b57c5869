"""Accuracy of the built-in knee localiser on SYNTHETIC bilateral PA radiographs with known centres.

Each participant's bilateral radiograph is rendered (:func:`xray2mri.pipeline.data.oai.synth_tree.render_bilateral`:
two knees with their own anatomy and grade, cone-beam DRR), written as DX DICOM and loaded
back with ``LoadXray`` as the importer does; the localiser's joint centres are compared with
the projected true centres. Target: error <= 5 mm (at the knee) for >= 95 % of knees; a knee the
localiser does not place counts as a miss.

Usage::

    python benchmarks/bench_localiser.py [--participants 40] [--seed 0] [--preset demo] [--drr-mm 2.0]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xray2mri.pipeline.data.oai.localiser import localise_knees
from xray2mri.pipeline.data.oai.synth_tree import participant_knees, render_bilateral, write_radiograph
from xray2mri.pipeline.data.synth.presets import get_preset
from xray2mri.transforms.xray import LoadXray

TARGET_MM, TARGET_SHARE = 5.0, 0.95


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="demo", help="radiograph pixel pitch from this synth preset")
    parser.add_argument("--drr-mm", type=float, default=2.0, help="voxel size the DRR is cast through")
    args = parser.parse_args(argv)
    pre = get_preset(args.preset)
    errors, misses, by_grade, timings = [], [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.participants):
            knees = participant_knees(args.seed, i)
            radiograph = render_bilateral(knees, pre, np.random.default_rng([args.seed, i, 1]), args.drr_mm)
            path = Path(tmp) / f"{i}.dcm"
            write_radiograph(path, radiograph.image, participant=str(i), date=datetime.date(2005, 1, 1),
                             series_description="Bilateral PA Fixed Flexion Knee",
                             imager_pixel_mm=radiograph.imager_pixel_mm, sid_mm=radiograph.sid_mm,
                             sod_mm=radiograph.sod_mm)
            image = LoadXray()(path)
            spacing = image.meta["spacing"]
            start = time.perf_counter()
            findings = localise_knees(image[0].numpy(), spacing)
            timings.append(time.perf_counter() - start)
            for finding, side in zip(findings, ("R", "L")):
                if finding.centre is None:
                    misses.append((i, side, finding.reason))
                    continue
                row, col = radiograph.centres[side]
                error = float(np.hypot((finding.centre[0] - row) * spacing[0], (finding.centre[1] - col) * spacing[1]))
                errors.append(error)
                by_grade.setdefault(knees[side].grade, []).append(error)
    n = len(errors) + len(misses)
    within = sum(e <= TARGET_MM for e in errors) / n
    print(f"SYNTHETIC bilateral radiographs: {args.participants} ({n} knees), preset {pre.name} "
          f"({pre.xray_pixel_mm} mm detector pixels), DRR through {args.drr_mm} mm voxels")
    print(f"error at the knee: median {np.median(errors):.2f} mm, 95th percentile {np.percentile(errors, 95):.2f} mm, "
          f"max {max(errors):.2f} mm; not placed: {len(misses)}")
    for grade in sorted(by_grade):
        print(f"  KL {grade}: {len(by_grade[grade])} knees, median {np.median(by_grade[grade]):.2f} mm, "
              f"max {max(by_grade[grade]):.2f} mm")
    for miss in misses:
        print(f"  not placed: participant {miss[0]} side {miss[1]}: {miss[2]}")
    print(f"localiser time per radiograph: median {1000 * np.median(timings):.0f} ms")
    print(f"within {TARGET_MM:g} mm: {100 * within:.1f} % of knees (target >= {100 * TARGET_SHARE:.0f} %): "
          f"{'PASS' if within >= TARGET_SHARE else 'FAIL'}")
    return 0 if within >= TARGET_SHARE else 1


if __name__ == "__main__":
    sys.exit(main())
