"""The geometry contract, written down once.

An AP (or PA, as displayed) knee radiograph has rows running superior -> inferior and
columns running from the patient's right to left; the projection direction is
anterior -> posterior. The MRI array is laid out (depth, rows, cols) =
(A->P, S->I, R->L), i.e. nibabel/MONAI axis codes ``"PIL"``, so that its (rows, cols)
grid lies on the radiograph's field of view and summing over depth mimics the projection.
"""

from __future__ import annotations

#: MONAI/nibabel axis codes of the canonical MRI array (depth, rows, cols).
MRI_AXCODES: str = "PIL"
#: Which array axis of the (1, D, H, W) MRI tensor is the projection (A-P) axis, without channel.
PROJECTION_AXIS: int = 0
#: Radiograph array axes without channel: (rows = S->I, cols = R->L).
XRAY_AXES: tuple[str, str] = ("S->I", "R->L")
#: Knees are mirrored to this side before the network sees them (the flip is recorded).
CANONICAL_SIDE: str = "R"
#: Metadata key recording that an image was mirrored left-right to the canonical side.
MIRRORED_KEY: str = "mirrored_to_canonical"
#: Array axis (with channel) that a left-right mirror flips: the column axis, last in both
#: the radiograph (1, H, W) and the MRI (1, D, H, W).
LR_FLIP_AXIS: int = -1
