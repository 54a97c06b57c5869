"""The evaluation report: measure models and baselines, summarise, draw, write one folder atomically.

It composes the evaluation's modules, one job each: :mod:`.inputs` (datalist splits through the
bundle's preprocessing, predictions, training log, what the data are), :mod:`.measure` (one row per
subject and method), :mod:`.summary` (means, BCa bootstrap intervals, per-grade figures, the quality
bar judged on criteria given as data), :mod:`.figures` and :mod:`.markdown`. :func:`build_report`
does it from arrays (tests and the commands share it); :func:`report_from_files` from a datalist, a
cohort folder, prediction folders and the bundle (``xray2mri report`` and ``xray2mri evaluate``).
:func:`write_report` writes the folder under a temporary name next to it, then renames it: a failure
leaves no partial report and keeps an older one.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from xray2mri.pipeline.atomic import atomic_folder
from xray2mri.pipeline.data.synth.phantom import true_readings
from xray2mri.pipeline.evaluation import clinical
from xray2mri.pipeline.evaluation import metrics as M
from xray2mri.pipeline.evaluation import readings as RD
from xray2mri.pipeline.evaluation.baselines import Baselines, baseline_methods
from xray2mri.pipeline.evaluation.figures import grade_distributions, montage, training_curves
from xray2mri.pipeline.evaluation.inputs import (
    bundle_preprocessing,
    describe_data,
    load_cases,
    load_split,
    prediction_reader,
    read_legend,
    read_meta,
    read_training_log,
)
from xray2mri.pipeline.evaluation.markdown import render
from xray2mri.pipeline.evaluation.measure import Case, Method, evaluate_cases
from xray2mri.pipeline.evaluation.radiographic import RADIOGRAPHIC_NAME, RadiographicJsw
from xray2mri.pipeline.evaluation.readings_report import bland_altman, readings_section
from xray2mri.pipeline.evaluation.summary import (
    SYNTHETIC_COHORT,
    BarCriteria,
    bar_headline,
    quality_bar,
    summarize,
    summarize_rows,
)
from xray2mri.pipeline.evaluation.uncertainty import uncertainty_section
from xray2mri.pipeline.version import package_version

__all__ = ["ReportInputs", "build_report", "write_report", "report_from_files"]


@dataclass
class ReportInputs:
    """Everything :func:`build_report` needs, all in the canonical space.

    ``legend`` (tissue name -> label id) is ``None`` for a cohort without label maps; ``data`` says
    what the data are (:func:`~.inputs.describe_data`; default the synthetic cohort). ``train_labels``
    (the training label maps, ``None`` for a subject without one; empty: none loaded) give the
    baselines' tissue maps and the radiographic reading's calibration, whose target is the generator's
    truth (``train_readings_truth``, same order) where a subject has it, else its label map's readings.
    ``calibration`` is the bundle's uncertainty calibration (:mod:`.uncertainty` measures its coverage), or ``None``.
    """

    cases: list[Case]
    train_xrays: list[np.ndarray]
    train_mris: list[np.ndarray]
    train_ids: list[str]
    legend: dict[str, int] | None
    spacing: tuple[float, float, float]
    xray_spacing: tuple[float, float] | None = None
    data: dict[str, Any] = field(default_factory=lambda: dict(SYNTHETIC_COHORT))
    extra: dict[str, Any] = field(default_factory=dict)
    train_labels: list[np.ndarray | None] = field(default_factory=list)
    train_readings_truth: list[dict[str, float] | None] = field(default_factory=list)
    calibration: Any = None
    train_joint: list[np.ndarray | None] = field(default_factory=list)
    joint_spacing: tuple[float, float, float] | None = None


def _readings(
    inputs: ReportInputs, baselines: Baselines, predictions: Mapping[str, str | os.PathLike], n_boot: int, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The clinical readings' rows and summary (:mod:`.clinical`); nothing without label maps.

    With the joint-region head's targets (``Case.joint``, ``joint_spacing``) every method is read on the joint
    box (models: their ``_joint_probs`` files; baselines: the training cases' class fractions there), else on
    the whole-volume label maps (models: their tissue head's files).
    """
    if not inputs.legend or not any(c.labels is not None for c in inputs.cases):
        return [], {}
    legend = inputs.legend
    joint = inputs.joint_spacing is not None and any(c.joint is not None for c in inputs.cases)
    cases, spacing, train_maps = inputs.cases, inputs.spacing, inputs.train_labels
    if joint:
        cases = [replace(c, labels=c.joint) for c in inputs.cases if c.joint is not None]
        spacing, train_maps = inputs.joint_spacing, inputs.train_joint
    suffixes = clinical.JOINT_SUFFIXES if joint else clinical.TISSUE_SUFFIXES
    tissue: dict[str, clinical.TissueMethod] = {
        n: clinical.tissue_prediction_reader(p, suffixes) for n, p in predictions.items()
    }
    jsw_readers = {}
    if train_maps and any(lab is not None for lab in train_maps):
        tissue.update(clinical.tissue_baselines(baselines, train_maps, legend))
        if inputs.xray_spacing is not None:
            known = inputs.train_readings_truth or [None] * len(train_maps)
            xrays, truths = [], []
            for x, lab, known_truth in zip(inputs.train_xrays, train_maps, known):
                if known_truth is None and lab is None:
                    continue
                r = known_truth or RD.read_tissue_map(lab, spacing, tissue_legend=legend)
                xrays.append(x)
                truths.append({c: r[f"jsw_{c}_mm"] for c in ("medial", "lateral")})
            rad = RadiographicJsw(inputs.xray_spacing).fit(xrays, truths)
            jsw_readers[RADIOGRAPHIC_NAME] = lambda case: rad(case.xray)
    isotropic = len({round(float(v), 6) for v in spacing}) == 1  # the whole-volume DRR needs isotropic voxels
    rows = clinical.measure_readings(
        cases, tissue, legend, spacing, jsw_readers, inputs.xray_spacing if isotropic or joint else None
    )
    out = clinical.summarize_readings(rows, lambda v: summarize(v, n_boot=n_boot, seed=seed))
    grid = RD.grid_text(spacing)
    out["map"] = (f"joint-region box {'x'.join(str(n) for n in np.shape(cases[0].labels)[-3:])}, {grid} "
                  f"(the joint-region head's)" if joint else f"whole volume, {grid}")
    return rows, out


def build_report(
    inputs: ReportInputs,
    predictions: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    train_log: str | os.PathLike | None = None,
    criteria: BarCriteria | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    n_montage: int = 3,
    jsw_kwargs: Mapping[str, Any] | None = None,
    ssim_win_size: int = M.SSIM_WIN_SIZE,
    progress: bool = False,
    uncertainty_model: str | None = None,
) -> dict[str, Any]:
    """Measure the models in ``predictions`` (name -> predictions folder) and both baselines on
    ``inputs.cases``, judge the models on ``criteria`` (:func:`~.summary.load_criteria`; none: no quality bar), then write the report
    folder. ``uncertainty_model`` names the model the bundle's uncertainty calibration belongs to
    (:func:`~.uncertainty.uncertainty_section`). Returns the summary dict."""
    baselines = Baselines([x[None] for x in inputs.train_xrays], inputs.train_mris, inputs.train_ids)
    methods: dict[str, Method] = {name: prediction_reader(p) for name, p in predictions.items()}
    methods.update(baseline_methods(baselines))
    rows = evaluate_cases(
        inputs.cases, methods, inputs.legend, inputs.spacing, jsw_kwargs, ssim_win_size, progress=progress
    )
    summary = summarize_rows(
        rows, list(predictions), criteria.criteria if criteria else (), seed=seed, n_boot=n_boot, data=inputs.data
    )
    reading_rows, reading_summary = _readings(inputs, baselines, predictions, n_boot, seed)
    if reading_rows:
        for name, values in reading_summary["methods"].items():
            if name in summary["methods"]:
                summary["methods"][name].update(values)
        summary["readings"] = reading_summary
        summary["definitions"].update(clinical.DEFINITIONS)
        rows = clinical.merge_rows(rows, reading_rows)
        if criteria and any(c.metric in clinical.BAR_READINGS for c in criteria.criteria):  # judged with the readings
            summary["quality_bar"] = quality_bar(summary["methods"], list(predictions), criteria.criteria, rows,
                                                 n_boot=n_boot, seed=seed)
            summary["quality_bar_headline"] = bar_headline(summary, list(predictions), True)
    if criteria:
        summary["quality_bar_name"] = criteria.name
    summary["xray2mri_version"] = package_version()
    word = "synthetic data" if inputs.data.get("synthetic") else "acquired data"
    curves, log_note = read_training_log(train_log)
    makers: dict[str, tuple[str, Callable[[Path], None]]] = {}
    subjects = [c.subject for c in inputs.cases]
    for case in inputs.cases[:n_montage]:
        preds = {name: methods[name](case) for name in methods}
        # a subject with several knees or visits: each montage named by its case
        stem = case.subject if subjects.count(case.subject) == 1 else "_".join(
            str(p) for p in (case.subject, case.visit, case.side) if p)
        makers[f"Montage: {stem.replace('_', ' ')} (KL {case.grade}, {case.side} knee)"] = (
            f"figures/montage_{stem}.png",
            lambda path, c=case, p=preds: montage(path, c, p, inputs.legend, inputs.spacing, word),
        )
    makers["Metric distributions per grade"] = (
        "figures/metrics_by_grade.png",
        lambda path: grade_distributions(path, rows, list(methods), word),
    )
    if reading_rows:
        makers["Clinical readings: Bland-Altman against the reference"] = (
            "figures/readings_bland_altman.png",
            lambda path: bland_altman(path, rows, word),
        )
    if curves:
        makers["Training curves"] = (
            "figures/training_curves.png",
            lambda path: training_curves(path, curves, word),
        )
    unc_entries, unc_makers, unc_markdown = uncertainty_section(
        inputs.cases, predictions, inputs.calibration, inputs.legend, inputs.spacing, word, uncertainty_model)
    summary.update(unc_entries)
    makers.update(unc_makers)
    sections = list(readings_section(summary)) if reading_rows else []
    if unc_markdown:  # the uncertainty section, its figures linked
        sections += [unc_markdown, *(f"![{t}]({rel})\n" for t, (rel, _) in unc_makers.items())]
    write_report(out_dir, rows, summary, makers, log_note, list(predictions), inputs.legend, sections=sections)
    return summary


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    first = ["subject", "grade", "side", "method"]  # then visit and the metrics, sorted
    keys = first + sorted({k for r in rows for k in r} - set(first) - {"note"}) + ["note"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_report(
    out_dir: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    figure_makers: Mapping[str, tuple[str, Callable[[Path], None]]],
    log_note: str,
    model_names: Sequence[str],
    legend: Mapping[str, int] | None,
    sections: Sequence[str] = (),
) -> Path:
    """Write ``metrics_per_subject.csv``, ``summary.json``, ``figures/*.png`` and ``report.md`` atomically.

    ``figure_makers`` maps a title to ``(relative png path, function(path))``; a figure function may
    decline by not creating the file (the report then leaves it out). ``sections`` (markdown lines) are
    appended to ``report.md``.
    """
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        (tmp / "figures").mkdir()
        _write_csv(rows, tmp / "metrics_per_subject.csv")
        with open(tmp / "summary.json", "w") as f:
            json.dump(_json_safe(summary), f, indent=2)
        written = {}
        for title, (rel, make) in figure_makers.items():
            make(tmp / rel)
            if (tmp / rel).is_file():
                written[title] = rel
        text = render(summary, written, log_note, model_names, legend)
        (tmp / "report.md").write_text(text + ("\n" + "\n".join(sections) + "\n" if sections else ""))
    return out_dir / "report.md"


def _readings_truth(rec: Mapping[str, Any]) -> dict[str, float] | None:
    """The generator's truth of a loaded split item's readings (its meta JSON), or ``None``."""
    meta = read_meta(rec["mri_path"], str(rec["subject"])) if rec.get("mri_path") else None
    return true_readings(meta["params"]) if meta and meta.get("params") else None


def report_from_files(
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    predictions: Mapping[str, str | os.PathLike],
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_log: str | os.PathLike | None = None,
    split: str = "test",
    configs: Sequence[str] = (),
    progress: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """The whole evaluation from a datalist, a cohort folder, prediction folders and the bundle.

    The training split (for the baselines) and ``split`` (the cases) go through the bundle's own
    preprocessing (:func:`~.inputs.bundle_preprocessing`, with ``configs`` laid over train.json and
    evaluate.json); ``progress`` shows bars (stderr) while loading and measuring; ``kwargs`` go to :func:`build_report` (``criteria``, ``seed``, ``n_montage`` ...).
    """
    preprocess, sizes = bundle_preprocessing(bundle_dir, configs=configs)
    train = load_split(datalist, base_dir, "training", preprocess, keys=("xray", "mri"),
                       optional_keys=("labels", "joint_labels"), progress=progress)
    cases = load_cases(datalist, base_dir, preprocess, split, progress=progress)
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(sizes["mri_spacing"], float), (3,)))
    inputs = ReportInputs(
        cases=cases,
        train_xrays=[r["xray"].squeeze(0) for r in train],
        train_mris=[r["mri"].squeeze(0) for r in train],
        train_ids=[str(r["subject"]) for r in train],
        train_labels=[
            None if r.get("labels") is None else np.rint(r["labels"].squeeze(0)).astype(np.int16) for r in train
        ],
        train_readings_truth=[_readings_truth(r) for r in train],
        legend=read_legend(base_dir) if any(c.labels is not None for c in cases) else None,
        spacing=spacing,  # type: ignore[arg-type]
        xray_spacing=tuple(float(s) for s in np.broadcast_to(np.asarray(sizes["xray_spacing"], float), (2,))),  # type: ignore[arg-type]
        data=describe_data(datalist, base_dir, split),
        calibration=_bundle_calibration(bundle_dir),
        train_joint=[r.get("joint_labels") for r in train],
        joint_spacing=tuple(float(v) for v in sizes["joint_spacing"]) if "joint_spacing" in sizes else None,  # type: ignore[arg-type]
    )
    return build_report(inputs, predictions, out_dir, train_log=train_log, progress=progress, **kwargs)


def _bundle_calibration(bundle_dir: str | os.PathLike) -> Any:
    """The bundle's uncertainty calibration (``models/uncertainty_calibration.json``), or None when absent."""
    from xray2mri.pipeline.serving.uncertainty import CALIBRATION_FILE, load_calibration

    path = Path(bundle_dir) / CALIBRATION_FILE
    return load_calibration(path) if path.is_file() else None
