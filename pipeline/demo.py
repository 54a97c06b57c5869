"""The main job end to end on the built-in synthetic cohort: make data, train, evaluate, report, predict.

Every step runs the real interface a user would run (``xray2mri synth``, ``python -m monai.bundle run``
with the bundle's configs, ``xray2mri report``, ``xray2mri predict``), so the demo is also the
integration test of the whole pipeline. Steps whose outputs already exist are reused (the cohort);
everything else is rewritten under ``out_dir``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xray2mri.pipeline.data import manifests
from xray2mri.pipeline.evaluation.run import (
    StepError,
    bundle_command,
    run_evaluate_json,
    run_step,
)
from xray2mri.pipeline.training.variants import VARIANT_NAMES

#: The demo's quality bar: a property of the demo (its cohort, sizes and training), kept as data.
DEMO_CRITERIA: Path = Path(__file__).resolve().parent / "demo_quality_bar.json"
#: summary.json metrics printed at the end (see xray2mri.pipeline.evaluation.summary).
HEADLINE_METRICS: tuple[str, ...] = ("psnr_db", "psnr_slice_db", "ssim3d", "mae", "mri_jsw_abs_err_mm",
                                      "jsw_abs_err_mm", "cartilage_thickness_abs_err_mm")
#: summary.json entries of the uncertainty map printed at the end (:mod:`xray2mri.pipeline.evaluation.uncertainty`).
UNCERTAINTY_METRICS: tuple[str, ...] = ("uncertainty_coverage_80", "uncertainty_coverage_90", "uncertainty_coverage_95",
                                        "uncertainty_width_90", "uncertainty_error_spearman")


@dataclass
class DemoSettings:
    """What the demo makes and how long it trains; the defaults are the documented ``make demo``.

    ``bundle_overrides`` are extra ``--key value`` pairs for every bundle run (tests use them to
    shrink sizes); sizes themselves live in the bundle's train.json, not here.
    """

    bundle: Path = Path("bundles/knee_xray2mri")
    cohort: Path = Path("data/synthetic_knee")
    datalist: Path = Path("data_manifests/synthetic_knee.json")
    out_dir: Path = Path("runs/demo")
    subjects: int = 200
    seed: int = 2026
    preset: str = "demo"
    #: 28 epochs fit ``make demo`` in its 20 minutes on a 2-core CPU (40 took 25 min; validation PSNR 25.54 dB
    #: at 30 epochs against 25.71 at 40, README "Results of an actual make demo run").
    epochs: int = 28
    #: Validation (and the best checkpoint, whose weights are installed) every ``val_interval`` epochs; it
    #: must divide ``epochs``, so the end of the learning-rate schedule is validated.
    val_interval: int = 7
    #: Network variants to train and compare; None: only the one the bundle declares (train.json
    #: ``variant``), which keeps ``make demo`` in its time budget. ``VARIANTS`` adds the paper's form
    #: for the comparison table (``xray2mri demo --variants bottleneck geometry``).
    variants: tuple[str, ...] | None = None
    predict_count: int = 3
    #: Held-out radiographs of the cohort's population (the subjects after its last one; no MRI is read)
    #: that join the 30 validation radiographs for the OOD threshold: from 99 scores on it is their
    #: conformal 99th percentile (with 100, their highest). Made once beside the cohort,
    #: ``<cohort>_ood_calibration/``; 70 keep ``make demo`` in its time budget (200 cost ~100 s more).
    ood_calibration_subjects: int = 70
    workers: int | None = None
    criteria: Path = DEMO_CRITERIA
    bundle_overrides: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.val_interval < 1:
            raise ValueError(f"epochs ({self.epochs}) and val_interval ({self.val_interval}) must be at least 1")
        if self.epochs % self.val_interval:
            raise ValueError(
                f"the demo validates every val_interval ({self.val_interval}) epochs and installs the best validated "
                f"weights: epochs ({self.epochs}) must be a positive multiple of it, or the last "
                f"{self.epochs % self.val_interval} epochs are never validated"
            )


class DemoError(StepError):
    """A demo step failed; the message names the step and the command to re-run it."""


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _run(step: str, cmd: Sequence[object], log: Path | None = None) -> None:
    """Run one step's command (:func:`~xray2mri.pipeline.evaluation.run.run_step`), its lines prefixed ``[demo]``."""
    run_step(step, cmd, log=log, say=_say)


def _bundle_cmd(settings: DemoSettings, configs: Sequence[str], overrides: dict[str, object]) -> list[str]:
    return bundle_command(settings.bundle, configs, {**settings.bundle_overrides, **overrides})


def make_cohort(settings: DemoSettings) -> None:
    """Generate the synthetic cohort unless the same one (same datalist, same generator version) is already there."""
    from xray2mri.pipeline.data.synth.cohort import GENERATOR_VERSION

    datalist = settings.cohort / "datalist.json"
    info = settings.cohort / "cohort.json"
    made_by = json.loads(info.read_text()).get("generator_version", 1) if info.is_file() else None
    if datalist.exists() and made_by == GENERATOR_VERSION:
        _say(f"cohort: reusing {settings.cohort} (delete it to regenerate)")
    else:
        if datalist.exists():
            _say(f"cohort: {settings.cohort} was made by generator version {made_by}, this is {GENERATOR_VERSION}: "
                 "regenerating")
        cmd = [sys.executable, "-m", "xray2mri.pipeline.cli", "synth", "--out", settings.cohort,
               "--subjects", settings.subjects, "--seed", settings.seed, "--preset", settings.preset]
        if settings.workers:
            cmd += ["--workers", settings.workers]
        _run("cohort", cmd)
    if settings.datalist.exists() and settings.datalist.read_bytes() != datalist.read_bytes():
        raise DemoError(
            f"{datalist} differs from the committed {settings.datalist}: the cohort was made with other "
            f"settings; delete {settings.cohort} and re-run"
        )


def train(settings: DemoSettings, variant: str) -> Path:
    """Train one network variant with the bundle's train.json; returns its run folder.

    train.json installs the best weights as the bundle's ``models/model.pt`` when it finishes;
    only the variant the bundle declares may (inference.json builds that one), unless
    ``settings.bundle_overrides`` says otherwise (``install_weights: false``, e.g. extra seeds).
    """
    from xray2mri.pipeline.training.engine import train_setting

    run_dir = settings.out_dir / f"train_{variant}"
    run_dir.mkdir(parents=True, exist_ok=True)
    _run(
        f"train ({VARIANT_NAMES[variant]})",
        _bundle_cmd(
            settings,
            ["train.json"],
            {"dataset_dir": str(settings.cohort), "datalist": str(settings.cohort / "datalist.json"),
             "output_dir": str(run_dir), "variant": variant, "epochs": settings.epochs,
             "val_interval": settings.val_interval,
             "install_weights": variant == train_setting(settings.bundle, "variant")
             and settings.bundle_overrides.get("install_weights", True)},
        ),
        log=run_dir / "train.log",
    )
    return run_dir


def ood_calibration_radiographs(settings: DemoSettings) -> Path | None:
    """The held-out radiographs for the OOD threshold (:attr:`DemoSettings.ood_calibration_subjects` subjects after
    the cohort's last), made once into ``<cohort>_ood_calibration/``; None when none are asked for."""
    n = settings.ood_calibration_subjects
    if n <= 0:
        return None
    folder = settings.cohort.with_name(f"{settings.cohort.name}_ood_calibration")
    stamp = folder / "held_out.json"
    from xray2mri.pipeline.data.synth.cohort import GENERATOR_VERSION, generate_subjects

    wanted = {"synthetic": True, "seed": settings.seed, "preset": settings.preset,
              "indices": [settings.subjects, settings.subjects + n], "generator_version": GENERATOR_VERSION}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        _say(f"OOD calibration radiographs: reusing {folder}")
        return folder
    _say(f"OOD calibration radiographs: {n} held-out SYNTHETIC subjects -> {folder}")
    if folder.exists():
        shutil.rmtree(folder)
    generate_subjects(folder, range(settings.subjects, settings.subjects + n), settings.seed, settings.preset,
                      settings.workers, progress=False)
    stamp.write_text(json.dumps(wanted) + "\n")
    return folder


def calibrate(settings: DemoSettings) -> None:
    """Fit the installed model's uncertainty calibration on the cohort's validation split (``xray2mri calibrate``),
    its OOD threshold with the held-out radiographs too (:func:`ood_calibration_radiographs`).

    Writes ``models/uncertainty_calibration.json`` beside ``models/model.pt``; the report measures it on the test split.
    """
    cmd: list[object] = [sys.executable, "-m", "xray2mri.pipeline.cli", "calibrate", "--bundle", settings.bundle,
                         "--datalist", settings.cohort / "datalist.json", "--base-dir", settings.cohort]
    held_out = ood_calibration_radiographs(settings)
    if held_out is not None:
        cmd += ["--ood-radiographs", held_out]
    for key, value in settings.bundle_overrides.items():
        cmd += ["--override", key, json.dumps(value)]
    _run("calibrate uncertainty (validation split)", cmd, log=settings.out_dir / "calibrate.log")


def evaluate(settings: DemoSettings, variant: str, weights: Path) -> Path:
    """Run evaluate.json on the test split with the given weights; returns its output folder."""
    return run_evaluate_json(
        settings.bundle, settings.cohort / "datalist.json", settings.cohort, settings.out_dir / f"eval_{variant}",
        weights=weights, overrides={**settings.bundle_overrides, "variant": variant},
        log=settings.out_dir / f"eval_{variant}.log", step=f"evaluate ({VARIANT_NAMES[variant]})", say=_say,
    )


def report(settings: DemoSettings, predictions: Sequence[str], out: Path, *extra: object) -> dict:
    """``xray2mri report`` of ``NAME=FOLDER`` predictions on the cohort's test split, judged on the demo's
    quality bar (``settings.criteria``); returns its summary."""
    _run(
        "report",
        [sys.executable, "-m", "xray2mri.pipeline.cli", "report", "--datalist", settings.cohort / "datalist.json",
         "--base-dir", settings.cohort, "--predictions", *predictions, "--bundle", settings.bundle,
         "--out", out, "--criteria", settings.criteria, *extra],
    )
    return json.loads((out / "summary.json").read_text())


def best_checkpoint(run_dir: Path) -> Path:
    """The best-by-validation weights a training run wrote."""
    from xray2mri.pipeline.training.checkpoints import BEST_NAME

    path = run_dir / "checkpoints" / BEST_NAME
    if not path.exists():
        raise DemoError(f"training in {run_dir} wrote no best checkpoint ({path})")
    return path


#: train.json settings that shape the installed network: the demo's calibrate and predict steps (and every
#: later use of the bundle) build it from train.json itself, so an ``--override`` of them would install
#: weights that the bundle cannot load.
ARCHITECTURE_SETTINGS: tuple[str, ...] = ("tissue_weight", "tissue_classes", "uncertainty", "uncertainty_channels",
                                          "joint_weight", "joint_classes", "joint_box", "joint_shape")


def run_demo(settings: DemoSettings) -> dict:
    """Run every step; returns the report's summary (also written to ``out_dir/report/summary.json``).

    Raises:
        DemoError: a step failed, or an override of :data:`ARCHITECTURE_SETTINGS` (set them in train.json).
    """
    shaping = sorted(set(settings.bundle_overrides) & set(ARCHITECTURE_SETTINGS))
    if shaping:
        raise DemoError(f"--override {', '.join(shaping)}: these shape the network the bundle installs and serves; "
                        f"set them in {settings.bundle / 'configs' / 'train.json'} instead (or in a copy of the bundle)")
    start = time.perf_counter()
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    make_cohort(settings)

    from xray2mri.pipeline.training.engine import train_setting

    declared = train_setting(settings.bundle, "variant")
    weights: dict[str, Path] = {}
    for variant in settings.variants or (declared,):
        weights[variant] = best_checkpoint(train(settings, variant))
    if declared in weights and settings.bundle_overrides.get("install_weights", True) and _uncertainty(settings):
        calibrate(settings)
    eval_dirs = {v: evaluate(settings, v, w) for v, w in weights.items()}

    predictions = [f"{VARIANT_NAMES[v]}={d / 'predictions'}" for v, d in eval_dirs.items()]
    extra: list[object] = ["--train-log", settings.out_dir]
    if declared in weights and _uncertainty(settings):
        extra += ["--uncertainty-model", VARIANT_NAMES[declared]]
    summary = report(settings, predictions, settings.out_dir / "report", *extra)

    # models/model.pt must match the variant the bundle's configs declare (inference.json reads it
    # from train.json): training installed that variant's weights.
    if declared not in weights:
        _say(f"the bundle declares variant {declared!r}, which this demo did not train: nothing installed")
        _print_headline(summary, settings)
        return summary
    _say(f"installed {VARIANT_NAMES[declared]} as {settings.bundle / 'models' / 'model.pt'} (train.json does it when it finishes)")

    test_items = manifests.load_datalist(settings.cohort / "datalist.json", "test", settings.cohort)
    inputs = settings.out_dir / "predict_inputs"
    inputs.mkdir(exist_ok=True)
    for item in test_items[: settings.predict_count]:
        link = inputs / Path(item["xray"]).name
        if not link.exists():
            link.symlink_to(Path(item["xray"]).resolve())
    _run(
        "predict",
        [sys.executable, "-m", "xray2mri.pipeline.cli", "predict", "--bundle", settings.bundle, "--input", inputs,
         "--output", settings.out_dir / "predict"],
    )
    _say(f"all steps done in {(time.perf_counter() - start) / 60:.1f} min")
    _print_headline(summary, settings)
    return summary


def _uncertainty(settings: DemoSettings) -> bool:
    """Whether the bundle's network has the uncertainty head (train.json ``uncertainty``, or an override)."""
    from xray2mri.pipeline.training.engine import train_setting

    return bool(settings.bundle_overrides.get("uncertainty", train_setting(settings.bundle, "uncertainty")))


def _mean(stat: dict) -> str:
    value = stat.get("mean")
    return "n/a" if value is None else f"{value:.3f}"


def _print_headline(summary: dict, settings: DemoSettings) -> None:
    methods = summary.get("methods", {})
    _say("test split, mean over subjects (MRI normalised to [0, 1], data_range = 1):")
    for name, stats in methods.items():
        # summary.json stores a mean without any finite subject value (e.g. no joint band found) as null
        cells = [f"{m} {_mean(stats[m])}" for m in HEADLINE_METRICS if m in stats]
        _say(f"  {name:28s} " + "  ".join(cells))
    unc = [f"{m.removeprefix('uncertainty_')} {summary[m]:.3f}" for m in UNCERTAINTY_METRICS
           if isinstance(summary.get(m), float)]
    if unc:
        _say("  uncertainty map (test split, calibrated on validation): " + "  ".join(unc))
    bar = summary.get("quality_bar_headline")
    if bar:
        verdict = "PASS" if bar.get("passed") else "NOT MET"
        _say(f"quality bar for {bar.get('model')}: {verdict} ({bar.get('rule')}; details in the report)")
        from xray2mri.pipeline.evaluation.summary import noisy_criteria

        noisy = noisy_criteria(summary.get("quality_bar", {}).get(bar.get("model"), {}))
        if noisy:
            _say("  within the noise of the test split (95 % paired-bootstrap interval of the margin contains 0): "
                 + "; ".join(noisy))
    _say(f"report: {settings.out_dir / 'report' / 'report.md'}")
