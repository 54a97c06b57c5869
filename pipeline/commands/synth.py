"""``xray2mri synth``: generate the synthetic paired knee cohort (and optionally its preview).

Only argument parsing lives here; the work is in :mod:`xray2mri.pipeline.data.synth`.
"""

from __future__ import annotations

import argparse
import sys
import time

from xray2mri.pipeline.commands._help import ExampleHelpFormatter, with_example

_PRESET_HELP = (
    "demo: MRI 64^3 at 2.5 mm (160 mm cube, labels rendered at 1.25 mm), radiograph 256^2 at 0.75 mm "
    "detector pitch; full: MRI 128^3 at 1.25 mm (labels at 0.625 mm), radiograph 512^2 at 0.375 mm. "
    "Both: source-detector ~1000 mm, field at the knee ~180 mm (default demo)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synth``."""
    from xray2mri.pipeline.data.synth.presets import PRESETS

    parser = subparsers.add_parser(
        "synth",
        help="generate a SYNTHETIC paired knee cohort (DX radiograph + DESS-like MRI + labels)",
        description=(
            "Render a synthetic paired knee cohort into DIR: per subject an AP cone-beam DRR as DX DICOM "
            "(marrow textured; framed in turn as a knee field, a long-leg field, a marked and collimated knee "
            "field or a bilateral view), a DESS-like MRI and its tissue label map as NIfTI, and a meta JSON "
            "(KL grade, side, joint-space widths, geometry, framing and joint centre in the radiograph's pixels, "
            "every random parameter); DIR/tissues.json (legend) and DIR/datalist.json "
            "(split by subject). The same seed gives the same files, whatever the number of workers."
        ),
        epilog=with_example("xray2mri synth --out data/synthetic_small --subjects 20 --seed 0 --preview"),
        formatter_class=ExampleHelpFormatter,
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="cohort folder to write")
    parser.add_argument("--subjects", type=int, default=20, help="number of subjects (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed, >= 0 (default 0)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo", help=_PRESET_HELP)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--preview",
        nargs="?",
        const="",
        default=None,
        metavar="PNG",
        help="also draw a montage of a few subjects (default file DIR/preview.png)",
    )
    from xray2mri.pipeline.commands._oai_options import add_synth_oai_arguments

    add_synth_oai_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xray2mri.pipeline.data.synth.cohort import generate_cohort
    from xray2mri.pipeline.data.synth.preview import write_preview

    if args.subjects < 1:
        print("xray2mri synth: --subjects must be >= 1", file=sys.stderr)
        return 2
    if args.seed < 0:
        print("xray2mri synth: --seed must be >= 0", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print("xray2mri synth: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.layout == "oai":
        from xray2mri.pipeline.commands._oai_options import synth_oai

        return synth_oai(args)
    start = time.perf_counter()
    out = generate_cohort(args.out, args.subjects, seed=args.seed, preset=args.preset,
                          workers=args.workers, progress=not args.no_progress)
    took = time.perf_counter() - start
    print(f"wrote {args.subjects} SYNTHETIC subjects ({args.preset}) to {out} in {took:.1f} s; "
          f"datalist {out / 'datalist.json'}")
    if args.preview is not None:
        png = write_preview(out, args.preview or Path(out) / "preview.png")
        print(f"preview {png}")
    return 0
