"""``xray2mri manifest build|check``: make a datalist from a source of pairs, or check one.

Only argument parsing and printing live here; the work is in :mod:`xray2mri.pipeline.data.manifests`.
"""

from __future__ import annotations

import argparse
import sys

from xray2mri.pipeline.commands._help import ExampleHelpFormatter, with_example


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``manifest`` with its nested ``build`` and ``check`` sub-commands."""
    parser = subparsers.add_parser(
        "manifest",
        help="build or check a datalist (MONAI decathlon JSON of X-ray/MRI pairs)",
        description="Build a datalist split by subject, or check one and the files it names.",
        epilog=with_example("xray2mri manifest check data_manifests/synthetic_knee.json --base-dir data/synthetic_knee"),
        formatter_class=ExampleHelpFormatter,
    )
    actions = parser.add_subparsers(dest="manifest_command", required=True, metavar="ACTION")

    build = actions.add_parser(
        "build",
        help="make a datalist from a CSV of pairs or a synthetic cohort folder",
        description=(
            "Make a datalist, split by subject (never one subject in two splits), stratified by "
            "Kellgren-Lawrence grade when present, seeded. Written atomically."
        ),
        epilog=with_example("xray2mri manifest build --cohort data/synthetic_knee --out data_manifests/mine.json"),
        formatter_class=ExampleHelpFormatter,
    )
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", metavar="FILE",
                        help="CSV of pairs with columns subject, visit, side, xray, mri [, labels, grade]")
    source.add_argument("--cohort", metavar="DIR", help="synthetic cohort folder written by `xray2mri synth`")
    from xray2mri.pipeline.commands._oai_options import add_oai_arguments

    add_oai_arguments(build, source)
    build.add_argument("--out", metavar="FILE", required=True, help="datalist JSON to write")
    build.add_argument("--seed", type=int, default=0, help="seed of the subject split (default 0)")
    build.add_argument("--fractions", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                       default=None, help="fractions of subjects per split (default 0.7 0.15 0.15)")
    build.add_argument("--base-dir", metavar="DIR", default=None,
                       help="folder the written paths are relative to (CSV: absolute paths are made "
                            "relative to it; cohort: defaults to the cohort folder)")
    build.add_argument("--no-progress", action="store_true",
                       help="no progress bar (with --oai-root, over the radiographs read)")
    build.set_defaults(func=_build)

    check = actions.add_parser(
        "check",
        help="report missing/unreadable files, wrong modality, duplicates and subject leakage",
        description=(
            "Check a datalist and the files it names (headers only). Prints one line per problem "
            "and exits 1 if any is an error; prints one OK line and exits 0 otherwise."
        ),
        epilog=with_example("xray2mri manifest check data_manifests/synthetic_knee.json --base-dir data/synthetic_knee"),
        formatter_class=ExampleHelpFormatter,
    )
    check.add_argument("file", metavar="FILE", help="datalist JSON")
    check.add_argument("--base-dir", metavar="DIR", default=None,
                       help="folder the datalist's paths are relative to (default: the datalist's folder)")
    check.add_argument("--jobs", type=int, default=1, help="threads reading headers (default 1)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar over the files read")
    check.set_defaults(func=_check)


def _build(args: argparse.Namespace) -> int:
    if getattr(args, "oai_root", None):
        from xray2mri.pipeline.commands._oai_options import build_from_oai

        return build_from_oai(args)
    from xray2mri.pipeline.data import manifests
    from xray2mri.transforms.errors import InputError

    fractions = tuple(args.fractions) if args.fractions else manifests.DEFAULT_FRACTIONS
    try:
        if args.csv:
            datalist = manifests.build_from_csv(args.csv, base_dir=args.base_dir, seed=args.seed,
                                                fractions=fractions)
        else:
            datalist = manifests.build_from_cohort(args.cohort, seed=args.seed, fractions=fractions,
                                                   base_dir=args.base_dir)
        manifests.write_datalist(datalist, args.out)
    except (InputError, ValueError) as err:
        print(f"xray2mri manifest build: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {manifests.summarise(args.out)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from xray2mri.pipeline.data import manifests

    problems = manifests.check_datalist(args.file, base_dir=args.base_dir, jobs=max(1, args.jobs),
                                        progress=not args.no_progress)
    for problem in problems:
        print(problem)
    errors = sum(p.is_error for p in problems)
    if errors:
        print(f"FAILED {args.file}: {errors} error(s), {len(problems) - errors} warning(s)")
        return 1
    warned = f", {len(problems)} warning(s)" if problems else ""
    print(f"OK {args.file}: {manifests.summarise(args.file)}{warned}")
    return 0
