"""The uncertainty map and the out-of-distribution warning (issue 16), measured.

Three parts, each optional:

* ``--timing``: the cost of the uncertainty head, measured interleaved round by round on this
  machine at the bundle's own sizes (so load from other processes hits both alike):
  one training step (forward, hybrid loss [+ NLL], backward, Adam step) of the network without
  and with the head, one prediction (``Predictor.predict``: preprocessing + forward [+ calibrated
  map + OOD score]), the same with its writing done at once (volume + preview [+ uncertainty
  NIfTI]), and a folder of 8 as ``xray2mri predict`` runs it (writes in a background thread),
  with and without ``--no-uncertainty``; and the forward cost of Monte Carlo dropout with ``--mc-samples`` passes,
  the alternative estimator, for comparison.
* ``--compare``: estimators side by side (heads trained with the Laplace or Gaussian NLL), each
  calibrated on validation and measured on test by the same code.
* ``--summary``: coverage, width and Spearman from a report's ``summary.json``.
* ``--ood``: OOD scores and flags per category, with the bundle's calibration: the synthetic test
  split (in distribution; with ``--fresh N`` also N new radiographs from the cohort's own generator,
  in no split, so the false-flag rate has an interval narrower than 30 subjects give), other anatomy (synthetic chest-like and hand-like radiographs), heavily
  processed or mis-windowed versions of test radiographs (gamma 0.4 and 2.5, inverted LUT, heavy
  unsharp mask, clipped window) and real clinical knee radiographs: the crops listed in
  ``benchmarks/data/real_knee_radiographs.csv``, read from local copies given with ``--real-image``
  (never committed; the CSV names each one's repository, commit, path, licence, crop and spacing),
  plus any DICOM/PNG/JPEG in ``--real-dir``.

Usage::

    python benchmarks/bench_uncertainty.py --bundle bundles/knee_xray2mri --timing
    python benchmarks/bench_uncertainty.py --bundle bundles/knee_xray2mri --cohort data/synthetic_knee \\
        --ood --fresh 300 --real-image /tmp/cropping.png /tmp/image_s0001_i0001.jpg /tmp/example_knee_img.png --summary runs/demo/report/summary.json --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
REAL_CSV = REPO / "benchmarks" / "data" / "real_knee_radiographs.csv"
SUMMARY_NAMES = ("uncertainty_coverage_80", "uncertainty_coverage_90", "uncertainty_coverage_95",
                 "uncertainty_width_90", "uncertainty_error_spearman")


# ------------------------------------------------------------------------------------ timing


def _train_step_timer(bundle: Path, uncertainty: bool):
    from xray2mri.pipeline.training.engine import network_from_bundle, train_setting
    from xray2mri.pipeline.training.losses import HybridLoss
    from xray2mri.pipeline.training.uncertainty_loss import WithUncertaintyLoss

    torch.manual_seed(0)
    net = network_from_bundle(bundle, return_dict=True, uncertainty=uncertainty).train()
    base = HybridLoss(xray_weight=train_setting(bundle, "xray_weight"), mri_weight=train_setting(bundle, "mri_weight"),
                      ssim_weight=train_setting(bundle, "ssim_weight"), mri_loss=train_setting(bundle, "mri_loss"))
    loss = WithUncertaintyLoss(base, nll_weight=train_setting(bundle, "nll_weight") if uncertainty else 0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(1, 1, *train_setting(bundle, "xray_size"))
    target = {"xray": x, "mri": torch.rand(1, 1, *train_setting(bundle, "mri_shape"))}

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad()
        loss(net(x), target).backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def _interleaved(a, b, rounds: int, per_round: int) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, alternating blocks of ``per_round`` calls for ``rounds`` rounds."""
    sa, sb = [], []
    a(), b()  # warm-up
    for _ in range(rounds):
        sa += [a() for _ in range(per_round)]
        sb += [b() for _ in range(per_round)]
    return statistics.median(sa), statistics.median(sb)


def timing(bundle: Path, rounds: int, mc_samples: int, radiograph: Path | None, tmp: Path) -> dict:
    """Training step, prediction and writing, without and with the uncertainty head (interleaved)."""
    from xray2mri.pipeline.serving.predict import Predictor, save_prediction

    out: dict = {"threads": torch.get_num_threads()}
    base, head = _train_step_timer(bundle, False), _train_step_timer(bundle, True)
    t_base, t_head = _interleaved(base, head, rounds, 5)
    out["train_step_s"] = {"without": t_base, "with": t_head, "ratio": t_head / t_base}

    weights = bundle / "models" / "model.pt"
    random_init = not weights.is_file()
    with_unc = Predictor.from_bundle(bundle, random_init=random_init)
    without = Predictor.from_bundle(bundle, random_init=random_init, uncertainty=False)
    if radiograph is None:
        from bench_predict import synthetic_radiograph

        radiograph = synthetic_radiograph(tmp / "bench.dcm", "demo")
    counter = iter(range(10**9))

    def run(predictor):
        def _one() -> float:
            t0 = time.perf_counter()
            pred = predictor.predict(radiograph)
            save_prediction(pred, tmp / "out", f"r{next(counter)}")
            return time.perf_counter() - t0
        return _one

    t_without, t_with = _interleaved(run(without), run(with_unc), rounds, 3)
    out["predict_and_write_s"] = {"without": t_without, "with": t_with, "ratio": t_with / t_without}

    def predict_only(predictor):
        def _one() -> float:
            t0 = time.perf_counter()
            predictor.predict(radiograph)
            return time.perf_counter() - t0
        return _one

    p_without, p_with = _interleaved(predict_only(without), predict_only(with_unc), rounds, 3)
    out["predict_s"] = {"without": p_without, "with": p_with, "ratio": p_with / p_without}

    from xray2mri.pipeline.serving.predict import predict_batch

    folder = tmp / "batch"
    folder.mkdir(exist_ok=True)
    for i in range(8):
        (folder / f"knee{i:03d}.dcm").write_bytes(Path(radiograph).read_bytes())

    def batch(predictor):
        def _one() -> float:
            result = predict_batch(predictor, folder, tmp / f"batch_out{next(counter)}", progress=False)
            return result.seconds / 8
        return _one

    b_without, b_with = _interleaved(batch(without), batch(with_unc), max(2, rounds // 2), 1)
    out["folder_per_radiograph_s"] = {"without": b_without, "with": b_with, "ratio": b_with / b_without}

    net = with_unc.network
    x = torch.rand(1, 1, *net.xray_size)

    def forward_plain() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            net(x)
        return time.perf_counter() - t0

    def forward_head() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            o = net.forward_dict(x)
            with_unc.calibration.half_width(o["mri_log_scale"]) if with_unc.calibration else None
        return time.perf_counter() - t0

    f_plain, f_head = _interleaved(forward_plain, forward_head, rounds, 5)
    out["forward_s"] = {"without": f_plain, "with": f_head, "ratio": f_head / f_plain}
    out["mc_dropout_forward_ratio"] = mc_samples  # T passes of the same network: T x the forward, by construction
    mc = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(mc_samples):
                net(x)
        mc.append(time.perf_counter() - t0)
    out["mc_dropout_forward_s"] = {"samples": mc_samples, "seconds": statistics.median(mc),
                                   "ratio_to_one_forward": statistics.median(mc) / f_plain}
    return out


# ---------------------------------------------------------------------------------------- OOD


def _write_log_att(path: Path, img: np.ndarray, pixel_mm: float, laterality: str = "R") -> Path:
    """Write an image whose brightness is attenuation as a DX DICOM (12 bit), no magnification."""
    from xray2mri.pipeline.data.synth.dicom_writer import MAX_LOG_ATTENUATION, write_dx

    img = np.asarray(img, float)
    img = (img - img.min()) / max(float(np.ptp(img)), 1e-6)
    write_dx(path, img * MAX_LOG_ATTENUATION * 0.98, subject="BENCHMARK", laterality=laterality,
             imager_pixel_mm=pixel_mm, sid_mm=1000.0, sod_mm=1000.0)
    return path


def chest_like(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A synthetic PA chest-like image: bright mediastinum and spine, two dark lung fields, ribs."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = 0.8 * np.ones(shape)
    for cx in (0.3, 0.7):
        lung = ((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.33) ** 2 < 1
        img[lung] = 0.25
    ribs = (np.sin(y * 40 * np.pi) > 0.6) & (np.abs(x - 0.5) > 0.08)
    img[ribs] += 0.15
    img[np.abs(x - 0.5) < 0.05] = 0.95  # spine
    return img + rng.normal(0, 0.02, shape)


def hand_like(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A synthetic PA hand-like image: a palm, five fingers with phalanges, dark background."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = 0.05 * np.ones(shape)
    img[(np.abs(x - 0.5) < 0.22) & (y > 0.55)] = 0.45  # palm (soft tissue)
    for k, cx in enumerate((0.3, 0.4, 0.5, 0.6, 0.7)):
        finger = (np.abs(x - cx) < 0.035) & (y > 0.12 + 0.04 * abs(k - 2)) & (y <= 0.6)
        img[finger] = 0.45
        bone = (np.abs(x - cx) < 0.018) & (y > 0.15 + 0.04 * abs(k - 2)) & (np.sin(y * 30) > -0.8)
        img[bone] = 0.9
        img[(np.abs(x - cx) < 0.02) & (y > 0.6) & (y < 0.9)] = 0.85  # metacarpal
    return img + rng.normal(0, 0.02, shape)


def _clipped_window(u: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(u, [40, 60])
    return (np.clip(u, lo, hi) - lo) / max(hi - lo, 1e-6)


def _unsharp(amount: float, sigma: float):
    def apply(u: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        return u + amount * (u - gaussian_filter(u, sigma))
    return apply


#: Heavy processing and mis-windowing, each on the stored pixel values scaled to [0, 1].
HEAVY_PROCESSING = {
    "gamma_0.4": lambda u: u ** 0.4,
    "gamma_2.5": lambda u: u ** 2.5,
    "inverted_lut": lambda u: 1.0 - u,
    "unsharp_heavy": _unsharp(3.0, 8),
    "clipped_window": _clipped_window,
}


def processed_variants(dicom: Path, out_dir: Path, processing=None) -> dict[str, Path]:
    """Processed copies of one radiograph (same header, pixels changed), one per entry of ``processing``
    (name -> function of the stored values scaled to [0, 1]; default :data:`HEAVY_PROCESSING`)."""
    import pydicom

    ds = pydicom.dcmread(dicom)
    raw = ds.pixel_array.astype(float)
    top = float(2 ** int(ds.BitsStored) - 1)
    u = raw / top
    variants = {name: f(u) for name, f in (processing or HEAVY_PROCESSING).items()}
    paths = {}
    for name, img in variants.items():
        copy = pydicom.dcmread(dicom)
        if copy.file_meta.TransferSyntaxUID.is_compressed:  # write the changed pixels uncompressed
            copy.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        copy.PixelData = np.round(np.clip(img, 0, 1) * top).astype(raw.dtype if raw.dtype.kind == "u" else np.uint16).tobytes()
        copy.SOPInstanceUID = pydicom.uid.generate_uid()
        path = out_dir / f"{dicom.stem}_{name}.dcm"
        copy.save_as(path)
        paths[name] = path
    return paths


def real_knees(images: list[Path], real_dir: Path | None, out_dir: Path) -> dict[str, Path]:
    """Real knee radiographs as DICOM: the rows of REAL_CSV whose file (by name) is among ``images``, cut
    to their crop box (none: the whole image) at their stated spacing, and the files of ``real_dir``."""
    from PIL import Image

    found: dict[str, Path] = {}
    by_name = {Path(p).name: Path(p) for p in images}
    with open(REAL_CSV, newline="") as f:
        for row in csv.DictReader(f):
            image = by_name.get(Path(row["path"]).name)
            if image is None:
                continue
            arr = np.asarray(Image.open(image).convert("L"), float)
            if row["crop_box_px"].strip():
                r0, c0, r1, c1 = (int(v) for v in row["crop_box_px"].split())
                arr = arr[r0:r1, c0:c1]
            found[f"real_{row['id']}"] = _write_log_att(
                out_dir / f"real_{row['id']}.dcm", arr, float(row["pixel_spacing_mm"]))
    if real_dir is not None:
        for path in sorted(p for p in real_dir.rglob("*") if p.is_file()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                arr = np.asarray(Image.open(path).convert("L"), float)
                # an image file has no geometry: take its shorter side as a 180 mm field (the demo's)
                found[f"real_{path.stem}"] = _write_log_att(out_dir / f"real_{path.stem}.dcm", arr, 180.0 / min(arr.shape))
            else:
                found[f"real_{path.stem}"] = path
    return found


#: Fresh radiographs start this many indices after the cohort's last subject, past the held-out
#: radiographs the demo calibrates its OOD threshold on (``DemoSettings.ood_calibration_subjects``).
FRESH_OFFSET = 1000


def fresh_subjects(cohort: Path, n: int, out_dir: Path) -> dict[str, Path]:
    """``n`` new radiographs from the cohort's own generator (same seed and preset, indices from the cohort's
    size + :data:`FRESH_OFFSET`): in distribution, in no split and not among the demo's held-out calibration
    radiographs, so the flag rate is measured on more than the 30 of test."""
    from xray2mri.pipeline.data.synth.cohort import generate_subjects

    info = json.loads((cohort / "cohort.json").read_text())
    first = int(info["subjects"]) + FRESH_OFFSET
    folders = generate_subjects(out_dir, range(first, first + n), int(info["seed"]), str(info["preset"]["name"]),
                                progress=False)
    return {f.name: next(f.glob("*_xray.dcm")) for f in folders}


def fresh_errors(bundle: Path, fresh_dir: Path) -> dict[str, float]:
    """Each fresh subject's MRI mean absolute error, preprocessed as evaluation does (its own datalist)."""
    from xray2mri.pipeline.data import manifests
    from xray2mri.pipeline.training.calibrate import split_outputs

    datalist = manifests.build_from_cohort(fresh_dir)
    datalist["validation"] = [item for split in ("training", "validation", "test") for item in datalist.get(split, [])]
    datalist["training"], datalist["test"] = [], []
    manifests.write_datalist(datalist, fresh_dir / "datalist.json")
    out = split_outputs(bundle, fresh_dir / "datalist.json", fresh_dir, "validation")
    return {s: float((t - p).abs().mean()) for s, p, t in zip(out.subjects, out.predictions, out.truths)}


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list[float]:
    """Exact binomial interval of a rate ``k / n``."""
    from scipy.stats import beta

    a = (1 - level) / 2
    return [float(beta.ppf(a, k, n - k + 1)) if k else 0.0, float(beta.ppf(1 - a, k + 1, n - k)) if k < n else 1.0]


def ood(bundle: Path, cohort: Path, image: list[Path], real_dir: Path | None, tmp: Path, n_processed: int,
        n_fresh: int = 0) -> dict:
    """OOD score and flag per input, grouped by category."""
    from xray2mri.pipeline.data import manifests
    from xray2mri.pipeline.data.synth.presets import PRESETS
    from xray2mri.pipeline.serving.predict import Predictor

    predictor = Predictor.from_bundle(bundle)
    if predictor.calibration is None:
        raise SystemExit(f"{bundle}: no uncertainty calibration (run `xray2mri calibrate` first)")
    test = [Path(item["xray"]) for item in manifests.load_datalist(cohort / "datalist.json", "test", cohort)]
    preset = PRESETS["demo"]
    categories: dict[str, dict[str, Path]] = {"synthetic test split": {p.parent.name: p for p in test}}
    if n_fresh:
        fresh_dir = tmp / "fresh"
        fresh_dir.mkdir()
        categories[f"fresh synthetic subjects (same generator, {n_fresh} beyond the cohort)"] = \
            fresh_subjects(cohort, n_fresh, fresh_dir)
    anatomy = {}
    for seed in range(3):
        anatomy[f"chest_{seed}"] = _write_log_att(tmp / f"chest_{seed}.dcm", chest_like(preset.xray_shape, seed),
                                                  preset.xray_pixel_mm * 1.6)
        anatomy[f"hand_{seed}"] = _write_log_att(tmp / f"hand_{seed}.dcm", hand_like(preset.xray_shape, seed),
                                                 preset.xray_pixel_mm * 0.6)
    categories["other anatomy (synthetic chest-like, hand-like)"] = anatomy
    processed = {}
    for path in test[:n_processed]:
        for name, p in processed_variants(path, tmp).items():
            processed[f"{path.parent.name}_{name}"] = p
    categories["processed / mis-windowed"] = processed
    real = real_knees(image, real_dir, tmp)
    if real:
        categories["real clinical knee radiographs"] = real
    from xray2mri.transforms.errors import XrayInputError

    result: dict = {"threshold": predictor.calibration.ood_threshold, "categories": {}}
    for category, files in categories.items():
        rows, rejected = {}, {}
        for name, path in files.items():
            try:
                knees = predictor.predict_knees(path)
            except XrayInputError as exc:  # refused before the network: no volume at all
                rejected[name] = exc.reason
                continue
            for pred in knees:
                rows[name if len(knees) == 1 else f"{name}_{pred.side or 'U'}"] = pred.ood
        flagged = sum(bool(r["ood_flag"]) for r in rows.values())
        if category.startswith("fresh synthetic"):  # is a flagged input one the model gets wrong?
            from xray2mri.pipeline.evaluation.uncertainty import spearman

            mae = fresh_errors(bundle, tmp / "fresh")
            flagged_mae = [mae[n] for n, r in rows.items() if r["ood_flag"] and n in mae]
            kept_mae = [mae[n] for n, r in rows.items() if not r["ood_flag"] and n in mae]
            result["fresh_mae"] = {
                "flagged_median": float(np.median(flagged_mae)) if flagged_mae else None,
                "not_flagged_median": float(np.median(kept_mae)) if kept_mae else None,
                "not_flagged_p95": float(np.quantile(kept_mae, 0.95)) if kept_mae else None,
                "spearman_score_vs_mae": spearman([rows[n]["ood_score"] for n in mae if n in rows],
                                                  [mae[n] for n in mae if n in rows]),
            }
            print("fresh subjects' MRI MAE:", json.dumps(result["fresh_mae"]))
        result["categories"][category] = {
            "inputs": len(files), "knees": len(rows), "flagged": flagged,
            "fraction_flagged": flagged / max(len(rows), 1),
            "fraction_flagged_ci95": clopper_pearson(flagged, len(rows)) if rows else None,
            "rejected_by_knee_finder": rejected,
            "scores": {k: r["ood_score"] for k, r in rows.items()},
        }
    return result


# ------------------------------------------------------------------------------------ estimators


def compare(bundle: Path, cohort: Path, specs: list[str]) -> dict:
    """Each ``WEIGHTS:DISTRIBUTION`` head: conformal factors fitted on validation, measured on test (same code)."""
    from xray2mri.pipeline.evaluation.uncertainty import spearman
    from xray2mri.pipeline.training.calibrate import fit_calibration, split_outputs

    datalist = cohort / "datalist.json"
    out = {}
    for spec in specs:
        weights, _, distribution = spec.rpartition(":")
        overrides = {"nll_distribution": distribution}
        t0 = time.perf_counter()
        val = split_outputs(bundle, datalist, cohort, "validation", weights, overrides)
        cal = fit_calibration(val, distribution=distribution)
        test = split_outputs(bundle, datalist, cohort, "test", weights, overrides)
        cover = {k: float(np.mean([float(((t - p).abs() <= cal.factors[k] * s).float().mean())
                                   for p, s, t in zip(test.predictions, test.sigmas, test.truths)]))
                 for k in ("80", "90", "95")}
        half = [float(cal.factors["90"] * s.mean()) for s in test.sigmas]
        mae = [float((t - p).abs().mean()) for p, t in zip(test.predictions, test.truths)]
        out[spec] = {"factors": cal.factors, "coverage": cover, "width_90": 2 * float(np.mean(half)),
                     "spearman": spearman(half, mae), "test_mae": float(np.mean(mae)),
                     "seconds": time.perf_counter() - t0}
        print(f"{spec}: coverage {cover}, width_90 {out[spec]['width_90']:.4f}, Spearman {out[spec]['spearman']:.3f}, "
              f"MAE {out[spec]['test_mae']:.4f}, k {cal.factors}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "knee_xray2mri")
    parser.add_argument("--cohort", type=Path, default=REPO / "data" / "synthetic_knee")
    parser.add_argument("--timing", action="store_true", help="time training step and prediction with/without")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--mc-samples", type=int, default=10, help="MC dropout passes compared (default 10)")
    parser.add_argument("--radiograph", type=Path, default=None, help="radiograph for the prediction timing")
    parser.add_argument("--ood", action="store_true", help="OOD scores per category")
    parser.add_argument("--processed", type=int, default=6, help="test radiographs to process for OOD (default 6)")
    parser.add_argument("--fresh", type=int, default=0,
                        help="also score this many NEW in-distribution radiographs from the cohort's generator (e.g. 300)")
    parser.add_argument("--real-image", type=Path, nargs="+", default=[],
                        help=f"local copies of the image files {REAL_CSV.name} names (matched by file name)")
    parser.add_argument("--real-dir", type=Path, default=None, help="folder of real knee radiographs (DICOM/PNG/JPEG)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="WEIGHTS:DISTRIBUTION",
                        help="uncertainty heads to compare (fit on validation, measure on test), e.g. "
                        "runs/a/checkpoints/checkpoint_best.pt:laplace runs/b/checkpoints/checkpoint_latest.pt:gaussian")
    parser.add_argument("--summary", type=Path, default=None, help="report summary.json to read coverage from")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_uncertainty_") as tmp:
        if args.summary:
            summary = json.loads(args.summary.read_text())
            results["report"] = {k: summary.get(k) for k in SUMMARY_NAMES}
            results["report"]["coverage_joint"] = summary.get("uncertainty", {}).get("coverage_joint")
            print("test split:", json.dumps(results["report"], indent=1))
        if args.compare:
            results["compare"] = compare(args.bundle, args.cohort, args.compare)
        if args.timing:
            results["timing"] = timing(args.bundle, args.rounds, args.mc_samples, args.radiograph, Path(tmp))
            print("timing:", json.dumps(results["timing"], indent=1))
        if args.ood:
            results["ood"] = ood(args.bundle, args.cohort, args.real_image, args.real_dir, Path(tmp), args.processed,
                                 args.fresh)
            print(f"OOD threshold {results['ood']['threshold']:.3f}")
            for category, res in results["ood"]["categories"].items():
                scores = list(res["scores"].values()) or [float("nan")]
                print(f"  {category:48s} inputs {res['inputs']:3d}, refused by the knee finder "
                      f"{len(res['rejected_by_knee_finder']):2d}; knees flagged {res['flagged']:3d} / {res['knees']:3d}  "
                      f"score median {np.median(scores):.3f} (min {min(scores):.3f}, max {max(scores):.3f})")
                lo, hi = res["fraction_flagged_ci95"] or (float("nan"),) * 2
                print(f"      flagged {100 * res['fraction_flagged']:.1f} % (95 % Clopper-Pearson {100 * lo:.1f}-{100 * hi:.1f} %)")
                for name, score in sorted(res["scores"].items()):
                    if not category.startswith(("synthetic test split", "fresh synthetic")) or res["scores"][name] > \
                            results["ood"]["threshold"]:
                        print(f"      {name:40s} {score:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
