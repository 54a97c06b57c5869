"""Time and memory of ``manifest build --oai-root`` on a generated tree of 2,000 participant-visits.

The tree has OAI's layout and indexes (:mod:`xray2mri.pipeline.data.oai.synth_tree` writes the
``contents.csv`` and ``kxr_sq_bu`` files) but, to be made in seconds, header-only DICOM files:
one bilateral radiograph header per participant-visit (real DX tags, 2,500 x 3,000 pixels
at 0.14 mm, no pixel data) and one MR header per DESS series folder; the joint centres come
from a CSV, as with an external localiser. So the benchmark measures what the importer does at
scale: read the indexes, pair, read radiograph headers, join grades, split, write; then
``manifest check`` on the result. Target: build <= 60 s. Peak memory is the process's maximum
resident set size (Linux ``ru_maxrss``) and the Python heap peak (``tracemalloc``).

Usage::

    python benchmarks/bench_oai_manifest.py [--participants 1000] [--visits 00m,12m] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from xray2mri.pipeline.data import manifests
from xray2mri.pipeline.data.oai import layout
from xray2mri.pipeline.data.oai.build import build_oai_datalist
from xray2mri.pipeline.data.oai.synth_tree import (
    barcode,
    participant_id,
    release_of,
    write_contents,
    write_grades,
)

ROWS, COLS, PIXEL_MM = 2500, 3000, 0.14


def _header(path: Path, modality: str, participant: str, extra: dict) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = "1.2.840.10008.5.1.4.1.1.1.1" if modality == "DX" else "1.2.840.10008.5.1.4.1.1.4"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = modality
    ds.PatientID = participant
    ds.PatientName = f"SYNTHETIC^{participant}"
    ds.ImageComments = "SYNTHETIC header-only file written by benchmarks/bench_oai_manifest.py"
    for key, value in extra.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def make_tree(root: Path, participants: int, visits: list[int]) -> Path:
    """Write the header-only tree; returns the centres CSV."""
    centres = root / "centres.csv"
    with open(centres, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["participant", "visit", "side", "row", "col"])
        for visit in visits:
            release, rows, grades = release_of(visit), [], []
            for i in range(participants):
                pid = participant_id(i)
                date = datetime.date(2005, 1, 1) + datetime.timedelta(days=i % 600 + visit * 30)
                folder = f"{release}/{pid}/{date:%Y%m%d}"
                xray = barcode("xray", i, visit, 1)
                _header(root / layout.visit_label(visit) / folder / xray / layout.XRAY_FILE_NAME, "DX", pid, {
                    "Rows": ROWS, "Columns": COLS, "SamplesPerPixel": 1, "ImageLaterality": "B",
                    "PhotometricInterpretation": "MONOCHROME2", "ImagerPixelSpacing": [PIXEL_MM, PIXEL_MM],
                    "PatientOrientation": ["L", "F"], "SeriesDescription": "Bilateral PA Fixed Flexion Knee"})
                rows.append((f"{folder}/{xray}", pid, f"{date:%Y%m%d}", xray, "OAI^XR^SYNTHETIC ",
                             "Bilateral PA Fixed Flexion Knee "))
                for n, (side, word) in enumerate((("R", "RIGHT"), ("L", "LEFT")), start=1):
                    mri = barcode("mri", i, visit, n)
                    _header(root / layout.visit_label(visit) / folder / mri / "001", "MR", pid,
                            {"Rows": 384, "Columns": 384, "Laterality": side})
                    rows.append((f"{folder}/{mri}", pid, f"{date:%Y%m%d}", mri, f"OAI^MR^SYNTHETIC^{word} ",
                                 f"SAG_3D_DESS_{word}"))
                    writer.writerow([pid, layout.visit_label(visit), side, 1200 + i % 50, 800 if side == "R" else 2200])
                    grades.append((pid, side, ".T" if i % 97 == 0 else str(i % 5)))
            write_contents(root / layout.visit_label(visit) / layout.CONTENTS_NAME, rows)
            write_grades(root / "clinical" / f"kxr_sq_bu{layout.visit_prefix(visit)[1:]}.txt", visit, grades)
    return centres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--visits", default="00m,12m")
    parser.add_argument("--keep", metavar="DIR", default=None, help="write the tree here and keep it")
    args = parser.parse_args(argv)
    visits = [layout.parse_visit(v) for v in args.visits.split(",")]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_oai_"))
    try:
        start = time.perf_counter()
        centres = make_tree(root, args.participants, visits)
        made = time.perf_counter() - start
        tracemalloc.start()
        start = time.perf_counter()
        build = build_oai_datalist(root, grades=root / "clinical", centres=centres, localise=False)
        manifests.write_datalist(build.datalist, root / "oai.json")
        took = time.perf_counter() - start
        heap = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        start = time.perf_counter()
        problems = manifests.check_datalist(root / "oai.json", base_dir=root)
        checked = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n = args.participants * len(visits)
        print(f"tree: {n} participant-visits ({2 * n} knees), header-only DICOMs, written in {made:.1f} s")
        print(f"manifest build --oai-root (centres CSV, grades): {took:.2f} s for {len(build.items)} items "
              f"(target <= 60 s): {'PASS' if took <= 60 else 'FAIL'}")
        print(f"manifest check: {checked:.2f} s, {sum(p.is_error for p in problems)} error(s)")
        print(f"memory: Python heap peak during build {heap:.0f} MiB; process max RSS {rss:.0f} MiB")
        print(f"summary: {build.summary}")
        return 0 if took <= 60 and not any(p.is_error for p in problems) else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
