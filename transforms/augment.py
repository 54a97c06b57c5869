"""Training augmentation: one random isotropic zoom applied alike to a radiograph and its MRI, so the
training pair stays aligned (MONAI's ``RandZoomd`` cannot serve a 2-D and a 3-D key together), and a
random shift of the knee's crop box by the knee finder's residual error (``RandShiftCropCentre(d)``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Zoom
from monai.utils import ensure_tuple_rep

__all__ = ["RandPairedZoomd", "RandShiftCropCentre", "RandShiftCropCentred"]


class RandPairedZoomd(RandomizableTransform, MapTransform):
    """Zoom a radiograph and its MRI about their centres by one random isotropic factor.

    Both modalities cover the same field of view in millimetres, centred on the knee, so one
    isotropic zoom applied to the 2-D radiograph (1, H, W) and the 3-D volume (1, D, H, W)
    keeps them paired: it mimics a larger or smaller knee. (MONAI's ``RandZoomd`` expands its
    factor to the first key's number of dimensions and so cannot serve a 2-D and a 3-D key
    together.) Unlike a random left-right flip, it does not turn the canonical right knee
    into a left one. The sizes are kept (crop or ``padding_mode`` pad after zooming).

    Args:
        keys: keys of the images to zoom together.
        prob: probability of zooming an item.
        min_zoom, max_zoom: range of the factor (> 1 magnifies).
        mode: interpolation per key (or one for all); ``None`` picks ``"bilinear"`` for 2-D
            and ``"trilinear"`` for 3-D images.
        padding_mode: how zoomed-out images are padded back to size (``Zoom``'s ``padding_mode``).
        allow_missing_keys: do not fail when a key is absent.
    """

    backend = Zoom.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        min_zoom: float = 0.9,
        max_zoom: float = 1.1,
        mode: str | Sequence[str | None] | None = None,
        padding_mode: str = "edge",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0 < min_zoom <= max_zoom:
            raise ValueError(f"need 0 < min_zoom <= max_zoom, got {min_zoom}, {max_zoom}")
        self.min_zoom, self.max_zoom = float(min_zoom), float(max_zoom)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = padding_mode
        self._zoom = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._zoom = float(self.R.uniform(self.min_zoom, self.max_zoom))

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key, mode in self.key_iterator(d, self.mode):
            img = d[key]
            if mode is None:
                mode = "bilinear" if img.ndim == 3 else "trilinear"
            d[key] = Zoom(zoom=self._zoom, mode=mode, padding_mode=self.padding_mode, keep_size=True)(img)
        return d


class RandShiftCropCentre(RandomizableTransform):
    """Move a knee crop ``(1, H, W)`` as if its centre had been placed up to ``max_shift_mm`` off (the knee
    finder's residual error).

    A knee finder places the joint centre within a few millimetres; training on radiographs whose
    crop is off by as much keeps a few millimetres of misplacement at prediction from turning the
    output into a template. The offset (row, col) is drawn uniformly in the disc of radius
    ``max_shift_mm`` by :meth:`randomize`, once per call, and the crop's content is shifted by it
    in pixels of ``spacing`` (the rows and columns that come in at the border repeat the edge: a
    few millimetres of a 160 mm field). Its MRI is not moved: the target stays centred on the knee.

    Args:
        max_shift_mm: largest shift of the crop centre, mm.
        spacing: (row, col) pixel spacing of the crop, mm (the bundle's ``xray_spacing``).
        prob: probability of shifting.

    Example::

        shift = RandShiftCropCentre(max_shift_mm=4.0, spacing=(1.25, 1.25), prob=1.0)
        shift.set_random_state(0)
        moved = shift(xray)   # (1, 128, 128), content moved by up to 3 pixels
    """

    def __init__(self, max_shift_mm: float = 4.0, spacing: float | Sequence[float] = 1.0, prob: float = 1.0) -> None:
        RandomizableTransform.__init__(self, prob)
        if max_shift_mm < 0:
            raise ValueError(f"max_shift_mm must be >= 0, got {max_shift_mm}")
        self.max_shift_mm = float(max_shift_mm)
        self.spacing = tuple(float(v) for v in ensure_tuple_rep(spacing, 2))
        self.shift_px = (0, 0)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        radius = self.max_shift_mm * float(np.sqrt(self.R.uniform(0.0, 1.0)))
        angle = float(self.R.uniform(0.0, 2.0 * np.pi))
        shift_mm = (radius * np.sin(angle), radius * np.cos(angle))
        self.shift_px = tuple(int(round(float(v) / s)) for v, s in zip(shift_mm, self.spacing))

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        """``img`` (channel first, last two axes rows and columns) with its content shifted by the drawn offset.

        A crop centred ``(dr, dc)`` pixels off shows the content moved by ``(-dr, -dc)``.
        """
        if randomize:
            self.randomize()
        dr, dc = self.shift_px
        if not self._do_transform or (dr == 0 and dc == 0):
            return img
        out = img
        for axis, d in ((-2, dr), (-1, dc)):
            if d == 0:
                continue
            n = out.shape[axis]
            index = torch.clamp(torch.arange(n) + d, 0, n - 1).to(out.device)
            out = torch.index_select(out, axis % out.ndim, index)
        return out


class RandShiftCropCentred(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandShiftCropCentre`: one draw per item, applied to every key in ``keys``.

    Give it the radiograph key only: the MRI target stays centred on the knee.

    Args:
        keys: keys of the knee crops to shift (usually ``"xray"``).
        max_shift_mm, spacing, prob: as :class:`RandShiftCropCentre`.
        allow_missing_keys: do not fail when a key is absent.
    """

    def __init__(
        self, keys: KeysCollection, max_shift_mm: float = 4.0, spacing: float | Sequence[float] = 1.0,
        prob: float = 1.0, allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.shifter = RandShiftCropCentre(max_shift_mm=max_shift_mm, spacing=spacing, prob=1.0)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.shifter.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.shifter.randomize()

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self.shifter(d[key], randomize=False)
        return d
