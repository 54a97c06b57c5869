"""``xray2mri bundle``: share a trained bundle (``export``), check a received one (``verify``), and
install a training run's best weights as the bundle's ``models/model.pt`` (``install-weights``).

Examples::

    xray2mri bundle export --bundle bundles/knee_xray2mri --out dist/ --run runs/demo
    xray2mri bundle verify --bundle knee_xray2mri/
    xray2mri bundle install-weights runs/knee_xray2mri --bundle bundles/knee_xray2mri

The work is in :mod:`xray2mri.pipeline.serving.export`, :mod:`~xray2mri.pipeline.serving.integrity`
and :mod:`~xray2mri.pipeline.training.checkpoints`; this layer only parses arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xray2mri.pipeline.commands._help import ExampleHelpFormatter, with_example
from xray2mri.pipeline.training.variants import VARIANTS
from xray2mri.transforms.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bundle export``, ``bundle verify`` and ``bundle install-weights``."""
    p = subparsers.add_parser(
        "bundle", help="export a trained bundle as a versioned zip, verify one, install weights",
        epilog=with_example("xray2mri bundle export --bundle bundles/knee_xray2mri --out dist/ --run runs/demo"),
        formatter_class=ExampleHelpFormatter,
    )
    sub = p.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")

    e = sub.add_parser(
        "export",
        help="write OUT/<name>_v<version>.zip: configs, scripts, docs, LICENSE, model.pt/.ts/.pt2 (checked), checksums",
        description=(
            "Pack the bundle in model-zoo form, runnable without this repository: its runtime code ships "
            "as scripts/ (generated from the installed package) and metadata.json lists the packages it "
            "needs. The TorchScript (models/model.ts) and torch.export (models/model.pt2) forms are checked "
            "against the checkpoint's output; metadata.json gains the SHA-256 of every file and the "
            "training data description (cohort, splits, metrics); large_files.yml lists the weights the "
            "zoo's way. Example: xray2mri bundle export --bundle bundles/knee_xray2mri --out dist/ --run runs/demo"
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
    e.add_argument("--calibration", type=Path, default=None,
                   help="uncertainty calibration of the weights (default BUNDLE/models/uncertainty_calibration.json if any)")
    e.add_argument("--cohort", default=None, help="one-line description of the training cohort")
    e.add_argument("--variant", default=None, choices=VARIANTS,
                   help="network variant of the weights, if not train.json's")
    e.add_argument("--weights-url", default=None,
                   help="where the weight files will be published (base URL or local folder holding models/), "
                        "for large_files.yml (default: a placeholder to replace)")
    e.set_defaults(func=_export)

    v = sub.add_parser(
        "verify", help="check every file against the SHA-256 recorded in configs/metadata.json",
        description="Check an exported bundle, file by file (configs, scripts, docs, weights), before using it.",
        epilog=with_example("xray2mri bundle verify --bundle dist/knee_xray2mri"),
        formatter_class=ExampleHelpFormatter,
    )
    v.add_argument("--bundle", required=True, type=Path, help="bundle folder (e.g. an unpacked export)")
    v.set_defaults(func=_verify)

    i = sub.add_parser(
        "install-weights", help="install a training run's best weights as BUNDLE/models/model.pt",
        description="What train.json does when it finishes, for a run that did not (stopped early, or "
                    "install_weights false): the weights alone, atomically.",
        epilog=with_example("xray2mri bundle install-weights runs/knee_xray2mri --bundle bundles/knee_xray2mri"),
        formatter_class=ExampleHelpFormatter,
    )
    i.add_argument("run", type=Path, metavar="RUN_DIR",
                   help="train.json's output_dir (its checkpoints/checkpoint_best.pt), or a checkpoint file")
    i.add_argument("--bundle", type=Path, default=Path("bundles/knee_xray2mri"),
                   help="bundle folder (default bundles/knee_xray2mri)")
    i.set_defaults(func=_install_weights)


def _export(args: argparse.Namespace) -> int:
    from xray2mri.pipeline.serving.export import ExportCheckError, export_bundle

    overrides = {"variant": args.variant} if args.variant else None
    try:
        path = export_bundle(
            args.bundle, args.out, weights=args.weights, run_dir=args.run, datalist=args.datalist,
            cohort=args.cohort, overrides=overrides, weights_url=args.weights_url, calibration=args.calibration,
        )
    except (InputError, ExportCheckError, FileNotFoundError) as exc:
        print(f"xray2mri bundle export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from xray2mri.pipeline.serving.integrity import verify_bundle

    try:
        checked = verify_bundle(args.bundle)
    except InputError as exc:
        print(f"xray2mri bundle verify: {exc}", file=sys.stderr)
        return 1
    if not checked:
        print(f"{args.bundle}: metadata.json records no checksums (not an exported bundle); nothing verified")
        return 1
    print(f"{args.bundle}: all {len(checked)} files match their SHA-256 (configs, scripts, docs, weights)")
    return 0


def _install_weights(args: argparse.Namespace) -> int:
    from xray2mri.pipeline.training.checkpoints import BEST_NAME, install_weights

    checkpoint = args.run if args.run.is_file() else args.run / "checkpoints" / BEST_NAME
    if not checkpoint.is_file():
        print(f"xray2mri bundle install-weights: {checkpoint}: no best checkpoint (did validation run?)", file=sys.stderr)
        return 1
    if not (args.bundle / "configs").is_dir():
        print(f"xray2mri bundle install-weights: {args.bundle}: no configs/; is this a bundle folder?", file=sys.stderr)
        return 1
    try:
        path = install_weights(checkpoint, args.bundle)
    except ValueError as exc:
        print(f"xray2mri bundle install-weights: {checkpoint}: {exc}", file=sys.stderr)
        return 1
    print(f"installed {checkpoint} as {path}")
    return 0
