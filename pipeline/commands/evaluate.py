"""``xray2mri evaluate``: a trained bundle on any paired datalist, against the baselines, with the report.

Runs the bundle's ``evaluate.json`` on the split (predictions in ``OUT/evaluate``), then the report
(``OUT/report/report.md``) against the mean-training-volume and nearest-neighbour baselines fitted on
the datalist's training split. Works for every datalist the manifests describe: the synthetic cohort,
an OAI import (its knees are found and cropped at load time, as every datalist's), a CSV of pairs.

Example::

    xray2mri evaluate --bundle bundles/knee_xray2mri --datalist data_manifests/oai.json \\
        --base-dir /data/OAI --out runs/oai_eval [--split test] [--weights runs/oai/checkpoints/best.pt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xray2mri.pipeline.commands._help import ExampleHelpFormatter, with_example
from xray2mri.pipeline.commands._overrides import parse_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="run a trained bundle on a datalist split and write the report against the baselines",
        description=__doc__.split("Example::")[0].strip(),
        epilog=with_example(
            "xray2mri evaluate --bundle bundles/knee_xray2mri --datalist data/synthetic_knee/datalist.json "
            "--base-dir data/synthetic_knee --out runs/evaluate --criteria pipeline/demo_quality_bar.json"
        ),
        formatter_class=ExampleHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="bundle folder (configs/, models/model.pt)")
    p.add_argument("--datalist", required=True, help="datalist JSON (training split fits the baselines)")
    p.add_argument("--base-dir", required=True, help="folder the datalist's paths are relative to")
    p.add_argument("--out", required=True, help="output folder: evaluate/ (predictions), report/")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--weights", default=None, help="weights of the bundle's declared variant "
                   "(default the bundle's models/model.pt; a training checkpoint works too)")
    p.add_argument("--criteria", default=None, metavar="JSON", help="quality-bar criteria JSON (default: no bar)")
    p.add_argument("--name", default=None, help="the model's row name (default: its variant's name)")
    p.add_argument("--train-log", default=None, help="training run folder, for the training curves")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default 0)")
    p.add_argument("--montages", type=int, default=3, help="number of per-subject montages (default 3)")
    p.add_argument("--override", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="extra bundle override for the evaluate.json run, e.g. --override num_workers 0")
    p.add_argument("--no-progress", action="store_true", help="no progress bars while the report loads and measures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; print the headline table; exit status 1 on bad input or a failed step."""
    from xray2mri.pipeline.commands.report import print_headline
    from xray2mri.pipeline.evaluation.run import StepError, evaluate_bundle
    from xray2mri.transforms.errors import InputError

    try:
        summary = evaluate_bundle(
            args.bundle, args.datalist, args.base_dir, args.out, split=args.split, weights=args.weights,
            criteria=args.criteria, name=args.name, overrides=parse_overrides(args.override), train_log=args.train_log,
            seed=args.seed, n_montage=args.montages, progress=not args.no_progress,
        )
    except (InputError, StepError, FileNotFoundError) as err:
        print(f"xray2mri evaluate: {err}", file=sys.stderr)
        return 1
    print_headline(summary, Path(args.out) / "report" / "report.md")
    return 0
