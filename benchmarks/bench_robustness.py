"""How the generated MRI holds up when the radiograph is processed differently (issue 13: acquisition and
processing vary; the synthetic cohort's radiographs do not).

Each bundle's network runs, preprocessed as evaluation does, on the test split's radiographs as they are
and on processed copies of them (same DICOM header, pixel values changed the way a different exposure,
display LUT or edge enhancement would: :data:`PROCESSING`), and the MRI's mean absolute error and PSNR
against the acquired (synthetic) MRI are reported per processing, with the ratio of each error to the
unprocessed one. Compare bundles trained with and without appearance randomisation (train.json
``aug_prob``) on the same split.

Usage::

    python benchmarks/bench_robustness.py --bundle plain=bundles/knee_xray2mri augmented=/tmp/aug_bundle \\
        --cohort data/synthetic_knee [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_uncertainty import HEAVY_PROCESSING, _unsharp, processed_variants  # noqa: E402

#: Processing applied to the stored values scaled to [0, 1]: mild (within what aug_prob randomises) and heavy.
PROCESSING = {
    "gamma_0.8": lambda u: u ** 0.8,
    "gamma_1.25": lambda u: u ** 1.25,
    "unsharp_mild": _unsharp(1.0, 4),
    "gamma_0.4": HEAVY_PROCESSING["gamma_0.4"],
    "gamma_2.5": HEAVY_PROCESSING["gamma_2.5"],
    "unsharp_heavy": HEAVY_PROCESSING["unsharp_heavy"],
}


def _datalist(cohort: Path, tmp: Path, variant: str | None) -> Path:
    """The cohort's test split, its radiographs replaced by their ``variant`` copies (None: as they are)."""
    from xray2mri.pipeline.data import manifests

    items = manifests.load_datalist(cohort / "datalist.json", "test", cohort)
    for item in items:  # absolute, so the copies' datalist reads the same files from anywhere
        item.update({k: str(Path(item[k]).resolve()) for k in manifests.PATH_KEYS if item.get(k)})
    if variant is not None:
        for item in items:
            out = tmp / variant / Path(item["xray"]).parent.name
            out.mkdir(parents=True, exist_ok=True)
            item["xray"] = str(processed_variants(Path(item["xray"]), out, {variant: PROCESSING[variant]})[variant])
    path = tmp / f"datalist_{variant or 'original'}.json"
    path.write_text(json.dumps({"description": "SYNTHETIC test split, processed radiographs",
                                "training": [], "validation": [], "test": items}))
    return path


def errors(bundle: Path, datalist: Path, cohort: Path) -> tuple[float, float]:
    """Mean MRI MAE and PSNR (data range 1) over the datalist's test items."""
    from xray2mri.pipeline.training.calibrate import split_outputs

    out = split_outputs(bundle, datalist, cohort, "test")
    mae = [float((t - p).abs().mean()) for p, t in zip(out.predictions, out.truths)]
    psnr = [10 * math.log10(1.0 / max(float(((t - p) ** 2).mean()), 1e-12)) for p, t in zip(out.predictions, out.truths)]
    return float(np.mean(mae)), float(np.mean(psnr))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", nargs="+", required=True, metavar="NAME=DIR", help="bundles to compare")
    parser.add_argument("--cohort", type=Path, default=Path("data/synthetic_knee"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    bundles = dict(spec.split("=", 1) for spec in args.bundle)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_robustness_") as tmp:
        tmp = Path(tmp)
        lists = {v: _datalist(args.cohort, tmp, None if v == "original" else v) for v in ("original", *PROCESSING)}
        for name, bundle in bundles.items():
            results[name] = {v: dict(zip(("mae", "psnr"), errors(Path(bundle), d, args.cohort))) for v, d in lists.items()}
            base = results[name]["original"]["mae"]
            print(f"{name}: " + "; ".join(f"{v} MAE {r['mae']:.4f} ({r['mae'] / base:.2f}x) PSNR {r['psnr']:.2f}"
                                        for v, r in results[name].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
