"""JointRegionHead: tissue-class logits in a box around the knee joint, finer along S->I than the MRI.

Joint-space width and cartilage thickness are S->I distances of a few millimetres: at the MRI's
2.5 mm voxels a 1 mm narrowing is sub-voxel and the whole-volume tissue map reads whole voxels. This
head outputs the tissue classes' logits in a box centred on the joint (the field's centre, where the
knee finder puts the joint) whose rows have the radiograph's own row spacing (1.25 mm in the demo) and
whose A->P and R->L voxels are the MRI's. Trained on partial-volume class fractions
(:class:`~xray2mri.transforms.mri.ClassFractions`), its probabilities give sub-voxel readings
(:mod:`~xray2mri.pipeline.evaluation.readings`).

It reads two inputs, both without passing gradient back:

* the radiograph's rows and columns over the box, at their native spacing (three 3x3 convolutions,
  then the columns averaged down to the MRI's), where the joint space is seen directly;
* the generator's last-layer input features over the box (DETACHED, like the uncertainty head's),
  which know where the bones lie along A->P. Their A->P axis is folded into channels.

The fused 2-D map, on the radiograph's own (S->I, R->L) plane, ends in a 1x1 convolution to
``classes x D`` channels: depth as channels, so every layer is 2-D (cheap on a CPU: ~30 ms forward and
backward for the demo's 40 x 32 x 40 box, against ~350 ms for the same box with 3-D convolutions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["JointRegionHead", "JointBox"]


class JointBox:
    """Where the joint box lies in the radiograph, the MRI and the generator's last-layer features.

    Args:
        joint_shape: the box's (D, H, W): D and W in MRI voxels, H in radiograph rows.
        xray_size: the radiograph's (H, W).
        mri_shape: the MRI's (D, H, W) (same field of view as the radiograph in-plane).
        feature_shape: the generator's last-layer input (D, H, W).

    Raises:
        ValueError: the box does not fit or is not centred on whole pixels / voxels, or the feature grid is
            not a whole fraction of the radiograph's rows and the MRI (the message names the sizes to change).
    """

    def __init__(
        self,
        joint_shape: Sequence[int],
        xray_size: Sequence[int],
        mri_shape: Sequence[int],
        feature_shape: Sequence[int],
    ) -> None:
        jd, jh, jw = (int(v) for v in joint_shape)
        xh, xw = (int(v) for v in xray_size)
        md, _, mw = (int(v) for v in mri_shape)
        fd, fh, fw = (int(v) for v in feature_shape)
        self.shape = (jd, jh, jw)
        where = f"joint box {self.shape} in a {tuple(xray_size)} radiograph and a {tuple(mri_shape)} MRI"
        if not (0 < jd <= md and 0 < jh <= xh and 0 < jw <= mw):
            raise ValueError(f"{where}: the box must fit in the MRI's (D, W) {md, mw} and the radiograph's rows {xh}")
        if (md - jd) % 2 or (mw - jw) % 2 or (xh - jh) % 2:
            raise ValueError(f"{where}: the box must be centred on whole voxels and rows (even margins)")
        if xw % mw or xh % fh or md % fd or mw % fw:
            raise ValueError(f"{where}: the radiograph's width must be a whole multiple of the MRI's, and the "
                             f"generator's last-layer grid {tuple(feature_shape)} a whole fraction of the radiograph's "
                             f"rows and the MRI's depth and width")
        self.col_factor = xw // mw
        r0, m0, dm0 = (xh - jh) // 2, (mw - jw) // 2, (md - jd) // 2
        #: radiograph rows and columns of the box: (row0, row1, col0, col1)
        self.xray_box = (r0, r0 + jh, m0 * self.col_factor, (m0 + jw) * self.col_factor)
        #: the feature cells covering the box: (d0, d1, h0, h1, w0, w1) ...
        rf, cf, df = xh // fh, mw // fw, md // fd
        self.feature_box = (dm0 // df, -(-(dm0 + jd) // df), r0 // rf, -(-(r0 + jh) // rf), m0 // cf, -(-(m0 + jw) // cf))
        #: ... the upsampling from cells to the box's rows and columns, and where the box starts in it
        self.feature_scale = (rf, cf)
        self.feature_offset = (r0 - self.feature_box[2] * rf, m0 - self.feature_box[4] * cf)


class JointRegionHead(nn.Module):
    """Tissue logits ``(B, classes, D, H, W)`` over a :class:`JointBox` (see the module docstring).

    Args:
        classes: tissue classes.
        box: the box's geometry.
        feature_channels: channels of the generator's last-layer input.
        xray_channels: channels of the radiograph branch.
        hidden: channels of the fused map.
        in_channels: radiograph channels.
        act: activation (MONAI ``Act`` name or (name, args)).
    """

    def __init__(
        self,
        classes: int,
        box: JointBox,
        feature_channels: int,
        xray_channels: int = 32,
        hidden: int = 64,
        in_channels: int = 1,
        act: tuple | str = "PRELU",
    ) -> None:
        super().__init__()
        self.classes = int(classes)
        self.box = box
        # the box's numbers as plain int tuples: what TorchScript (``ckpt_export``) can hold
        self.shape: tuple[int, int, int] = box.shape
        self.xray_box: tuple[int, int, int, int] = box.xray_box
        self.feature_box: tuple[int, int, int, int, int, int] = box.feature_box
        self.feature_scale: tuple[int, int] = box.feature_scale
        self.feature_offset: tuple[int, int] = box.feature_offset
        self.col_factor = box.col_factor
        d0, d1, h0, h1, w0, w1 = box.feature_box
        self.xray_branch = nn.Sequential(
            Convolution(2, in_channels, xray_channels, kernel_size=3, act=act, norm=None),
            Convolution(2, xray_channels, xray_channels, kernel_size=3, act=act, norm=None),
            Convolution(2, xray_channels, xray_channels, kernel_size=3, act=act, norm=None),
        )
        self.feature_branch = Convolution(2, feature_channels * (d1 - d0), hidden, kernel_size=1, act=act, norm=None)
        norm = ("instance", {"affine": True})
        self.fuse = nn.Sequential(
            Convolution(2, hidden + xray_channels, hidden, kernel_size=3, act=act, norm=norm),
            Convolution(2, hidden, hidden, kernel_size=3, act=act, norm=norm),
            Convolution(2, hidden, self.classes * box.shape[0], kernel_size=1, conv_only=True),
        )

    def forward(self, xray: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Radiograph batch (B, C, H, W) and the generator's last-layer input (B, F, fD, fH, fW) -> logits."""
        jd, jh, jw = self.shape
        r0, r1, c0, c1 = self.xray_box
        d0, d1, h0, h1, w0, w1 = self.feature_box
        x = F.avg_pool2d(self.xray_branch(xray[:, :, r0:r1, c0:c1].detach()), (1, self.col_factor))
        f = features.detach()[:, :, d0:d1, h0:h1, w0:w1]
        f = self.feature_branch(f.reshape(f.shape[0], -1, h1 - h0, w1 - w0))
        rf, cf = self.feature_scale
        ro, co = self.feature_offset
        f = F.interpolate(f, size=((h1 - h0) * rf, (w1 - w0) * cf), mode="bilinear", align_corners=False)
        f = f[:, :, ro : ro + jh, co : co + jw]
        y = self.fuse(torch.cat([f, x], dim=1))
        return y.view(y.shape[0], self.classes, jd, jh, jw)
