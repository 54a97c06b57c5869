"""Load xray2mri's generated MRI for one radiograph of a MONAI Label server into 3D Slicer.

The app's task ``xray2mri`` is ``InferType.OTHERS``: a REST service that returns a volume, which
Slicer's MONAI Label module does not list (it offers segmentation, DeepGrow/DeepEdit, scribbles
and detection tasks). In Slicer, use this file from the Python console (View > Python Console)::

    exec(open("/path/to/xray2mri/apps/monailabel/slicer_load_volume.py").read())
    load_generated_mri("http://127.0.0.1:8000", "SYN0000_xray")

It sends the same request as ``curl -X POST 'http://127.0.0.1:8000/infer/xray2mri?image=<id>&output=image'``
(an image id is the radiograph's file name in the server's studies folder, without ``.dcm``),
saves the float32 NIfTI it gets back (marked SYNTHETIC) and loads it as a scalar volume named
``<id>_mri_SYNTHETIC``. When the served bundle is calibrated, a second request with the params
``{"uncertainty_only": true}`` fetches the calibrated 90 % uncertainty map on the same grid, loaded as
the scalar volume ``<id>_uncertainty_SYNTHETIC`` (a bundle without one answers HTTP 422 and only the
volume is loaded). When the bundle's network has the tissue head, ``{"labels_only": true}`` fetches its
tissue label map (uint8 classes, same grid), loaded as the label map volume ``<id>_labels_SYNTHETIC``.
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
#: Part of the app's answer when its bundle gives no uncertainty map (the app's ``NO_MAP_REFUSAL``).
NO_MAP_MARK = "gives no uncertainty map"
#: Part of the app's answer when its bundle gives no tissue label map (the app's ``NO_LABELS_REFUSAL``).
NO_LABELS_MARK = "gives no tissue label map"
#: The request params of each output the task returns.
OUTPUT_PARAMS = {"mri": {}, "uncertainty": {"uncertainty_only": True}, "labels": {"labels_only": True}}


def fetch_generated_mri(server: str, image_id: str, task: str = TASK, dest_dir: str | None = None,
                        timeout: float = 300.0, what: str = "mri") -> str:
    """POST ``/infer/<task>?image=<image_id>&output=image`` and save the returned NIfTI; returns its path.

    ``what``: ``"mri"`` (the volume), ``"uncertainty"`` (the calibrated map, params ``{"uncertainty_only": true}``)
    or ``"labels"`` (the tissue label map, params ``{"labels_only": true}``).

    Raises:
        RuntimeError: the server refused or failed (its ``detail`` and HTTP status in the message).
        ValueError: an unknown ``what``.
    """
    if what not in OUTPUT_PARAMS:
        raise ValueError(f"what must be one of {sorted(OUTPUT_PARAMS)}, got {what!r}")
    query = urllib.parse.urlencode({"image": image_id, "output": "image"})
    url = f"{server.rstrip('/')}/infer/{urllib.parse.quote(task)}?{query}"
    params = OUTPUT_PARAMS[what]
    body = urllib.parse.urlencode({"params": json.dumps(params)}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
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
    path = os.path.join(folder, f"{image_id}_{what}_synthetic.nii.gz")
    with open(path, "wb") as f:
        f.write(body)
    return path


def _fetch_if_served(what: str, refusal_mark: str, server: str, image_id: str, task: str, dest_dir: str | None,
                     timeout: float) -> str | None:
    """``fetch_generated_mri(..., what=what)``, or None when the server's refusal says the bundle has no such output."""
    try:
        return fetch_generated_mri(server, image_id, task, dest_dir, timeout, what=what)
    except RuntimeError as exc:
        if refusal_mark in str(exc):
            return None
        raise


def fetch_uncertainty_map(server: str, image_id: str, task: str = TASK, dest_dir: str | None = None,
                          timeout: float = 300.0) -> str | None:
    """The calibrated uncertainty map's NIfTI path, or None when the served bundle gives none."""
    return _fetch_if_served("uncertainty", NO_MAP_MARK, server, image_id, task, dest_dir, timeout)


def fetch_label_map(server: str, image_id: str, task: str = TASK, dest_dir: str | None = None,
                    timeout: float = 300.0) -> str | None:
    """The tissue label map's NIfTI path, or None when the served bundle's network has no tissue head."""
    return _fetch_if_served("labels", NO_LABELS_MARK, server, image_id, task, dest_dir, timeout)


def load_generated_mri(server: str, image_id: str, task: str = TASK):
    """Fetch the generated volume (and its uncertainty map and tissue label map when the bundle gives them)
    and load them into the Slicer scene; returns the volume's node."""
    import slicer  # only inside 3D Slicer

    path = fetch_generated_mri(server, image_id, task)
    node = slicer.util.loadVolume(path, properties={"name": f"{image_id}_mri_SYNTHETIC"})
    map_path = fetch_uncertainty_map(server, image_id, task, dest_dir=os.path.dirname(path))
    if map_path is not None:
        slicer.util.loadVolume(map_path, properties={"name": f"{image_id}_uncertainty_SYNTHETIC", "show": False})
    labels_path = fetch_label_map(server, image_id, task, dest_dir=os.path.dirname(path))
    if labels_path is not None:
        slicer.util.loadLabelVolume(labels_path, properties={"name": f"{image_id}_labels_SYNTHETIC"})
    return node
