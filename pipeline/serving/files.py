"""Which files a serving run reads, and the names of what it writes: one rule for every way in.

``xray2mri predict`` (:mod:`~xray2mri.pipeline.serving.predict`) and the bundle's
``inference.json`` (:func:`~xray2mri.pipeline.serving.volume_outputs.inference_items`) both take
their radiographs from :func:`find_radiographs` and name their outputs with :func:`output_stem`,
so the same input gives the same list of files and the same output names either way.

The input rule: a file is taken as it is; a folder contributes every regular file below it,
recursively and sorted, whatever its name (OAI and many archives store DICOM without an
extension, e.g. ``001``). Hidden files and folders (a leading ".") are skipped, and so is any
``exclude`` folder (the output folder, when it lies inside the input). Whether a file is a
usable radiograph is the loader's decision (:class:`~xray2mri.transforms.xray.LoadXray`), not
its name's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from xray2mri.transforms.errors import XrayInputError

__all__ = [
    "NIFTI_SUFFIX",
    "DICOM_SUFFIX",
    "PREVIEW_SUFFIX",
    "DICOM_EXTENSIONS",
    "find_radiographs",
    "looks_like_dicom",
    "output_stem",
]

#: ``<stem>`` + this is the output volume as NIfTI.
NIFTI_SUFFIX: str = "_mri_synthetic.nii.gz"
#: ``<stem>`` + this is the output volume as a DICOM MR series folder.
DICOM_SUFFIX: str = "_mri_synthetic"
#: ``<stem>`` + this is the PNG preview of the output volume.
PREVIEW_SUFFIX: str = "_preview.png"
#: File extensions stripped to make an output stem; other names (e.g. UID-named files) stay whole.
DICOM_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom", ".dic", ".ima"})

_PREAMBLE_BYTES = 128


def find_radiographs(input_path: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The files to try: ``input_path`` itself, or every regular file under it (recursive, sorted).

    Within each folder its files come first (sorted by name), then its sub-folders (sorted).
    Hidden files and folders (names starting with ".") and anything under an ``exclude``
    folder are skipped.

    Raises:
        XrayInputError: ``input_path`` does not exist.
    """
    root = Path(input_path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise XrayInputError(root, "no such file or folder")
    excluded = [Path(e).resolve() for e in exclude]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded
        )
        found.extend(here / f for f in sorted(filenames) if not f.startswith(".") and (here / f).is_file())
    return found


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM file at all: the ``DICM`` marker after the preamble, or (for files
    written without a preamble) a header that parses with image rows and columns.

    A cheap sniff for callers that cannot skip a bad item later (``inference.json``); it says
    nothing about whether the image is a usable radiograph.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_PREAMBLE_BYTES + 4)
    except OSError:
        return False
    if head[_PREAMBLE_BYTES:] == b"DICM":
        return True
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - anything that does not parse is not DICOM
        return False
    return "Rows" in ds and "Columns" in ds


def output_stem(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The output stem of ``path``: its name without a DICOM extension, under its sub-folder of ``root``.

    Files found inside sub-folders of the input keep that relative sub-folder, so two
    ``IM0001`` files in different series cannot overwrite each other's outputs.
    """
    path = Path(path)
    name = path.stem if path.suffix.lower() in DICOM_EXTENSIONS else path.name
    if root is not None and Path(root).is_dir():
        return path.parent.relative_to(root) / name
    return Path(name)
