"""Prediction: radiograph DICOM(s) in, synthetic MRI volume(s) out, from a trained bundle.

:class:`Predictor` holds a network, the bundle's radiograph preprocessing and the model's MRI
voxel spacing; :meth:`Predictor.from_bundle` builds one from a bundle folder (its
``configs/inference.json``, read with :class:`monai.bundle.ConfigParser`, and the weights in
``models/model.pt`` loaded with ``torch.load(weights_only=True)``, both through
:func:`~xray2mri.pipeline.serving.bundle.open_bundle`). :func:`predict_batch`
runs it over one file or a folder and writes the outputs with :mod:`xray2mri.pipeline.serving.writers`.

Knees. The bundle's preprocessing finds the knee(s) (``LocateKneed``) and crops the bundle's field
around each joint centre; :meth:`Predictor.predict_knees` returns one :class:`Prediction` per knee,
whose ``facts`` become the JSON sidecar (:mod:`xray2mri.pipeline.serving.sidecar`).

Output geometry. The network produces a (1, D, H, W) volume in the canonical frame of
:mod:`xray2mri.transforms.geometry` (axcodes ``"PIL"``: A->P, S->I, R->L) whose (H, W) grid
covers the preprocessed radiograph's field of view. The written volume keeps that frame at
the model's ``mri_spacing``. A radiograph has no 3-D patient position, so the world origin is
put at the centre of the field of view: the volume is centred on (0, 0, 0) mm, the centre of
the radiograph's (centre-cropped) field of view, half-way along A-P. A left knee, mirrored to
the canonical right side before the network (meta ``mirrored_to_canonical``), has its output
mirrored back, so its columns run patient right -> left like the radiograph's.

Batch behaviour (what the ``xray2mri predict`` command relies on): every regular file under a
folder is tried (recursively; names with or without extension; hidden names skipped);
a file that cannot be used (not DICOM, no pixel data, colour, ...) is rejected with the
reason from its :class:`~xray2mri.transforms.errors.XrayInputError` and the batch goes on;
an image on which no knee is found (a chest, a hand, an MRI slice, a blank image) is rejected
with the knee finder's reason; a knee radiograph whose tags name another body part or view is
processed with a warning taken from its tags. A radiograph with two knees gives two outputs.
Outputs are written atomically, and a volume whose preview fails is removed, so no partial
output is ever left behind. :func:`predict_batch` writes each radiograph's outputs in a
background thread (:class:`~xray2mri.pipeline.serving.write_queue.BackgroundWriter`) while the
next radiograph is loaded and predicted; a write error is reported for its file like a rejection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor

from xray2mri.pipeline.serving import writers
from xray2mri.pipeline.serving.bundle import open_bundle
from xray2mri.pipeline.serving.files import (
    DICOM_SUFFIX,
    NIFTI_SUFFIX,
    PREVIEW_SUFFIX,
    find_radiographs,
    output_stem,
)
from xray2mri.pipeline.serving.tissue_outputs import (
    JOINT_LABELS_SUFFIX,
    LABELS_SUFFIX,
    joint_outputs,
    label_map,
    tissue_facts,
    tissue_probabilities,
    write_label_map,
)
from xray2mri.pipeline.serving.uncertainty import (
    CALIBRATION_FILE,
    OOD_WARNING,
    UNCERTAINTY_SUFFIX,
    UncertaintyCalibration,
    calibrated_map,
    load_calibration,
    write_uncertainty_map,
)
from xray2mri.pipeline.serving.write_queue import BackgroundWriter, OutputJob, WriteResult, write_all_or_none
from xray2mri.pipeline.training.uncertainty_loss import LOG_SCALE_KEY
from xray2mri.transforms.errors import InputError, XrayInputError
from xray2mri.transforms.geometry import MIRRORED_KEY, canonical_affine

__all__ = [
    "Prediction",
    "Predictor",
    "BatchResult",
    "find_radiographs",
    "output_stem",
    "input_error_reason",
    "prediction_outputs",
    "save_prediction",
    "knee_stem",
    "choose_knee",
    "read_centres_csv",
    "predict_batch",
    "OUTPUT_FORMATS",
    "NIFTI_SUFFIX",
    "DICOM_SUFFIX",
    "PREVIEW_SUFFIX",
]

#: Values of ``--format``.
OUTPUT_FORMATS: tuple[str, ...] = ("nifti", "dicom")
#: Views of the radiographs the model is meant for; others get a warning.
_EXPECTED_VIEWS: frozenset[str] = frozenset({"AP", "PA"})
_EXPECTED_BODY_PART: str = "KNEE"


@dataclass
class Prediction:
    """One generated volume and what is needed to write it.

    Attributes:
        source: the radiograph file.
        volume: (D, H, W) float32 in [0, 1], in the "PIL" frame, on the radiograph's own side.
        affine: 4x4 voxel -> RAS mm affine of ``volume``.
        mirrored: the radiograph was mirrored to the canonical side (and the output mirrored back).
        warnings: notes on the input (other body part or view), taken from its DICOM tags.
        header: the radiograph's DICOM header (no pixels), for the DICOM writer; None if unreadable.
        timings: seconds spent per stage (``load_preprocess``, ``forward``; ``write`` once saved).
        facts: where the knee was found and what was made (the JSON sidecar's content,
            :func:`~xray2mri.pipeline.serving.sidecar.knee_facts`).
        radiograph: a thumbnail of the whole source radiograph (rows, cols) for the preview, or None.
        thumbnail_scale: thumbnail pixels per source pixel (row, col).
        labels: a model with the tissue head: its label map (D, H, W) uint8 of tissue classes, on the
            radiograph's own side like ``volume`` (:mod:`~xray2mri.pipeline.serving.tissue_outputs`); else None.
        joint_labels: a model with the joint-region head: its label map on the joint box (D, H, W) uint8, on
            the radiograph's own side, else None; ``joint_affine`` places it (centred on ``volume``).
        uncertainty: (D, H, W) float32 calibrated 90 % half-width on the volume's grid and side
            (:mod:`~xray2mri.pipeline.serving.uncertainty`), or None (no head, no calibration, or turned off).
        ood: ``{"ood_score", "ood_threshold", "ood_flag", "ood_components", "uncertainty_subject_factor"}``
            (also in ``facts``, so the sidecar records it), or None (no uncertainty).
    """

    source: Path
    volume: np.ndarray
    affine: np.ndarray
    mirrored: bool = False
    warnings: list[str] = field(default_factory=list)
    header: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    radiograph: np.ndarray | None = None
    thumbnail_scale: tuple[float, float] = (1.0, 1.0)
    labels: np.ndarray | None = None
    joint_labels: np.ndarray | None = None
    joint_affine: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    ood: dict[str, Any] | None = None

    @property
    def side(self) -> str:
        """The knee's side (``"R"``, ``"L"``, or ``""`` when unknown)."""
        return str(self.facts.get("side", ""))


def input_error_reason(exc: BaseException) -> str | None:
    """The reason of the :class:`InputError` behind ``exc`` (MONAI wraps transform errors), else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, InputError):
            return cur.reason
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None






def _resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return device


def _tag(header: Any, keyword: str) -> str:
    value = getattr(header, keyword, "") if header is not None else ""
    return str(value or "").strip()


class Predictor:
    """A network plus the radiograph preprocessing that feeds it, producing placed MRI volumes.

    Args:
        network: maps a (B, 1, H, W) radiograph batch to a (B, 1, D, H, W) MRI batch (or a
            dict with key ``"mri"``). It is put in eval mode on ``device``.
        preprocess: a dictionary transform (e.g. the bundle's ``preprocessing`` Compose) that
            takes ``{image_key: path}`` and returns the preprocessed radiograph MetaTensor
            (1, H, W) under ``image_key``; its meta (or the item) records ``mirrored_to_canonical``.
        mri_spacing: voxel size (mm) of the network's output along (D, H, W).
        device: where the forward pass runs.
        image_key: the item key of the radiograph.
        calibration: the bundle's uncertainty calibration; with a network that has the uncertainty
            head (``forward_dict`` giving ``"mri_log_scale"``), every prediction gets the calibrated
            map and the out-of-distribution score. None: neither.
        uncertainty: False turns the map and the score off (``--no-uncertainty``).

    Example::

        predictor = Predictor.from_bundle("bundles/knee_xray2mri")
        pred = predictor.predict("knee.dcm")
        pred.volume.shape, pred.affine  # (D, H, W), voxel -> RAS mm
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocess: Callable[[dict], dict],
        mri_spacing: Sequence[float],
        device: str | torch.device = "cpu",
        image_key: str = "xray",
        calibration: UncertaintyCalibration | None = None,
        uncertainty: bool = True,
        joint_spacing: Sequence[float] | None = None,
    ) -> None:
        self.device = _resolve_device(device)
        self.network = network.to(self.device).eval()
        if getattr(self.network, "tissue_classes", 0) > 0 or getattr(self.network, "joint_classes", 0) > 0:
            self.network.return_dict = True  # its dict form gives the tissue maps too
        #: the joint-region head's voxel size (mm); None: its map is not read or written (e.g. calibration)
        self.joint_spacing = None if joint_spacing is None else tuple(float(s) for s in joint_spacing)
        if self.joint_spacing is not None and (len(self.joint_spacing) != 3 or min(self.joint_spacing) <= 0):
            raise ValueError(f"joint_spacing must be 3 positive numbers (mm), got {joint_spacing!r}")
        self.preprocess = preprocess
        self.mri_spacing = tuple(float(s) for s in mri_spacing)
        if len(self.mri_spacing) != 3 or any(s <= 0 for s in self.mri_spacing):
            raise ValueError(f"mri_spacing must be 3 positive numbers (mm), got {mri_spacing!r}")
        self.image_key = image_key
        has_head = bool(getattr(network, "uncertainty", False)) and hasattr(network, "forward_dict")
        self.calibration = calibration if (uncertainty and has_head) else None
        #: why no uncertainty map is written although asked for (a warning per prediction), else None
        self.uncertainty_note: str | None = None
        if uncertainty and has_head and calibration is None:
            self.uncertainty_note = (f"the bundle has no {CALIBRATION_FILE} (run `xray2mri calibrate`): "
                                     "no uncertainty map or out-of-distribution check")

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        overrides: dict[str, Any] | None = None,
        random_init: bool = False,
        uncertainty: bool = True,
    ) -> Predictor:
        """The network and preprocessing of ``bundle_dir/configs/inference.json``, through :func:`open_bundle`.

        ``weights`` defaults to ``models/model.pt`` (verified against the bundle's checksums).
        ``overrides`` are set on the parsed config before anything is built (e.g. tiny sizes).
        ``random_init=True`` keeps the network's random initial weights instead (for timing
        the pipeline before a model is trained; its output means nothing). The uncertainty
        calibration is the bundle's ``models/uncertainty_calibration.json`` (verified with the rest
        of an exported bundle); ``uncertainty=False`` skips the map and the OOD score.

        Raises:
            FileNotFoundError: no ``configs/inference.json`` or no weights file.
        """
        if not uncertainty:  # inference.json's switch: no map
            overrides = {**(overrides or {}), "uncertainty": False}
        bundle = open_bundle(bundle_dir, overrides=overrides)
        network = bundle.network(weights=weights, random_init=random_init)
        preprocess = bundle.preprocessing()
        calibration_path = bundle.root / CALIBRATION_FILE
        calibration = load_calibration(calibration_path) if uncertainty and calibration_path.is_file() else None
        joint_spacing = bundle.setting("joint_spacing") if getattr(network, "joint_classes", 0) > 0 else None
        return cls(network, preprocess, bundle.setting("mri_spacing"), device=device, image_key=bundle.image_key,
                   calibration=calibration, uncertainty=uncertainty, joint_spacing=joint_spacing)

    def _preprocess(self, path: Path, centre: Sequence[float] | None, side: str | None) -> tuple[list[dict], Any]:
        """The preprocessed item of each knee, and the loaded radiograph (for the preview) or None.

        The chain runs in two parts around its knee finder (``LocateKneed``), so the whole
        radiograph is seen once, before cropping, without loading it twice.
        """
        from xray2mri.transforms.locate_knee import LocateKneed

        item: dict[str, Any] = {self.image_key: str(path)}
        if centre is not None:
            item["centre"] = [float(c) for c in centre]
        if side is not None:
            item["side"] = side
        transforms = list(getattr(self.preprocess, "transforms", []))
        split = next((i for i, t in enumerate(transforms) if isinstance(t, LocateKneed)), None)
        loaded = None
        try:
            if split is None:
                out = self.preprocess(item)
            else:
                item = self.preprocess(item, end=split)
                loaded = item.get(self.image_key)
                out = self.preprocess(item, start=split)
        except Exception as exc:
            reason = input_error_reason(exc)
            if reason is None:
                raise
            raise XrayInputError(path, reason) from exc
        return (list(out) if isinstance(out, (list, tuple)) else [out]), loaded

    @torch.inference_mode()
    def predict_knees(
        self, path: str | os.PathLike, centre: Sequence[float] | None = None, side: str | None = None
    ) -> list[Prediction]:
        """Generate the MRI volume of every knee on one radiograph (patient right first).

        Args:
            path: the radiograph file.
            centre: (row, col) of the joint centre in the radiograph's pixels, instead of searching.
            side: ``"R"``/``"L"``: only that knee (of a bilateral radiograph), or the side of ``centre``.

        Raises:
            XrayInputError: the file cannot be used as a radiograph, or no knee is found on it
                (the reason says why).
        """
        path = Path(path)
        t0 = time.perf_counter()
        items, loaded = self._preprocess(path, centre, side)
        header = _read_header(path)
        thumbnail, scale = _thumbnail(loaded)
        t1 = time.perf_counter()
        predictions = []
        for item in items:
            t_start = time.perf_counter()
            xray = item[self.image_key]
            meta = dict(getattr(xray, "meta", {}) or {})
            mirrored = bool(meta.get(MIRRORED_KEY, item.get(MIRRORED_KEY, False)))
            # a plain tensor: a MetaTensor would carry its meta through every op of the network (per-op overhead)
            plain = xray.as_tensor() if isinstance(xray, MetaTensor) else xray
            batch = torch.as_tensor(plain, dtype=torch.float32).unsqueeze(0).to(self.device)
            half_width, ood = None, None
            if self.calibration is not None and getattr(self.network, "uncertainty", False):
                out = self.network.forward_dict(batch)
                half_width, ood = calibrated_map(self.calibration, out[LOG_SCALE_KEY][0, 0], batch[0, 0], out["xray"][0, 0])
                half_width = half_width.cpu()
            else:
                out = self.network(batch)
            logits = out.get("tissue_logits") if isinstance(out, dict) else None
            joint_logits = out.get("joint_logits") if isinstance(out, dict) else None
            if isinstance(out, dict):
                out = out["mri"]
            volume = torch.as_tensor(out)[0, 0].float().clamp(0.0, 1.0).cpu()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            volume_np = _mirror_back(volume, mirrored).numpy()
            from xray2mri.pipeline.serving.sidecar import knee_facts

            facts = knee_facts(meta, path, mirrored)
            labels = None
            if logits is not None:
                probs = tissue_probabilities(logits[0])
                facts.update(tissue_facts(probs, self.mri_spacing, xray, meta.get("spacing")))
                labels = label_map(probs, mirrored)
            joint_labels = joint_affine = None
            affine = canonical_affine(volume_np.shape, self.mri_spacing)
            if joint_logits is not None and self.joint_spacing is not None:  # finer at the joint: its readings win
                joint_facts, joint_labels, joint_affine = joint_outputs(joint_logits[0], mirrored, affine,
                                                                        volume_np.shape, self.joint_spacing)
                facts.update(joint_facts)
            warnings = _input_warnings(meta, header)
            if self.uncertainty_note:
                warnings.append(self.uncertainty_note)
            if ood is not None:
                facts.update(ood)
                facts.update(self.calibration.sidecar())
                if ood["ood_flag"]:
                    warnings.append(f"{OOD_WARNING} (OOD score {ood['ood_score']:.2f} > threshold "
                                    f"{ood['ood_threshold']:.2f})")
            predictions.append(Prediction(
                source=path,
                volume=np.ascontiguousarray(volume_np, dtype=np.float32),
                affine=affine,
                mirrored=mirrored,
                warnings=warnings,
                header=header,
                timings={"load_preprocess": (t1 - t0) / len(items), "forward": time.perf_counter() - t_start},
                facts=facts,
                radiograph=thumbnail,
                thumbnail_scale=scale,
                labels=labels,
                joint_labels=joint_labels,
                joint_affine=joint_affine,
                uncertainty=None if half_width is None else np.ascontiguousarray(
                    _mirror_back(half_width.float(), mirrored).numpy(), dtype=np.float32),
                ood=ood,
            ))
        return predictions

    def predict(
        self, path: str | os.PathLike, centre: Sequence[float] | None = None, side: str | None = None
    ) -> Prediction:
        """Generate the MRI volume of the one knee of a radiograph (or the knee ``side`` of a bilateral one).

        Raises:
            XrayInputError: as :meth:`predict_knees`, and when two knees are found but no
                ``side`` was asked for (use :meth:`predict_knees` for both).
        """
        predictions = self.predict_knees(path, centre=centre, side=side)
        if len(predictions) > 1:
            sides = ", ".join(p.side or "?" for p in predictions)
            raise XrayInputError(path, f"{len(predictions)} knees found ({sides}): ask for one with side=R or "
                                       "side=L, or use predict_knees for all")
        return predictions[0]


def choose_knee(predictions: Sequence[Prediction], side: str | None = None) -> tuple[Prediction, str]:
    """The knee a one-volume client (MONAI Label) gets, and a note saying which and why.

    ``side`` ``"R"``/``"L"`` asks for that knee; without it, a radiograph with two knees gives
    the patient's right knee (the note names both, so the client can ask for the other).

    Raises:
        XrayInputError: the knee asked for is not among those found.
    """
    from xray2mri.transforms.laterality import normalise_side

    wanted = normalise_side(side)
    found = ", ".join(p.side or "?" for p in predictions)
    if wanted is not None:
        chosen = [p for p in predictions if p.side == wanted]
        if not chosen:
            raise XrayInputError(predictions[0].source if predictions else None,
                                 f"no {wanted} knee on this radiograph (found: {found})")
        return chosen[0], f"the {wanted} knee, as asked (knees found: {found})"
    if len(predictions) == 1:
        return predictions[0], f"the one knee found ({found})"
    return predictions[0], f"knees found: {found}; returned the first ({predictions[0].side}); ask for side=L or R"


def _thumbnail(image: Any, largest: int = 512) -> tuple[np.ndarray | None, tuple[float, float]]:
    """A (rows, cols) float32 thumbnail of at most ``largest`` pixels a side, and its scale (thumb px per px)."""
    if image is None:
        return None, (1.0, 1.0)
    arr = torch.as_tensor(image).detach().float().cpu()
    arr = arr[0] if arr.ndim == 3 else arr
    step = max(1, int(np.ceil(max(arr.shape) / largest)))
    small = torch.nn.functional.avg_pool2d(arr[None, None], step, ceil_mode=True)[0, 0] if step > 1 else arr
    return small.numpy().astype(np.float32), (small.shape[0] / arr.shape[0], small.shape[1] / arr.shape[1])




def _mirror_back(volume: torch.Tensor, mirrored: bool) -> torch.Tensor:
    """Undo the mirroring to the canonical side on the (D, H, W) output."""
    from xray2mri.transforms.laterality import mirror_back

    return mirror_back(volume, mirrored)


def _read_header(path: Path) -> Any:
    """The radiograph's DICOM header without pixels, or None (it was already accepted by the loader)."""
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None


def _input_warnings(meta: dict, header: Any) -> list[str]:
    """Warnings for a radiograph the model was not made for: BodyPartExamined, ViewPosition, no laterality."""
    notes = []
    side, source = str(meta.get("knee_side", meta.get("laterality")) or ""), str(meta.get("side_source") or "")
    if not side:
        notes.append(
            "no ImageLaterality/Laterality and the fibula not seen: side unknown, treated as a right knee "
            "(not mirrored); a left knee will come out mirrored"
        )
    elif source == "anatomy":
        notes.append(f"no ImageLaterality/Laterality: side {side} taken from the anatomy (the fibula is lateral)")
    body_part = str(meta.get("body_part") or _tag(header, "BodyPartExamined")).strip()
    view = str(meta.get("view_position") or _tag(header, "ViewPosition")).strip()
    if body_part and body_part.upper() != _EXPECTED_BODY_PART:
        notes.append(f"BodyPartExamined is {body_part!r}, not KNEE: the model was trained on knees")
    if view and view.upper() not in _EXPECTED_VIEWS:
        notes.append(f"ViewPosition is {view!r}, not AP/PA: the model expects a frontal view")
    return notes


def prediction_outputs(
    prediction: Prediction,
    output_dir: str | os.PathLike,
    stem: str | os.PathLike,
    fmt: Literal["nifti", "dicom"] = "nifti",
    patient_id: writers.PatientIdPolicy = "pseudonymise",
) -> list[OutputJob]:
    """The outputs of one prediction (one knee), as jobs that each write one file or folder atomically when
    called: the volume (NIfTI file or DICOM series folder, whose DerivationDescription carries the knee's
    facts), its tissue label map when the model has the tissue head (``<stem>_labels_synthetic.nii.gz``; with
    DICOM output a DICOM SEG ``<stem>_seg.dcm`` on the MR series, :mod:`~xray2mri.pipeline.serving.dicom_seg`),
    the joint-region head's label map ``<stem>_joint_labels_synthetic.nii.gz`` (NIfTI in either format), its
    uncertainty map ``<stem>_uncertainty.nii.gz`` when the prediction has one (same grid and
    affine, SYNTHETIC), its JSON sidecar ``<output stem>.json`` (with the ``ood_*`` fields), then its PNG
    preview (the knee's box on the radiograph; an uncertainty row).

    Nothing is written here; run the list with :func:`~xray2mri.pipeline.serving.write_queue.write_all_or_none`
    (as :func:`save_prediction` does) or a :class:`~xray2mri.pipeline.serving.write_queue.BackgroundWriter`.
    """
    from xray2mri.pipeline.serving.sidecar import description_line, sidecar_path

    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    base = Path(output_dir) / stem
    side = {"R": "right", "L": "left"}.get(prediction.side, "side unknown")
    title = f"{prediction.source.name}: {side} knee" + (" (mirrored back)" if prediction.mirrored else "")
    volume, affine = prediction.volume, prediction.affine
    volume_path = Path(f"{base}{NIFTI_SUFFIX}" if fmt == "nifti" else f"{base}{DICOM_SUFFIX}")
    if fmt == "nifti":
        def write_volume() -> Path:
            return writers.write_nifti(volume, affine, volume_path)
    else:
        note = description_line(prediction.facts) if prediction.facts else ""

        def write_volume() -> Path:
            return writers.write_dicom_series(
                volume, affine, volume_path, source=prediction.header, patient_id=patient_id, derivation_note=note
            )

    labels_path = Path(f"{base}{LABELS_SUFFIX}")
    warnings = list(prediction.warnings)
    if fmt == "dicom" and prediction.labels is not None:  # a DICOM SEG on the MR series, where highdicom is here
        from xray2mri.pipeline.serving.dicom_seg import (
            SEG_SUFFIX,
            SEG_UNAVAILABLE,
            seg_available,
            write_dicom_seg,
        )

        if seg_available():
            labels_path = Path(f"{base}{SEG_SUFFIX}")
        else:
            warnings.append(SEG_UNAVAILABLE)

    def write_labels() -> Path:
        if labels_path.name.endswith(LABELS_SUFFIX):
            return write_label_map(prediction.labels, affine, labels_path)
        return write_dicom_seg(prediction.labels, volume_path, labels_path)

    joint_path = Path(f"{base}{JOINT_LABELS_SUFFIX}")

    def write_joint_labels() -> Path:  # NIfTI whatever the format: its box is not the MR series' grid
        return write_label_map(prediction.joint_labels, prediction.joint_affine, joint_path)

    def write_sidecar() -> Path:
        facts = {**prediction.facts, "output": volume_path.name, "warnings": warnings}
        if prediction.labels is not None:
            facts["labels_output"] = labels_path.name
        if prediction.joint_labels is not None:
            facts["joint_labels_output"] = joint_path.name
        return writers.write_sidecar(facts, sidecar_path(volume_path))

    box = prediction.facts.get("crop_box_px") or None
    scale = prediction.thumbnail_scale
    thumb_box = None if box is None else [box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]]

    uncertainty = prediction.uncertainty

    def write_preview() -> Path:
        return writers.write_preview_png(volume, affine, f"{base}{PREVIEW_SUFFIX}", title,
                                         radiograph=prediction.radiograph, crop_box=thumb_box, uncertainty=uncertainty)

    def write_uncertainty() -> Path:
        return write_uncertainty_map(uncertainty, affine, f"{base}{UNCERTAINTY_SUFFIX}")

    jobs = [write_volume, write_labels] if prediction.labels is not None else [write_volume]
    jobs += [write_joint_labels] if prediction.joint_labels is not None else []
    jobs += [write_uncertainty] if uncertainty is not None else []
    return [*jobs, write_sidecar, write_preview] if prediction.facts else [*jobs, write_preview]


def knee_stem(stem: str | os.PathLike, prediction: Prediction) -> Path:
    """``<stem>_<side>`` for a knee of a radiograph with two knees, else ``<stem>``."""
    stem = Path(stem)
    if int(prediction.facts.get("knees_found", 1)) > 1:
        return stem.with_name(f"{stem.name}_{prediction.side or 'U'}")
    return stem


def save_prediction(
    prediction: Prediction,
    output_dir: str | os.PathLike,
    stem: str | os.PathLike,
    fmt: Literal["nifti", "dicom"] = "nifti",
    patient_id: writers.PatientIdPolicy = "pseudonymise",
) -> list[Path]:
    """Write the volume (NIfTI file or DICOM series folder), its JSON sidecar and PNG preview now; returns their paths.

    Each is written atomically; if one fails, those already written are removed, so a knee has
    all its outputs or none. The time taken is ``prediction.timings["write"]``.
    """
    t0 = time.perf_counter()
    paths = write_all_or_none(prediction_outputs(prediction, output_dir, stem, fmt, patient_id))
    prediction.timings["write"] = time.perf_counter() - t0
    return paths


@dataclass
class BatchResult:
    """What a batch produced: outputs per radiograph, rejected files with reasons, warnings."""

    written: list[tuple[Path, list[Path]]] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        """0: every file gave a volume; 1: some were rejected; 2: none succeeded (or nothing found)."""
        if not self.written:
            return 2
        return 1 if self.rejected else 0

    def summary(self) -> str:
        """One line: how many were predicted, rejected and warned about, and the time taken."""
        total = len(self.written) + len(self.rejected)
        return (
            f"predicted {len(self.written)} of {total} file(s), rejected {len(self.rejected)}, "
            f"warnings {len(self.warnings)}, in {self.seconds:.1f} s"
        )


#: Columns of a ``--centres`` CSV (``side`` optional).
CENTRES_COLUMNS: tuple[str, ...] = ("file", "row", "col", "side")

#: A user's joint centre: (row, col) in the radiograph's pixels, and the knee's side or None.
GivenCentre = tuple[float, float, str | None]


def read_centres_csv(path: str | os.PathLike) -> dict[str, list[GivenCentre]]:
    """Joint centres from a CSV with columns ``file,row,col[,side]`` (one row per knee), by file.

    Raises:
        InputError: unreadable file, a missing column or a bad value (names the line).
    """
    from xray2mri.pipeline.csv_table import read_csv_table
    from xray2mri.transforms.laterality import normalise_side

    rows = read_csv_table(path, CENTRES_COLUMNS[:3], "the centres CSV", "a centres CSV has file,row,col[,side]")
    centres: dict[str, list[GivenCentre]] = {}
    for line, cell in rows:
        try:
            centre = (float(cell["row"]), float(cell["col"]), normalise_side(cell.get("side")))
        except ValueError as err:
            raise InputError(f"{path}:{line}", f"row and col must be numbers ({err})") from err
        if cell.get("side") and centre[2] is None:
            raise InputError(f"{path}:{line}", f"side {cell['side']!r} is not L or R")
        centres.setdefault(cell["file"], []).append(centre)
    return centres


def _given_centres(centres: Mapping[str, list[GivenCentre]], path: Path, root: Path | None) -> list[GivenCentre]:
    """The centres ``centres`` gives for ``path`` (keyed by path, path under the input folder, or file name)."""
    for key, value in centres.items():
        candidate = Path(key)
        if candidate.is_absolute() and candidate.resolve() == path.resolve():
            return value
        if root is not None and (root / candidate).resolve() == path.resolve():
            return value
        if key in (str(path), path.name):
            return value
    return []


def predict_batch(
    predictor: Predictor,
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    fmt: Literal["nifti", "dicom"] = "nifti",
    patient_id: writers.PatientIdPolicy = "pseudonymise",
    echo: Callable[[str], None] | None = None,
    progress: bool | None = None,
    centres: Mapping[str, list[GivenCentre]] | None = None,
) -> BatchResult:
    """Predict every knee of every radiograph of ``input_path`` (a file or a folder) into ``output_dir``.

    Each knee gets its outputs (:func:`prediction_outputs`) under :func:`knee_stem`: a bilateral
    radiograph gives ``<stem>_R_...`` and ``<stem>_L_...``. ``centres`` (e.g. from
    :func:`read_centres_csv`, or one ``--centre``) replace the knee finder for the files they name.
    A rejected file is reported through ``echo`` as ``"<file>: rejected: <reason>"`` and a
    warning as ``"<file>: warning: <text>"``, as they happen. ``progress`` shows a tqdm bar for
    folders (``None``: only on a terminal). Errors other than bad input (e.g. a full disk)
    are reported per file the same way, and the batch goes on. Each file's outputs, every knee's,
    are written all or none in a background thread while the next file is predicted;
    ``result.written`` keeps the input order.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    output_dir = Path(output_dir)
    files = find_radiographs(input_path, exclude=[output_dir])
    root = Path(input_path) if Path(input_path).is_dir() else None
    result = BatchResult()
    say = echo or (lambda line: None)
    bar = tqdm(
        files, desc="predict", unit="file", disable=(root is None) or (None if progress is None else not progress)
    )
    if fmt == "dicom" and getattr(predictor.network, "tissue_classes", 0) > 0:
        from xray2mri.pipeline.serving.dicom_seg import SEG_UNAVAILABLE, seg_available

        if not seg_available():
            say(f"warning: {SEG_UNAVAILABLE}")
    # Network on the main thread, writing on a background one: each radiograph's outputs (a list
    # of write jobs, every knee's, all or none) are written while the next radiograph is predicted.
    with BackgroundWriter() as writer:
        for path in bar:
            try:
                given = _given_centres(centres or {}, path, root)
                if given:
                    predictions = [p for row, col, side in given for p in predictor.predict_knees(path, (row, col), side)]
                else:
                    predictions = predictor.predict_knees(path)
                for note in dict.fromkeys(n for p in predictions for n in p.warnings):
                    result.warnings.append((path, note))
                    say(f"{path}: warning: {note}")
                stem = output_stem(path, root)
                jobs: list[OutputJob] = []
                for prediction in predictions:
                    if len(given) > 1:  # several given centres: name each knee by its side
                        prediction.facts["knees_found"] = len(given)
                    jobs += prediction_outputs(prediction, output_dir, knee_stem(stem, prediction), fmt, patient_id)
                writer.submit(path, jobs)
            except Exception as exc:  # one bad file must not stop a batch; report it like a rejection
                _reject(result, path, exc, say)
            for done in writer.finished():
                _record_write(result, done, say)
        for done in writer.close():
            _record_write(result, done, say)
    bar.close()
    result.seconds = time.perf_counter() - start
    return result


def _reject(result: BatchResult, path: Path, exc: BaseException, say: Callable[[str], None]) -> None:
    """Record and report a radiograph that gave no output: the input's reason, else the error itself."""
    reason = input_error_reason(exc) or f"{type(exc).__name__}: {exc}"
    result.rejected.append((path, reason))
    say(f"{path}: rejected: {reason}")


def _record_write(result: BatchResult, done: WriteResult, say: Callable[[str], None]) -> None:
    """Record one radiograph's written outputs, or its write error as a rejection (nothing of it is left)."""
    if done.error is not None:
        _reject(result, done.key, done.error, say)
    else:
        result.written.append((done.key, done.outputs))
