"""Load xray2mri's generated MRI for one radiograph of a MONAI Label server into 3D Slicer.

The app's task ``xray2mri`` is ``InferType.OTHERS``: a REST service that returns a volume, which
Slicer's MONAI Label module does not list (it offers segmentation, DeepGrow/DeepEdit, scribbles
and detection tasks). In Slicer, use this file from the Python console (View > Python Console)::

    exec(open("/path/to/xray2mri/apps/monailabel/slicer_load_volume.py").read())
    load_generated_mri("http://127.0.0.1:8000", "SYN0000_xray")

It sends the same request as ``curl -X POST 'http://127.0.0.1:8000/infer/xray2mri?image=<id>&output=image'``
(an image id is the radiograph's file name in the server's studies folder, without ``.dcm``),
saves the float32 NIfTI it gets back (marked SYNTHETIC) and loads it as a scalar volume named
``<id>_mri_SYNTHETIC``. The app returns the generated volume only (no label or uncertainty map).
A refused radiograph (not DICOM, unusable) raises ``RuntimeError`` with the server's reason.
Standard library only, plus ``slicer`` when loading.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request

TASK = "xray2mri"


def fetch_generated_mri(server: str, image_id: str, task: str = TASK, dest_dir: str | None = None,
                        timeout: float = 300.0) -> str:
    """POST ``/infer/<task>?image=<image_id>&output=image`` and save the returned NIfTI; returns its path.

    Raises:
        RuntimeError: the server refused or failed (its ``detail`` in the message).
    """
    query = urllib.parse.urlencode({"image": image_id, "output": "image"})
    url = f"{server.rstrip('/')}/infer/{urllib.parse.quote(task)}?{query}"
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode("utf-8", "replace")
        try:
            detail = json.loads(raw).get("detail", raw)
        except (json.JSONDecodeError, AttributeError):
            detail = raw
        raise RuntimeError(f"{url}: HTTP {exc.code}: {detail}") from exc
    folder = dest_dir or tempfile.mkdtemp(prefix="xray2mri_")
    path = os.path.join(folder, f"{image_id}_mri_synthetic.nii.gz")
    with open(path, "wb") as f:
        f.write(body)
    return path


def load_generated_mri(server: str, image_id: str, task: str = TASK):
    """Fetch the generated volume and load it into the Slicer scene as a scalar volume; returns the node."""
    import slicer  # only inside 3D Slicer

    path = fetch_generated_mri(server, image_id, task)
    return slicer.util.loadVolume(path, properties={"name": f"{image_id}_mri_SYNTHETIC"})
