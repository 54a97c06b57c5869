"""Paired augmentation: one random isotropic zoom applied alike to a radiograph and its MRI, so the
training pair stays aligned (MONAI's ``RandZoomd`` cannot serve a 2-D and a 3-D key together)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Zoom
from monai.utils import ensure_tuple_rep

__all__ = ["RandPairedZoomd"]


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
