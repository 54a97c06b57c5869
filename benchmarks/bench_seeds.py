"""Does the demo's quality-bar verdict survive another training seed?

``make demo`` trains once, with train.json's ``seed`` (0), so its verdict is one draw. This script
trains the demo's configuration (same cohort, epochs, validation interval, one network variant)
again at each ``--seeds`` value through the demo's own steps (``python -m monai.bundle run`` with
train.json, then evaluate.json on the test split), and runs ``xray2mri report`` once over all the
seeds: every seed is a model row against the same two baselines, with its quality bar and the
95 % paired-bootstrap margin of every criterion. It prints one line per seed and writes
everything under ``--out``. About 9 minutes per seed on a 2-core CPU for the geometry variant.

Usage (after ``make demo`` made the cohort)::

    .venv/bin/python benchmarks/bench_seeds.py [--seeds 1 2] [--variant geometry] [--out runs/seeds]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from xray2mri.pipeline import demo
from xray2mri.pipeline.training.networks import VARIANT_NAMES, VARIANTS


def _signed(value: float | None) -> str:
    """A margin for the console; summary.json stores an undefined one (no finite subject) as null."""
    return "n/a" if value is None else f"{value:+.3f}"


def main(argv: list[str] | None = None) -> int:
    d = demo.DemoSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds (train.json: 0)")
    parser.add_argument("--variant", default="geometry", choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=Path("runs/seeds"))
    parser.add_argument("--bundle", type=Path, default=d.bundle, help=f"bundle folder (default {d.bundle})")
    parser.add_argument("--cohort", type=Path, default=d.cohort, help=f"the demo's cohort (default {d.cohort})")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs (default {d.epochs})")
    parser.add_argument("--val-interval", type=int, default=d.val_interval,
                        help=f"validation every N epochs, dividing --epochs (default {d.val_interval})")
    parser.add_argument("--override", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="extra bundle override for every bundle run, as for xray2mri demo")
    args = parser.parse_args(argv)

    try:
        base = replace(d, bundle=args.bundle, cohort=args.cohort, epochs=args.epochs, val_interval=args.val_interval,
                       bundle_overrides=dict(args.override))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not (base.cohort / "datalist.json").exists():
        print(f"no cohort in {base.cohort}: run `make demo` first", file=sys.stderr)
        return 2
    predictions = []
    for seed in args.seeds:
        settings = replace(base, out_dir=args.out / f"seed{seed}", bundle_overrides={**base.bundle_overrides, "seed": seed,
                                                                                 "install_weights": False})
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        weights = demo.best_checkpoint(demo.train(settings, args.variant))
        eval_dir = demo.evaluate(settings, args.variant, weights)
        predictions.append(f"{VARIANT_NAMES[args.variant]}, seed {seed}={eval_dir / 'predictions'}")

    report_dir = args.out / "report"
    summary = demo.report(base, predictions, report_dir, "--montages", "0")
    print(f"\nquality bar per seed (demo configuration, {args.variant}; synthetic test split):")
    for model, bar in summary["quality_bar"].items():
        cells = []
        for c in bar["criteria"]:
            lo, hi = c["margin_ci95"]
            cells.append(f"{c['criterion']}: {_signed(c['margin'])} [{_signed(lo)}, {_signed(hi)}]")
        print(f"  {model}: {'PASS' if bar['pass'] else 'FAIL'}")
        for cell in cells:
            print(f"      margin {cell}")
    print(f"report: {report_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
