"""Command-line options for OAI: ``manifest build --oai-root`` and ``synth --layout oai``.

The ``manifest`` and ``synth`` commands own their parsers; they call :func:`add_oai_arguments`
/ :func:`add_synth_oai_arguments` to add these options and hand the parsed arguments to
:func:`build_from_oai` / :func:`synth_oai`. Only parsing and printing live here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from xray2mri.pipeline.data.oai import grades, layout, pairing


def _reading_project(text: str) -> int | str:
    """argparse type of ``--reading-project``: a READPRJ number or ``any``."""
    try:
        return grades.parse_reading_project(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_oai_arguments(build_parser: argparse.ArgumentParser, source_group=None) -> None:
    """Add ``--oai-root`` (to ``source_group`` when given, the mutually exclusive sources) and its options."""
    (source_group or build_parser).add_argument(
        "--oai-root", metavar="DIR",
        help="OAI image release: the folder holding the timepoint folders (00m, 12m, ...) and their contents.csv")
    group = build_parser.add_argument_group("OAI options (with --oai-root)")
    group.add_argument("--grades", metavar="FILE_OR_DIR",
                       help="kxr_sq_bu??.txt file or a folder of them: Kellgren-Lawrence grades joined as 'grade' "
                            "(plain or labelled codes such as '2: 2', '|' or ',' separated)")
    order = ", ".join(str(p) for p in grades.READING_PROJECT_ORDER)
    group.add_argument("--reading-project", type=_reading_project, default=grades.CENTRAL_READING_PROJECT,
                       metavar="N|any",
                       help=f"READPRJ whose grades are used (default {grades.CENTRAL_READING_PROJECT}, the central "
                            f"reading; knees it did not read get no grade and are reported), or 'any': the first of "
                            f"{order}, then other projects ascending, with a known grade. Knees whose readings "
                            "disagree are reported either way")
    group.add_argument("--sequence", default=layout.DEFAULT_SEQUENCE,
                       help=f"MRI SeriesDescription without _LEFT/_RIGHT (default {layout.DEFAULT_SEQUENCE})")
    group.add_argument("--visits", metavar="LIST", default=None,
                       help="comma-separated visits to use, e.g. 00m,12m (default: all)")
    group.add_argument("--centres", metavar="CSV", default=None,
                       help="joint centres (participant, visit, side, row, col in pixels of the stored radiograph); "
                            "knees not listed are placed by the built-in localiser")
    group.add_argument("--window-days", type=int, default=pairing.DEFAULT_WINDOW_DAYS,
                       help=f"largest gap between radiograph and MRI dates (default {pairing.DEFAULT_WINDOW_DAYS})")
    group.add_argument("--crop-mm", type=float, default=layout.CROP_SIZE_MM,
                       help=f"side of the square knee crop, mm (default {layout.CROP_SIZE_MM:g})")
    group.add_argument("--no-localiser", action="store_true",
                       help="do not run the built-in localiser; knees missing from --centres are reported")
    group.add_argument("--export-crops", metavar="DIR", default=None,
                       help="also write each knee crop as a derived DICOM file under DIR")
    group.add_argument("--report", metavar="CSV", default=None,
                       help="where to write the unpaired candidates (default: beside --out, .unpaired.csv)")


def build_from_oai(args: argparse.Namespace) -> int:
    """Build, write and report an OAI datalist from parsed ``manifest build`` arguments; exit status."""
    from xray2mri.pipeline.data import manifests
    from xray2mri.pipeline.data.oai.build import build_oai_datalist, write_unpaired_report
    from xray2mri.pipeline.data.oai.export import export_crops
    from xray2mri.transforms.errors import InputError

    start = time.perf_counter()
    fractions = tuple(args.fractions) if getattr(args, "fractions", None) else manifests.DEFAULT_FRACTIONS
    try:
        visits = [v for v in args.visits.split(",") if v.strip()] if args.visits else None
        build = build_oai_datalist(
            args.oai_root, grades=args.grades, sequence=args.sequence, visits=visits,
            window_days=args.window_days, centres=args.centres, size_mm=args.crop_mm, seed=args.seed,
            fractions=fractions, localise=not args.no_localiser,
            reading_project=getattr(args, "reading_project", grades.CENTRAL_READING_PROJECT),
            progress=not getattr(args, "no_progress", False),
        )
        manifests.write_datalist(build.datalist, args.out)
        out = Path(args.out)
        report = Path(args.report) if args.report else out.with_name(out.name.removesuffix(".json") + ".unpaired.csv")
        write_unpaired_report(build, report)
        crops = export_crops(build.datalist, args.oai_root, args.export_crops) if args.export_crops else []
    except (InputError, ValueError) as err:
        print(f"xray2mri manifest build: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {manifests.summarise(args.out)} in {time.perf_counter() - start:.1f} s; "
          f"paths relative to {args.oai_root}")
    if args.grades:
        print(f"grades from {grades.describe_reading_project(args.reading_project)}")
    for name, count in build.summary.items():
        print(f"  {name}: {count}")
    print(f"unpaired candidates and grade problems, one line each with the reason: {report}")
    if crops:
        print(f"exported {len(crops)} knee crops to {args.export_crops}")
    return 0


def add_synth_oai_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--layout {cohort,oai}`` and ``--visits`` to the ``synth`` parser."""
    parser.add_argument("--layout", choices=("cohort", "oai"), default="cohort",
                        help="cohort: the built-in cohort folder; oai: a SYNTHETIC tree in an OAI release's "
                             "layout (--subjects participants, each visit one bilateral radiograph and two MRIs)")
    parser.add_argument("--visits", metavar="LIST", default="00m,12m",
                        help="with --layout oai: comma-separated visits (default 00m,12m)")
    parser.add_argument("--grades-labelled", action="store_true",
                        help="with --layout oai: write the grade files with OAI's labelled codes "
                             "('1: Right', '2: 2', '.T: Technical problem') instead of plain ones")
    parser.add_argument("--grades-reread", action="store_true",
                        help="with --layout oai: add a second reading project (READPRJ 37) that re-reads some "
                             "knees and disagrees with the central reading (15) on some of them")


def synth_oai(args: argparse.Namespace) -> int:
    """Write the SYNTHETIC OAI tree from parsed ``synth`` arguments; exit status."""
    from xray2mri.pipeline.data.oai.synth_tree import write_oai_tree

    start = time.perf_counter()
    try:
        visits = [layout.parse_visit(v) for v in args.visits.split(",") if v.strip()]
        out = write_oai_tree(args.out, args.subjects, seed=args.seed, visits=visits, preset=args.preset,
                             workers=args.workers or 1, progress=not getattr(args, "no_progress", False),
                             grades_labelled=getattr(args, "grades_labelled", False),
                             grades_reread=getattr(args, "grades_reread", False))
    except ValueError as err:
        print(f"xray2mri synth: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote a SYNTHETIC OAI-layout tree of {args.subjects} participants x {len(visits)} visits to {out} "
          f"in {time.perf_counter() - start:.1f} s; grades in {out / 'clinical'}, true joint centres in "
          f"{out / 'known_centres.csv'}")
    return 0
