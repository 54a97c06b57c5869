"""Share a trained bundle: a versioned model-zoo zip, and the checksum check made where weights load.

:func:`export_bundle` packs ``bundles/<name>/`` into ``<out_dir>/<name>_v<version>.zip`` in the
form the MONAI model zoo distributes (one top folder ``<name>/`` holding ``configs/``, ``docs/``,
``LICENSE`` and ``models/``), with the weights in three forms:

* ``models/model.pt``: the network's state dict (what ``inference.json`` loads, with
  ``torch.load(weights_only=True)``);
* ``models/model.ts``: TorchScript of the inference form (``return_dict=False``: radiograph
  batch in, MRI batch out), made with MONAI's :func:`~monai.networks.utils.convert_to_torchscript`
  as ``monai.bundle ckpt_export`` does, with ``metadata.json`` and ``inference.json`` embedded;
* ``models/model.pt2``: a :func:`torch.export.export` program of the same form (TorchScript is
  deprecated in current PyTorch), saved with :func:`torch.export.save`.

Each exported form is run at export time on a fixed sample input and must give the
checkpoint's output (``atol``/``rtol``); otherwise nothing is written. The exported
``metadata.json`` gains ``weights_sha256`` (file -> SHA-256 hex of each weight file) and
``training_data`` (cohort, splits, metrics, from arguments or a run folder), and its
``eval_metrics`` are filled from the same metrics. The exported configs get
``bundle_root = "."`` so ``python -m monai.bundle run --config_file configs/inference.json``
works from the unpacked folder; the bundle's ``inference.json`` calls
:func:`verify_bundle_weights` before its ``CheckpointLoader``.

:func:`verify_bundle_weights` is the receiving side: it recomputes the SHA-256 of the weight
files recorded in ``configs/metadata.json`` and raises :class:`BundleIntegrityError` (an
:class:`~xray2mri.transforms.errors.InputError`) naming the file when one was changed or
truncated. A bundle whose metadata records no checksums (a working copy, before export) is
not checked.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
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

from xray2mri.transforms.errors import InputError

__all__ = [
    "BundleIntegrityError",
    "ExportCheckError",
    "CHECKSUM_KEY",
    "TRAINING_DATA_KEY",
    "WEIGHT_FILES",
    "sha256_file",
    "verify_bundle_weights",
    "training_data_description",
    "export_bundle",
]

logger = logging.getLogger(__name__)

#: metadata.json key holding ``{"models/model.pt": "<sha256 hex>", ...}``.
CHECKSUM_KEY: str = "weights_sha256"
#: metadata.json key holding the training data description (cohort, splits, metrics).
TRAINING_DATA_KEY: str = "training_data"
#: The weight files of an exported bundle, relative to its root.
WEIGHT_FILES: tuple[str, ...] = ("models/model.pt", "models/model.ts", "models/model.pt2")
_CHUNK = 1 << 20


class BundleIntegrityError(InputError):
    """A bundle weight file whose SHA-256 is not the one its metadata.json records (changed or truncated)."""


class ExportCheckError(RuntimeError):
    """An exported form (TorchScript, torch.export) does not reproduce the checkpoint's output."""


# --------------------------------------------------------------------------------------------
# checksums


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _relative_key(bundle: Path, path: str | os.PathLike) -> str | None:
    """``path`` as a POSIX path relative to ``bundle`` (the metadata key), or None if outside it."""
    try:
        return Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(bundle))).as_posix()
    except ValueError:
        return None


def verify_bundle_weights(
    bundle_dir: str | os.PathLike, files: Sequence[str | os.PathLike] | None = None
) -> None:
    """Check weight files against the SHA-256 recorded in ``bundle_dir/configs/metadata.json``.

    Call it where weights are loaded, before ``torch.load`` sees them: a truncated or edited
    file is refused with a message naming it instead of failing deep inside the unpickler (or,
    worse, loading). ``inference.json`` of an exported bundle runs
    ``$bundle_export.verify_bundle_weights(@bundle_root, [@weights])`` before its
    ``CheckpointLoader``.

    Args:
        bundle_dir: the bundle folder (holding ``configs/metadata.json``).
        files: the files about to be loaded (absolute, or relative to the working directory).
            None checks every file the metadata lists. A file outside the bundle or not
            listed (a user's own ``--weights``) is not checked (logged).

    Raises:
        BundleIntegrityError: a listed file is missing, or its SHA-256 differs (the message
            names the file, the sizes and the expected and found digests).
        InputError: ``configs/metadata.json`` missing or not JSON.
    """
    bundle = Path(bundle_dir)
    meta_path = bundle / "configs" / "metadata.json"
    try:
        metadata = json.loads(meta_path.read_text())
    except FileNotFoundError as exc:
        raise InputError(meta_path, "no metadata.json; is this a bundle folder?") from exc
    except json.JSONDecodeError as exc:
        raise InputError(meta_path, f"not valid JSON ({exc})") from exc
    recorded = metadata.get(CHECKSUM_KEY) or {}
    if not recorded:
        logger.info("%s records no %s: weight files not verified (not an exported bundle)", meta_path, CHECKSUM_KEY)
        return
    if files is None:
        keys = list(recorded)
    else:
        keys = []
        for f in files:
            key = _relative_key(bundle, f)
            if key in recorded:
                keys.append(key)
            else:
                logger.warning("%s: not listed in %s; loaded without a checksum check", f, meta_path)
    for key in keys:
        path = bundle / key
        if not path.is_file():
            raise BundleIntegrityError(path, f"missing; {meta_path.name} lists it with a SHA-256")
        found = sha256_file(path)
        if found != recorded[key]:
            sizes = metadata.get("weights_size_bytes", {}).get(key)
            size_note = f"{path.stat().st_size} bytes" + (f", {sizes} expected" if sizes is not None else "")
            raise BundleIntegrityError(
                path,
                f"SHA-256 mismatch ({size_note}): expected {recorded[key]}, found {found}; the file was "
                "changed or truncated after export - re-download or re-export the bundle, do not load it",
            )


# --------------------------------------------------------------------------------------------
# training data description


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


def _rewrite_configs(configs: Path, overrides: Mapping[str, Any]) -> None:
    """Exported configs: ``bundle_root = "."`` and train.json ``overrides`` (inference.json verifies weights itself)."""
    for path in sorted(configs.glob("*.json")):
        if path.name == "metadata.json":
            continue
        cfg = json.loads(path.read_text())
        if not isinstance(cfg, dict):
            continue
        if "bundle_root" in cfg:
            cfg["bundle_root"] = "."
        if path.name == "train.json":
            cfg.update(overrides)
        path.write_text(json.dumps(cfg, indent=4) + "\n")


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
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> Path:
    """Write ``out_dir/<name>_v<version>.zip``: the bundle in model-zoo form, its weights in three checked forms.

    ``<name>`` is the bundle folder's name, ``<version>`` metadata.json's ``version``. The zip
    holds ``<name>/configs/*``, ``<name>/docs/*``, ``<name>/LICENSE`` and ``<name>/models/``
    ``model.pt``, ``model.ts``, ``model.pt2``. The TorchScript and torch.export forms are run on
    a fixed random radiograph batch (1, 1, *xray_size) (``seed``) and must match the
    checkpoint's output within ``atol``/``rtol``. The zip is written atomically (a temporary
    name, then renamed): a failed export leaves no zip behind.

    Args:
        bundle_dir: the bundle folder (``configs/``, ``docs/``, ``LICENSE``, ``models/model.pt``).
        out_dir: where the zip goes (created).
        weights: the weights to export (a state dict or a checkpoint with a ``"model"``
            entry); default ``bundle_dir/models/model.pt``.
        run_dir, datalist, summary, metrics, cohort: the training data description, see
            :func:`training_data_description`.
        overrides: train.json ids to set in the exported train.json and when building the
            network (e.g. ``{"variant": "geometry"}`` for weights of the other variant).
        atol, rtol: tolerance of the output checks.

    Returns:
        the zip's path.

    Raises:
        InputError: the bundle lacks metadata.json, LICENSE or weights, or the weights do not
            fit the network the configs build.
        ExportCheckError: an exported form does not reproduce the checkpoint's output.
    """
    from monai.networks.utils import convert_to_torchscript

    from xray2mri.pipeline.atomic import atomic_file
    from xray2mri.pipeline.training.engine import network_from_bundle, train_setting

    bundle = Path(bundle_dir)
    overrides = dict(overrides or {})
    meta_path = bundle / "configs" / "metadata.json"
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
        raise InputError(weights_path, "no weights to export; train the bundle first (`make demo` installs models/model.pt)")

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
        _rewrite_configs(root / "configs", overrides)
        models = root / "models"
        models.mkdir()
        torch.save(state, models / "model.pt")

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

        metadata[CHECKSUM_KEY] = {key: sha256_file(root / key) for key in WEIGHT_FILES}
        metadata["weights_size_bytes"] = {key: (root / key).stat().st_size for key in WEIGHT_FILES}
        description = training_data_description(
            bundle, run_dir=run_dir, datalist=datalist, summary=summary, metrics=metrics, cohort=cohort,
            variant=overrides.get("variant"),
        )
        metadata[TRAINING_DATA_KEY] = description
        if description.get("metrics"):
            metadata["eval_metrics"] = {**metadata.get("eval_metrics", {}), **description["metrics"]}
        metadata["export"] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "packages": _package_versions(),
            "sample_input_shape": list(sample.shape),
            "max_abs_diff_vs_checkpoint": checks,
            "torch_export_note": "model.pt2 is exported for a batch of 1 (static shapes)",
        }
        (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=4) + "\n")

        with atomic_file(zip_path) as tmp_zip:
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(p for p in root.rglob("*") if p.is_file()):
                    zf.write(path, path.relative_to(root.parent).as_posix())
    return zip_path
