"""Share a trained bundle: a versioned model-zoo zip that runs without this repository.

:func:`export_bundle` packs ``bundles/<name>/`` into ``<out_dir>/<name>_v<version>.zip`` in the
form the MONAI model zoo distributes, one top folder ``<name>/`` holding:

* ``configs/``: the bundle's configs, with ``bundle_root = "."`` (run from the unpacked folder)
  and every ``xray2mri.*`` name turned into the vendored ``scripts.*`` one;
* ``scripts/``: the runtime code the configs need, generated from the installed package by
  import closure (:mod:`~xray2mri.pipeline.serving.vendor`), so the bundle needs only the
  packages ``metadata.json`` lists (``required_packages_version``, computed from what that code
  imports, plus ``monai_version`` / ``pytorch_version`` / ``numpy_version``), never ``xray2mri``;
* ``models/``: the weights in three forms, each run on a fixed sample and checked against the
  checkpoint's output (``atol``/``rtol``) before anything is written:
  ``model.pt`` (the state dict ``inference.json`` loads with ``torch.load(weights_only=True)``),
  ``model.ts`` (TorchScript of the inference form, as ``monai.bundle ckpt_export`` makes it, with
  ``metadata.json`` and ``inference.json`` embedded) and ``model.pt2`` (:func:`torch.export.export`);
* ``models/uncertainty_calibration.json`` when the bundle has one (``xray2mri calibrate``; it belongs to
  the weights, so it is listed in ``large_files.yml`` with them);
* ``large_files.yml``: each weight file's path, URL (``weights_url`` + path, or a placeholder)
  and SHA-256, the zoo's format, so ``python -m monai.bundle download_large_files`` fetches and
  checks them;
* ``docs/`` (the model card, and ``data_license.txt`` saying what the weights were trained on)
  and ``LICENSE``.

``metadata.json`` gains ``files_sha256`` (every file of the bundle; checked by
:func:`~xray2mri.pipeline.serving.integrity.verify_bundle` before anything of it runs),
``training_data`` (cohort, splits, metrics) and ``eval_metrics`` from the last evaluation.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from xray2mri.pipeline.serving import vendor
from xray2mri.pipeline.serving.integrity import CHECKSUM_KEY, METADATA_FILE, bundle_checksums
from xray2mri.transforms.errors import InputError

__all__ = [
    "ExportCheckError",
    "TRAINING_DATA_KEY",
    "WEIGHT_FILES",
    "LARGE_FILES",
    "DATA_LICENSE",
    "training_data_description",
    "data_license_text",
    "large_files_yaml",
    "export_bundle",
]

logger = logging.getLogger(__name__)

#: metadata.json key holding the training data description (cohort, splits, metrics).
TRAINING_DATA_KEY: str = "training_data"
#: The weight files of an exported bundle, relative to its root.
WEIGHT_FILES: tuple[str, ...] = ("models/model.pt", "models/model.ts", "models/model.pt2")
#: The zoo's list of large files (path, url, hash), relative to the bundle root.
LARGE_FILES: str = "large_files.yml"
#: What the weights were trained on, relative to the bundle root.
DATA_LICENSE: str = "docs/data_license.txt"
#: URL written in large_files.yml when the export is given none: replace it where the weights are published.
URL_PLACEHOLDER: str = "https://REPLACE-WITH-WHERE-YOU-PUBLISH/{name}_v{version}/{path}"


class ExportCheckError(RuntimeError):
    """An exported form (TorchScript, torch.export) does not reproduce the checkpoint's output."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read JSON ({exc})") from exc


def _first(candidates: Sequence[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _metrics_csv(path: Path) -> dict[str, float]:
    """MONAI ``MetricsSaver``'s ``metrics.csv`` (``name<TAB>value`` per line) as a dict."""
    out: dict[str, float] = {}
    with open(path, newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) >= 2:
                try:
                    out[row[0].strip()] = float(row[1])
                except ValueError:
                    continue
    return out


def _splits(datalist: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    splits = {}
    for name in ("training", "validation", "test"):
        items = datalist.get(name) or []
        subjects = {str(i.get("subject")) for i in items if isinstance(i, Mapping) and i.get("subject") is not None}
        splits[name] = {"items": len(items), "subjects": len(subjects) or len(items)}
    return splits


def _summary_metrics(summary: Mapping[str, Any], method: str | None) -> tuple[str | None, dict[str, Any]]:
    """The report summary's statistics of ``method`` (else its headline model): ``(method, {metric: stats})``."""
    methods = summary.get("methods") or {}
    if method not in methods:
        method = (summary.get("quality_bar_headline") or {}).get("model")
    if method not in methods:
        return None, {}
    return method, dict(methods[method])


def training_data_description(
    bundle_dir: str | os.PathLike,
    run_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    summary: str | os.PathLike | None = None,
    metrics: Mapping[str, float] | None = None,
    cohort: str | None = None,
    method: str | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """What the model was trained and tested on, for the exported metadata.json.

    Sources, the explicit argument first, then what ``run_dir`` holds (the layout ``xray2mri
    demo`` writes), else the bundle's own metadata:

    * cohort: ``cohort``, else the datalist's ``description``, else metadata ``data_source``;
    * splits (items and subjects per split): ``datalist``, else ``run_dir/datalist.json``;
    * metrics: ``metrics``, then MONAI ``MetricsSaver``'s ``metrics.csv`` of
      ``run_dir`` / ``run_dir/eval_<variant>/`` / ``run_dir/eval*/`` (evaluate.json's output),
      then the report's ``summary.json`` (``summary``, ``run_dir/report/summary.json`` or
      ``run_dir/summary.json``; statistics of ``method``, else of ``variant``'s row as
      ``xray2mri demo`` names it, else of the report's headline model).

    ``variant`` is the network variant of the exported weights (default: train.json's); the demo
    evaluates both variants, in ``run_dir/eval_<variant>/``.

    Returns:
        ``{"cohort", "splits", "datalist", "variant", "metrics", "metrics_source", "report"}``
        (absent parts omitted).
    """
    bundle = Path(bundle_dir)
    run = Path(run_dir) if run_dir is not None else None
    metadata = _read_json(bundle / "configs" / "metadata.json")
    out: dict[str, Any] = {}

    dl_path = Path(datalist) if datalist is not None else (_first([run / "datalist.json"]) if run else None)
    dl = _read_json(dl_path) if dl_path is not None else {}
    out["cohort"] = cohort or dl.get("description") or metadata.get("data_source", "")
    if dl:
        out["splits"] = _splits(dl)
        out["datalist"] = dl_path.name

    found: dict[str, Any] = dict(metrics or {})
    sources = ["arguments"] if metrics else []
    if variant is None:
        try:
            from xray2mri.pipeline.training.engine import train_setting

            variant = train_setting(bundle, "variant")
        except Exception:  # the variant only refines which results are preferred
            variant = None
    if variant is not None:
        out["variant"] = variant
    if method is None and variant is not None:
        from xray2mri.pipeline.training.networks import VARIANT_NAMES

        method = VARIANT_NAMES.get(variant)
    if run is not None:
        evals = ([run / f"eval_{variant}" / "metrics.csv"] if variant else []) + [run / "metrics.csv"]
        evals += sorted(run.glob("eval*/metrics.csv"))
        csv_path = _first(evals)
        if csv_path is not None:
            for key, value in _metrics_csv(csv_path).items():
                found.setdefault(key, value)
            sources.append(csv_path.relative_to(run).as_posix())
    summary_path = Path(summary) if summary is not None else (
        _first([run / "report" / "summary.json", run / "summary.json"]) if run else None
    )
    if summary_path is not None:
        summ = _read_json(summary_path)
        chosen, stats = _summary_metrics(summ, method)
        if stats:
            out["report"] = {
                "method": chosen,
                "n_test_subjects": summ.get("n_test_subjects"),
                "synthetic_data": summ.get("synthetic_data"),
                "note": summ.get("note"),
                "statistics": stats,
            }
            for key, value in stats.items():
                if isinstance(value, Mapping) and "mean" in value:
                    found.setdefault(f"test_{key}_mean", value["mean"])
            sources.append(summary_path.name)
    if found:
        out["metrics"] = found
        out["metrics_source"] = sources
    return out


# --------------------------------------------------------------------------------------------
# export


def _state_dict(weights: Path) -> dict[str, torch.Tensor]:
    from xray2mri.pipeline.training.checkpoints import load_checkpoint, model_state

    try:
        return model_state(load_checkpoint(weights))
    except (ValueError, RuntimeError, EOFError, OSError) as exc:  # pickle / zip errors from torch.load
        raise InputError(weights, f"cannot read the network weights ({exc})") from exc


def _compare(name: str, expected: torch.Tensor, found: Any, atol: float, rtol: float) -> float:
    found = found["mri"] if isinstance(found, Mapping) else found
    if tuple(found.shape) != tuple(expected.shape):
        raise ExportCheckError(f"{name}: output shape {tuple(found.shape)}, checkpoint gives {tuple(expected.shape)}")
    diff = float((found.float() - expected.float()).abs().max())
    if not torch.allclose(found.float(), expected.float(), atol=atol, rtol=rtol):
        raise ExportCheckError(f"{name}: output differs from the checkpoint's by up to {diff:.3g} (atol {atol}, rtol {rtol})")
    return diff


def _rewrite_configs(configs: Path, overrides: Mapping[str, Any], scripts: Path) -> list[str]:
    """Exported configs: ``bundle_root = "."``, train.json ``overrides``, ``xray2mri.*`` -> vendored ``scripts.*``.

    Writes the vendored code to ``scripts`` (see :func:`~xray2mri.pipeline.serving.vendor.vendor_scripts`)
    and returns the vendored module names.
    """
    texts = {}
    for path in sorted(configs.glob("*.json")):
        if path.name == "metadata.json":
            continue
        cfg = json.loads(path.read_text())
        if isinstance(cfg, dict):
            if "bundle_root" in cfg:
                cfg["bundle_root"] = "."
            if path.name == "train.json":
                cfg.update(overrides)
        texts[path.name] = json.dumps(cfg, indent=4) + "\n"
    rewritten, modules = vendor.vendor_scripts(texts, scripts)
    for name, text in rewritten.items():
        (configs / name).write_text(text)
    return modules


def data_license_text(cohort: str, name: str, version: str) -> str:
    """``docs/data_license.txt``: what the weights were trained on and under which terms.

    ``cohort`` is the training datalist's description (``xray2mri synth`` and ``xray2mri manifest
    build --oai-root`` write one): a synthetic cohort needs no data licence; an OAI image
    release binds the weights to the OAI data use terms; anything else is the user's to state.
    """
    head = f"Training data of the {name} bundle, version {version}\n\nCohort: {cohort or '(not recorded)'}\n\n"
    if "OAI image release" in cohort:
        body = (
            "These weights were trained on images of the Osteoarthritis Initiative (OAI), imported with\n"
            "`xray2mri manifest build --oai-root`. The OAI data are distributed by the NIMH Data Archive under\n"
            "the OAI Data Use Agreement (https://nda.nih.gov/oai): whoever receives these weights must hold\n"
            "that agreement and follow its terms (no re-identification, acknowledgement of the OAI in\n"
            "publications, no redistribution of the images). The weights are shared for research only.\n"
        )
    elif "SYNTHETIC" in cohort.upper():
        body = (
            "These weights were trained on a SYNTHETIC cohort generated by xray2mri (tissue phantoms,\n"
            "rendered MRI and simulated radiographs): no patient data, so no data licence applies beyond\n"
            "the bundle's LICENSE. The outputs are synthetic images for research, not for clinical use.\n"
        )
    else:
        body = (
            "The training cohort is not one xray2mri made or imported (not a synthetic cohort, not an OAI\n"
            "import): state its source and the terms under which these weights may be shared here.\n"
        )
    return head + body


def large_files_yaml(checksums: Mapping[str, str], urls: Mapping[str, str]) -> str:
    """The zoo's ``large_files.yml``: per weight file its ``path``, ``url``, ``hash_val`` and ``hash_type: sha256``."""
    lines = ["large_files:"]
    for path in sorted(checksums):
        lines += [f'  - path: "{path}"', f'    url: "{urls[path]}"', f'    hash_val: "{checksums[path]}"',
                  '    hash_type: "sha256"']
    return "\n".join(lines) + "\n"


def _weight_urls(
    weights_url: str | None, name: str, version: str, files: Sequence[str] = WEIGHT_FILES
) -> dict[str, str]:
    """URL of each weight file: ``weights_url`` (a base URL or a local folder) + its path, else the placeholder."""
    if weights_url is None:
        return {key: URL_PLACEHOLDER.format(name=name, version=version, path=key) for key in files}
    base = weights_url
    if "://" not in base:  # a local folder
        base = Path(base).resolve().as_uri()
    return {key: base.rstrip("/") + "/" + key for key in files}


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("xray2mri", "monai", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def export_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    summary: str | os.PathLike | None = None,
    metrics: Mapping[str, float] | None = None,
    cohort: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    weights_url: str | None = None,
    calibration: str | os.PathLike | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> Path:
    """Write ``out_dir/<name>_v<version>.zip``: the bundle in model-zoo form, runnable without this repository.

    ``<name>`` is the bundle folder's name, ``<version>`` metadata.json's ``version``. See the
    module docstring for what the zip holds. The TorchScript and torch.export forms are run on a
    fixed random radiograph batch (1, 1, *xray_size) (``seed``) and must match the checkpoint's
    output within ``atol``/``rtol``. The zip is written atomically (a temporary name, then
    renamed): a failed export leaves no zip behind.

    Args:
        bundle_dir: the bundle folder (``configs/``, ``docs/``, ``LICENSE``, ``models/model.pt``).
        out_dir: where the zip goes (created).
        weights: the weights to export (a state dict or a checkpoint with a ``"model"``
            entry); default ``bundle_dir/models/model.pt``.
        run_dir, datalist, summary, metrics, cohort: the training data description, see
            :func:`training_data_description`; the cohort also decides ``docs/data_license.txt``.
        overrides: train.json ids to set in the exported train.json and when building the
            network (e.g. ``{"variant": "geometry"}`` for weights of the other variant).
        weights_url: where the weight files will be published (a base URL, or a local folder
            holding ``models/``), for ``large_files.yml``; default a placeholder to replace.
        calibration: the uncertainty calibration of these weights (``xray2mri calibrate``); default
            ``bundle_dir/models/uncertainty_calibration.json`` when it exists. Exported as
            ``models/uncertainty_calibration.json`` and checksummed like every file.
        atol, rtol: tolerance of the output checks.

    Returns:
        the zip's path.

    Raises:
        InputError: the bundle lacks metadata.json, LICENSE or weights, or the weights do not
            fit the network the configs build.
        ExportCheckError: an exported form does not reproduce the checkpoint's output.
        ModuleNotFoundError: the configs name code that is not installed.
    """
    from monai.networks.utils import convert_to_torchscript

    from xray2mri.pipeline.atomic import atomic_file
    from xray2mri.pipeline.serving.uncertainty import CALIBRATION_FILE, load_calibration
    from xray2mri.pipeline.training.engine import network_from_bundle, train_setting

    bundle = Path(bundle_dir)
    overrides = dict(overrides or {})
    meta_path = bundle / METADATA_FILE
    if not meta_path.is_file():
        raise InputError(meta_path, "no metadata.json; is this a bundle folder?")
    metadata = _read_json(meta_path)
    version = str(metadata.get("version", "")).strip()
    if not version:
        raise InputError(meta_path, "no 'version'; the zip is named <name>_v<version>.zip")
    if not (bundle / "LICENSE").is_file():
        raise InputError(bundle / "LICENSE", "missing; a shared bundle must carry its licence")
    weights_path = Path(weights) if weights is not None else bundle / "models" / "model.pt"
    if not weights_path.is_file():
        raise InputError(weights_path, "no weights to export; train the bundle first (train.json installs "
                                       "models/model.pt when it finishes) or `xray2mri bundle install-weights RUN_DIR`")

    state = _state_dict(weights_path)
    network = network_from_bundle(bundle, return_dict=False, **overrides)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(
            weights_path, f"weights do not fit the network train.json builds (wrong variant or sizes? {exc})"
        ) from exc
    network = network.eval()
    xray_size = overrides.get("xray_size") or train_setting(bundle, "xray_size")
    sample = torch.rand((1, 1, *[int(s) for s in xray_size]), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = network(sample)

    name = bundle.resolve().name
    out = Path(out_dir)
    zip_path = out / f"{name}_v{version}.zip"
    with tempfile.TemporaryDirectory(prefix=f".{name}_export.") as tmp:
        root = Path(tmp) / name
        shutil.copytree(bundle / "configs", root / "configs")
        if (bundle / "docs").is_dir():
            shutil.copytree(bundle / "docs", root / "docs")
        shutil.copy2(bundle / "LICENSE", root / "LICENSE")
        vendored = _rewrite_configs(root / "configs", overrides, root / "scripts")
        models = root / "models"
        models.mkdir()
        torch.save(state, models / "model.pt")
        calibration_path = Path(calibration) if calibration is not None else bundle / CALIBRATION_FILE
        if calibration is not None or calibration_path.is_file():
            load_calibration(calibration_path)  # a readable calibration, or InputError naming the file
            shutil.copy2(calibration_path, root / CALIBRATION_FILE)

        embedded = {
            "metadata.json": json.dumps(metadata).encode(),
            "inference.json": (root / "configs" / "inference.json").read_bytes(),
        }
        scripted = convert_to_torchscript(network, filename_or_obj=str(models / "model.ts"), extra_files=embedded)
        del scripted
        program = torch.export.export(network, (sample,))
        torch.export.save(program, str(models / "model.pt2"))

        checks = {}
        with torch.no_grad():
            checks["model.ts"] = _compare("model.ts", expected, torch.jit.load(str(models / "model.ts"))(sample), atol, rtol)
            loaded = torch.export.load(str(models / "model.pt2")).module()
            checks["model.pt2"] = _compare("model.pt2", expected, loaded(sample), atol, rtol)
            reloaded = network_from_bundle(bundle, return_dict=False, **overrides)
            reloaded.load_state_dict(torch.load(models / "model.pt", map_location="cpu", weights_only=True))
            checks["model.pt"] = _compare("model.pt", expected, reloaded.eval()(sample), atol, rtol)

        description = training_data_description(
            bundle, run_dir=run_dir, datalist=datalist, summary=summary, metrics=metrics, cohort=cohort,
            variant=overrides.get("variant"),
        )
        (root / DATA_LICENSE).parent.mkdir(exist_ok=True)
        (root / DATA_LICENSE).write_text(data_license_text(str(description.get("cohort", "")), name, version))
        weight_sums = bundle_checksums(root)
        large = [*WEIGHT_FILES, *([CALIBRATION_FILE] if (root / CALIBRATION_FILE).is_file() else [])]
        (root / LARGE_FILES).write_text(
            # the uncertainty calibration belongs to these weights: published and fetched with them
            large_files_yaml({k: weight_sums[k] for k in large}, _weight_urls(weights_url, name, version, large))
        )

        required, versions = vendor.required_packages(vendor.import_closure(vendored)[1])
        metadata["required_packages_version"] = required
        metadata.update(versions)
        metadata[TRAINING_DATA_KEY] = description
        if description.get("metrics"):
            metadata["eval_metrics"] = {**metadata.get("eval_metrics", {}), **description["metrics"]}
        metadata["export"] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "packages": _package_versions(),
            "scripts": f"vendored from the installed xray2mri: {len(vendored)} modules",
            "sample_input_shape": list(sample.shape),
            "max_abs_diff_vs_checkpoint": checks,
            "torch_export_note": "model.pt2 is exported for a batch of 1 (static shapes)",
        }
        metadata.pop("weights_sha256", None)
        metadata[CHECKSUM_KEY] = bundle_checksums(root)
        (root / METADATA_FILE).write_text(json.dumps(metadata, indent=4) + "\n")

        with atomic_file(zip_path) as tmp_zip:
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(p for p in root.rglob("*") if p.is_file()):
                    zf.write(path, path.relative_to(root.parent).as_posix())
    return zip_path
