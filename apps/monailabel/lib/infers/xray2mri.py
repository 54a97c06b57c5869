"""MONAI Label infer task: a knee radiograph from the datastore in, the generated MRI volume out as NIfTI.

The task runs the bundle's own inference (:class:`xray2mri.pipeline.serving.predict.Predictor`, built
from the bundle's ``configs/inference.json`` with its weights checked against the bundle's
metadata) and writes the volume itself. MONAI Label's default post-processing would restore
the output to the input image's shape and write an integer label map; for a 2-D radiograph in
and a 3-D float volume out that is wrong, so :meth:`GenerateMri.writer` writes a float32 NIfTI
with the prediction's affine (canonical "PIL" frame, the model's voxel spacing, the
radiograph's own side), marked SYNTHETIC in its ``descrip`` (:func:`xray2mri.pipeline.serving.writers.write_nifti`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

logger = logging.getLogger(__name__)

#: Key under which the prediction travels through the task's data dict.
PREDICTION_KEY = "xray2mri_prediction"
#: Why a NIfTI image is refused (what a DICOMweb datastore hands over) and what to do instead.
NIFTI_REFUSAL = (
    "{image}: a NIfTI image; xray2mri needs the radiograph's DICOM file. MONAI Label's DICOMweb datastore "
    "converts studies to NIfTI, which loses the VOI LUT, MONOCHROME1 inversion, imager pixel spacing and "
    "laterality the model's preprocessing reads: serve a studies folder of the DICOM files (--studies DIR), "
    "or run `xray2mri predict` on them"
)
#: Answer (HTTP 422) to ``{"uncertainty_only": true}`` when the bundle gives no map.
NO_MAP_REFUSAL = (
    "this bundle gives no uncertainty map: its network has no uncertainty head (train.json 'uncertainty') "
    "or models/uncertainty_calibration.json is missing (`xray2mri calibrate`)"
)
#: Answer (HTTP 422) to ``{"labels_only": true}`` when the bundle gives no label map.
NO_LABELS_REFUSAL = (
    "this bundle gives no tissue label map: its network has no tissue head (train.json 'tissue_weight' is 0)"
)
#: Key of the note saying which knee was returned.
NOTE_KEY = "xray2mri_knee_note"


class GenerateMri(BasicInferTask):
    """Generate a synthetic 3-D knee MRI from one radiograph (``InferType.OTHERS``).

    Args:
        bundle_dir: the xray2mri bundle folder (``configs/``, ``models/model.pt``).
        random_weights: serve the network's random initial weights (no trained model yet; the
            output means nothing and every response says so).
        description: shown by MONAI Label's ``/info/``.
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        random_weights: bool = False,
        description: str = "Generate a SYNTHETIC 3-D knee MRI (NIfTI) from one AP/PA knee radiograph (DICOM)",
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.random_weights = bool(random_weights)
        if self.random_weights:
            description = f"UNTRAINED (random weights, output meaningless): {description}"
        super().__init__(
            path=str(self.bundle_dir / "models" / "model.pt"),
            network=None,
            type=InferType.OTHERS,
            labels=None,
            dimension=3,
            description=description,
        )
        self._predictor: Any = None
        self._predictor_device: Any = None
        self._lock = threading.Lock()

    def is_valid(self) -> bool:
        """Servable when the bundle has weights (or random weights were asked for)."""
        return self.random_weights or Path(self.path[0]).is_file()

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["bundle"] = str(self.bundle_dir)
        out["random_weights"] = self.random_weights
        out["output"] = "float32 NIfTI, SYNTHETIC; (D, H, W) = (A->P, S->I, R->L)"
        return out

    def predictor(self, device: Any = "cpu") -> Any:
        """The bundle's :class:`~xray2mri.pipeline.serving.predict.Predictor`, built once per device (thread-safe)."""
        from xray2mri.pipeline.serving.predict import Predictor

        with self._lock:
            if self._predictor is None or str(self._predictor_device) != str(device):
                if self.random_weights:
                    logger.warning("xray2mri: serving RANDOM weights; the generated volumes mean nothing")
                # an exported bundle is verified file by file when the predictor opens it (refused otherwise)
                self._predictor = Predictor.from_bundle(self.bundle_dir, device=device, random_init=self.random_weights)
                self._predictor_device = device
            return self._predictor

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        """None: the bundle's own preprocessing runs inside the predictor."""
        return []

    def inverse_transforms(self, data: Any = None) -> None:
        """None: the volume's geometry comes from the prediction, not from inverting the input's."""
        return None

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        """None: the volume is written as it is (no label-map restoration to the input's shape)."""
        return []

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: Any = "cpu") -> dict[str, Any]:
        """Generate the volume of one knee of the radiograph at ``data["image"]`` (a path MONAI Label resolved).

        The knees are found as ``xray2mri predict`` finds them; the request's ``side`` (``"R"``/``"L"``)
        picks the knee of a bilateral radiograph, else the patient's right knee is returned
        (:func:`~xray2mri.pipeline.serving.predict.choose_knee`; the response's ``knee_note`` names both).
        A radiograph with no knee is refused with HTTP 422 and the knee finder's reason.

        A radiograph the bundle cannot use (not DICOM, unreadable, no usable geometry) is
        refused with HTTP 422 and the reason in the response's ``detail``, not a bare 500. A
        NIfTI image is refused on purpose: MONAI Label's DICOMweb datastore hands studies over
        converted to NIfTI, which drops what the radiograph chain reads from the DICOM (VOI
        LUT, MONOCHROME1, imager pixel spacing, laterality), so the volume would be generated
        from a differently scaled, possibly mirrored, image.
        """
        from fastapi import HTTPException

        from xray2mri.pipeline.serving.predict import choose_knee
        from xray2mri.transforms.errors import InputError

        image = data.get("image")
        if not isinstance(image, (str, os.PathLike)):
            raise HTTPException(422, f"xray2mri expects a radiograph file (DICOM) as image, got {type(image).__name__}")
        if str(image).lower().endswith((".nii", ".nii.gz")):
            raise HTTPException(422, NIFTI_REFUSAL.format(image=Path(image).name))
        try:
            predictions = self.predictor(device).predict_knees(image)
            data[PREDICTION_KEY], data[NOTE_KEY] = choose_knee(predictions, data.get("side"))
            chosen = data[PREDICTION_KEY]
            if chosen.ood and chosen.ood.get("ood_flag"):
                from xray2mri.pipeline.serving.uncertainty import OOD_WARNING

                logger.warning(f"{image}: {OOD_WARNING} (OOD score {chosen.ood['ood_score']})")
        except InputError as exc:
            raise HTTPException(422, f"xray2mri cannot use this radiograph: {exc}") from exc
        if data.get("uncertainty_only") and chosen.uncertainty is None:
            raise HTTPException(422, NO_MAP_REFUSAL)
        if data.get("labels_only") and chosen.labels is None:
            raise HTTPException(422, NO_LABELS_REFUSAL)
        return data

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict[str, Any]]:
        """Write the volume as float32 NIfTI (prediction's affine, marked SYNTHETIC) to a temporary file.

        MONAI Label sends the file back (``output=image``) and deletes it afterwards. With a bundle
        whose network has the uncertainty head and a calibration, the calibrated map is written beside
        it (``<name>_uncertainty.nii.gz``, same grid; its path is the result's ``uncertainty_map``: MONAI
        Label returns one image per request, so a client on another host asks again with
        ``{"uncertainty_only": true}``), and the result carries ``ood_score``, ``ood_threshold`` and
        ``ood_flag``, with the warning among ``warnings`` when flagged. With the tissue head,
        ``{"labels_only": true}`` returns the tissue label map instead (uint8 classes, same grid; the
        result's ``knee`` holds the readings taken on it and the class legend).
        """
        import nibabel as nib

        from xray2mri.pipeline.serving.writers import write_nifti

        pred = data[PREDICTION_KEY]
        fd, name = tempfile.mkstemp(prefix="xray2mri_", suffix=".nii.gz")
        os.close(fd)
        uncertainty_path = None
        if pred.uncertainty is not None:
            from xray2mri.pipeline.serving.uncertainty import UNCERTAINTY_SUFFIX, write_uncertainty_map

            uncertainty_path = name[: -len(".nii.gz")] + UNCERTAINTY_SUFFIX
            write_uncertainty_map(pred.uncertainty, pred.affine, uncertainty_path)
        if data.get("uncertainty_only") and uncertainty_path is not None:  # (no map: refused in run_inferer)
            os.replace(uncertainty_path, name)
            uncertainty_path = name
        elif data.get("labels_only") and pred.labels is not None:  # (no labels: refused in run_inferer)
            from xray2mri.pipeline.serving.tissue_outputs import write_label_map

            write_label_map(pred.labels, pred.affine, name)
        else:
            write_nifti(pred.volume, pred.affine, name)
        result = {
            "synthetic": True,
            "random_weights": self.random_weights,
            "shape": [int(s) for s in pred.volume.shape],
            "spacing_mm": [float(s) for s in nib.affines.voxel_sizes(pred.affine)],
            "axcodes": "".join(nib.aff2axcodes(pred.affine)),
            "mirrored_to_canonical": bool(pred.mirrored),
            "warnings": list(pred.warnings),
            "source": os.fspath(pred.source),
            "knee": dict(pred.facts),
            "knee_note": data.get(NOTE_KEY, ""),
            **(pred.ood or {}),
            "uncertainty_map": uncertainty_path,
            "labels_available": pred.labels is not None,
        }
        return name, result
