"""The geometry contract, written down once.

An AP (or PA, as displayed) knee radiograph has rows running superior -> inferior and
columns running from the patient's right to left; the projection direction is
anterior -> posterior. The MRI array is laid out (depth, rows, cols) =
(A->P, S->I, R->L), i.e. nibabel/MONAI axis codes ``"PIL"``, so that its (rows, cols)
grid lies on the radiograph's field of view and summing over depth mimics the projection.

:func:`canonical_affine` is the voxel -> world affine of such an array: every volume this
project generates (the synthetic cohort's MRI, the predicted MRI) is placed with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
#: Side of the square knee region of interest on a radiograph, mm (community convention for OAI radiographs;
#: ``CropKnee``'s default and the OAI exports' crop).
DEFAULT_CROP_MM: float = 140.0

#: RAS world axis and direction of each nibabel/MONAI axis code ("R" = towards the patient's right = +x).
_AXCODE_WORLD: dict[str, tuple[int, float]] = {
    "R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0),
}


def canonical_affine(
    shape: Sequence[int],
    spacing: float | Sequence[float],
    centre: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """The 4x4 voxel -> RAS mm affine of a volume of ``shape`` laid out in :data:`MRI_AXCODES`.

    Args:
        shape: the array's (D, H, W).
        spacing: voxel size in mm, one number (isotropic) or one per array axis.
        centre: where the volume's centre (the midpoint of its voxel centres) lies, RAS mm.

    Example::

        canonical_affine((64, 64, 64), 2.5)  # "PIL", 2.5 mm voxels, centred on the origin
    """
    sizes = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, code in enumerate(MRI_AXCODES):
        world_axis, direction = _AXCODE_WORLD[code]
        affine[world_axis, axis] = direction * sizes[axis]
    half = (np.asarray(shape, dtype=float) - 1.0) / 2.0
    affine[:3, 3] = np.asarray(centre, dtype=float) - affine[:3, :3] @ half
    return affine


def centred_box_affine(
    affine: np.ndarray, shape: Sequence[int], box_shape: Sequence[int], box_spacing: Sequence[float]
) -> np.ndarray:
    """The affine of a box of ``box_shape`` voxels of ``box_spacing`` mm sharing the centre and axes of a volume.

    The joint-region head's box is centred on the volume it comes from (the field's centre, where the knee
    finder puts the joint), with its own voxel size per axis; this places it in the volume's world frame.

    Args:
        affine: the volume's 4x4 voxel -> world affine.
        shape: the volume's (D, H, W).
        box_shape: the box's (D, H, W).
        box_spacing: the box's voxel size (mm) per axis.
    """
    a = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    cols = a[:3, :3] / spacing * np.asarray(box_spacing, dtype=np.float64)
    centre = a[:3, :3] @ ((np.asarray(shape, dtype=np.float64) - 1) / 2) + a[:3, 3]
    out = np.eye(4)
    out[:3, :3] = cols
    out[:3, 3] = centre - cols @ ((np.asarray(box_shape, dtype=np.float64) - 1) / 2)
    return out
