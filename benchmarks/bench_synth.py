"""Speed of the synthetic cohort generator: subjects per second, per core, for each preset.

Run: ``.venv/bin/python benchmarks/bench_synth.py [--demo N] [--full N] [--workers K]``.
Target (issue 4): demo >= 1 subject/s per core on a 2-core machine. Writes into a temporary
folder that is removed afterwards. Prints one line per preset, with the wall time, the CPU
time of the workers and the machine's load, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

from xray2mri.pipeline.data.synth.cohort import generate_cohort


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime + s.ru_utime + s.ru_stime


def bench(preset: str, subjects: int, workers: int) -> dict:
    """Generate ``subjects`` subjects of ``preset`` with ``workers`` processes; timing figures."""
    with tempfile.TemporaryDirectory(prefix=f"bench_synth_{preset}_") as tmp:
        cpu0, t0 = _children_cpu(), time.perf_counter()
        generate_cohort(tmp, subjects, seed=0, preset=preset, workers=workers, progress=False)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    return {
        "preset": preset,
        "subjects": subjects,
        "workers": workers,
        "wall_s": wall,
        "subjects_per_s": subjects / wall,
        "subjects_per_s_per_core": subjects / wall / workers,
        "cpu_s_per_subject": cpu / subjects,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=int, default=20, help="demo subjects (default 20)")
    parser.add_argument("--full", type=int, default=2, help="full subjects (default 2; 0 skips)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpus={os.cpu_count()} workers={args.workers} loadavg_1min={load:.2f}")
    ok = True
    for preset, n in (("demo", args.demo), ("full", args.full)):
        if n <= 0:
            continue
        r = bench(preset, n, min(args.workers, n))
        print(
            f"{preset}: {r['subjects']} subjects in {r['wall_s']:.1f} s with {r['workers']} workers = "
            f"{r['subjects_per_s']:.2f} subjects/s ({r['subjects_per_s_per_core']:.2f} per core); "
            f"CPU {r['cpu_s_per_subject']:.2f} s/subject"
        )
        if preset == "demo":
            ok = r["cpu_s_per_subject"] <= 1.0
            print(f"demo target >= 1 subject/s per core (CPU <= 1 s/subject): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
