"""Writers of what evaluation and inference produce: per-subject NIfTI in the canonical space
(:class:`SaveEvaluationVolumes`) and SYNTHETIC-marked NIfTI on the radiograph's own side
(:class:`SaveInferenceVolumes`), plus the inference items and their collation."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.inferers import Inferer

from xray2mri.pipeline.serving.files import NIFTI_SUFFIX, find_radiographs, looks_like_dicom, output_stem
from xray2mri.pipeline.training.uncertainty_loss import LOG_SCALE_KEY, LOG_SCALE_RANGE
from xray2mri.transforms.geometry import LR_FLIP_AXIS, MIRRORED_KEY, canonical_affine, centred_box_affine

__all__ = [
    "ExtraHeadsInferer",
    "SaveEvaluationVolumes",
    "SaveInferenceVolumes",
    "inference_items",
    "OUTPUT_STEM_KEY",
]

#: Item key of the output name that :func:`inference_items` gives each radiograph.
OUTPUT_STEM_KEY: str = "output_stem"


def _items(batch: Any) -> list[dict]:
    """A collated batch (dict of stacked values) or a decollated list, as a list of item dicts."""
    if isinstance(batch, Mapping):
        from monai.data import decollate_batch

        return decollate_batch(batch, detach=True)
    return list(batch)


def _affine4(meta_tensor: Any) -> np.ndarray:
    """The 4x4 affine of a MetaTensor (a 2-D image's 3x3 affine is embedded in 3-D)."""
    from monai.data.utils import to_affine_nd

    affine = getattr(meta_tensor, "affine", None)
    if affine is None:
        return np.eye(4)
    return np.asarray(to_affine_nd(3, torch.as_tensor(affine).double()), dtype=np.float64)


def _volume(t: torch.Tensor) -> np.ndarray:
    """A (1, ...) channel-first tensor as a float32 3-D array (a 2-D image gets a unit last axis)."""
    arr = torch.as_tensor(t).detach().float().cpu().numpy()
    arr = arr[0] if arr.shape[0] == 1 else arr
    return np.ascontiguousarray(arr[..., None] if arr.ndim == 2 else arr, dtype=np.float32)


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    """Write a generated volume: ``descrip`` marked SYNTHETIC, atomic (``writers.write_nifti``)."""
    from xray2mri.pipeline.serving.writers import write_nifti

    write_nifti(array, affine, path, description=description)


def _write_source_nifti(array: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    """Write a preprocessed input/target (not generated: no SYNTHETIC claim of our own), atomically."""
    import nibabel as nib

    from xray2mri.pipeline.atomic import atomic_file

    img = nib.Nifti1Image(array, affine)
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    img.header.set_xyzt_units("mm", "sec")
    with atomic_file(path) as tmp:
        nib.save(img, tmp)


class SaveEvaluationVolumes:
    """Write each evaluated subject's outputs as NIfTI files in the canonical preprocessed space.

    Attach to the evaluator of ``evaluate.json``. For every item of every batch it writes into
    ``output_dir``:

    * ``<subject>_mri_pred.nii.gz``: the generated volume (marked SYNTHETIC in ``descrip``);
    * ``<subject>_xray_recon.nii.gz``: the radiograph reconstruction (SYNTHETIC);
    * ``<subject>_tissue_probs.nii.gz`` (a model with the tissue head): the per-class probabilities
      (softmax of ``tissue_logits``), classes along the last (4th) axis (SYNTHETIC);
    * ``<subject>_joint_probs.nii.gz`` (a model with the joint-region head): its class probabilities on the
      joint box (``joint_spacing`` mm voxels, centred on the volume), classes along the last axis (SYNTHETIC);
    * ``<subject>_mri_sigma.nii.gz``: with the network's uncertainty head, its raw per-voxel scale
      ``exp(mri_log_scale)`` (SYNTHETIC; uncalibrated: the report multiplies it by the bundle's
      conformal factors, :mod:`xray2mri.pipeline.serving.uncertainty`);
    * ``<subject>_mri_target.nii.gz`` and ``<subject>_xray.nii.gz``: the preprocessed target
      and input (source data, not generated; whether *they* are synthetic is the cohort's
      business), so that evaluation compares voxel for voxel without re-running preprocessing.

    Each volume gets the affine of its preprocessed target (the MRI's, the radiograph's) and
    stays in the canonical, right-knee frame (left knees are not mirrored back: prediction and
    target share one grid). Writes are atomic; under ``torchrun`` each process writes the
    subjects its sampler gave it.

    Args:
        output_dir: folder of the files (created).
        subject_key: item key naming the subject (falls back to the radiograph's file name).
        joint_spacing: voxel size (mm) of the joint-region head's box (the bundle's ``joint_spacing``).
    """

    def __init__(
        self, output_dir: str | os.PathLike, subject_key: str = "subject", joint_spacing: Sequence[float] = (1.0, 1.0, 1.0)
    ) -> None:
        self.output_dir = Path(output_dir)
        self.subject_key = subject_key
        self.joint_spacing = tuple(float(v) for v in joint_spacing)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _subject(self, item: Mapping[str, Any]) -> str:
        subject = item.get(self.subject_key)
        if subject is None:
            name = getattr(item.get("xray"), "meta", {}).get("filename_or_obj", "item")
            subject = Path(str(name)).name.split(".")[0]
        return str(subject)

    def __call__(self, engine: Engine) -> None:
        batch_items = _items(engine.state.batch)
        output = engine.state.output
        preds = _items(output["pred"]) if isinstance(output, Mapping) else [o["pred"] for o in output]
        for item, pred in zip(batch_items, preds):
            subject = self._subject(item)
            mri_affine, xray_affine = _affine4(item["mri"]), _affine4(item["xray"])
            generated = {
                "mri_pred": (pred["mri"], mri_affine, "SYNTHETIC: generated by xray2mri (MRI from radiograph)"),
                "xray_recon": (pred["xray"], xray_affine, "SYNTHETIC: generated by xray2mri (radiograph reconstruction)"),
            }
            if LOG_SCALE_KEY in pred:
                sigma = torch.exp(torch.as_tensor(pred[LOG_SCALE_KEY]).float().clamp(*LOG_SCALE_RANGE))
                generated["mri_sigma"] = (sigma, mri_affine, "SYNTHETIC: xray2mri raw uncertainty scale (uncalibrated)")
            sources = {
                "mri_target": (item["mri"], mri_affine, "xray2mri evaluation target: preprocessed source MRI"),
                "xray": (item["xray"], xray_affine, "xray2mri evaluation input: preprocessed source radiograph"),
            }
            for suffix, (tensor, affine, description) in generated.items():
                _write_nifti(_volume(tensor), affine, self.output_dir / f"{subject}_{suffix}.nii.gz", description)
            if isinstance(pred, Mapping) and "tissue_logits" in pred:
                probs = torch.softmax(torch.as_tensor(pred["tissue_logits"]).detach().float(), dim=0).cpu().numpy()
                # 4-D (D, H, W, classes): nibabel's layout for a vector per voxel (write_nifti takes 3-D)
                _write_source_nifti(np.ascontiguousarray(np.moveaxis(probs, 0, -1)), mri_affine,
                                    self.output_dir / f"{subject}_tissue_probs.nii.gz",
                                    "SYNTHETIC: generated by xray2mri (tissue class probabilities)")
            if isinstance(pred, Mapping) and "joint_logits" in pred:
                probs = torch.softmax(torch.as_tensor(pred["joint_logits"]).detach().float(), dim=0).cpu().numpy()
                affine = centred_box_affine(mri_affine, _volume(pred["mri"]).shape, probs.shape[1:], self.joint_spacing)
                _write_source_nifti(np.ascontiguousarray(np.moveaxis(probs, 0, -1)), affine,
                                    self.output_dir / f"{subject}_joint_probs.nii.gz",
                                    "SYNTHETIC: generated by xray2mri (joint-region tissue class probabilities)")
            for suffix, (tensor, affine, description) in sources.items():
                _write_source_nifti(_volume(tensor), affine, self.output_dir / f"{subject}_{suffix}.nii.gz", description)


class ExtraHeadsInferer(Inferer):
    """``inference.json``'s inferer: the network's dict form (``forward_dict``: MRI, radiograph
    reconstruction, and its heads' outputs) when the network has a head to serve: the uncertainty head
    while ``uncertainty`` is on, or the tissue head; else its plain output. The bundle's ``network``
    stays the MRI tensor form (what ``verify_net_in_out``, TorchScript and torch.export see);
    :class:`SaveInferenceVolumes` writes the uncertainty map and the label map from the dict.
    """

    def __init__(self, uncertainty: bool = True) -> None:
        super().__init__()
        self.uncertainty = bool(uncertainty)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        heads = ((self.uncertainty and getattr(network, "uncertainty", False)) or getattr(network, "tissue_classes", 0) > 0
                 or getattr(network, "joint_classes", 0) > 0)
        if heads and hasattr(network, "forward_dict"):
            return network.forward_dict(inputs)
        return network(inputs, *args, **kwargs)


class SaveInferenceVolumes:
    """Write each generated MRI volume as NIfTI on the radiograph's own side, marked SYNTHETIC.

    Attach to the evaluator of ``inference.json``. Left knees, mirrored to the canonical side
    before the network, are mirrored back along the column (R->L) axis; the volume gets the
    canonical ``"PIL"`` affine with ``spacing`` mm voxels, centred on the origin (the
    radiograph has no 3-D position). The file is ``<output_dir>/<stem>_mri_synthetic.nii.gz``, where
    ``<stem>`` is the item's ``output_stem`` (set by :func:`inference_items`: the name of ``xray2mri
    predict``'s output, sub-folders kept), else the radiograph's name without a DICOM extension;
    ``<stem>_R``/``<stem>_L`` for the two knees of a bilateral radiograph, as ``xray2mri predict`` names
    them. Each volume gets its JSON sidecar (:mod:`xray2mri.pipeline.serving.sidecar`). A model with
    the tissue head also gets ``<stem>_labels_synthetic.nii.gz`` and its readings in the sidecar, as
    ``xray2mri predict`` writes them (:mod:`~xray2mri.pipeline.serving.tissue_outputs`).
    Writes are atomic; under ``torchrun`` each process writes its own items.

    Args:
        output_dir: folder of the files (created).
        spacing: voxel size (mm) of the network's output along (D, H, W): the bundle's ``mri_spacing``.
        image_key: item key of the radiograph (its meta gives the file name and the mirroring flag).
        suffix: appended to the radiograph's file stem.
        calibration: the bundle's uncertainty calibration file (``models/uncertainty_calibration.json``) or
            None. When it exists and the prediction is the network's dict form with ``"mri_log_scale"``
            (inference.json's ``uncertainty: true``), the calibrated map ``<stem>_uncertainty.nii.gz`` is
            written beside the volume (same grid, SYNTHETIC), the sidecar records ``ood_score``,
            ``ood_threshold``, ``ood_flag``, and a radiograph above the OOD threshold is logged with
            :data:`~xray2mri.pipeline.serving.uncertainty.OOD_WARNING`.
        joint_spacing: voxel size (mm) of the joint-region head's box (the bundle's ``joint_spacing``): with
            that head, ``<stem>_joint_labels_synthetic.nii.gz`` and the readings read on it, as predict writes.
    """

    def __init__(
        self, output_dir: str | os.PathLike, spacing: Sequence[float], image_key: str = "xray",
        suffix: str = NIFTI_SUFFIX, calibration: str | os.PathLike | None = None,
        joint_spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        from xray2mri.pipeline.serving.uncertainty import load_calibration

        self.output_dir = Path(output_dir)
        self.spacing = tuple(float(s) for s in spacing)
        self.joint_spacing = tuple(float(s) for s in joint_spacing)
        self.image_key = image_key
        self.suffix = suffix
        self.calibration = load_calibration(calibration) if calibration and Path(calibration).is_file() else None
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from xray2mri.pipeline.serving.sidecar import knee_facts, sidecar_path
        from xray2mri.pipeline.serving.writers import write_sidecar

        batch_items = _items(engine.state.batch)
        output = engine.state.output
        preds = _items(output["pred"]) if isinstance(output, Mapping) else [o["pred"] for o in output]
        for item, pred in zip(batch_items, preds):
            mri = pred["mri"] if isinstance(pred, Mapping) else pred
            xray = item[self.image_key]
            meta = getattr(xray, "meta", {}) or {}
            mirrored = bool(meta.get(MIRRORED_KEY, item.get(MIRRORED_KEY, False)))
            if mirrored:
                mri = torch.flip(torch.as_tensor(mri), dims=(LR_FLIP_AXIS,))
            volume = _volume(mri)
            source = Path(str(meta.get("filename_or_obj", f"item{len(self.written)}")))
            stem = item.get(OUTPUT_STEM_KEY) or output_stem(source)
            facts = knee_facts(meta, source, mirrored)
            if facts["knees_found"] > 1:  # as xray2mri predict names them: <stem>_R, <stem>_L
                stem = f"{stem}_{facts['side'] or 'U'}"
            path = self.output_dir / f"{stem}{self.suffix}"
            affine = canonical_affine(volume.shape, self.spacing)
            uncertainty, ood = self._uncertainty(pred, xray, mirrored, path, engine)
            _write_nifti(volume, affine, path, "SYNTHETIC: generated by xray2mri from a radiograph; not acquired")
            if uncertainty is not None:
                from xray2mri.pipeline.serving.uncertainty import UNCERTAINTY_SUFFIX, write_uncertainty_map

                write_uncertainty_map(uncertainty, affine, self.output_dir / f"{stem}{UNCERTAINTY_SUFFIX}")
                facts.update(ood)
                facts.update(self.calibration.sidecar())
            from xray2mri.pipeline.serving import tissue_outputs as tissue

            logits = pred.get("tissue_logits") if isinstance(pred, Mapping) else None
            if logits is not None:
                probs = tissue.tissue_probabilities(logits)
                facts.update(tissue.tissue_facts(probs, self.spacing, xray, meta.get("spacing")))
                labels_path = self.output_dir / f"{stem}{tissue.LABELS_SUFFIX}"
                tissue.write_label_map(tissue.label_map(probs, mirrored), affine, labels_path)
                facts["labels_output"] = labels_path.name
            joint_logits = pred.get("joint_logits") if isinstance(pred, Mapping) else None
            if joint_logits is not None:  # finer at the joint: its readings replace the whole-volume map's
                joint_facts, joint, joint_affine = tissue.joint_outputs(joint_logits, mirrored, affine, volume.shape,
                                                                        self.joint_spacing)
                facts.update(joint_facts)
                joint_path = self.output_dir / f"{stem}{tissue.JOINT_LABELS_SUFFIX}"
                tissue.write_label_map(joint, joint_affine, joint_path)
                facts["joint_labels_output"] = joint_path.name
            if "joint_centre_px" in meta or uncertainty is not None or logits is not None or joint_logits is not None:
                write_sidecar({**facts, "output": path.name}, sidecar_path(path))
            self.written.append(path)
            engine.logger.info(f"wrote {path}")

    def _uncertainty(self, pred: Any, xray: Any, mirrored: bool, path: Path,
                     engine: Engine) -> tuple[np.ndarray | None, dict]:
        """The calibrated map (on the volume's side) and the OOD record of one item; (None, {}) without head/calibration."""
        from xray2mri.pipeline.serving.uncertainty import OOD_WARNING, calibrated_map

        if self.calibration is None or not isinstance(pred, Mapping) or LOG_SCALE_KEY not in pred:
            return None, {}
        half, record = calibrated_map(self.calibration, torch.as_tensor(pred[LOG_SCALE_KEY]), torch.as_tensor(xray),
                                      torch.as_tensor(pred["xray"]))
        if record["ood_flag"]:
            engine.logger.warning(f"{path.name}: {OOD_WARNING} (OOD score {record['ood_score']})")
        if mirrored:
            half = torch.flip(half, dims=(LR_FLIP_AXIS,))
        return _volume(half), record


def collate_unknown_meta(batch: Sequence[dict]) -> Any:
    """``list_data_collate`` for inference items whose meta may hold ``None`` (e.g. ``laterality`` of a
    radiograph that states no side): torch's collation refuses ``None``, so it becomes ``""`` here.
    Lists of items (the knees of one radiograph) are flattened, one batch entry per knee."""
    from monai.data import list_data_collate
    from monai.data.meta_tensor import MetaTensor

    # a radiograph with two knees is a list of two items (LocateKneed): one batch entry per knee
    batch = [knee for item in batch for knee in (item if isinstance(item, (list, tuple)) else [item])]
    for item in batch:
        for value in item.values():
            if isinstance(value, MetaTensor):
                for key, meta_value in list(value.meta.items()):
                    if meta_value is None:
                        value.meta[key] = ""
    return list_data_collate(batch)


def inference_items(
    inputs: str | os.PathLike | Sequence[str | os.PathLike] | None,
    key: str = "xray",
    exclude: Sequence[str | os.PathLike] = (),
) -> list[dict]:
    """Items ``[{key: path, "output_stem": stem}, ...]`` for ``inference.json`` from a file, a folder or a list.

    The files are those ``xray2mri predict`` tries, by the same rule
    (:func:`~xray2mri.pipeline.serving.files.find_radiographs`: a folder is searched
    recursively, names with or without extension, hidden names skipped), and each item's
    ``output_stem`` is the name predict gives its output (sub-folders kept). A MONAI workflow
    cannot skip an item half-way, so a file of a folder that is not DICOM at all (a README,
    earlier outputs) is left out here with a logged warning; predict reports it as rejected.
    A DICOM that is not a usable radiograph stops the run with the loader's
    :class:`~xray2mri.transforms.errors.XrayInputError` naming it.

    Raises:
        ValueError: no input given.
        FileNotFoundError: a path that does not exist, or a folder without any DICOM file.
    """
    import logging

    if inputs is None or (isinstance(inputs, (str, os.PathLike)) and not str(inputs)):
        raise ValueError("no input radiograph: give --input FILE_OR_FOLDER (or a list of files)")
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    items = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p}: input radiograph not found")
        if not p.is_dir():
            items.append({key: str(p), OUTPUT_STEM_KEY: str(output_stem(p))})
            continue
        found = []
        for f in find_radiographs(p, exclude=exclude):
            if looks_like_dicom(f):
                found.append(f)
            else:
                logging.getLogger(__name__).warning(f"{f}: skipped: not a DICOM file")
        if not found:
            raise FileNotFoundError(f"{p}: no DICOM radiograph in this folder (searched recursively)")
        items.extend({key: str(f), OUTPUT_STEM_KEY: str(output_stem(f, p))} for f in found)
    return items
