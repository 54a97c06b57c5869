"""Xray2MRI: one radiograph in, its reconstruction and a 3-D MRI volume out.

The paper's network (Wang, Chetouani, Jennane, arXiv 2503.13555) on MONAI building blocks::

    x (B,1,H,W) --XrayCAE.encode(+intermediate)--> bottleneck --XrayCAE.decode--> xray_hat (B,1,H,W)
                                                       |
                                 flatten + Linear (latent_size, optional)
                                                       |
                          Generator: Linear -> start_shape -> transposed convs --> mri_hat (B,1,D,H,W)

``variant="bottleneck"`` is that form: the generator sees the bottleneck only.
``variant="geometry"`` adds, at the input of every generator layer, an encoder feature map
brought to that layer's in-plane size and spread along the A-P (depth) axis (see
:mod:`xray2mri.pipeline.training.networks.generator`): the natural inverse of an AP projection.

Optional tissue head (``tissue_classes=N``): the generator's last layer outputs ``N`` more channels,
the logits of the tissue classes (:data:`~xray2mri.pipeline.data.synth.tissues.TISSUE_CLASSES`), so
the MRI and the tissue map share every generator layer and the head costs one layer's extra output
channels. They come out as ``"tissue_logits"`` (B, N, D, H, W) in the dict form; the MRI-only form
(``return_dict=False``) is unchanged. ``tissue_classes=0`` (default) builds today's network exactly.

Optional uncertainty head (``uncertainty=True``): a small side branch (two 1x1 convolutions, then a
trilinear upsampling by the last layer's stride) reads the last layer's input features, DETACHED,
and outputs the per-voxel log scale of the MRI (``"mri_log_scale"``). Working on the last layer's
coarser grid keeps it cheap (a full-resolution transposed convolution there doubled the forward
time). No gradient of its loss reaches the generator or the encoder, so the MRI is trained exactly
as without the head (when the scale came out of the shared last layer instead, its likelihood term
pulled the shared features and cost 1.8 dB of validation PSNR at the demo's 40 epochs). With
``uncertainty_subject=True`` a per-subject shift read from the detached latent vector is added to the
whole map (:class:`~.subject_scale.SubjectLogScale`), so that subjects are ranked by difficulty too.
The MRI-only form never runs the branch.

Optional joint-region head (``joint_classes=N``, issue 15): tissue logits in a box centred on the
joint whose rows have the radiograph's spacing (:class:`~.joint_head.JointRegionHead`; ``joint_shape``
(D, H, W): D and W in MRI voxels, H in radiograph rows), read from the radiograph and the generator's
DETACHED last-layer input: ``"joint_logits"`` (B, N, *joint_shape) in the dict form. Built last, on a
forked random state, with no gradient reaching the rest, so the MRI is trained exactly as without it.

Output range: targets are normalised to [0, 1]. With ``output_act="sigmoid"`` (default)
both outputs pass through a sigmoid, so they are in (0, 1) in training and inference alike.
With ``output_act="none"`` they are left linear in training (no saturation, so an L1/MSE
target of exactly 0 or 1 is reachable) and clamped to [0, 1] in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Norm
from monai.networks.nets import Generator

from xray2mri.pipeline.training.networks.cae import XrayCAE
from xray2mri.pipeline.training.networks.generator import (
    GeometryGenerator,
    SkipAdapter,
    generate_with_last_input,
)
from xray2mri.pipeline.training.networks.joint_head import JointBox, JointRegionHead
from xray2mri.pipeline.training.networks.subject_scale import SubjectLogScale
from xray2mri.pipeline.training.networks.upsample import LinearUpsample2x
from xray2mri.pipeline.training.variants import VARIANT_NAMES, VARIANTS

__all__ = ["Xray2MRI", "VARIANTS", "VARIANT_NAMES", "OUTPUT_ACTS"]

#: Allowed values of ``Xray2MRI(output_act=...)``.
OUTPUT_ACTS: tuple[str, ...] = ("sigmoid", "none")


def _int_tuple(name: str, value: Sequence[int] | int, length: int) -> tuple[int, ...]:
    """``value`` as a tuple of ``length`` positive ints (an int is repeated), else ValueError."""
    values = (int(value),) * length if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != length or any(v <= 0 for v in values):
        raise ValueError(f"{name} must be {length} positive integers, got {value!r}")
    return values


def _check_divisible(name: str, size: tuple[int, ...], strides_name: str, strides: Sequence[int]) -> None:
    """Raise ValueError unless every entry of ``size`` is a multiple of the product of ``strides``."""
    product = math.prod(int(s) for s in strides)
    if any(s % product for s in size):
        raise ValueError(
            f"{name}={size} is not divisible by the stride product {product} of "
            f"{strides_name}={tuple(strides)}; choose sizes that are multiples of {product} "
            f"(or change {strides_name})"
        )


class Xray2MRI(nn.Module):
    """CAE (radiograph reconstruction) + generator (MRI volume), as one module.

    Args:
        xray_size: radiograph (H, W) the network takes (rows S->I, cols R->L).
        mri_shape: MRI (D, H, W) it produces (A->P, S->I, R->L; axcodes "PIL").
        in_channels: radiograph channels.
        out_channels: MRI channels.
        variant: ``"bottleneck"`` (the paper's form: the generator is fed the bottleneck only)
            or ``"geometry"`` (also multi-scale encoder features spread along A-P).
        cae_channels: channels of the CAE's encoder layers (the decoder mirrors them).
        cae_strides: stride of each encoder layer; ``xray_size`` must be divisible by their product.
        cae_num_res_units: residual units per CAE layer (0: plain convolutions).
        cae_inter_channels: channels of optional blocks at the CAE bottleneck (MONAI
            ``AutoEncoder(inter_channels=...)``); ``None`` for none.
        cae_inter_dilations: their dilations (``None``: 1).
        latent_size: size of the latent vector between the CAE bottleneck and the generator
            (a linear layer; together with the generator's own linear layer it is a low-rank
            factorisation of the bottleneck -> start-volume map, far fewer parameters).
            ``None`` feeds the flattened bottleneck to the generator's linear layer directly,
            as the paper does (parameters: bottleneck size x start-volume size).
        gen_start_channels: channels of the generator's start volume, whose spatial shape is
            ``mri_shape / prod(gen_strides)`` (exposed as ``self.start_shape``).
        gen_channels: output channels of the generator's layers but the last, which outputs
            ``out_channels`` (a transposed convolution without normalisation/activation, as
            in MONAI's ``Generator``).
        gen_strides: upsampling factor of every generator layer, the last included
            (``len(gen_channels) + 1`` entries); ``mri_shape`` must be divisible by their product.
        gen_num_res_units: residual units after each generator layer (0: none).
        skip_channels: geometry variant only: channels of the skip map given to each
            generator layer (``len(gen_strides)`` layers, the output layer included).
            ``None`` passes the encoder features with their own channels; an int reduces
            every skip to that many by a 1x1 convolution; a sequence sets each layer (0: no
            skip for that layer). Ignored by ``variant="bottleneck"``, so a config can switch
            the variant alone.
        kernel_size: convolution kernel size of both parts.
        act: activation of both parts (MONAI ``Act`` name or (name, args)).
        norm: normalisation of both parts (MONAI ``Norm`` name or (name, args)).
        dropout: dropout probability of both parts (``None``: none).
        bias: convolution bias.
        output_act: ``"sigmoid"`` or ``"none"`` (identity in training, clamp to [0, 1] in eval
            mode); see the module docstring.
        tissue_classes: channels of the optional tissue head (0: none); see the module docstring.
        uncertainty: add the optional heteroscedastic head (issue 16; see the module docstring): a side
            branch on the generator's detached last-layer input that outputs ``out_channels`` per-voxel log
            scales of the MRI's predictive distribution (trained with
            :class:`~xray2mri.pipeline.training.uncertainty_loss.HeteroscedasticNLLLoss`). The dict form then
            also holds ``"mri_log_scale"`` (B, out_channels, D, H, W); :meth:`forward_dict` gives the dict
            form whatever ``return_dict`` says and :meth:`predict_with_scale` ``(mri, log_scale)`` without
            the CAE decoder. Off by default: the MRI tensor form and every other output are unchanged.
        uncertainty_channels: hidden channels of the uncertainty branch.
        uncertainty_subject: also shift each subject's whole log-scale map by a linear map of its detached,
            standardised latent vector (:class:`~xray2mri.pipeline.training.networks.subject_scale.SubjectLogScale`),
            so the map ranks subjects by difficulty and not only places; needs ``uncertainty``.
        joint_classes: tissue classes of the optional joint-region head (0: none); see the module docstring.
        joint_shape: the joint box's (D, H, W): D and W in MRI voxels, H in radiograph rows, centred.
        joint_xray_channels: channels of the joint head's radiograph branch.
        joint_hidden: channels of the joint head's fused map.
        return_dict: ``True``: forward returns ``{"xray": (B, in_channels, H, W), "mri":
            (B, out_channels, D, H, W)}`` (training, evaluation), plus ``"tissue_logits"``
            (B, tissue_classes, D, H, W) when the tissue head is on, and ``"joint_logits"`` (B, joint_classes,
            *joint_shape) with the joint head. ``False``: the MRI tensor
            alone, without running the CAE decoder (inference, TorchScript export,
            ``verify_net_in_out``). The flag changes no parameter: the ``state_dict`` keys are
            the same, so one checkpoint loads into both forms.

    Raises:
        ValueError: a size not divisible by its stride product, mismatched channel/stride
            lists, an unknown variant or output activation, or (geometry) a radiograph and a
            volume whose in-plane sizes do not differ by a whole factor.

    Example::

        net = Xray2MRI(xray_size=(128, 128), mri_shape=(64, 64, 64), variant="geometry")
        out = net(torch.rand(4, 1, 128, 128))
        out["xray"].shape, out["mri"].shape  # (4, 1, 128, 128), (4, 1, 64, 64, 64)
        infer = Xray2MRI(xray_size=(128, 128), mri_shape=(64, 64, 64), variant="geometry",
                         return_dict=False)
        infer.load_state_dict(net.state_dict())
        infer.eval()(torch.rand(1, 1, 128, 128)).shape  # (1, 1, 64, 64, 64)
    """

    __constants__ = ["return_dict", "geometry", "sigmoid_output", "in_channels", "xray_size", "out_channels", "tissue_classes",
                     "uncertainty", "joint_classes"]

    def __init__(
        self,
        xray_size: Sequence[int] = (128, 128),
        mri_shape: Sequence[int] = (64, 64, 64),
        in_channels: int = 1,
        out_channels: int = 1,
        variant: str = "bottleneck",
        cae_channels: Sequence[int] = (16, 32, 64, 128),
        cae_strides: Sequence[int] = (2, 2, 2, 2),
        cae_num_res_units: int = 1,
        cae_inter_channels: Sequence[int] | None = None,
        cae_inter_dilations: Sequence[int] | None = None,
        latent_size: int | None = 256,
        gen_start_channels: int = 64,
        gen_channels: Sequence[int] = (64, 32, 16),
        gen_strides: Sequence[int] = (2, 2, 2, 2),
        gen_num_res_units: int = 0,
        skip_channels: int | Sequence[int] | None = None,
        kernel_size: int = 3,
        act: tuple | str = Act.PRELU,
        norm: tuple | str = Norm.INSTANCE,
        dropout: float | None = None,
        bias: bool = True,
        output_act: str = "sigmoid",
        tissue_classes: int = 0,
        uncertainty: bool = False,
        uncertainty_channels: int = 8,
        uncertainty_subject: bool = False,
        joint_classes: int = 0,
        joint_shape: Sequence[int] = (40, 32, 40),
        joint_xray_channels: int = 32,
        joint_hidden: int = 64,
        return_dict: bool = True,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if output_act not in OUTPUT_ACTS:
            raise ValueError(f"output_act must be one of {OUTPUT_ACTS}, got {output_act!r}")
        if len(cae_channels) != len(cae_strides) or not cae_channels:
            raise ValueError(
                f"cae_channels {tuple(cae_channels)} and cae_strides {tuple(cae_strides)} need the same, non-zero length"
            )
        if len(gen_strides) != len(gen_channels) + 1:
            raise ValueError(
                f"gen_strides {tuple(gen_strides)} needs one entry per generator layer: len(gen_channels) + 1 "
                f"(the last layer outputs out_channels), got gen_channels {tuple(gen_channels)}"
            )
        self.xray_size: tuple[int, int] = _int_tuple("xray_size", xray_size, 2)  # type: ignore[assignment]
        self.mri_shape: tuple[int, int, int] = _int_tuple("mri_shape", mri_shape, 3)  # type: ignore[assignment]
        _check_divisible("xray_size", self.xray_size, "cae_strides", cae_strides)
        _check_divisible("mri_shape", self.mri_shape, "gen_strides", gen_strides)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.variant = variant
        self.geometry = variant == "geometry"
        self.output_act = output_act
        self.sigmoid_output = output_act == "sigmoid"
        self.return_dict = bool(return_dict)
        if int(tissue_classes) < 0 or int(tissue_classes) == 1:
            raise ValueError(f"tissue_classes must be 0 (no tissue head) or at least 2, got {tissue_classes}")
        self.tissue_classes = int(tissue_classes)
        self.uncertainty = bool(uncertainty)

        self.cae = XrayCAE(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=in_channels,
            channels=cae_channels,
            strides=cae_strides,
            kernel_size=kernel_size,
            up_kernel_size=kernel_size,
            num_res_units=cae_num_res_units,
            inter_channels=None if cae_inter_channels is None else list(cae_inter_channels),
            inter_dilations=None if cae_inter_dilations is None else list(cae_inter_dilations),
            act=act,
            norm=norm,
            dropout=dropout,
            bias=bias,
        )
        # In-plane size and channels of every encoder level (finest first); the last is the bottleneck.
        level_sizes, size = [], self.xray_size
        for s in cae_strides:
            size = (size[0] // int(s), size[1] // int(s))
            level_sizes.append(size)
        level_channels = [int(c) for c in cae_channels]
        level_channels[-1] = self.cae.encoded_channels  # after the intermediate blocks
        bottleneck_shape = (level_channels[-1], *level_sizes[-1])

        self.latent_size = latent_size
        if latent_size is None:
            self.to_latent: nn.Module = nn.Identity()
            latent_shape: tuple[int, ...] = bottleneck_shape
        else:
            self.to_latent = nn.Sequential(
                nn.Flatten(), nn.Linear(math.prod(bottleneck_shape), int(latent_size))
            )
            latent_shape = (int(latent_size),)

        up = math.prod(int(s) for s in gen_strides)
        self.start_shape: tuple[int, ...] = (int(gen_start_channels), *(m // up for m in self.mri_shape))
        # the last layer: the MRI, then the tissue logits
        channels = (*(int(c) for c in gen_channels), self.out_channels + self.tissue_classes)
        strides = tuple(int(s) for s in gen_strides)
        gen_kwargs = dict(
            latent_shape=latent_shape,
            start_shape=self.start_shape,
            channels=channels,
            strides=strides,
            kernel_size=kernel_size,
            num_res_units=gen_num_res_units,
            act=act,
            norm=norm,
            dropout=dropout,
            bias=bias,
        )
        self.skip_adapters = nn.ModuleList()
        if self.geometry:
            self.skip_adapters.extend(
                _plan_skips(
                    self.xray_size,
                    self.mri_shape,
                    level_sizes,
                    level_channels,
                    strides,
                    skip_channels,
                    act,
                    norm,
                )
            )
            # one width per generator layer, 0 where a layer has no skip
            widths, adapters = [], iter(self.skip_adapters)
            for width in _per_layer(skip_channels, len(strides)):
                widths.append(0 if width == 0 else next(adapters).out_channels)
            self.generator: nn.Module = GeometryGenerator(skip_channels=widths, **gen_kwargs)
        else:
            widths = [0] * len(strides)
            self.generator = Generator(**gen_kwargs)
        # Built last and on a forked random state: the rest of the network, and everything drawn from
        # the global generator after it (shuffling, augmentation), are as without the head, so a
        # training run with the head gives the same MRI weights as one without.
        # channels of the generator's last-layer input, which both side heads read
        last_in = (int(gen_channels[-1]) if len(gen_channels) else int(gen_start_channels)) + widths[-1]
        self.scale_head: nn.Module | None = None
        if self.uncertainty:
            if int(uncertainty_channels) < 1:
                raise ValueError(f"uncertainty_channels must be at least 1, got {uncertainty_channels}")
            hidden = int(uncertainty_channels)
            layers: list[nn.Module] = [
                Convolution(3, last_in, hidden, kernel_size=1, act=act, norm=None, bias=bias),
                Convolution(3, hidden, self.out_channels, kernel_size=1, conv_only=True, bias=bias),
            ]
            if strides[-1] > 1:  # the last layer's input is coarser than the MRI: upsample the log scale
                layers.append(LinearUpsample2x() if strides[-1] == 2 else
                              nn.Upsample(scale_factor=strides[-1], mode="trilinear", align_corners=False))
            with torch.random.fork_rng(devices=[]):
                self.scale_head = nn.Sequential(*layers)
        self.scale_subject: nn.Module | None = None
        if uncertainty_subject:
            if not self.uncertainty:
                raise ValueError("uncertainty_subject needs the uncertainty head (uncertainty=True)")
            with torch.random.fork_rng(devices=[]):
                self.scale_subject = SubjectLogScale(math.prod(latent_shape), self.out_channels)
        if int(joint_classes) < 0 or int(joint_classes) == 1:
            raise ValueError(f"joint_classes must be 0 (no joint head) or at least 2, got {joint_classes}")
        self.joint_classes = int(joint_classes)
        self.joint_head: nn.Module | None = None
        if self.joint_classes:
            feature_shape = tuple(m // strides[-1] for m in self.mri_shape)
            box = JointBox(_int_tuple("joint_shape", joint_shape, 3), self.xray_size, self.mri_shape, feature_shape)
            with torch.random.fork_rng(devices=[]):
                self.joint_head = JointRegionHead(self.joint_classes, box, last_in, int(joint_xray_channels),
                                                  int(joint_hidden), in_channels=self.in_channels, act=act)

    def _check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is (B, in_channels, *xray_size)."""
        if (
            x.dim() != 4
            or x.shape[1] != self.in_channels
            or x.shape[2] != self.xray_size[0]
            or x.shape[3] != self.xray_size[1]
        ):
            raise ValueError(
                f"Xray2MRI expects a radiograph batch (B, {self.in_channels}, {self.xray_size[0]}, "
                f"{self.xray_size[1]}) (xray_size is fixed at construction), got shape {list(x.shape)}"
            )

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the output activation (see the module docstring)."""
        if self.sigmoid_output:
            return torch.sigmoid(y)
        if self.training:
            return y
        return y.clamp(0.0, 1.0)

    def _generate(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encoder levels and the generator's raw output (MRI channels, then tissue logits)."""
        self._check_input(x)
        levels = self.cae.encode_levels(x)
        z = self.to_latent(levels[-1])
        if self.geometry:
            skips = [adapter(levels) for adapter in self.skip_adapters]
            return levels, self.generator(z, _fill_skips(skips, self.generator.skip_channels))
        return levels, self.generator(z)

    def _generate_with_last_input(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """:meth:`_generate` plus the generator's last-layer input and the latent when a side head reads them
        (else None)."""
        if self.scale_head is None and self.joint_head is None:
            levels, raw = self._generate(x)
            return levels, raw, None, None
        self._check_input(x)
        levels = self.cae.encode_levels(x)
        z = self.to_latent(levels[-1])
        skips = None
        if self.geometry:
            skips = _fill_skips([adapter(levels) for adapter in self.skip_adapters], self.generator.skip_channels)
        last_input, raw = generate_with_last_input(self.generator, z, skips)
        return levels, raw, last_input, z

    def _log_scale(self, last_input: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor | None:
        """The uncertainty head's log scale from the detached last-layer input (and latent); None without the head."""
        if self.scale_head is None:
            return None
        log_scale = self.scale_head(last_input.detach())
        if self.scale_subject is not None and z is not None:
            log_scale = log_scale + self.scale_subject(z.detach())
        return log_scale

    def _generate_with_scale(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """:meth:`_generate` plus the uncertainty branch's log scale (None without the head)."""
        levels, raw, last_input, z = self._generate_with_last_input(x)
        if last_input is None:
            return levels, raw, None
        return levels, raw, self._log_scale(last_input, z)

    def predict_with_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mri, log_scale)`` for a radiograph batch, without the CAE decoder (inference).

        ``log_scale`` is None for a network built without ``uncertainty``.
        """
        _, raw, log_scale = self._generate_with_scale(x)
        return self._output(raw[:, : self.out_channels]), log_scale

    def forward_dict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The dict form (``"xray"``, ``"mri"``, and ``"mri_log_scale"`` / ``"tissue_logits"`` / ``"joint_logits"``
        with those heads)
        whatever ``return_dict`` says. Prediction uses it for the uncertainty map and the
        out-of-distribution score (which reads the radiograph's reconstruction)."""
        levels, raw, last_input, z = self._generate_with_last_input(x)
        out = {"xray": self._output(self.cae.decode(levels[-1])), "mri": self._output(raw[:, : self.out_channels])}
        if last_input is not None:
            log_scale = self._log_scale(last_input, z)
            if log_scale is not None:
                out["mri_log_scale"] = log_scale
        if self.tissue_classes > 0:
            out["tissue_logits"] = raw[:, self.out_channels :]
        if self.joint_head is not None and last_input is not None:
            out["joint_logits"] = self.joint_head(x, last_input)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor] | torch.Tensor:
        """Radiograph batch (B, in_channels, H, W) -> ``{"xray", "mri"(, "mri_log_scale")(, "tissue_logits")}``
        or the MRI alone.

        See ``return_dict``, ``uncertainty`` and ``tissue_classes`` in the class docstring for the forms.
        """
        if self.return_dict:
            return self.forward_dict(x)
        _, raw = self._generate(x)
        return self._output(raw[:, : self.out_channels])


def _per_layer(skip_channels: int | Sequence[int] | None, n_layers: int) -> list[int | None]:
    """``skip_channels`` as one entry per generator layer (``None``: keep the encoder's channels)."""
    if skip_channels is None or isinstance(skip_channels, int):
        return [skip_channels] * n_layers
    widths = [int(c) for c in skip_channels]
    if len(widths) != n_layers:
        raise ValueError(
            f"skip_channels needs one entry per generator layer (len(gen_strides) = {n_layers}), "
            f"got {tuple(skip_channels)}"
        )
    return widths


def _plan_skips(
    xray_size: tuple[int, ...],
    mri_shape: tuple[int, ...],
    level_sizes: list[tuple[int, int]],
    level_channels: list[int],
    gen_strides: Sequence[int],
    skip_channels: int | Sequence[int] | None,
    act: tuple | str,
    norm: tuple | str,
) -> list[SkipAdapter]:
    """One :class:`SkipAdapter` per generator layer that gets a skip, in layer order.

    Layer ``i``'s input has the in-plane size ``mri (H, W) / prod(gen_strides[i:])``; it reads
    the encoder level closest to that size (see :func:`_nearest_level`).
    """
    if any(x % m and m % x for x, m in zip(xray_size, mri_shape[1:])):
        raise ValueError(
            f"variant='geometry' spreads radiograph features over the volume, so the in-plane "
            f"sizes must differ by a whole factor per axis: xray_size={xray_size}, "
            f"mri_shape (H, W)={mri_shape[1:]}"
        )
    adapters = []
    for i, width in enumerate(_per_layer(skip_channels, len(gen_strides))):
        if width == 0:
            continue
        down = math.prod(int(s) for s in gen_strides[i:])
        target = (mri_shape[1] // down, mri_shape[2] // down)
        source = _nearest_level(level_sizes, target)
        adapters.append(
            SkipAdapter(
                source=source,
                in_channels=level_channels[source],
                in_size=level_sizes[source],
                out_size=target,
                out_channels=width,
                act=act,
                norm=norm,
            )
        )
    return adapters


def _nearest_level(level_sizes: list[tuple[int, int]], target: Sequence[int]) -> int:
    """Index of the encoder level closest in scale to ``target`` (ties: the larger map).

    Only levels whose in-plane size differs from ``target`` by a whole factor per axis
    qualify; if none does, the finest level is returned and :class:`SkipAdapter` raises the
    ValueError that names both sizes.
    """
    best, best_key = 0, None
    for i, (h, w) in enumerate(level_sizes):
        whole = all(a % b == 0 or b % a == 0 for a, b in zip((h, w), target))
        if not whole:
            continue
        key = (abs(math.log2(h / target[0])) + abs(math.log2(w / target[1])), -h * w)
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


def _fill_skips(skips: list[torch.Tensor], skip_channels: list[int]) -> list[torch.Tensor]:
    """One entry per generator layer: the adapters' outputs in order, a placeholder where a layer has none."""
    out: list[torch.Tensor] = []
    k = 0
    for c in skip_channels:
        if c > 0:
            out.append(skips[k])
            k += 1
        else:
            out.append(skips[0] if len(skips) > 0 else torch.empty(0))
    return out
