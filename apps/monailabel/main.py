"""The xray2mri MONAI Label app: serves the knee_xray2mri bundle's radiograph -> MRI generation.

Start it (in the MONAI Label venv, ``make .venv-monailabel/.installed``; ``make monailabel`` does
all of this)::

    .venv-monailabel/bin/python -m monailabel.main start_server \\
        --app apps/monailabel --studies STUDIES_DIR --host 127.0.0.1 --port 8000 \\
        [--conf bundle bundles/knee_xray2mri] [--conf random_weights true]

then ``POST /infer/xray2mri?image=<id>&output=image`` returns the generated volume (NIfTI), where
``<id>`` is a radiograph's file name in STUDIES_DIR without ``.dcm``.

``--conf`` keys: ``bundle`` (the bundle folder; default the repository's
``bundles/knee_xray2mri``) and ``random_weights`` (``true`` serves an untrained network, with a
warning in the log, in ``/info/`` and in every result; default ``false``, and the app refuses to
start without ``models/model.pt``). The datastore is MONAI Label's local one, with DICOM files
(``*.dcm``) accepted as images besides its default extensions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lib.infers import GenerateMri
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)

#: Name of the infer task (the ``<task>`` in ``/infer/<task>``).
TASK_NAME = "xray2mri"
#: The repository's bundle, two folders above this app (apps/monailabel -> repo root).
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "knee_xray2mri"
#: Radiographs arrive as DICOM files; MONAI Label's local datastore does not list them by default.
DICOM_EXTENSIONS = ("*.dcm",)


class XrayToMriApp(MONAILabelApp):
    """MONAI Label app with one infer task, ``xray2mri`` (radiograph in, SYNTHETIC MRI volume out)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle_dir = Path(conf.get("bundle") or DEFAULT_BUNDLE).resolve()
        self.random_weights = bool(strtobool(conf.get("random_weights", "false")))
        weights = self.bundle_dir / "models" / "model.pt"
        if not (self.bundle_dir / "configs" / "inference.json").is_file():
            raise FileNotFoundError(f"{self.bundle_dir}: not an xray2mri bundle (no configs/inference.json); set --conf bundle DIR")
        if not weights.is_file() and not self.random_weights:
            raise FileNotFoundError(
                f"{weights}: no trained model; run `make demo` first (it installs the weights), "
                "or start with --conf random_weights true to serve an UNTRAINED network"
            )
        if self.random_weights:
            logger.warning("=" * 70 + "\nxray2mri: serving RANDOM (untrained) weights; outputs are meaningless\n" + "=" * 70)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="xray2mri",
            description="Knee radiograph -> SYNTHETIC 3-D MRI volume (research only, not for diagnosis)",
            version="0.1.0",
        )

    def init_datastore(self) -> Datastore:
        """MONAI Label's local datastore over ``studies``, listing DICOM radiographs too."""
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        extensions = list(dict.fromkeys([*settings.MONAI_LABEL_DATASTORE_FILE_EXT, *DICOM_EXTENSIONS]))
        return LocalDatastore(
            self.studies,
            extensions=extensions,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict:
        return {TASK_NAME: GenerateMri(self.bundle_dir, random_weights=self.random_weights)}

    def infer(self, request: dict, datastore: Datastore | None = None) -> dict:
        """As MONAI Label's, but never stores the generated volume as a *label* of the radiograph."""
        return super().infer({**request, "save_label": False}, datastore)


if __name__ == "__main__":  # pragma: no cover - a quick local check: python main.py STUDIES RADIOGRAPH_ID
    import sys

    app = XrayToMriApp(os.path.dirname(__file__), sys.argv[1], {"random_weights": os.environ.get("RANDOM", "false")})
    print(app.infer({"model": TASK_NAME, "image": sys.argv[2]}))
