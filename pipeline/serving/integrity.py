"""Is this bundle the one that was exported? SHA-256 of every file, checked before anything of it runs.

An exported bundle carries code (``scripts/``) and configs that are evaluated when it is
opened, besides its weights; a changed byte in any of them must stop the bundle before it is
imported, parsed or loaded. :func:`bundle_checksums` is the export's side: the SHA-256 of every
file of the bundle folder except ``configs/metadata.json``, which records them under
:data:`CHECKSUM_KEY`. :func:`verify_bundle` is the receiving side: it recomputes them and
raises :class:`BundleIntegrityError` naming the first file that is missing, changed or
truncated, or that was added to ``configs/`` or ``scripts/`` after the export (added code is
refused like changed code). ``xray2mri bundle verify``, the bundle opener
(:func:`~xray2mri.pipeline.serving.bundle.open_bundle`) and an exported bundle's own
``inference.json`` / ``evaluate.json`` call it.

These checksums detect corruption and edits after export (a truncated download, a changed
file); they are not a signature: whoever can edit ``metadata.json`` can edit them too.

A bundle whose metadata records no checksums (the repository's working copy, before export)
is not verified (logged), as it never was, unless it carries code (``scripts/``): an exported
bundle without its checksums is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from xray2mri.transforms.errors import InputError

__all__ = [
    "BundleIntegrityError",
    "CHECKSUM_KEY",
    "METADATA_FILE",
    "CODE_FOLDERS",
    "sha256_file",
    "bundle_files",
    "bundle_checksums",
    "read_metadata",
    "verify_bundle",
]

logger = logging.getLogger(__name__)

#: metadata.json key holding ``{"<path relative to the bundle>": "<sha256 hex>", ...}`` for every file.
CHECKSUM_KEY: str = "files_sha256"
#: The file that records the checksums (and so is not among them), relative to the bundle.
METADATA_FILE: str = "configs/metadata.json"
#: Folders whose files are evaluated or imported: a file there that the metadata does not list is refused.
CODE_FOLDERS: tuple[str, ...] = ("configs", "scripts")
#: Written by Python when the bundle's code runs; neither listed nor checked.
_IGNORED_PARTS: frozenset[str] = frozenset({"__pycache__"})
_CHUNK = 1 << 20


class BundleIntegrityError(InputError):
    """A bundle file that is not the one exported: changed, truncated, missing, or added to its code."""


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(bundle_dir: str | os.PathLike, folders: tuple[str, ...] | None = None) -> list[str]:
    """The bundle's files as sorted POSIX paths relative to it (``folders`` only, if given).

    ``configs/metadata.json`` and Python's ``__pycache__`` folders are left out.
    """
    root = Path(bundle_dir)
    tops = [root / f for f in folders] if folders is not None else [root]
    found = set()
    for top in tops:
        if not top.is_dir():
            continue
        for path in top.rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and not _IGNORED_PARTS.intersection(rel.parts) and rel.as_posix() != METADATA_FILE:
                found.add(rel.as_posix())
    return sorted(found)


def bundle_checksums(bundle_dir: str | os.PathLike) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file of the bundle but ``configs/metadata.json`` (the export's side)."""
    root = Path(bundle_dir)
    return {key: sha256_file(root / key) for key in bundle_files(root)}


def read_metadata(bundle_dir: str | os.PathLike) -> dict[str, Any]:
    """``configs/metadata.json`` of the bundle.

    Raises:
        InputError: missing or not JSON (the message says a bundle folder is expected).
    """
    path = Path(bundle_dir) / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(path, "no metadata.json; is this a bundle folder?") from exc
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from exc


def verify_bundle(bundle_dir: str | os.PathLike) -> list[str]:
    """Check every file of an exported bundle against the SHA-256 its metadata.json records.

    Call it before anything of the bundle is imported, parsed or loaded. ``inference.json`` and
    ``evaluate.json`` of an exported bundle run ``$integrity.verify_bundle(@bundle_root)`` first.

    Returns:
        the files checked (empty for a bundle that records no checksums: not verified, logged).

    Raises:
        BundleIntegrityError: a listed file is missing or its SHA-256 differs (the message names
            the file, its size and the expected and found digests), or a file under ``configs/``
            or ``scripts/`` is not listed (added after export), or the bundle carries ``scripts/``
            but records no checksums.
        InputError: ``configs/metadata.json`` not JSON (or missing while ``scripts/`` is there).
    """
    root = Path(bundle_dir)
    carries_code = (root / "scripts").is_dir()
    if not (root / METADATA_FILE).is_file() and not carries_code:
        logger.info("%s: no %s, nothing to verify (a working copy, not an exported bundle)", root, METADATA_FILE)
        return []
    recorded = read_metadata(root).get(CHECKSUM_KEY) or {}
    if not recorded:
        if carries_code:  # an exported bundle whose checksums were removed: its code would run unchecked
            raise BundleIntegrityError(root / METADATA_FILE, f"records no {CHECKSUM_KEY}, yet the bundle carries "
                                       "code (scripts/); re-download or re-export the bundle")
        logger.info("%s records no %s: bundle files not verified (not an exported bundle)", root / METADATA_FILE,
                    CHECKSUM_KEY)
        return []
    for key in sorted(recorded):
        path = root / key
        if not path.is_file():
            raise BundleIntegrityError(path, f"missing; {METADATA_FILE} lists it with a SHA-256")
        found = sha256_file(path)
        if found != recorded[key]:
            raise BundleIntegrityError(
                path,
                f"SHA-256 mismatch ({path.stat().st_size} bytes): expected {recorded[key]}, found {found}; the file "
                "was changed or truncated after export - re-download or re-export the bundle, do not load it",
            )
    added = [key for key in bundle_files(root, CODE_FOLDERS) if key not in recorded]
    if added:
        raise BundleIntegrityError(
            root / added[0],
            f"not listed in {METADATA_FILE} ({len(added)} such file(s) under {'/, '.join(CODE_FOLDERS)}/): "
            "code or configs added after export are not run - remove them or re-export the bundle",
        )
    return sorted(recorded)
