"""``xray2mri demo``: the main job on the built-in synthetic cohort (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xray2mri.pipeline.commands._help import ExampleHelpFormatter, with_example
from xray2mri.pipeline.commands._overrides import parse_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    from xray2mri.pipeline.demo import DemoSettings
    from xray2mri.pipeline.training.variants import VARIANTS

    d = DemoSettings()
    p = subparsers.add_parser(
        "demo",
        help="synthetic cohort -> train the declared variant -> evaluate vs baselines -> report -> predict",
        description="Run the whole method on the built-in synthetic knee cohort; results go to --out.",
        epilog=with_example("xray2mri demo --out runs/demo --epochs 28 --val-interval 7  # what make demo runs"),
        formatter_class=ExampleHelpFormatter,
    )
    p.add_argument("--bundle", type=Path, default=d.bundle, help=f"bundle folder (default {d.bundle})")
    p.add_argument("--cohort", type=Path, default=d.cohort, help=f"cohort folder, made if missing (default {d.cohort})")
    p.add_argument("--datalist", type=Path, default=d.datalist,
                   help=f"committed datalist the cohort must reproduce (default {d.datalist})")
    p.add_argument("--out", type=Path, default=d.out_dir, help=f"run folder (default {d.out_dir})")
    p.add_argument("--subjects", type=int, default=d.subjects, help=f"cohort size (default {d.subjects})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"cohort seed (default {d.seed})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs per variant (default {d.epochs})")
    p.add_argument("--val-interval", type=int, default=d.val_interval,
                   help=f"validate (and keep the best weights) every N epochs; must divide --epochs (default {d.val_interval})")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                   help="network variants to train and compare (default: the one the bundle declares; "
                        "'--variants bottleneck geometry' adds the paper's form for the comparison table)")
    p.add_argument("--workers", type=int, default=None, help="processes for the cohort (default: all cores)")
    p.add_argument("--ood-calibration", type=int, default=d.ood_calibration_subjects, metavar="N",
                   help=f"held-out radiographs made beside the cohort for the OOD threshold (default "
                        f"{d.ood_calibration_subjects}; 0: the validation split's alone)")
    p.add_argument("--override", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="extra bundle override for every bundle run, e.g. --override batch_size 8")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit status 1 when a step fails (its message names the step)."""
    from xray2mri.pipeline.demo import DemoSettings, run_demo
    from xray2mri.pipeline.evaluation.run import StepError

    try:
        settings = DemoSettings(
            bundle=args.bundle, cohort=args.cohort, datalist=args.datalist, out_dir=args.out,
            subjects=args.subjects, seed=args.seed, epochs=args.epochs, val_interval=args.val_interval,
            variants=tuple(args.variants) if args.variants else None,
            workers=args.workers, bundle_overrides=parse_overrides(args.override),
            ood_calibration_subjects=args.ood_calibration,
        )
    except ValueError as exc:
        print(f"xray2mri demo: {exc}", file=sys.stderr)
        return 2
    try:
        run_demo(settings)
    except StepError as exc:  # DemoError is one
        print(f"xray2mri demo: {exc}", file=sys.stderr)
        return 1
    return 0
