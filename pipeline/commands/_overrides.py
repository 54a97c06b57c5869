"""``--override KEY VALUE`` of the sub-commands that run bundle configs: one reading of VALUE for all."""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = ["parse_overrides"]


def parse_overrides(pairs: Iterable[tuple[str, str]]) -> dict[str, object]:
    """``[(key, text), ...]`` -> ``{key: value}``: the text read as JSON (``1.0``, ``true``, ``[64, 64]``,
    ``null``), else kept as a string (``bottleneck``), so ``--override tissue_weight 1.0`` is the number 1.0
    in every step that receives it, and ``--override uncertainty false`` is False, not a true-ish string."""
    out: dict[str, object] = {}
    for key, text in pairs:
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out
