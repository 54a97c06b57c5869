"""Crop one knee out of a (bilateral) knee radiograph at load time, from a recorded crop box.

An OAI bilateral PA radiograph holds both knees; the datalist item of each knee records its
crop box (:data:`DEFAULT_CROP_MM`, 140 mm square around the joint centre by community
convention, in pixels of the stored radiograph) and its side, so nothing is copied: the
loading chain crops at load time. Parts of the box outside the image are padded with the
image's lowest value (the least attenuation).

Mirroring: a left knee is mirrored to the canonical side by
:class:`~.laterality.MirrorToCanonicalSide` when ``mirror_to_canonical`` is set. The bundle's
chain mirrors the radiograph *and* the MRI together after loading (``MirrorToCanonicalSided``
on both keys), so there ``CropKneed`` must not mirror as well (the default, as in
``LoadXrayd``): mirroring twice would give back a left knee.

A radiograph stored with its columns running from the patient's left to right
(PatientOrientation ``R\\F``) has items with ``crop_flip_columns: true``; the crop is then
flipped so that its columns run patient right -> left as the geometry contract says.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import BorderPad, MapTransform, SpatialCrop, Transform

from .errors import XrayInputError
from .geometry import DEFAULT_CROP_MM
from .laterality import MirrorToCanonicalSide, normalise_side

__all__ = ["DEFAULT_CROP_MM", "crop_box_for", "CropKnee", "CropKneed"]


def crop_box_for(
    centre: Sequence[float], spacing: Sequence[float], size_mm: float = DEFAULT_CROP_MM,
    shape: Sequence[int] | None = None,
) -> list[int]:
    """Pixel box ``[row_start, col_start, row_end, col_end]`` (end exclusive) of a ``size_mm`` square.

    Args:
        centre: (row, col) of the joint centre, pixels (fractions allowed).
        spacing: (row, col) pixel spacing at the object, mm.
        size_mm: side of the square, mm.
        shape: (rows, cols) of the image, if known: the box then has the image's parity (one pixel
            more at most) and a start half-way between two pixels is rounded towards the image's
            middle, so that a mirrored image gets exactly the mirrored box.
    """
    box = []
    for axis, (c, s) in enumerate(zip(centre, spacing)):
        n = max(1, int(round(size_mm / float(s))))
        if shape is not None and (n - int(shape[axis])) % 2:
            n += 1  # the image's parity, so a box can sit exactly on its middle (and mirror onto itself)
        x = float(c) - (n - 1) / 2.0
        start = int(math.ceil(x - 0.5))  # the nearest start; a tie rounds down
        if shape is not None and abs(x - math.floor(x) - 0.5) < 1e-9 and x + (n - 1) / 2.0 > (shape[axis] - 1) / 2.0:
            start += 1  # a tie on the far half rounds up, mirroring the near half's rounding down
        box.append((start, start + n))
    return [box[0][0], box[1][0], box[0][1], box[1][1]]


class CropKnee(Transform):
    """Crop a loaded radiograph ``(1, H, W)`` to one knee's box; optionally mirror a left knee.

    Args:
        size_mm: side of the square used when a centre (not a box) is given.
        mirror_to_canonical: mirror left knees to the canonical side (leave False when a later
            ``MirrorToCanonicalSided`` mirrors the radiograph with its MRI, as the bundle does).

    The output meta records ``crop_box``, ``laterality`` (the knee's side) and, when mirrored,
    ``mirrored_to_canonical``; the affine follows the crop (MONAI's ``SpatialCrop``/``BorderPad``).

    Example::

        xray = LoadXray()("00m/0.C.2/9000099/20050314/00000991/001")   # both knees
        knee = CropKnee(mirror_to_canonical=True)(xray, box=[810, 1650, 1810, 2650], side="L")
    """

    def __init__(self, size_mm: float = DEFAULT_CROP_MM, mirror_to_canonical: bool = False) -> None:
        if not size_mm > 0:
            raise ValueError(f"size_mm must be positive, got {size_mm}")
        self.size_mm = float(size_mm)
        self.mirror_to_canonical = mirror_to_canonical
        self.mirror = MirrorToCanonicalSide()

    def __call__(
        self,
        img: MetaTensor,
        box: Sequence[int] | None = None,
        centre: Sequence[float] | None = None,
        side: str | None = None,
        flip_columns: bool = False,
    ) -> MetaTensor:
        """Crop ``img`` to ``box`` (or a square around ``centre``) and mirror it if asked and left."""
        name = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
        if img.ndim != 3:
            raise XrayInputError(name, f"CropKnee needs a (1, H, W) radiograph, got shape {tuple(img.shape)}")
        if box is None:
            if centre is None:
                raise ValueError("give the knee's crop box or its centre")
            spacing = img.meta.get("spacing") if isinstance(img, MetaTensor) else None
            if spacing is None:
                raise XrayInputError(name, "no pixel spacing in the image meta; load it with LoadXray")
            box = crop_box_for(centre, spacing, self.size_mm)
        try:
            r0, c0, r1, c1 = (int(v) for v in box)
        except (TypeError, ValueError) as err:
            raise XrayInputError(name, f"crop box must be [row_start, col_start, row_end, col_end], got {box!r}") from err
        h, w = img.shape[-2:]
        if r1 <= r0 or c1 <= c0 or r1 <= 0 or c1 <= 0 or r0 >= h or c0 >= w:
            raise XrayInputError(name, f"crop box {[r0, c0, r1, c1]} does not overlap the {h} x {w} image")
        fill = float(img.min())
        out = SpatialCrop(roi_start=(max(r0, 0), max(c0, 0)), roi_end=(min(r1, h), min(c1, w)))(img)
        border = (max(0, -r0), max(0, r1 - h), max(0, -c0), max(0, c1 - w))
        if any(border):
            out = BorderPad(spatial_border=border, mode="constant", value=fill)(out)
        if flip_columns:
            out = torch.flip(out, dims=(-1,))
        knee_side = normalise_side(side)
        if isinstance(out, MetaTensor):
            out.meta["crop_box"] = [r0, c0, r1, c1]
            out.meta["crop_flip_columns"] = bool(flip_columns)
            out.meta["laterality"] = knee_side
            out.meta["spatial_shape"] = tuple(out.shape[1:])
        if self.mirror_to_canonical:
            out = self.mirror(out, side=knee_side or "U")
        return out


class CropKneed(MapTransform):
    """Dictionary version of :class:`CropKnee`: the box and side come from the datalist item.

    Args:
        keys: keys of the loaded radiographs (usually ``"xray"``).
        box_key: item key of the crop box ``[row_start, col_start, row_end, col_end]``.
        side_key: item key of the knee's side.
        flip_key: item key saying the stored columns run patient left -> right.
        size_mm, mirror_to_canonical: as :class:`CropKnee`.
        allow_missing_keys: do not fail when a key is absent.

    An item without ``box_key`` passes unchanged (a radiograph of one knee needs no crop).
    """

    def __init__(
        self,
        keys: KeysCollection,
        box_key: str = "crop_box",
        side_key: str = "side",
        flip_key: str = "crop_flip_columns",
        size_mm: float = DEFAULT_CROP_MM,
        mirror_to_canonical: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.box_key, self.side_key, self.flip_key = box_key, side_key, flip_key
        self.cropper = CropKnee(size_mm=size_mm, mirror_to_canonical=mirror_to_canonical)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        box = d.get(self.box_key)
        if box is None:
            return d
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key], box=box, side=d.get(self.side_key),
                                  flip_columns=bool(d.get(self.flip_key, False)))
        return d
