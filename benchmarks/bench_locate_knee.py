"""Accuracy of the knee finder (:class:`xray2mri.transforms.locate_knee.LocateKnee`): joint-centre error in mm.

Sets (each knee's error is the distance, at the knee, between the found and the known joint centre;
a knee not found counts as a miss; target: within 5 mm for >= 95 % of knees):

* ``bilateral``: SYNTHETIC bilateral PA radiographs of the OAI-layout tree (``xray2mri synth
  --layout oai``; truth from its ``oai_truth.json`` / ``known_centres.csv``), both knees, sides checked;
* ``cohort``: SYNTHETIC radiographs of the built-in cohort as written, framed in turn (knee field,
  long-leg field, marked knee field, bilateral view: :data:`~xray2mri.pipeline.data.synth.framing.COHORT_FRAMINGS`),
  truth from each subject's meta (``joint_centre_px``, ``other_knee_centre_px``), sides checked;
* ``long-leg``: each cohort radiograph framed as a knee field placed off centre in a 700 x 320 mm
  field with its shafts continued, a burned-in side marker and a collimation edge
  (:func:`~xray2mri.pipeline.data.synth.framing.long_leg_field`), written as DX DICOM without a side
  tag (side from the anatomy, checked);
* ``real``: real radiographs marked by hand, listed in ``benchmarks/data/real_knee_marks.csv`` with
  each image's repository, commit, path and licence. The images are never committed: clone the
  repositories and give the folder holding them (``--real DIR``, or the ``XRAY2MRI_REAL_KNEES``
  environment variable; ``DIR/<repository path>`` or ``DIR/<owner>+<name>/<repository path>``);
  the set is skipped, saying so, when absent. Its figures are given for all of it and per kind of
  radiograph (:data:`REAL_KINDS`: bilateral PA fixed-flexion, bilateral standing AP, clinical long
  field, implant, tight crop).

Usage::

    python benchmarks/bench_locate_knee.py [--participants 20] [--subjects 20] [--seed 0] [--real DIR]
        [--json FILE] [--figure PNG]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xray2mri.pipeline.data.oai.synth_tree import write_oai_tree
from xray2mri.pipeline.data.synth.cohort import generate_cohort
from xray2mri.pipeline.data.synth.dicom_writer import write_dx
from xray2mri.pipeline.data.synth.framing import long_leg_field
from xray2mri.transforms.errors import XrayInputError
from xray2mri.transforms.locate_knee import LocateKnee, NoKneeFound, locate_knees
from xray2mri.transforms.xray import LoadXray

TARGET_MM, TARGET_SHARE = 5.0, 0.95
MARKS = Path(__file__).resolve().parent / "data" / "real_knee_marks.csv"


def _error(found, known, spacing) -> float:
    return float(np.hypot((found[0] - known[0]) * spacing[0], (found[1] - known[1]) * spacing[1]))


def _summary(name: str, errors: list[float], misses: int, wrong_side: int = 0, timing: list[float] = ()) -> dict:
    e = np.asarray(errors, dtype=float)
    n = e.size + misses
    within = float((e <= TARGET_MM).sum()) / n if n else float("nan")
    out = {"set": name, "knees": n, "found": int(e.size), "missed": misses, "wrong_side": wrong_side,
           "median_mm": float(np.median(e)) if e.size else None, "p90_mm": float(np.percentile(e, 90)) if e.size else None,
           "max_mm": float(e.max()) if e.size else None, "within_5mm": within,
           "ms_per_image": float(1000 * np.median(timing)) if len(timing) else None}
    flag = "meets" if within >= TARGET_SHARE else "MISSES"
    print(f"{name:10s} knees {n:3d}  found {e.size:3d}  wrong side {wrong_side}  median "
          f"{out['median_mm'] if e.size else float('nan'):.2f} mm  p90 {out['p90_mm'] if e.size else float('nan'):.2f}  "
          f"max {out['max_mm'] if e.size else float('nan'):.2f}  within 5 mm {100 * within:.1f} % ({flag} the target)")
    return out


FIGURE_IMAGES: list[tuple[str, np.ndarray, list]] = []  # (title, image, knees) drawn by --figure


def draw_figure(path: Path) -> None:
    """The found knees on the first bilateral and long-leg radiographs, as the preview PNG's first panel draws them."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(3.2 * len(FIGURE_IMAGES), 3.6), dpi=80)
    axes = fig.subplots(1, len(FIGURE_IMAGES), gridspec_kw={"wspace": 0.05, "left": 0.01, "right": 0.99})
    for ax, (title, image, knees) in zip(np.atleast_1d(axes), FIGURE_IMAGES):
        lo, hi = np.percentile(image, (1, 99.5))
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
        for k in knees:
            r0, c0, r1, c1 = k.crop_box
            ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor="yellow", lw=1.2))
            ax.plot([k.centre[1]], [k.centre[0]], "+", color="yellow", ms=8)
            ax.text(c0, r0 - 4, f"{k.side or '?'} ({k.side_source})", color="yellow", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.suptitle("SYNTHETIC radiographs: knees found by LocateKnee (160 mm boxes)", fontsize=9)
    fig.savefig(path, format="png")


def bench_bilateral(tmp: Path, participants: int, seed: int, locator: LocateKnee) -> dict:
    root = write_oai_tree(tmp / "oai", participants, seed=seed, visits=("00m",), awkward=False, workers=os.cpu_count() or 1)
    truth = json.loads((root / "oai_truth.json").read_text())
    by_file: dict[str, dict[str, tuple[float, float]]] = {}
    for c in truth["centres"]:
        by_file.setdefault(c["xray"], {})[c["side"]] = (c["row"], c["col"])
    errors, misses, wrong, timing = [], 0, 0, []
    for rel, known in sorted(by_file.items()):
        image = LoadXray()(root / rel)
        t0 = time.perf_counter()
        try:
            knees = locator(image)
        except XrayInputError:
            misses += len(known)
            continue
        timing.append(time.perf_counter() - t0)
        if not FIGURE_IMAGES:
            FIGURE_IMAGES.append(("bilateral PA (OAI-layout tree)", image[0].numpy(), knees))
        found = {k.side: k for k in knees}
        for side, centre in known.items():
            if side not in found:
                misses += 1
                wrong += int(len(knees) == 2)
                continue
            errors.append(_error(found[side].centre, centre, image.meta["spacing"]))
    return _summary("bilateral", errors, misses, wrong, timing)


def bench_cohort_and_long_leg(tmp: Path, subjects: int, seed: int, locator: LocateKnee) -> list[dict]:
    cohort = generate_cohort(tmp / "cohort", subjects, seed=seed, preset="demo", workers=os.cpu_count() or 1,
                             progress=False)
    rng = np.random.default_rng(seed)
    sets = {name: {"errors": [], "misses": 0, "wrong_side": 0, "timing": []} for name in ("cohort", "long-leg")}
    for meta_file in sorted(cohort.glob("SYN*/SYN*_meta.json")):
        meta = json.loads(meta_file.read_text())
        info = meta["xray"]
        xray = LoadXray()(meta_file.with_name(f"{meta['subject']}_xray.dcm"))
        known = {meta["side"]: tuple(info["joint_centre_px"])}
        if info.get("other_knee_centre_px"):
            known[{"R": "L", "L": "R"}[meta["side"]]] = tuple(info["other_knee_centre_px"])
        cases = [("cohort", xray, known)]
        if not info.get("other_knee_centre_px") and info.get("framing", "knee") == "knee":
            image = xray[0].numpy()
            framed = long_leg_field(image, known[meta["side"]], xray.meta["spacing"][0], rng)
            path = tmp / f"{meta['subject']}_longleg.dcm"
            write_dx(path, framed.image / float(info["stored_units_per_neper"]), subject=meta["subject"],
                     laterality="U", imager_pixel_mm=info["imager_pixel_spacing_mm"], sid_mm=info["sid_mm"],
                     sod_mm=info["sod_mm"])
            cases.append(("long-leg", LoadXray()(path), {meta["side"]: framed.centre}))
        for name, img, truth in cases:
            stats = sets[name]
            t0 = time.perf_counter()
            try:
                knees = locator(img)
            except XrayInputError:
                stats["misses"] += len(truth)
                continue
            stats["timing"].append(time.perf_counter() - t0)
            if name == "long-leg" and len(FIGURE_IMAGES) == 1:
                FIGURE_IMAGES.append(("long-leg field, marker, collimation", img[0].numpy(), knees))
            for side, centre in truth.items():
                best = min(knees, key=lambda k: _error(k.centre, centre, img.meta["spacing"]))
                stats["errors"].append(_error(best.centre, centre, img.meta["spacing"]))
                stats["wrong_side"] += int(best.side != side)
    return [_summary(name, s["errors"], s["misses"], s["wrong_side"], s["timing"]) for name, s in sets.items()]


#: a pixel whose colour channels differ by more than this (of 255) is a coloured drawing, not radiograph
#: (scanned films carry a tint: up to ~95 here, over much of the image)
COLOUR_DRAWING_CHROMA = 100
#: above this share of the image, saturated colour is a tint of the whole scan, not drawings
COLOUR_DRAWING_MAX_SHARE = 0.10


def _grey_without_drawings(path: Path, keep_drawings: bool = False) -> np.ndarray:
    """A PNG/JPEG as greyscale, with coloured drawings (a viewer's detection boxes, arrows) painted out.

    A radiograph is grey; colour in a screenshot is what a tool drew over it, which a DICOM from the
    scanner does not carry. Left in, a box's edges are dark straight lines across the bone (greyscale
    of pure blue is 29 of 255), which the finder takes for a joint space. Each drawn pixel takes the
    value of the nearest grey one. Saturated colour over more than a tenth of the image is a tinted scan
    and left as it is. ``--keep-drawings`` measures with drawings left in.
    """
    from PIL import Image
    from scipy import ndimage

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
        grey = np.asarray(im.convert("L"), dtype=np.float32)
    drawn = (rgb.max(axis=-1) - rgb.min(axis=-1)) > COLOUR_DRAWING_CHROMA
    if keep_drawings or not drawn.any() or drawn.mean() > COLOUR_DRAWING_MAX_SHARE:
        return grey
    nearest = ndimage.distance_transform_edt(drawn, return_distances=False, return_indices=True)
    return grey[tuple(nearest)]


def _real_image(root: Path, row: dict, keep_drawings: bool = False) -> np.ndarray | None:
    """The marked image (greyscale, more attenuation = brighter), cropped as the marks CSV says, or None."""
    candidates = [root / row["path"], root / row["repository"].replace("/", "+") / row["path"],
                  root / row["repository"].split("/")[-1] / row["path"]]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return None
    if path.suffix.lower() in (".dcm", ".dicom", ""):
        image = LoadXray()(path)[0].numpy()
    else:
        image = _grey_without_drawings(path, keep_drawings)
    if row.get("crop_box_px"):
        r0, c0, r1, c1 = (int(v) for v in row["crop_box_px"].split())
        image = image[r0:r1, c0:c1]
    return image


#: kinds of real radiograph reported apart, first match of the marks' ``view`` text (lower case) wins
REAL_KINDS = (("fixed-flexion", "bilateral PA fixed-flexion"), ("bilateral standing", "bilateral standing AP"),
              ("clinical", "clinical long field"), ("replacement", "implant"), ("tight crop", "tight crop"))


def _real_kind(view: str) -> str:
    """The kind of a marked real radiograph (its row in the per-kind figures), from its ``view`` text."""
    text = view.lower()
    return next((kind for key, kind in REAL_KINDS if key in text), "other")


def bench_real(root: Path | None, keep_drawings: bool = False) -> list[dict] | None:
    rows = list(csv.DictReader(open(MARKS, encoding="utf-8")))
    if root is None or not root.is_dir():
        print(f"real       skipped: no folder of real radiographs (give --real DIR or XRAY2MRI_REAL_KNEES); "
              f"{len(rows)} marked knees are listed in {MARKS.name} with their repositories")
        return None
    stats = {kind: {"errors": [], "misses": 0, "wrong": 0} for kind in ["real", *dict.fromkeys(k for _, k in REAL_KINDS)]}
    stats["other"] = {"errors": [], "misses": 0, "wrong": 0}
    absent = 0
    for row in rows:
        image = _real_image(root, row, keep_drawings)
        if image is None:
            absent += 1
            continue
        spacing = (float(row["pixel_spacing_mm"]),) * 2
        groups = (stats["real"], stats[_real_kind(row["view"])])
        try:
            knees = locate_knees(image, spacing)
        except NoKneeFound as exc:
            print(f"  {row['id']}: not found ({exc.reason})")
            for g in groups:
                g["misses"] += 1
            continue
        known = (float(row["row"]), float(row["col"]))
        best = min(knees, key=lambda k: _error(k.centre, known, spacing))
        error = _error(best.centre, known, spacing)
        print(f"  {row['id']}: {error:.1f} mm ({row['view']})")
        for g in groups:
            g["errors"].append(error)
            g["wrong"] += int(bool(row.get("side")) and best.side not in (None, row["side"]))
    if absent:
        print(f"  {absent} listed image(s) not under {root}")
    if absent == len(rows):
        print(f"real       skipped: none of the {len(rows)} listed images is under {root}")
        return None
    return [_summary(f"real: {kind}" if kind != "real" else "real", g["errors"], g["misses"], g["wrong"])
            for kind, g in stats.items() if g["errors"] or g["misses"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=20, help="bilateral radiographs (2 knees each)")
    parser.add_argument("--subjects", type=int, default=20,
                        help="cohort radiographs (those framed as a knee field also placed in long-leg fields)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", default=os.environ.get("XRAY2MRI_REAL_KNEES"), help="folder of the real images")
    parser.add_argument("--keep-drawings", action="store_true",
                        help="leave coloured drawings in PNG/JPEG screenshots (as grey lines) instead of painting them out")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--figure", default=None, help="draw the found knees of a bilateral and a long-leg radiograph (PNG)")
    args = parser.parse_args(argv)
    locator = LocateKnee()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_bilateral(Path(tmp), args.participants, args.seed, locator)]
        results += bench_cohort_and_long_leg(Path(tmp), args.subjects, args.seed, locator)
    if args.figure and FIGURE_IMAGES:
        draw_figure(Path(args.figure))
    real = bench_real(Path(args.real) if args.real else None, args.keep_drawings)
    if real is not None:
        results += real
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
