"""Does the generated volume follow a REAL radiograph, or come out as a template knee? (issue 13)

A model that has only learnt the synthetic cohort can answer every real radiograph with nearly
the same knee. Two measures, with the bundle's own prediction path (``Predictor``: knee finder,
crop, network), on the real knee radiographs listed in ``benchmarks/data/real_knee_radiographs.csv``
(local copies given with ``--real-image``; never committed) and the cohort's synthetic test split:

* **spread**: how much the generated volumes differ between inputs: the voxel-wise standard
  deviation across the inputs' volumes (each on the canonical side), averaged over the knee's field.
  Reported for the real radiographs and for the synthetic test split (where the truth varies as
  much), and their ratio: near 0 means one template for every real radiograph.
* **knee-likeness**: each real input's volume against the volumes generated for the test split
  (the highest normalised cross-correlation with any of them; a test-split volume's own against the
  others is the reference): low when the output has lost the knee's outline;
* **joint space against grade**: the medial and lateral minimum JSW measured on each generated volume
  (the joint found on the volume itself, as for OAI: ``metrics.compartment_lines_from_mri``), for
  the KL 0-4 crops; a model that reads the radiograph narrows the medial joint space with grade
  (Spearman of grade with medial JSW, negative).

``--figure PNG`` draws each real input's crop beside its generated coronal slice at the joint.

Usage::

    python benchmarks/bench_real_response.py --bundle bundles/knee_xray2mri --cohort data/synthetic_knee \\
        --real-image /tmp/real/cropping.png /tmp/real/image_s0001_i0001.jpg /tmp/real/example_knee_img.png \\
        [--figure docs/real_response.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _canonical_volumes(predictor, files: dict[str, Path]) -> dict[str, dict]:
    """Each file's generated volume(s) on the canonical side, with the crop the network saw."""
    from xray2mri.transforms.errors import XrayInputError

    out: dict[str, dict] = {}
    for name, path in files.items():
        try:
            knees = predictor.predict_knees(path)
        except XrayInputError as exc:
            print(f"  {name}: refused ({exc.reason})")
            continue
        for pred in knees:
            volume = pred.volume[..., ::-1] if pred.mirrored else pred.volume
            key = name if len(knees) == 1 else f"{name}_{pred.side or 'U'}"
            out[key] = {"volume": np.ascontiguousarray(volume, dtype=np.float32), "facts": pred.facts,
                        "radiograph": pred.radiograph}
    return out


def spread(volumes: list[np.ndarray]) -> float:
    """Mean over voxels of the standard deviation across volumes (0: every input gives the same volume)."""
    if len(volumes) < 2:
        return math.nan
    return float(np.std(np.stack(volumes), axis=0).mean())


def nearest_ncc(volume: np.ndarray, references: list[np.ndarray]) -> float:
    """Highest normalised cross-correlation of ``volume`` with any of ``references`` (the volumes generated
    for the synthetic test split): near 1, a knee like those the model makes for radiographs it knows;
    low, a volume that lost the knee's outline."""
    v = (volume - volume.mean()) / max(float(volume.std()), 1e-6)
    best = -1.0
    for ref in references:
        r = (ref - ref.mean()) / max(float(ref.std()), 1e-6)
        best = max(best, float((v * r).mean()))
    return best


def jsw(volume: np.ndarray, spacing: float) -> dict[str, float]:
    """Medial and lateral minimum JSW (mm) measured on a generated volume, the joint found on it."""
    from xray2mri.pipeline.evaluation import metrics as M

    sp = (spacing,) * 3
    lines = M.compartment_lines_from_mri(np.clip(volume, 0.0, 1.0), sp)
    return {side: M.measure_jsw(volume, lines.get(side, []), sp) for side in ("medial", "lateral")}


def _grade(name: str) -> int | None:
    """The KL grade of a crop named ``real_kl<grade>`` (the CSV's ids), else None."""
    name = name.removeprefix("real_")
    return int(name[2]) if name.startswith("kl") and name[2:3].isdigit() else None


def draw(path: Path, real: dict[str, dict]) -> None:
    """Each real input (whole radiograph thumbnail) beside the coronal slice of its generated volume at the joint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(real)
    fig, axes = plt.subplots(2, len(names), figsize=(2.2 * len(names), 4.6), squeeze=False)
    for col, name in enumerate(names):
        item = real[name]
        vol = item["volume"]
        if item["radiograph"] is not None:
            axes[0, col].imshow(item["radiograph"], cmap="gray")
        axes[1, col].imshow(vol[vol.shape[0] // 2], cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(name, fontsize=8)
        for ax in axes[:, col]:
            ax.axis("off")
    axes[0, 0].text(-0.05, 0.5, "input (real)", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.05, 0.5, "generated, coronal\n(SYNTHETIC output)", transform=axes[1, 0].transAxes,
                    rotation=90, va="center", ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "knee_xray2mri")
    parser.add_argument("--cohort", type=Path, default=REPO / "data" / "synthetic_knee")
    parser.add_argument("--real-image", type=Path, nargs="+", required=True,
                        help="local copies of the image files real_knee_radiographs.csv names (matched by file name)")
    parser.add_argument("--figure", type=Path, default=None, help="draw inputs and generated slices (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_uncertainty import real_knees

    from xray2mri.pipeline.data import manifests
    from xray2mri.pipeline.serving.predict import Predictor
    from xray2mri.pipeline.training.engine import train_setting

    predictor = Predictor.from_bundle(args.bundle)
    spacing = float(train_setting(args.bundle, "mri_spacing")[0])
    test = {item["subject"]: Path(item["xray"])
            for item in manifests.load_datalist(args.cohort / "datalist.json", "test", args.cohort)}
    with tempfile.TemporaryDirectory(prefix="bench_real_response_") as tmp:
        files = real_knees(args.real_image, None, Path(tmp))
        if not files:
            raise SystemExit("none of --real-image is named in real_knee_radiographs.csv")
        real = _canonical_volumes(predictor, files)
    synthetic = _canonical_volumes(predictor, test)
    results = {
        "spread_real": spread([r["volume"] for r in real.values()]),
        "spread_synthetic_test": spread([r["volume"] for r in synthetic.values()]),
        "real": {}, "kl_grades": {},
    }
    results["spread_ratio"] = results["spread_real"] / results["spread_synthetic_test"]
    references = [r["volume"] for r in synthetic.values()]
    results["nearest_synthetic_ncc_test"] = float(np.median([
        nearest_ncc(r["volume"], [o for o in references if o is not r["volume"]]) for r in synthetic.values()]))
    for name, item in sorted(real.items()):
        readings = jsw(item["volume"], spacing)
        results["real"][name] = {"jsw_medial_mm": readings["medial"], "jsw_lateral_mm": readings["lateral"],
                                 "nearest_synthetic_ncc": nearest_ncc(item["volume"], references),
                                 "ood_score": item["facts"].get("ood_score"), "ood_flag": item["facts"].get("ood_flag"),
                                 # the sidecar's readings: on the joint-region head's map when the bundle has one
                                 "map_jsw_medial_mm": item["facts"].get("jsw_medial_mm"),
                                 "map_jsw_lateral_mm": item["facts"].get("jsw_lateral_mm"),
                                 "map_cartilage_medial_mm": item["facts"].get("cartilage_thickness_medial_mm"),
                                 "readings_map": item["facts"].get("readings_map")}
        if _grade(name) is not None:
            results["kl_grades"][name] = _grade(name)
    graded = [(g, results["real"][n]["jsw_medial_mm"]) for n, g in results["kl_grades"].items()]
    graded = [(g, j) for g, j in graded if math.isfinite(j)]
    if len(graded) >= 3:
        from xray2mri.pipeline.evaluation.uncertainty import spearman

        results["spearman_grade_vs_medial_jsw"] = spearman([g for g, _ in graded], [j for _, j in graded])
    mapped = [(g, results["real"][n]["map_jsw_medial_mm"]) for n, g in results["kl_grades"].items()]
    mapped = [(g, j) for g, j in mapped if j is not None and math.isfinite(j)]
    if len(mapped) >= 3:
        from xray2mri.pipeline.evaluation.uncertainty import spearman

        results["spearman_grade_vs_map_medial_jsw"] = spearman([g for g, _ in mapped], [j for _, j in mapped])
    print(f"spread of the generated volumes: real {results['spread_real']:.4f}, synthetic test split "
          f"{results['spread_synthetic_test']:.4f} (ratio {results['spread_ratio']:.2f}; 0 = one template)")
    for name, r in results["real"].items():
        print(f"  {name:18s} medial JSW {r['jsw_medial_mm']:.2f} mm  lateral {r['jsw_lateral_mm']:.2f} mm  "
              f"nearest test-split volume NCC {r['nearest_synthetic_ncc']:.2f}  "
              f"OOD score {r['ood_score'] if r['ood_score'] is None else round(r['ood_score'], 2)}"
              + (f"  tissue map: medial JSW {r['map_jsw_medial_mm']} mm, lateral {r['map_jsw_lateral_mm']} mm, "
                 f"medial cartilage {r['map_cartilage_medial_mm']} mm" if r["readings_map"] else ""))
    print(f"  (a test-split volume's nearest other test-split volume: NCC median {results['nearest_synthetic_ncc_test']:.2f})")
    if "spearman_grade_vs_medial_jsw" in results:
        print(f"Spearman(KL grade, medial JSW) on the KL 0-4 crops: {results['spearman_grade_vs_medial_jsw']:.2f}")
    if "spearman_grade_vs_map_medial_jsw" in results:
        print(f"Spearman(KL grade, medial JSW on the tissue map) on the KL 0-4 crops: "
              f"{results['spearman_grade_vs_map_medial_jsw']:.2f}")
    if args.figure:
        draw(args.figure, real)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
