"""Atomic writes, the one place: a reader (or a run killed mid-write) sees the old complete output or
the new complete output, never a partial one.

A file is written under a temporary name in its destination folder, flushed to disk and moved into
place with :func:`os.replace`; a folder (a DICOM series, a report) is filled under a temporary name
beside its destination and renamed. On any error the temporary is deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_file", "atomic_folder"]


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and move it onto ``path``, on error delete it.

    The temporary name keeps the destination's suffixes (``.nii.gz``, ``.png``), so writers that
    choose a format from the extension behave the same, and starts with a dot, so folder listings
    and globs for outputs do not pick it up. ``mode`` is applied before the rename (mkstemp makes 0600).

    Example::

        with atomic_file("out/vol.nii.gz") as tmp:
            nib.save(img, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success rename it to ``path``, on error delete it.

    An existing ``path`` (a previous run) is moved aside first and deleted only once the new
    folder is in place, so a reader sees either the old complete folder or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
