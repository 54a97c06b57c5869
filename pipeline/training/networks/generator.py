"""The MRI generator: MONAI's Generator, and a geometry-aware form fed 2-D skips spread along A-P.

An AP radiograph is (roughly) the integral of the volume along the anterior-posterior axis,
which is the depth axis ``D`` of the canonical MRI tensor (B, C, D, H, W) (see
``xray2mri.transforms.geometry``). The inverse operation a network can start from is to
*spread* ("unproject") a 2-D feature map back along that axis: repeat it over ``D`` and let
the following 3-D convolutions decide where along A-P each feature belongs. That is what a
2-D -> 3-D U-Net skip does here: :class:`GeometryGenerator` concatenates, at the input of
every generator layer, a 2-D encoder feature map repeated along ``D`` with the generator's
own 3-D features of the same (H, W). :class:`SkipAdapter` brings an encoder feature map to
that (H, W) (integer average pooling or nearest upsampling) and, optionally, fewer channels.

The paper's form (generator fed by the bottleneck only) is MONAI's
:py:class:`monai.networks.nets.Generator` itself, used unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Norm
from monai.networks.nets import Generator

__all__ = ["GeometryGenerator", "SkipAdapter", "generate_with_last_input", "spread_along_projection"]


def spread_along_projection(feature: torch.Tensor, depth: int) -> torch.Tensor:
    """Repeat a 2-D feature map (B, C, H, W) ``depth`` times along A-P: (B, C, depth, H, W).

    The adjoint of the AP projection (a sum over depth) up to a constant: every voxel on a
    ray receives the value of the pixel the ray projects to. The result is an expanded view
    (no copy); concatenation with the 3-D features materialises it. The A-P axis is axis 2
    of the batch: ``xray2mri.transforms.geometry.PROJECTION_AXIS`` (0) after batch and channel.
    """
    return feature.unsqueeze(2).expand(-1, -1, depth, -1, -1)


class GeometryGenerator(Generator):
    """MONAI ``Generator`` whose layers also receive 2-D skip features spread along A-P.

    The latent vector goes through ``Generator``'s linear layer to ``start_shape`` as usual.
    Before layer ``i``, the 2-D skip map ``skips[i]`` (B, skip_channels[i], H_i, W_i), where
    (H_i, W_i) is the in-plane size of the generator's features at that point, is repeated
    along the depth (A-P) axis and concatenated to them on the channel axis; layer ``i`` is
    therefore built with ``skip_channels[i]`` more input channels than in ``Generator``.
    Everything else (transposed convolutions, residual units, the last layer without
    activation) is ``Generator``'s own ``_get_layer``.

    Args:
        latent_shape, start_shape, channels, strides, kernel_size, num_res_units, act, norm,
            dropout, bias: as :py:class:`monai.networks.nets.Generator`.
        skip_channels: channels of the skip map given to each layer (one per layer, so
            ``len(skip_channels) == len(channels)``); 0 means that layer gets none (its entry
            in ``skips`` is then ignored).

    Example::

        gen = GeometryGenerator(latent_shape=(256,), start_shape=(64, 4, 4, 4),
                                channels=(32, 16, 1), strides=(2, 2, 2), skip_channels=(64, 32, 16))
        skips = [torch.rand(2, 64, 4, 4), torch.rand(2, 32, 8, 8), torch.rand(2, 16, 16, 16)]
        mri = gen(torch.rand(2, 256), skips)  # (2, 1, 32, 32, 32)
    """

    def __init__(
        self,
        latent_shape: Sequence[int],
        start_shape: Sequence[int],
        channels: Sequence[int],
        strides: Sequence[int],
        skip_channels: Sequence[int],
        kernel_size: Sequence[int] | int = 3,
        num_res_units: int = 2,
        act=Act.PRELU,
        norm=Norm.INSTANCE,
        dropout: float | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__(
            latent_shape=latent_shape,
            start_shape=start_shape,
            channels=channels,
            strides=strides,
            kernel_size=kernel_size,
            num_res_units=num_res_units,
            act=act,
            norm=norm,
            dropout=dropout,
            bias=bias,
        )
        if len(skip_channels) != len(self.channels):
            raise ValueError(
                f"skip_channels needs one entry per generator layer ({len(self.channels)}), "
                f"got {len(skip_channels)}: {tuple(skip_channels)}"
            )
        if any(int(c) < 0 for c in skip_channels):
            raise ValueError(f"skip_channels must be >= 0, got {tuple(skip_channels)}")
        self.skip_channels: list[int] = [int(c) for c in skip_channels]
        # Generator.__init__ built its layers for its own inputs; rebuild them, with the same
        # _get_layer, for inputs widened by the skip channels.
        in_channels = [self.in_channels, *self.channels[:-1]]
        self.conv = nn.Sequential()
        for i, (cin, sc, c, s) in enumerate(
            zip(in_channels, self.skip_channels, self.channels, self.strides)
        ):
            self.conv.add_module(f"layer_{i}", self._get_layer(cin + sc, c, s, i == len(self.channels) - 1))

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """Generate the volume from the latent vector ``x`` and one 2-D skip map per layer.

        Args:
            x: latent batch (B, *latent_shape).
            skips: ``len(channels)`` tensors; ``skips[i]`` is (B, skip_channels[i], H_i, W_i)
                with (H_i, W_i) the in-plane size of layer ``i``'s input.

        Returns:
            (B, channels[-1], *start_spatial * prod(strides)).
        """
        x = self.flatten(x)
        x = self.linear(x)
        x = self.reshape(x)
        for i, layer in enumerate(self.conv):
            if self.skip_channels[i] > 0:
                x = torch.cat([x, spread_along_projection(skips[i], x.shape[2])], dim=1)
            x = layer(x)
        return x


def generate_with_last_input(
    generator: Generator, x: torch.Tensor, skips: list[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a ``Generator`` or :class:`GeometryGenerator` and also return its last layer's input.

    The last layer's input (the penultimate features, with that layer's skip already concatenated)
    is what a side head reads (the uncertainty head of ``Xray2MRI``) without changing the generator.
    The same steps as the generators' ``forward`` (which stays as it is, so it scripts), never scripted.

    Returns:
        ``(last_input, output)``: the last layer's input and the generator's output.
    """
    x = generator.reshape(generator.linear(generator.flatten(x)))
    skip_channels = getattr(generator, "skip_channels", None)
    layers = list(generator.conv)
    for i, layer in enumerate(layers):
        if skip_channels is not None and skip_channels[i] > 0:
            x = torch.cat([x, spread_along_projection(skips[i], x.shape[2])], dim=1)  # type: ignore[index]
        if i == len(layers) - 1:
            return x, layer(x)
        x = layer(x)
    raise ValueError("the generator has no layers")


class SkipAdapter(nn.Module):
    """Take one encoder level from a list and bring it to a target in-plane size (and width).

    Resizing is by integer factors only, so the radiograph and the volume must share their
    field of view on a grid that differs by a whole factor per axis: average pooling when the
    encoder map is larger (k x k pixels -> 1, the mean along each row/column block), nearest
    upsampling when it is smaller. An optional 1x1 convolution (with ``norm`` and ``act``)
    changes the channel count, to keep the 3-D layers that receive it cheap.

    Args:
        source: index of the encoder level this adapter reads in the list given to forward.
        in_channels: channels of that encoder level.
        in_size: (H, W) of that encoder level.
        out_size: (H, W) the skip must have.
        out_channels: channels of the skip; ``None`` keeps ``in_channels`` (no convolution).
        act, norm: activation and normalisation of the 1x1 convolution.

    Raises:
        ValueError: when a size ratio is not a whole number in either direction.
    """

    def __init__(
        self,
        source: int,
        in_channels: int,
        in_size: Sequence[int],
        out_size: Sequence[int],
        out_channels: int | None = None,
        act=Act.PRELU,
        norm=Norm.INSTANCE,
    ) -> None:
        super().__init__()
        self.source = int(source)
        self.in_size = tuple(int(s) for s in in_size)
        self.out_size = tuple(int(s) for s in out_size)
        down, up = [], []
        for i, o in zip(self.in_size, self.out_size):
            if i % o == 0:
                down.append(i // o)
                up.append(1)
            elif o % i == 0:
                down.append(1)
                up.append(o // i)
            else:
                raise ValueError(
                    f"cannot match an encoder feature map of in-plane size {self.in_size} to the "
                    f"generator's in-plane size {self.out_size}: the ratio must be a whole number "
                    "per axis (choose xray_size and mri_shape (H, W) that differ by an integer factor)"
                )
        self.pool: nn.Module = nn.AvgPool2d(tuple(down)) if max(down) > 1 else nn.Identity()
        self.upsample: nn.Module = (
            nn.Upsample(scale_factor=tuple(float(u) for u in up), mode="nearest")
            if max(up) > 1
            else nn.Identity()
        )
        self.out_channels = int(in_channels if out_channels is None else out_channels)
        self.project: nn.Module = (
            nn.Identity()
            if out_channels is None
            else Convolution(
                spatial_dims=2,
                in_channels=in_channels,
                out_channels=self.out_channels,
                kernel_size=1,
                act=act,
                norm=norm,
            )
        )

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Return ``levels[source]`` pooled/upsampled to ``out_size`` with ``out_channels``."""
        x = self.pool(levels[self.source])
        x = self.project(x)
        return self.upsample(x)
