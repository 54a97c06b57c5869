"""``xray2mri predict``: radiograph DICOM(s) -> synthetic MRI volumes with previews, from a bundle.

Only argument parsing and printing live here; the work is :mod:`xray2mri.pipeline.serving.predict`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xray2mri.pipeline.commands._help import ExampleHelpFormatter, with_example

NOTES = """\
outputs, per knee <stem> (sub-folders of a folder input are kept; a radiograph with two
knees gives <name>_R and <name>_L, one knee <name>):
  <stem>_mri_synthetic.nii.gz   (--format nifti) or the DICOM MR series folder
  <stem>_mri_synthetic/         (--format dicom), <stem>_mri_synthetic.json (sidecar: source,
                                side, joint centre, crop box, spacing, locator confidence),
                                and <stem>_preview.png (the knee's box on the radiograph);
  <stem>_uncertainty.nii.gz     calibrated 90 % half-width per voxel, MRI [0, 1] units, same
                                grid (bundles with the uncertainty head; --no-uncertainty: none);
                                the sidecar then records ood_score, ood_threshold, ood_flag

a radiograph unlike the training data (out-of-distribution score above the bundle's
threshold) is still predicted, with the warning "this radiograph is unlike the training
data; treat the volume with caution".

knees are found on each radiograph (one, or two on a bilateral view); a radiograph with no
knee (a chest, a hand, a blank image) is rejected with the reason. --centre / --centres
give the joint centres instead.

every rejected file is printed on stderr as "<file>: rejected: <reason>", warnings
(another body part or view) as "<file>: warning: <text>"; a summary line ends the run.

exit status: 0 all files predicted; 1 some files rejected (the others were written);
2 nothing predicted (every file rejected, nothing found, or the bundle could not be loaded).

DICOM output has no PatientName; PatientID is pseudonymised (XR2MRI-<hash of the
radiograph's PatientID>) unless --patient-id copy or none is given.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``predict`` sub-command to the ``xray2mri`` parser."""
    parser = subparsers.add_parser(
        "predict",
        help="generate synthetic MRI volumes from radiograph DICOMs with a trained bundle",
        description="Generate a synthetic MRI volume (and a PNG preview) from each radiograph DICOM.",
        epilog=with_example(
            "xray2mri predict --bundle bundles/knee_xray2mri --input data/synthetic_knee/SYN0000 --output runs/predict",
            NOTES,
        ),
        formatter_class=ExampleHelpFormatter,
    )
    parser.add_argument("--bundle", required=True, help="bundle folder (configs/inference.json, models/model.pt)")
    parser.add_argument("--input", required=True, help="a radiograph DICOM file or a folder (searched recursively)")
    parser.add_argument("--output", required=True, help="output folder (created if needed)")
    parser.add_argument("--format", choices=("nifti", "dicom"), default="nifti", help="volume format (default nifti)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the network runs")
    parser.add_argument(
        "--patient-id",
        choices=("pseudonymise", "copy", "none"),
        default="pseudonymise",
        help="PatientID of DICOM output (default pseudonymise)",
    )
    parser.add_argument("--weights", default=None, help="weights file (default BUNDLE/models/model.pt)")
    parser.add_argument("--no-uncertainty", dest="uncertainty", action="store_false",
                        help="write no uncertainty map and skip the out-of-distribution check")
    knees = parser.add_mutually_exclusive_group()
    knees.add_argument("--centre", default=None, metavar="ROW,COL",
                       help="joint centre in the radiograph's pixels, instead of finding the knee (one --input file)")
    knees.add_argument("--centres", default=None, metavar="CSV",
                       help="joint centres for a batch: CSV with columns file,row,col[,side], one row per knee")
    parser.add_argument("--side", choices=("R", "L"), default=None, help="the side of the --centre knee")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the prediction batch; returns the exit status documented in the epilog."""
    from tqdm.auto import tqdm

    from xray2mri.pipeline.serving.predict import Predictor, predict_batch, read_centres_csv
    from xray2mri.transforms.errors import InputError

    def echo(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    centres = None
    try:
        if args.centres:
            centres = read_centres_csv(args.centres)
        elif args.centre:
            if not Path(args.input).is_file():
                print("xray2mri predict: --centre needs one --input file; use --centres CSV for a folder", file=sys.stderr)
                return 2
            row, col = (float(v) for v in args.centre.split(","))
            centres = {str(Path(args.input)): [(row, col, args.side)]}
    except (InputError, ValueError) as exc:
        print(f"xray2mri predict: bad joint centres: {exc}", file=sys.stderr)
        return 2
    try:
        predictor = Predictor.from_bundle(
            args.bundle, device=args.device, weights=args.weights, uncertainty=args.uncertainty
        )
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        print(f"xray2mri predict: cannot load bundle {args.bundle}: {exc}", file=sys.stderr)
        return 2
    try:
        result = predict_batch(
            predictor, args.input, args.output, fmt=args.format, patient_id=args.patient_id, echo=echo,
            centres=centres,
        )
    except InputError as exc:
        print(f"xray2mri predict: {exc}", file=sys.stderr)
        return 2
    print(f"{result.summary()} -> {args.output}")
    return result.exit_status
