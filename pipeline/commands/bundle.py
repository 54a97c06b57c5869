"""``xray2mri bundle``: share a trained bundle (``export``) and check a received one (``verify``).

Examples::

    xray2mri bundle export --bundle bundles/knee_xray2mri --out dist/ --run runs/demo
    xray2mri bundle verify --bundle knee_xray2mri/

The work is in :mod:`xray2mri.pipeline.serving.export`; this layer only parses arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xray2mri.pipeline.commands._help import ExampleHelpFormatter, with_example
from xray2mri.pipeline.training.networks import VARIANTS
from xray2mri.transforms.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bundle export`` and ``bundle verify``."""
    p = subparsers.add_parser(
        "bundle", help="export a trained bundle as a versioned zip, or verify one's weights",
        epilog=with_example("xray2mri bundle export --bundle bundles/knee_xray2mri --out dist/ --run runs/demo"),
        formatter_class=ExampleHelpFormatter,
    )
    sub = p.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")

    e = sub.add_parser(
        "export",
        help="write OUT/<name>_v<version>.zip: configs, docs, LICENSE, model.pt/.ts/.pt2 (checked), checksums",
        description=(
            "Pack the bundle in model-zoo form. The TorchScript (models/model.ts) and torch.export "
            "(models/model.pt2) forms are checked against the checkpoint's output; metadata.json gains "
            "the SHA-256 of each weight file and the training data description (cohort, splits, metrics)."
        ),
        epilog=with_example("xray2mri bundle export --bundle bundles/knee_xray2mri --out dist/ --run runs/demo"),
        formatter_class=ExampleHelpFormatter,
    )
    e.add_argument("--bundle", required=True, type=Path, help="bundle folder (with models/model.pt)")
    e.add_argument("--out", required=True, type=Path, help="folder for the zip (created)")
    e.add_argument("--run", type=Path, default=None,
                   help="run folder with evaluation results (e.g. runs/demo: eval_*/metrics.csv, report/summary.json)")
    e.add_argument("--datalist", type=Path, default=None, help="datalist of the training run (for the splits)")
    e.add_argument("--weights", type=Path, default=None, help="weights to export (default BUNDLE/models/model.pt)")
    e.add_argument("--cohort", default=None, help="one-line description of the training cohort")
    e.add_argument("--variant", default=None, choices=VARIANTS,
                   help="network variant of the weights, if not train.json's")
    e.set_defaults(func=_export)

    v = sub.add_parser(
        "verify", help="check models/* against the SHA-256 recorded in configs/metadata.json",
        epilog=with_example("xray2mri bundle verify --bundle dist/knee_xray2mri"),
        formatter_class=ExampleHelpFormatter,
    )
    v.add_argument("--bundle", required=True, type=Path, help="bundle folder (e.g. an unpacked export)")
    v.set_defaults(func=_verify)


def _export(args: argparse.Namespace) -> int:
    from xray2mri.pipeline.serving.export import ExportCheckError, export_bundle

    overrides = {"variant": args.variant} if args.variant else None
    try:
        path = export_bundle(
            args.bundle, args.out, weights=args.weights, run_dir=args.run, datalist=args.datalist,
            cohort=args.cohort, overrides=overrides,
        )
    except (InputError, ExportCheckError, FileNotFoundError) as exc:
        print(f"xray2mri bundle export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    import json

    from xray2mri.pipeline.serving.export import CHECKSUM_KEY, verify_bundle_weights

    try:
        verify_bundle_weights(args.bundle)
    except InputError as exc:
        print(f"xray2mri bundle verify: {exc}", file=sys.stderr)
        return 1
    listed = json.loads((args.bundle / "configs" / "metadata.json").read_text()).get(CHECKSUM_KEY) or {}
    if not listed:
        print(f"{args.bundle}: metadata.json records no weight checksums (not an exported bundle); nothing verified")
        return 1
    print(f"{args.bundle}: {len(listed)} weight files match their SHA-256 ({', '.join(listed)})")
    return 0
