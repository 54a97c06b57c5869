"""``xray2mri report``: measure models and baselines on the test split and write the evaluation report.

``xray2mri evaluate`` runs the bundle's evaluate.json first and then this report.
The example in ``--help`` is :data:`EXAMPLE` (the demo's own call, see :func:`xray2mri.pipeline.demo.report`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xray2mri.pipeline.commands._help import ExampleHelpFormatter, with_example

EXAMPLE = (
    "xray2mri report --datalist data/synthetic_knee/datalist.json --base-dir data/synthetic_knee "
    "--predictions 'geometry-aware=runs/demo/eval_geometry/predictions' --bundle bundles/knee_xray2mri "
    "--out runs/demo/report --train-log runs/demo --criteria pipeline/demo_quality_bar.json"
)
#: Row name of a model when ``--predictions`` gives a bare folder.
DEFAULT_MODEL_NAME = "CAE+generator (paper)"


def parse_predictions(values: list[str]) -> dict[str, str]:
    """``NAME=DIR`` or ``DIR`` arguments -> {row name: folder}; one bare folder is the paper's model."""
    out: dict[str, str] = {}
    for i, value in enumerate(values):
        name, sep, folder = value.partition("=")
        if not sep:
            name, folder = (
                (DEFAULT_MODEL_NAME if len(values) == 1 else Path(value).name or f"model {i + 1}"),
                value,
            )
        if name in out:
            raise argparse.ArgumentTypeError(f"two prediction folders named {name!r}")
        out[name] = folder
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command."""
    p = subparsers.add_parser(
        "report",
        help="evaluate predictions against baselines; write CSV, JSON summary, figures and report.md",
        description="Measure models and baselines on the test split and write the evaluation report.",
        epilog=with_example(EXAMPLE),
        formatter_class=ExampleHelpFormatter,
    )
    p.add_argument("--datalist", required=True, help="datalist JSON with training and test splits")
    p.add_argument(
        "--base-dir", required=True, help="folder the datalist's paths are relative to (the cohort)"
    )
    p.add_argument(
        "--predictions",
        required=True,
        nargs="+",
        metavar="[NAME=]DIR",
        help="folder(s) with <subject>_mri_pred.nii.gz (evaluate.json output or its predictions/); "
        "NAME=DIR names the table row, e.g. 'geometry-aware=runs/demo/eval_geo'",
    )
    p.add_argument(
        "--bundle", required=True, help="bundle folder; its configs give the preprocessing and sizes"
    )
    p.add_argument("--out", required=True, help="report folder to write (replaced atomically)")
    p.add_argument(
        "--train-log", default=None, help="training run folder with TensorBoard event files or a metrics CSV"
    )
    p.add_argument(
        "--criteria", default=None, metavar="JSON",
        help="quality-bar criteria to judge the models on (e.g. the demo's pipeline/demo_quality_bar.json); "
        "default: no quality bar",
    )
    p.add_argument(
        "--uncertainty-model", default=None, metavar="NAME",
        help="the model the bundle's uncertainty calibration belongs to (default: the only one whose "
        "predictions carry <subject>_mri_sigma.nii.gz)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default 0)")
    p.add_argument(
        "--montages", type=int, default=3, help="number of per-subject montage figures (default 3)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars while loading and measuring")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; print the headline table; exit status 1 on bad input."""
    from xray2mri.pipeline.evaluation.report import report_from_files
    from xray2mri.pipeline.evaluation.summary import load_criteria
    from xray2mri.transforms.errors import InputError

    try:
        predictions = parse_predictions(args.predictions)
        criteria = load_criteria(args.criteria) if args.criteria else None
        summary = report_from_files(
            args.datalist,
            args.base_dir,
            predictions,
            args.bundle,
            args.out,
            train_log=args.train_log,
            criteria=criteria,
            seed=args.seed,
            n_montage=args.montages,
            progress=not args.no_progress,
            uncertainty_model=args.uncertainty_model,
        )
    except (InputError, argparse.ArgumentTypeError) as err:
        print(f"xray2mri report: {err}", file=sys.stderr)
        return 1
    print_headline(summary, Path(args.out) / "report.md")
    return 0


def print_headline(summary: dict, report_md: Path) -> None:
    """The headline numbers of a report's summary, one line per method, the quality bar, and where it is."""
    for method, stats in summary["methods"].items():
        if "psnr_db" not in stats:
            continue
        print(
            f"{method:34s} PSNR {stats['psnr_db']['mean']:6.2f} dB  SSIM {stats['ssim3d']['mean']:.3f}  "
            f"JSW |err| on the MRI {stats['mri_jsw_abs_err_mm']['mean']:.2f} mm"
        )
    for model, res in summary["quality_bar"].items():
        print(f"quality bar, {model}: {'PASS' if res['pass'] else 'FAIL'}")
    print(f"report: {report_md}")
