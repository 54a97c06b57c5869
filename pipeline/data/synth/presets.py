"""Sizes and spacings of the synthetic cohort, the one place they are written down.

Two presets a user picks with ``xray2mri synth --preset``:

========  ==========================  =====================  =====================================
preset    MRI (canonical "PIL" grid)  label map rendered at  radiograph (detector)
========  ==========================  =====================  =====================================
demo      64^3 voxels at 2.5 mm       128^3 at 1.25 mm       256 x 256 pixels at 0.75 mm
          (a 160 mm cube)                                    (~180 mm at the knee, SID ~1000 mm)
full      128^3 voxels at 1.25 mm     256^3 at 0.625 mm      512 x 512 pixels at 0.375 mm
          (a 160 mm cube)                                    (~180 mm at the knee, SID ~1000 mm)
========  ==========================  =====================  =====================================

The MRI field is a cube centred on the knee (joint line in the middle). The radiograph's
field at the knee (detector size / magnification) is a little larger than the MRI field so
that the bundle can crop 160 mm around the knee after the loader's magnification correction.
The label map is rendered ``supersample`` times finer than the MRI and averaged, which gives
the MRI its partial-volume edges; the DRR is cast through that finer grid.

Each subject also gets a joint-region label map (``SUBJ_joint_labels.nii.gz``), the target of
the joint-region tissue head: a box around the joint line whose A->P and R->L voxel centres are
the MRI's own (the central ``joint_label_extent_vox``) and whose S->I rows are
``joint_label_row_factor`` times finer than the MRI's, so that class fractions on a grid finer
than the MRI's can be computed from it. Both presets give the same box, 110 mm x 50 mm (S->I)
x 110 mm, with 0.3125 mm rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SynthPreset:
    """Everything size-related about one synthetic subject.

    Args:
        name: preset name as the CLI spells it.
        mri_shape: MRI voxels along (A->P, S->I, R->L).
        mri_spacing_mm: MRI voxel size (isotropic), mm.
        supersample: the label map is rendered this many times finer along each axis.
        xray_shape: detector (rows, cols).
        xray_pixel_mm: detector pixel pitch (DICOM ImagerPixelSpacing), mm.
        sid_mm: nominal source-to-detector distance, mm.
        object_detector_mm: nominal distance from the knee centre to the detector, mm
            (the subject's limb size varies it a little).
        photons_per_mm2: unattenuated photon fluence at the detector, per mm^2
            (sets the quantum noise).
        detector_blur_px: sigma of the detector's Gaussian point-spread, detector pixels.
        drr_slab: neighbouring fine slices summed into one slab before each slab is
            resampled onto the detector (fewer samples per ray, a sub-pixel error).
        joint_label_extent_vox: the joint-region label map covers the central this many MRI
            voxels along A->P and R->L, at the MRI's own voxel centres (clipped to the MRI;
            :attr:`joint_label_shape`).
        joint_label_rows: rows (S->I) of the joint-region label map, centred on the joint line.
        joint_label_row_factor: its rows are ``mri_spacing_mm / joint_label_row_factor`` apart,
            finer than the MRI so that sub-voxel class fractions can be computed from it.
    """

    name: str
    mri_shape: tuple[int, int, int]
    mri_spacing_mm: float
    supersample: int
    xray_shape: tuple[int, int]
    xray_pixel_mm: float
    sid_mm: float = 1000.0
    object_detector_mm: float = 60.0
    photons_per_mm2: float = 1.5e5
    detector_blur_px: float = 0.6
    drr_slab: int = 2
    joint_label_extent_vox: int = 44
    joint_label_rows: int = 160
    joint_label_row_factor: int = 8

    @property
    def fine_shape(self) -> tuple[int, int, int]:
        """Shape of the label map the MRI and DRR are rendered from."""
        return tuple(n * self.supersample for n in self.mri_shape)  # type: ignore[return-value]

    @property
    def fine_spacing_mm(self) -> float:
        """Voxel size of the fine label map, mm."""
        return self.mri_spacing_mm / self.supersample

    @property
    def field_mm(self) -> tuple[float, float, float]:
        """Physical extent of the MRI field along each axis, mm."""
        return tuple(n * self.mri_spacing_mm for n in self.mri_shape)  # type: ignore[return-value]

    @property
    def joint_label_shape(self) -> tuple[int, int, int]:
        """Shape (A->P, S->I, R->L) of the joint-region label map.

        Along A->P and R->L, ``joint_label_extent_vox`` clipped to the MRI's shape, one less when
        the MRI's margin would be odd, so the box stays centred on the knee centre (the MRI's
        centre) with its voxel centres on the MRI's.
        """
        a, lr = (min(self.joint_label_extent_vox, n) for n in (self.mri_shape[0], self.mri_shape[2]))
        a -= (self.mri_shape[0] - a) % 2
        lr -= (self.mri_shape[2] - lr) % 2
        return (a, self.joint_label_rows, lr)

    @property
    def joint_label_spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size (A->P, S->I, R->L) of the joint-region label map, mm."""
        return (self.mri_spacing_mm, self.mri_spacing_mm / self.joint_label_row_factor, self.mri_spacing_mm)

    @property
    def joint_label_first_voxel(self) -> tuple[int, int]:
        """MRI voxel index (A->P, R->L) of the joint-region label map's first voxel (10, 10 in the demo)."""
        shape = self.joint_label_shape
        return ((self.mri_shape[0] - shape[0]) // 2, (self.mri_shape[2] - shape[2]) // 2)

    def to_dict(self) -> dict:
        """JSON-ready copy (written into every subject's meta file)."""
        return asdict(self)


PRESETS: dict[str, SynthPreset] = {
    "demo": SynthPreset(
        name="demo",
        mri_shape=(64, 64, 64),
        mri_spacing_mm=2.5,
        supersample=2,
        xray_shape=(256, 256),
        xray_pixel_mm=0.75,
    ),
    "full": SynthPreset(
        name="full",
        mri_shape=(128, 128, 128),
        mri_spacing_mm=1.25,
        supersample=2,
        xray_shape=(512, 512),
        xray_pixel_mm=0.375,
        detector_blur_px=0.8,
        drr_slab=4,
        joint_label_extent_vox=88,  # the demo's 110 mm box and 0.3125 mm rows
        joint_label_row_factor=4,
    ),
}


def get_preset(name: str) -> SynthPreset:
    """The preset called ``name``; a ``ValueError`` listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic preset {name!r}; choose one of {sorted(PRESETS)}") from None
