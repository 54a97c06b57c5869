"""A user's CSV table (pairs of files, joint centres) read one way: BOM-tolerant UTF-8, column names in
any case, every unreadable file or missing column reported as the caller's error naming the file."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from xray2mri.transforms.errors import InputError

__all__ = ["read_csv_table"]


def read_csv_table(
    path: str | os.PathLike,
    required: Sequence[str],
    what: str,
    needs: str,
    error: type[InputError] = InputError,
) -> list[tuple[int, dict[str, str]]]:
    """The rows of ``path`` as ``(line number, {lower-case column name: stripped cell})``.

    Args:
        required: columns (lower case) the table must have.
        what: what the table is, for messages ("the centres CSV").
        needs: what a complete header holds, said after the missing columns ("a centres CSV has ...").
        error: the :class:`InputError` subclass raised.

    Raises:
        error: the file cannot be read as CSV text, or a required column is missing (the message lists
            the columns found).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = {(name or "").strip().lower(): name for name in reader.fieldnames or [] if name}
            missing = [c for c in required if c not in header]
            if missing:
                found = ", ".join(reader.fieldnames or []) or "no header"
                raise error(path, f"missing column(s) {', '.join(missing)}; {needs}, found {found}")
            return [
                (reader.line_num, {c: (row.get(name) or "").strip() for c, name in header.items()})
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise error(path, f"cannot read {what} ({err})") from err
