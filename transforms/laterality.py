"""Mirror left knees to the canonical side, record it, and undo it on outputs.

The network only ever sees knees of one side (:data:`~.geometry.CANONICAL_SIDE`): a left
knee is mirrored along the column axis (:data:`~.geometry.LR_FLIP_AXIS`, patient
right <-> left in both the radiograph ``(1, H, W)`` and the MRI ``(1, D, H, W)``) and the
meta key :data:`~.geometry.MIRRORED_KEY` says so, so that what the network produces can be
mirrored back (:func:`mirror_back`, :class:`MirrorBackd`).

The mirror is an *anatomical* one: the array is flipped but the affine is left as it was,
so the result reads as a canonical-side knee in the standard layout (a later
``Orientation`` does not silently undo it, as it would undo a MONAI ``Flip``, which
re-labels the axis instead).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TraceKeys, TransformBackends, convert_to_tensor

from .geometry import CANONICAL_SIDE, LR_FLIP_AXIS, MIRRORED_KEY

__all__ = [
    "normalise_side",
    "dicom_laterality",
    "mirror_back",
    "MirrorToCanonicalSide",
    "MirrorToCanonicalSided",
    "MirrorBackd",
]

_SIDE_WORDS = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}


def normalise_side(value: Any) -> str | None:
    """``"L"``, ``"R"`` or None from a DICOM laterality or a datalist ``side``.

    ``"L"``/``"left"`` and ``"R"``/``"right"`` (any case, surrounding spaces ignored) name a
    side; ``"B"`` (both), ``"U"`` (unpaired), empty values and None name none.
    """
    if value is None:
        return None
    return _SIDE_WORDS.get(str(value).strip().upper())


def dicom_laterality(ds: Any) -> str | None:
    """The side a DICOM header states: ``"L"``, ``"R"`` or None, the one reading of it.

    ImageLaterality (the image's own side) is read first, then the series' Laterality; the
    first that is present decides, through :func:`normalise_side`, so ``"B"`` (both knees, a
    bilateral radiograph) and ``"U"`` name no side. ``ds`` is a pydicom Dataset (a header read
    with ``stop_before_pixels`` is enough) or any object with those attributes; a malformed
    value counts as absent.
    """
    for keyword in ("ImageLaterality", "Laterality"):
        try:
            value = str(getattr(ds, keyword, "") or "").strip()
        except Exception:  # noqa: BLE001 - pydicom raises on malformed values when they are read
            value = ""
        if value:
            return normalise_side(value)
    return None


def _flip(img: torch.Tensor) -> torch.Tensor:
    return torch.flip(img, dims=(LR_FLIP_AXIS,))


def _is_mirrored(source: Any) -> bool:
    """Whether ``source`` (a bool, a meta mapping or a MetaTensor) says the image was mirrored."""
    if isinstance(source, MetaTensor):
        source = source.meta
    if isinstance(source, Mapping):
        source = source.get(MIRRORED_KEY, False)
    if isinstance(source, torch.Tensor):
        if source.numel() != 1:
            raise ValueError(f"{MIRRORED_KEY} must be one value per image, got {source.numel()}; decollate first")
        source = source.item()
    return bool(source)


def mirror_back(img: Any, mirrored: bool | Mapping | MetaTensor) -> Any:
    """Undo the canonical-side mirror on an output, e.g. a predicted MRI volume.

    Args:
        img: any array or tensor whose last axis is the column (patient R->L) axis:
            ``(D, H, W)``, ``(1, D, H, W)``, ``(1, H, W)``...
        mirrored: True/False, or the meta (mapping or MetaTensor) of the input radiograph,
            whose :data:`MIRRORED_KEY` decides.

    Returns:
        ``img`` mirrored back along the last axis when ``mirrored`` says so (a tensor; a
        MetaTensor gets ``MIRRORED_KEY=False``), else ``img`` unchanged.
    """
    if not _is_mirrored(mirrored):
        return img
    out = _flip(convert_to_tensor(img, track_meta=isinstance(img, MetaTensor)))
    if isinstance(out, MetaTensor):
        out.meta[MIRRORED_KEY] = False
    return out


class MirrorToCanonicalSide(InvertibleTransform, Transform):
    """Mirror an image of a left knee so that it looks like a canonical-side (right) knee.

    The side comes from the call's ``side`` argument, else the constructor's ``side``, else
    the image meta ``laterality`` (as written by ``LoadXray``). When the side is known and
    is not :data:`CANONICAL_SIDE`, the last axis is flipped; the output meta records
    :data:`MIRRORED_KEY` (True or False) and the decision is pushed on
    ``applied_operations`` so that :meth:`inverse` undoes it.

    Args:
        side: a fixed side ("L"/"R"; other values mean unknown), or None to read it per call.

    Example::

        xray = LoadXray()("left_knee.dcm")          # meta laterality "L"
        canon = MirrorToCanonicalSide()(xray)       # columns flipped, meta mirrored_to_canonical=True
        back = MirrorToCanonicalSide().inverse(canon)  # use the same instance in practice
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, side: str | None = None) -> None:
        self.side = side

    def resolve_side(self, img: Any, side: Any = None) -> str | None:
        """The side to act on: the argument, else the constructor's, else the meta ``laterality``."""
        if side is None:
            side = self.side
        if side is None and isinstance(img, MetaTensor):
            side = img.meta.get("laterality")
        return normalise_side(side)

    def __call__(self, img: Any, side: Any = None) -> torch.Tensor:
        """Mirror ``img`` (channel first) along the last axis if its side is not canonical."""
        resolved = self.resolve_side(img, side)
        mirror = resolved is not None and resolved != CANONICAL_SIDE
        out = convert_to_tensor(img, track_meta=get_track_meta())
        if mirror:
            out = _flip(out)
        if isinstance(out, MetaTensor):
            out.meta[MIRRORED_KEY] = mirror
            self._do_transform = mirror
            self.push_transform(out, extra_info={"side": resolved or "", "mirrored": mirror})
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`__call__` (flip back when it mirrored); meta ``MIRRORED_KEY`` becomes False."""
        transform = self.pop_transform(data)
        if not transform[TraceKeys.EXTRA_INFO]["mirrored"]:
            return data
        return mirror_back(data, True)


class MirrorToCanonicalSided(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`MirrorToCanonicalSide`: one decision for all ``keys``.

    The side is ``data[side_key]`` when present (a datalist item's ``"side"``), else the
    meta ``laterality`` of the first key's image. The same mirror (or none) is then applied
    to every key, so a radiograph, its MRI and its label map stay paired.

    Args:
        keys: keys of the images to mirror (radiograph, MRI, labels...).
        side_key: item key holding the side ("L"/"R").
        allow_missing_keys: do not fail when a key is absent.
    """

    backend = MirrorToCanonicalSide.backend

    def __init__(self, keys: KeysCollection, side_key: str = "side", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.side_key = side_key
        self.mirror = MirrorToCanonicalSide()

    def _side(self, d: Mapping[Hashable, Any]) -> str | None:
        side = d.get(self.side_key)
        if side is None:
            first = next(self.key_iterator(d), None)
            if first is not None and isinstance(d[first], MetaTensor):
                side = d[first].meta.get("laterality")
        return normalise_side(side)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        side = self._side(d)
        for key in self.key_iterator(d):
            # an unknown side must not fall back on each image's own meta: pass "U" (= none)
            d[key] = self.mirror(d[key], side=side or "U")
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.mirror.inverse(d[key])
        return d


class MirrorBackd(MapTransform):
    """Mirror outputs back when the input was mirrored (post-processing of predictions).

    Args:
        keys: keys of the outputs to mirror back (e.g. ``"pred"``).
        source_key: key of the image whose meta records :data:`MIRRORED_KEY` (e.g. the
            radiograph); None reads each output's own meta.
        allow_missing_keys: do not fail when a key is absent.
    """

    backend = MirrorToCanonicalSide.backend

    def __init__(
        self, keys: KeysCollection, source_key: str | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = d[self.source_key] if self.source_key is not None else None
        for key in self.key_iterator(d):
            d[key] = mirror_back(d[key], d[key] if source is None else source)
        return d
