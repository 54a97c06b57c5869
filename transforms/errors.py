"""One exception type for bad input, so callers can catch every refusal in one place."""

from __future__ import annotations

import os


class InputError(ValueError):
    """A file that cannot be used as input; the message names the file and the reason.

    Args:
        filename: the offending file or folder.
        reason: what is wrong and, where possible, what to do about it.
    """

    def __init__(self, filename: str | os.PathLike | None, reason: str) -> None:
        self.filename = None if filename is None else os.fspath(filename)
        self.reason = reason
        super().__init__(f"{self.filename}: {reason}" if self.filename else reason)

    def __reduce__(self):  # picklable across DataLoader workers / multiprocessing
        return (type(self), (self.filename, self.reason))


class XrayInputError(InputError):
    """A radiograph that cannot be loaded (not DICOM, colour, no pixels, ...)."""


class MriInputError(InputError):
    """An MRI volume that cannot be loaded (4-D without an index, NaN voxels, ...)."""
