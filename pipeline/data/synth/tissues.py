"""The tissue table of the synthetic knee: label id, name, MRI signal, X-ray attenuation.

This is the one place these facts live; the phantom, the MRI renderer, the DRR and the
cohort legend (``DIR/tissues.json``) all read them from here. The tissue classes the network's
optional tissue head predicts and the clinical readings use (:data:`TISSUE_CLASSES`: bones,
cartilages, menisci, fluid, soft tissue, background) are defined here too, each gathering cohort
tissues, so a label map becomes a class map in one place (:func:`to_classes`).

MRI signal: relative signal (0..1) of a water-excitation 3-D DESS, the sequence of the OAI
knee MRI: fat and marrow dark (fat suppressed), hyaline cartilage bright, joint fluid
brightest, cortical bone / menisci / tendons and ligaments dark (short T2), muscle
intermediate-dark. The numbers are chosen to reproduce that appearance, not measured.

X-ray attenuation: linear attenuation coefficient ``mu`` (1/mm) at an effective energy of
40 keV (a knee radiograph is taken at about 60-70 kVp). ``mu = (mu/rho) * rho`` with the mass
attenuation coefficients of NIST Standard Reference Database 126 (J. H. Hubbell and
S. M. Seltzer, "Tables of X-Ray Mass Attenuation Coefficients ...", NISTIR 5632, Table 4,
tissue compositions and densities from ICRU Report 44, 1989), values at 40 keV rounded to
three digits:

====================================  ============  ===============
NIST Table 4 material                 mu/rho cm2/g  rho g/cm3
====================================  ============  ===============
Water, liquid                         0.268         1.00
Adipose Tissue (ICRU-44)              0.254         0.95
Muscle, Skeletal (ICRU-44)            0.272         1.05
Tissue, Soft (ICRU-44)                0.271         1.06
Skin (ICRU-44)                        0.268         1.09
Bone, Cortical (ICRU-44)              0.666         1.92
====================================  ============  ===============

Cartilage, menisci and tendons use soft tissue at their own density (1.10, 1.12); trabecular
bone is a volume mixture of cortical bone (25 %) and marrow (soft tissue, 75 %), subchondral
sclerosis the same with 45 % bone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Mass attenuation at 40 keV (cm^2/g), NIST SRD 126 Table 4 (ICRU-44 compositions); see the docstring.
_MU_RHO_40KEV = {
    "water": 0.268,
    "adipose": 0.254,
    "muscle": 0.272,
    "soft": 0.271,
    "skin": 0.268,
    "bone_cortical": 0.666,
}


def _mu_per_mm(material: str, density: float) -> float:
    """Linear attenuation (1/mm) of a NIST material at a given density (g/cm^3)."""
    return _MU_RHO_40KEV[material] * density / 10.0


def _bone_mix(bone_fraction: float) -> float:
    """Linear attenuation (1/mm) of trabecular bone: cortical bone + marrow by volume."""
    return bone_fraction * _mu_per_mm("bone_cortical", 1.92) + (1 - bone_fraction) * _mu_per_mm("soft", 1.06)


@dataclass(frozen=True)
class Tissue:
    """One tissue class of the label map.

    Args:
        label: integer id in the label map (0 is air).
        name: the legend name (``DIR/tissues.json``).
        mri_signal: relative DESS signal, 0..1.
        mu_per_mm: linear attenuation at the effective energy, 1/mm.
        kind: coarse class for grouping ("air", "soft", "bone", "cartilage", "fluid").
    """

    label: int
    name: str
    mri_signal: float
    mu_per_mm: float
    kind: str


TISSUES: tuple[Tissue, ...] = (
    Tissue(0, "air", 0.0, 0.0, "air"),
    Tissue(1, "skin", 0.18, _mu_per_mm("skin", 1.09), "soft"),
    Tissue(2, "fat", 0.06, _mu_per_mm("adipose", 0.95), "soft"),
    Tissue(3, "muscle", 0.20, _mu_per_mm("muscle", 1.05), "soft"),
    Tissue(4, "tendon_ligament", 0.03, _mu_per_mm("soft", 1.12), "soft"),
    Tissue(5, "cortical_bone", 0.02, _mu_per_mm("bone_cortical", 1.92), "bone"),
    Tissue(6, "femur", 0.10, _bone_mix(0.25), "bone"),
    Tissue(7, "tibia", 0.10, _bone_mix(0.25), "bone"),
    Tissue(8, "patella", 0.10, _bone_mix(0.25), "bone"),
    Tissue(9, "fibula", 0.10, _bone_mix(0.25), "bone"),
    Tissue(10, "sclerotic_bone", 0.05, _bone_mix(0.45), "bone"),
    Tissue(11, "femoral_cartilage", 0.55, _mu_per_mm("soft", 1.10), "cartilage"),
    Tissue(12, "tibial_cartilage", 0.55, _mu_per_mm("soft", 1.10), "cartilage"),
    Tissue(13, "patellar_cartilage", 0.52, _mu_per_mm("soft", 1.10), "cartilage"),
    Tissue(14, "meniscus", 0.05, _mu_per_mm("soft", 1.12), "soft"),
    Tissue(15, "joint_fluid", 0.95, _mu_per_mm("water", 1.01), "fluid"),
)

#: label id of each tissue, by name (the names are the legend written to ``tissues.json``).
LABEL: dict[str, int] = {t.name: t.label for t in TISSUES}
#: label ids of all bone tissues (cortex, marrow of each bone, sclerosis).
BONE_LABELS: tuple[int, ...] = tuple(t.label for t in TISSUES if t.kind == "bone")
#: label ids of hyaline cartilage.
CARTILAGE_LABELS: tuple[int, ...] = tuple(t.label for t in TISSUES if t.kind == "cartilage")


@dataclass(frozen=True)
class TissueClass:
    """One class of the tissue map the network's tissue head predicts and the clinical readings use.

    Args:
        index: class index (the channel of the head's output, the value of a class map).
        name: class name (``dice_<name>`` in the evaluation summary).
        tissues: the cohort tissues (names of :data:`TISSUES`) this class gathers.
    """

    index: int
    name: str
    tissues: tuple[str, ...]


#: The tissue classes, index order. Cortex and subchondral sclerosis are one class: in the cohort's
#: label map they are shared by every bone (a bone surface is where any bone class ends).
TISSUE_CLASSES: tuple[TissueClass, ...] = (
    TissueClass(0, "background", ("air",)),
    TissueClass(1, "soft_tissue", ("skin", "fat", "muscle", "tendon_ligament")),
    TissueClass(2, "cortical_bone", ("cortical_bone", "sclerotic_bone")),
    TissueClass(3, "femur", ("femur",)),
    TissueClass(4, "tibia", ("tibia",)),
    TissueClass(5, "patella", ("patella",)),
    TissueClass(6, "fibula", ("fibula",)),
    TissueClass(7, "femoral_cartilage", ("femoral_cartilage",)),
    TissueClass(8, "tibial_cartilage", ("tibial_cartilage",)),
    TissueClass(9, "patellar_cartilage", ("patellar_cartilage",)),
    TissueClass(10, "meniscus", ("meniscus",)),
    TissueClass(11, "fluid", ("joint_fluid",)),
)
#: class name -> class index.
CLASS_INDEX: dict[str, int] = {c.name: c.index for c in TISSUE_CLASSES}
#: number of tissue classes (the tissue head's output channels).
NUM_CLASSES: int = len(TISSUE_CLASSES)


def class_lut(tissue_legend: dict[str, int] | None = None) -> np.ndarray:
    """int64 array indexed by label id giving the tissue class index.

    Args:
        tissue_legend: the cohort's legend (tissue name -> label id, ``DIR/tissues.json``); default
            this module's :data:`LABEL`. A name may also be a class name (a legend of class maps,
            :func:`class_legend`). Label ids the legend does not name map to background.
    Raises:
        ValueError: the legend names a tissue no class gathers.
    """
    tissue_legend = dict(LABEL if tissue_legend is None else tissue_legend)
    of_tissue = {**CLASS_INDEX, **{t: c.index for c in TISSUE_CLASSES for t in c.tissues}}
    unknown = sorted(set(tissue_legend) - set(of_tissue))
    if unknown:
        raise ValueError(f"tissue legend names tissues no tissue class gathers: {unknown}")
    lut = np.zeros(max(tissue_legend.values(), default=0) + 1, dtype=np.int64)
    for name, label_id in tissue_legend.items():
        lut[int(label_id)] = of_tissue[name]
    return lut


def to_classes(labels, tissue_legend: dict[str, int] | None = None) -> np.ndarray:
    """A cohort label map (integer label ids) as a tissue-class map (int64 class indices, same shape).

    Label ids above the legend's largest map to background (:func:`class_lut`).
    """
    lab = np.rint(np.asarray(labels)).astype(np.int64)
    lut = class_lut(tissue_legend)
    out = np.zeros_like(lab)
    inside = (lab >= 0) & (lab < lut.size)
    out[inside] = lut[lab[inside]]
    return out


def class_attenuation_lut() -> np.ndarray:
    """float32 array indexed by class index giving the class's linear attenuation (1/mm): the mean of
    its tissues' (a class map projected with the DRR approximates the cohort's radiograph)."""
    mu = {t.name: t.mu_per_mm for t in TISSUES}
    return np.array([np.mean([mu[t] for t in c.tissues]) for c in TISSUE_CLASSES], dtype=np.float32)


def class_legend() -> dict[str, int]:
    """Class name -> class index: a legend of class maps, in the form of ``tissues.json``."""
    return dict(CLASS_INDEX)


def legend() -> dict[str, int]:
    """Tissue name -> label id (the content of ``DIR/tissues.json``)."""
    return dict(LABEL)


def mri_signal_lut() -> np.ndarray:
    """float32 array indexed by label id giving the relative DESS signal."""
    return np.array([t.mri_signal for t in TISSUES], dtype=np.float32)


def attenuation_lut() -> np.ndarray:
    """float32 array indexed by label id giving the linear attenuation, 1/mm."""
    return np.array([t.mu_per_mm for t in TISSUES], dtype=np.float32)


assert [t.label for t in TISSUES] == list(range(len(TISSUES))), "labels must be 0..N-1 in order"
assert [c.index for c in TISSUE_CLASSES] == list(range(NUM_CLASSES)), "classes must be 0..N-1 in order"
assert sorted(t for c in TISSUE_CLASSES for t in c.tissues) == sorted(LABEL), "every tissue in exactly one class"
