"""Prediction: radiograph DICOM(s) in, synthetic MRI volume(s) out, from a trained bundle.

:class:`Predictor` holds a network, the bundle's radiograph preprocessing and the model's MRI
voxel spacing; :meth:`Predictor.from_bundle` builds one from a bundle folder (its
``configs/inference.json``, read with :class:`monai.bundle.ConfigParser`, and the weights in
``models/model.pt`` loaded with ``torch.load(weights_only=True)``, both through
:func:`~xray2mri.pipeline.serving.bundle.open_bundle`). :func:`predict_batch`
runs it over one file or a folder and writes the outputs with :mod:`xray2mri.pipeline.serving.writers`.

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
a radiograph of another body part or view is processed with a warning taken from its tags.
Outputs are written atomically, and a volume whose preview fails is removed, so no partial
output is ever left behind. :func:`predict_batch` writes each radiograph's outputs in a
background thread (:class:`~xray2mri.pipeline.serving.write_queue.BackgroundWriter`) while the
next radiograph is loaded and predicted; a write error is reported for its file like a rejection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from xray2mri.pipeline.serving import writers
from xray2mri.pipeline.serving.bundle import open_bundle
from xray2mri.pipeline.serving.files import (
    DICOM_SUFFIX,
    NIFTI_SUFFIX,
    PREVIEW_SUFFIX,
    find_radiographs,
    output_stem,
)
from xray2mri.pipeline.serving.write_queue import BackgroundWriter, OutputJob, WriteResult, write_all_or_none
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
    """

    source: Path
    volume: np.ndarray
    affine: np.ndarray
    mirrored: bool = False
    warnings: list[str] = field(default_factory=list)
    header: Any = None
    timings: dict[str, float] = field(default_factory=dict)


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
    ) -> None:
        self.device = _resolve_device(device)
        self.network = network.to(self.device).eval()
        self.preprocess = preprocess
        self.mri_spacing = tuple(float(s) for s in mri_spacing)
        if len(self.mri_spacing) != 3 or any(s <= 0 for s in self.mri_spacing):
            raise ValueError(f"mri_spacing must be 3 positive numbers (mm), got {mri_spacing!r}")
        self.image_key = image_key

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        overrides: dict[str, Any] | None = None,
        random_init: bool = False,
    ) -> Predictor:
        """The network and preprocessing of ``bundle_dir/configs/inference.json``, through :func:`open_bundle`.

        ``weights`` defaults to ``models/model.pt`` (verified against the bundle's checksums).
        ``overrides`` are set on the parsed config before anything is built (e.g. tiny sizes).
        ``random_init=True`` keeps the network's random initial weights instead (for timing
        the pipeline before a model is trained; its output means nothing).

        Raises:
            FileNotFoundError: no ``configs/inference.json`` or no weights file.
        """
        bundle = open_bundle(bundle_dir, overrides=overrides)
        network = bundle.network(weights=weights, random_init=random_init)
        preprocess = bundle.preprocessing()
        return cls(network, preprocess, bundle.setting("mri_spacing"), device=device, image_key=bundle.image_key)

    @torch.inference_mode()
    def predict(self, path: str | os.PathLike) -> Prediction:
        """Generate the MRI volume of one radiograph.

        Raises:
            XrayInputError: the file cannot be used as a radiograph (the reason says why).
        """
        path = Path(path)
        t0 = time.perf_counter()
        try:
            item = self.preprocess({self.image_key: str(path)})
        except Exception as exc:
            reason = input_error_reason(exc)
            if reason is None:
                raise
            raise XrayInputError(path, reason) from exc
        xray = item[self.image_key]
        meta = dict(getattr(xray, "meta", {}) or {})
        mirrored = bool(meta.get(MIRRORED_KEY, item.get(MIRRORED_KEY, False)))
        header = _read_header(path)
        t1 = time.perf_counter()

        batch = torch.as_tensor(xray, dtype=torch.float32).unsqueeze(0).to(self.device)
        out = self.network(batch)
        if isinstance(out, dict):
            out = out["mri"]
        volume = torch.as_tensor(out)[0, 0].float().clamp(0.0, 1.0).cpu()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()

        volume_np = _mirror_back(volume, mirrored).numpy()
        affine = canonical_affine(volume_np.shape, self.mri_spacing)
        return Prediction(
            source=path,
            volume=np.ascontiguousarray(volume_np, dtype=np.float32),
            affine=affine,
            mirrored=mirrored,
            warnings=_input_warnings(meta, header),
            header=header,
            timings={"load_preprocess": t1 - t0, "forward": t2 - t1},
        )




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
    if not meta.get("laterality"):
        notes.append(
            "no ImageLaterality/Laterality: treated as a right knee (not mirrored); "
            "a left knee will come out mirrored"
        )
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
    """The outputs of one prediction, as jobs that each write one file or folder atomically when called:
    the volume (NIfTI file or DICOM series folder), then its PNG preview.

    Nothing is written here; run the list with :func:`~xray2mri.pipeline.serving.write_queue.write_all_or_none`
    (as :func:`save_prediction` does) or a :class:`~xray2mri.pipeline.serving.write_queue.BackgroundWriter`.
    """
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    base = Path(output_dir) / stem
    title = f"{prediction.source.name}" + (" (left knee, mirrored back)" if prediction.mirrored else "")
    volume, affine = prediction.volume, prediction.affine
    if fmt == "nifti":
        def write_volume() -> Path:
            return writers.write_nifti(volume, affine, f"{base}{NIFTI_SUFFIX}")
    else:
        def write_volume() -> Path:
            return writers.write_dicom_series(
                volume, affine, f"{base}{DICOM_SUFFIX}", source=prediction.header, patient_id=patient_id
            )

    def write_preview() -> Path:
        return writers.write_preview_png(volume, affine, f"{base}{PREVIEW_SUFFIX}", title)

    return [write_volume, write_preview]


def save_prediction(
    prediction: Prediction,
    output_dir: str | os.PathLike,
    stem: str | os.PathLike,
    fmt: Literal["nifti", "dicom"] = "nifti",
    patient_id: writers.PatientIdPolicy = "pseudonymise",
) -> list[Path]:
    """Write the volume (NIfTI file or DICOM series folder) and its PNG preview now; returns their paths.

    Each is written atomically; if the preview fails, the volume just written is removed, so
    a radiograph has either both outputs or none. The time taken is ``prediction.timings["write"]``.
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


def predict_batch(
    predictor: Predictor,
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    fmt: Literal["nifti", "dicom"] = "nifti",
    patient_id: writers.PatientIdPolicy = "pseudonymise",
    echo: Callable[[str], None] | None = None,
    progress: bool | None = None,
) -> BatchResult:
    """Predict every radiograph of ``input_path`` (a file or a folder) into ``output_dir``.

    A rejected file is reported through ``echo`` as ``"<file>: rejected: <reason>"`` and a
    warning as ``"<file>: warning: <text>"``, as they happen. ``progress`` shows a tqdm bar for
    folders (``None``: only on a terminal). Errors other than bad input (e.g. a full disk)
    are reported per file the same way, and the batch goes on. Each file's outputs
    (:func:`prediction_outputs`) are written, all or none, in a background thread while the
    next file is predicted; ``result.written`` keeps the input order.
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
    # Network on the main thread, writing on a background one: each radiograph's outputs (a list
    # of write jobs, all or none) are written while the next radiograph is loaded and predicted.
    with BackgroundWriter() as writer:
        for path in bar:
            try:
                prediction = predictor.predict(path)
                for note in prediction.warnings:
                    result.warnings.append((path, note))
                    say(f"{path}: warning: {note}")
                writer.submit(path, prediction_outputs(prediction, output_dir, output_stem(path, root), fmt, patient_id))
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
