"""``xray2mri calibrate``: fit a trained bundle's uncertainty calibration on the validation split.

Writes ``models/uncertainty_calibration.json`` next to the weights (conformal factors at 80/90/95 %,
the out-of-distribution reference and threshold); the work is in
:mod:`xray2mri.pipeline.training.calibrate`. ``make demo`` runs it after training.
"""

from __future__ import annotations

import argparse
import sys

from xray2mri.pipeline.commands._help import ExampleHelpFormatter, with_example
from xray2mri.pipeline.commands._overrides import parse_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` sub-command."""
    p = subparsers.add_parser(
        "calibrate",
        help="fit the calibrated uncertainty map and the OOD threshold on the validation split",
        description=__doc__.strip(),
        epilog=with_example(
            "xray2mri calibrate --bundle bundles/knee_xray2mri --datalist data/synthetic_knee/datalist.json "
            "--base-dir data/synthetic_knee"
        ),
        formatter_class=ExampleHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="bundle folder (configs/, models/model.pt)")
    p.add_argument("--datalist", required=True, help="datalist JSON with a validation split")
    p.add_argument("--base-dir", required=True, help="folder the datalist's paths are relative to")
    p.add_argument("--weights", default=None, help="weights (default the bundle's models/model.pt)")
    p.add_argument("--out", default=None, help="calibration JSON to write (default BUNDLE/models/uncertainty_calibration.json)")
    p.add_argument("--split", default="validation", help="split to fit on (default validation; never test)")
    p.add_argument("--ood-quantile", type=float, default=0.99,
                   help="validation quantile of the OOD score used as threshold (default 0.99)")
    p.add_argument("--ood-radiographs", default=None, metavar="DIR",
                   help="folder of more held-out radiographs of the training population (no MRI needed) for the "
                        "OOD threshold: from 99 of them it is their conformal 99th percentile")
    p.add_argument("--override", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="extra bundle override, e.g. --override variant bottleneck")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit and write; print the factors; exit status 1 on bad input."""
    from xray2mri.pipeline.training.calibrate import calibrate_bundle
    from xray2mri.transforms.errors import InputError

    overrides = parse_overrides(args.override)
    try:
        extra = []
        if args.ood_radiographs:
            from xray2mri.pipeline.serving.files import find_radiographs, looks_like_dicom

            extra = [f for f in find_radiographs(args.ood_radiographs) if looks_like_dicom(f)]
            if not extra:
                raise FileNotFoundError(f"{args.ood_radiographs}: no radiograph in this folder")
        calibration, path = calibrate_bundle(
            args.bundle, args.datalist, args.base_dir, weights=args.weights, out=args.out, split=args.split,
            ood_quantile=args.ood_quantile, overrides=overrides, ood_radiographs=extra,
        )
    except (InputError, FileNotFoundError, ValueError) as err:
        print(f"xray2mri calibrate: {err}", file=sys.stderr)
        return 1
    factors = ", ".join(f"k{k} = {v:.3f}" for k, v in calibration.factors.items())
    print(f"calibrated on {calibration.fitted_on.get('subjects')} {args.split} subjects: {factors}; subject factor "
          f"{calibration.fitted_on.get('subject_factor')}; OOD threshold {calibration.ood_threshold:.3f} -> {path}")
    return 0
