"""What the evaluation reads: datalist splits through the bundle's preprocessing, test cases, predictions, logs.

The datalist is read by :func:`xray2mri.pipeline.data.manifests.load_datalist` (the one reader) and
the bundle by :func:`xray2mri.pipeline.serving.bundle.open_bundle` (the one opener): sizes,
spacings and the deterministic preprocessing come from the bundle's configs, never from here.
A case's synthetic truth (``<subject>_meta.json`` beside its MRI, the cohort's ``tissues.json``,
its label map) is used when it is there and not required: an acquired cohort (an OAI import, a
CSV of pairs) has none of it. :func:`describe_data` says whether the data are synthetic, from the
datalist's description and the items, for the report.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray2mri.pipeline.data import manifests
from xray2mri.pipeline.data.synth.phantom import true_readings
from xray2mri.pipeline.evaluation.measure import Case, Method, MethodPrediction
from xray2mri.transforms.errors import InputError

__all__ = [
    "PREPROCESSING_IDS",
    "SIZE_IDS",
    "PRED_MRI_SUFFIX",
    "PRED_XRAY_SUFFIX",
    "bundle_preprocessing",
    "load_split",
    "read_legend",
    "read_meta",
    "load_cases",
    "describe_data",
    "read_prediction",
    "prediction_reader",
    "read_training_log",
]

#: Config ids tried, in order, for the bundle's deterministic (non-augmenting) preprocessing.
PREPROCESSING_IDS: tuple[str, ...] = ("validate#preprocessing", "evaluate#preprocessing", "preprocessing")
#: Size ids of the bundle's ``train.json`` (read, never repeated).
SIZE_IDS: tuple[str, ...] = ("xray_size", "xray_spacing", "mri_shape", "mri_spacing")
#: The joint-region head's ids in ``train.json``: its weight, box grid, and the chain that makes its target.
JOINT_IDS: tuple[str, ...] = ("joint_weight", "joint_shape", "joint_spacing")
JOINT_CHAIN_ID = "train#joint_label_transforms"
#: Prediction file names written by the bundle's evaluate.json, per subject.
PRED_MRI_SUFFIX = "_mri_pred.nii.gz"
PRED_XRAY_SUFFIX = "_xray_recon.nii.gz"
#: The word every generated dataset carries in its description (the project's marking rule).
SYNTHETIC_MARK = re.compile(r"\bSYNTHETIC\b")

Preprocess = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def bundle_preprocessing(
    bundle_dir: str | os.PathLike,
    preprocessing_id: str | None = None,
    configs: Sequence[str] = (),
) -> tuple[Preprocess, dict[str, Any]]:
    """The bundle's deterministic preprocessing as a callable, and its sizes (``SIZE_IDS``).

    Opens the bundle with :func:`~xray2mri.pipeline.serving.bundle.open_bundle` on
    ``configs/train.json`` (and ``evaluate.json`` over it when present, then ``configs``) and
    instantiates ``preprocessing_id`` (default: the first of :data:`PREPROCESSING_IDS` that the configs
    define). The callable takes a datalist item with absolute paths and returns it preprocessed; ground-truth label maps (``labels``) that the
    bundle's chain leaves alone are loaded, mirrored and resampled with the MRI chain's label mode
    (nearest neighbour) at the bundle's ``mri_spacing`` / ``mri_shape``. A bundle with the joint-region head
    (``joint_weight`` > 0) also turns ``joint_labels`` into its target, the class fractions on the joint box,
    with the bundle's own ``train#joint_label_transforms``; its sizes then hold ``joint_shape`` and
    ``joint_spacing``.
    """
    from monai.transforms import Compose

    from xray2mri.pipeline.serving.bundle import EVALUATE_CONFIGS, open_bundle
    from xray2mri.transforms.laterality import MirrorToCanonicalSided
    from xray2mri.transforms.mri import LoadMrid, PreprocessMrid

    folder = Path(bundle_dir) / "configs"
    names = [n for n in EVALUATE_CONFIGS if (folder / n).is_file() or n == EVALUATE_CONFIGS[0]] + list(configs)
    if not (folder / names[0]).is_file():
        raise InputError(folder / names[0], "bundle has no configs/train.json")
    bundle = open_bundle(bundle_dir, configs=names)
    missing = [k for k in SIZE_IDS if not bundle.has(k)]
    if missing:
        raise InputError(
            bundle.config_files[0], f"defines no {', '.join(missing)}; the evaluation reads sizes from there"
        )
    sizes = {k: bundle.setting(k) for k in SIZE_IDS}
    joint_chain = None
    if all(bundle.has(k) for k in (*JOINT_IDS, JOINT_CHAIN_ID)) and float(bundle.setting("joint_weight")) > 0:
        sizes.update({k: bundle.setting(k) for k in JOINT_IDS[1:]})
        joint_chain = Compose(bundle.preprocessing(JOINT_CHAIN_ID))
    chain = bundle.preprocessing([preprocessing_id] if preprocessing_id else list(PREPROCESSING_IDS))
    label_chain = Compose(
        [
            LoadMrid(keys="labels"),
            MirrorToCanonicalSided(keys="labels"),
            PreprocessMrid(
                keys="labels", spacing=sizes["mri_spacing"], shape=sizes["mri_shape"], label_keys="labels"
            ),
        ]
    )

    def run(item: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(chain(dict(item)))
        if item.get("labels") is not None and not hasattr(out.get("labels"), "shape"):  # dropped or a path
            out["labels"] = label_chain({"labels": item["labels"], "side": item.get("side")})["labels"]
        if joint_chain is not None and item.get("joint_labels") is not None:
            out["joint_labels"] = joint_chain({"joint_labels": item["joint_labels"], "side": item.get("side")})["joint_labels"]
        else:
            out.pop("joint_labels", None)
        return out

    return run, sizes


def load_split(
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    split: str,
    preprocess: Preprocess,
    keys: Sequence[str] = ("xray", "mri"),
    optional_keys: Sequence[str] = (),
    progress: bool = False,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Every item of ``split`` run through ``preprocess``; ``keys`` come back as numpy arrays.

    ``optional_keys`` (e.g. ``labels``) are loaded too for the items that list them. Each returned
    dict holds ``subject``, ``side``, ``grade``, ``visit`` (``None`` when not listed), the item's resolved paths
    under ``<key>_path`` and the preprocessed arrays (channel kept), in the datalist's order. ``progress`` shows
    a bar (stderr). Items are preprocessed on ``workers`` threads (default: one per CPU, at most 4), as MONAI's
    ``CacheDataset`` fills its cache: the knee finder and the resampling spend their time outside the GIL.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    wanted = [*keys, *optional_keys]
    items = manifests.load_datalist(datalist, split, base_dir)

    def one(item: Mapping[str, Any]) -> dict[str, Any]:
        resolved = {k: v for k, v in item.items() if k not in manifests.PATH_KEYS or k in wanted}
        try:
            processed = preprocess(resolved)
        except InputError:
            raise
        except Exception as err:  # a transform failing on a file: name the subject and file
            raise InputError(
                resolved.get("mri"), f"preprocessing subject {item.get('subject')} failed: {err}"
            ) from err
        rec = {k: item.get(k) for k in ("subject", "side", "grade", "visit")}
        rec.update({f"{k}_path": item.get(k) for k in manifests.PATH_KEYS})
        for key in wanted:
            if key in optional_keys and (not item.get(key) or key not in processed):
                continue  # not listed, or not a target of this bundle (e.g. joint_labels without the joint head)
            if key not in processed or isinstance(processed[key], (str, os.PathLike)):
                raise InputError(resolved.get(key), f"the preprocessing returned no {key!r} array")
            rec[key] = _array(processed[key])
        return rec

    n_workers = max(1, min(workers or min(4, os.cpu_count() or 1), len(items) or 1))
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        return list(tqdm(pool.map(one, items), total=len(items), desc=f"load {split}", unit="case", disable=not progress))


def read_legend(base_dir: str | os.PathLike) -> dict[str, int] | None:
    """The cohort's tissue legend ``DIR/tissues.json`` (name -> label id); ``None`` when there is none."""
    path = Path(base_dir) / "tissues.json"
    if not path.exists():
        return None
    try:
        legend = json.loads(path.read_text())
        return {str(k): int(v) for k, v in legend.items()}
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise InputError(path, f"cannot read the tissue legend (name -> label id): {err}") from err


def _meta_path(mri_path: str | os.PathLike, subject: str) -> Path:
    return Path(mri_path).parent / f"{subject}_meta.json"


def read_meta(mri_path: str | os.PathLike, subject: str) -> dict[str, Any] | None:
    """``SUBJ_meta.json`` beside the subject's MRI (the synthetic truth), or ``None`` when absent.

    Raises:
        InputError: the file is there but unreadable, or lacks ``jsw_medial_mm`` / ``jsw_lateral_mm``.
    """
    path = _meta_path(mri_path, subject)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read the subject's meta JSON: {err}") from err
    missing = [k for k in ("jsw_medial_mm", "jsw_lateral_mm") if k not in meta]
    if missing:
        raise InputError(path, f"no {', '.join(missing)}; the JSW ground truth comes from there")
    return meta


def load_cases(
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    preprocess: Preprocess,
    split: str = "test",
    progress: bool = False,
) -> list[Case]:
    """The cases of a datalist split through ``preprocess``: label maps where listed, synthetic JSW truth
    where a meta JSON is there, grades from the manifest (the meta JSON's for a synthetic cohort)."""
    cases = []
    for rec in load_split(datalist, base_dir, split, preprocess, keys=("xray", "mri"),
                          optional_keys=("labels", "joint_labels"), progress=progress):
        subject = str(rec["subject"])
        meta = read_meta(rec["mri_path"], subject) or {}
        grade = rec.get("grade") if rec.get("grade") is not None else meta.get("grade")
        labels = rec.get("labels")
        cases.append(
            Case(
                subject=subject,
                xray=rec["xray"].squeeze(0),
                mri=rec["mri"].squeeze(0),
                labels=None if labels is None else np.rint(labels.squeeze(0)).astype(np.int16),
                joint=rec.get("joint_labels"),
                readings_truth=true_readings(meta["params"]) if meta.get("params") else None,
                jsw_truth=(
                    {"medial": float(meta["jsw_medial_mm"]), "lateral": float(meta["jsw_lateral_mm"])}
                    if meta
                    else None
                ),
                grade=None if grade is None else int(grade),
                side=str(rec.get("side") or meta.get("side") or ""),
                visit=None if rec.get("visit") is None else str(rec["visit"]),
            )
        )
    if not cases:
        raise InputError(datalist, f"the {split!r} split is empty")
    return cases


def describe_data(
    datalist: str | os.PathLike, base_dir: str | os.PathLike | None = None, split: str = "test"
) -> dict[str, Any]:
    """Whether the data of a datalist are synthetic, and on what evidence, for the report.

    Synthetic when the datalist's description carries the word ``SYNTHETIC`` (every generator of this
    project writes it: ``xray2mri synth``, the OAI-layout tree), an item says ``"synthetic": true``, or
    a subject's meta JSON beside its MRI does (the synthetic generator's truth). Anything else is
    taken as acquired data and never called synthetic.

    Returns ``{"synthetic": bool, "description": str, "evidence": str}``.
    """
    description = manifests.load_description(datalist)
    items = manifests.load_datalist(datalist, split, base_dir)
    flagged = [i for i in items if i.get("synthetic") is True]
    metas = [
        i for i in items
        if i.get("mri") and _meta_flag(_meta_path(i["mri"], str(i.get("subject"))))
    ]
    if SYNTHETIC_MARK.search(description):
        evidence = "the datalist's description says SYNTHETIC"
    elif flagged:
        evidence = f"{len(flagged)} of {len(items)} {split} items say synthetic: true"
    elif metas:
        evidence = f"{len(metas)} of {len(items)} {split} subjects have a synthetic meta JSON beside their MRI"
    else:
        return {
            "synthetic": False,
            "description": description or f"datalist {Path(datalist).name}",
            "evidence": "the datalist's description does not say SYNTHETIC and no item or subject meta JSON "
            "marks the data synthetic",
        }
    return {"synthetic": True, "description": description or f"datalist {Path(datalist).name}", "evidence": evidence}


def _meta_flag(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("synthetic")) if path.is_file() else False
    except (OSError, ValueError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------
# Predictions and training logs
# ---------------------------------------------------------------------------------------------


def _squeeze_to(array: np.ndarray, ndim: int, path: Path) -> np.ndarray:
    a = np.asarray(array, dtype=np.float32)
    while a.ndim > ndim and 1 in a.shape:
        a = a.squeeze(axis=a.shape.index(1))
    if a.ndim != ndim:
        raise InputError(path, f"expected a {ndim}-D image (singleton axes allowed), got shape {array.shape}")
    return a


def read_prediction(pred_dir: str | os.PathLike, subject: str) -> MethodPrediction:
    """Read ``<subject>_mri_pred.nii.gz`` (required) and ``<subject>_xray_recon.nii.gz`` (optional).

    The arrays are taken as stored (they are in the canonical preprocessed space already); the
    folder may be the predictions folder itself or the evaluation output holding ``predictions/``.
    """
    import nibabel as nib

    folder = Path(pred_dir)
    if (folder / "predictions").is_dir():
        folder = folder / "predictions"
    mri_path, xray_path = folder / f"{subject}{PRED_MRI_SUFFIX}", folder / f"{subject}{PRED_XRAY_SUFFIX}"
    if not mri_path.is_file():
        raise InputError(
            mri_path, f"no predicted MRI for test subject {subject}; run the bundle's evaluate.json first"
        )
    try:
        mri = _squeeze_to(np.asanyarray(nib.load(str(mri_path)).dataobj), 3, mri_path)
        xray = (
            _squeeze_to(np.asanyarray(nib.load(str(xray_path)).dataobj), 2, xray_path)
            if xray_path.is_file()
            else None
        )
    except InputError:
        raise
    except Exception as err:  # nibabel raises several types on corrupt files
        raise InputError(mri_path, f"cannot read the prediction: {err}") from err
    return MethodPrediction(mri=mri, xray_recon=xray)


def prediction_reader(pred_dir: str | os.PathLike) -> Method:
    """A method reading a model's predictions from ``pred_dir``."""
    return lambda case: read_prediction(pred_dir, case.subject)


def read_training_log(
    log_dir: str | os.PathLike | None,
) -> tuple[dict[str, tuple[list[float], list[float]]], str]:
    """Scalar curves ``tag -> (steps, values)`` from TensorBoard event files (searched recursively) or,
    failing those, from CSV files with a header row. Returns the curves and a note saying what was read
    or why nothing was (never raises for a missing or empty log)."""
    if log_dir is None:
        return {}, "no training log given (--train-log); training curves not drawn"
    root = Path(log_dir)
    if not root.exists():
        return {}, f"training log {root} not found; training curves not drawn"
    curves: dict[str, tuple[list[float], list[float]]] = {}
    events = sorted(root.rglob("events.out.tfevents.*")) if root.is_dir() else [root]
    events = [e for e in events if "tfevents" in e.name]
    if events:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        parents = {ev.parent for ev in events}
        for ev in events:
            # several runs under one folder (e.g. both variants): keep their curves apart by run folder
            run = ev.parent.relative_to(root).as_posix() if len(parents) > 1 and root.is_dir() else ""
            acc = EventAccumulator(str(ev), size_guidance={"scalars": 0})
            try:
                acc.Reload()
            except Exception as err:  # a truncated event file from a killed run
                return curves, f"event file {ev.name} could not be read ({err}); curves may be incomplete"
            for tag in acc.Tags().get("scalars", []):
                steps, values = curves.setdefault(f"{run}: {tag}" if run else tag, ([], []))
                for e in acc.Scalars(tag):
                    steps.append(float(e.step))
                    values.append(float(e.value))
        if curves:
            return curves, f"read {len(curves)} scalar series from {len(events)} TensorBoard event file(s)"
    csvs = sorted(root.rglob("*.csv")) if root.is_dir() else ([root] if root.suffix == ".csv" else [])
    for path in csvs:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            x_key = next((k for k in ("epoch", "step", "iteration") if k in (reader.fieldnames or [])), None)
            for i, rec in enumerate(reader):
                x = float(rec[x_key]) if x_key else float(i)
                for k, v in rec.items():
                    if k == x_key:
                        continue
                    try:
                        value = float(v)
                    except (TypeError, ValueError):
                        continue
                    steps, values = curves.setdefault(f"{path.stem}/{k}", ([], []))
                    steps.append(x)
                    values.append(value)
    if curves:
        return curves, f"read {len(curves)} series from {len(csvs)} CSV file(s)"
    return (
        {},
        f"no TensorBoard event files or metric CSVs with numbers under {root}; training curves not drawn",
    )
