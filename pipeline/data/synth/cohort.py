"""Generate the synthetic paired knee cohort: one folder per subject, a legend, a datalist.

Layout of ``DIR`` (docs/architecture.md, "Data")::

    DIR/cohort.json                  what was generated (preset, seed, subjects), SYNTHETIC
    DIR/tissues.json                 legend: tissue name -> label id
    DIR/datalist.json                train/validation/test split by subject (manifest format)
    DIR/SYN0000/SYN0000_xray.dcm     AP knee radiograph (DX DICOM, cone-beam DRR)
    DIR/SYN0000/SYN0000_mri.nii.gz   DESS-like MRI (int16), acquisition orientation varies
    DIR/SYN0000/SYN0000_labels.nii.gz  tissue labels on the MRI grid (uint8), same orientation
    DIR/SYN0000/SYN0000_joint_labels.nii.gz  tissue labels in a box around the joint line, MRI
                                     voxel centres along A->P and R->L, finer S->I rows (uint8)
    DIR/SYN0000/SYN0000_meta.json    grade, side, JSW, geometry and every random parameter

Radiographs: a cone-beam DRR through the label map, the marrow textured
(:mod:`~xray2mri.pipeline.data.synth.bone_texture`), then framed in turn by subject index
(:data:`~xray2mri.pipeline.data.synth.framing.COHORT_FRAMINGS`: knee field, long-leg field,
marked knee field, bilateral view), so the knee finder and the network meet real framings in
training; the meta file records the framing and the joint centre in the written pixels.

Determinism: subject ``i`` of seed ``S`` draws its anatomy, MRI and exposure from
``numpy.random.default_rng([S, i])`` and its radiograph's appearance (texture, framing) from
``default_rng([S, i, 1])``, so a subject's files do not depend on how many subjects or worker
processes there are. Subjects are rendered in parallel worker processes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from xray2mri.pipeline.data.synth.bone_texture import trabecular_attenuation
from xray2mri.pipeline.data.synth.dicom_writer import BITS_STORED, PHOTOMETRICS, TRANSFER_SYNTAXES, write_dx
from xray2mri.pipeline.data.synth.drr import expose, line_integrals
from xray2mri.pipeline.data.synth.framing import COHORT_FRAMINGS, frame_radiograph
from xray2mri.pipeline.data.synth.mri_render import draw_mri_params, render_mri
from xray2mri.pipeline.data.synth.nifti_writer import ACQUISITION_AXCODES, write_volume
from xray2mri.pipeline.data.synth.phantom import (
    KneeParams,
    compartment_centres,
    compartment_halfwidths,
    draw_params,
    render_labels,
)
from xray2mri.pipeline.data.synth.presets import SynthPreset, get_preset
from xray2mri.pipeline.data.synth.tissues import attenuation_lut, legend
from xray2mri.transforms.geometry import MRI_AXCODES, canonical_affine

#: Version of what the generator draws and writes: a cohort made by another version is regenerated.
#: 2: framed radiographs, trabecular bone; 3: lead markers and collimation saturate above the bone,
#: marker letters 18 mm with 3 mm strokes; 4: the joint-region label file (``SUBJ_joint_labels.nii.gz``).
GENERATOR_VERSION: int = 4
SUBJECT_PREFIX = "SYN"
VISIT = "00m"
_SUBJECT_DIR = re.compile(rf"^{SUBJECT_PREFIX}\d{{4,}}$")


def subject_id(index: int) -> str:
    """``SYN0000``, ``SYN0001``, ..."""
    return f"{SUBJECT_PREFIX}{index:04d}"


def _stream(seed: int, index: int, *extra: int) -> np.random.Generator:
    """``default_rng([seed, index, *extra])`` for a subject; seed and index must be >= 0."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([int(seed), int(index), *extra])


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of subject ``index`` in the cohort of ``seed`` (independent of workers)."""
    return _stream(seed, index)


def appearance_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of subject ``index``'s radiograph appearance (texture, framing), apart from its anatomy's."""
    return _stream(seed, index, 1)


def cohort_framing(index: int) -> str:
    """How the default cohort frames subject ``index``'s radiograph (:data:`COHORT_FRAMINGS`, in turn)."""
    return COHORT_FRAMINGS[index % len(COHORT_FRAMINGS)]


def _axis_mm(n: int, spacing: float) -> np.ndarray:
    """Voxel-centre coordinates (mm) of an axis of n voxels centred on 0."""
    return ((np.arange(n) - (n - 1) / 2.0) * spacing).astype(np.float32)


def joint_label_axes(pre: SynthPreset) -> list[np.ndarray]:
    """Sample coordinates (mm, canonical frame) of the joint-region label map along (A->P, S->I, R->L).

    A->P and R->L: the MRI's own voxel centres, the central ones
    (:attr:`~xray2mri.pipeline.data.synth.presets.SynthPreset.joint_label_shape`); S->I: its
    finer rows, centred on the joint line.
    """
    shape, first = pre.joint_label_shape, pre.joint_label_first_voxel
    a = _axis_mm(pre.mri_shape[0], pre.mri_spacing_mm)[first[0] : first[0] + shape[0]]
    lr = _axis_mm(pre.mri_shape[2], pre.mri_spacing_mm)[first[1] : first[1] + shape[2]]
    return [a, _axis_mm(shape[1], pre.joint_label_spacing_mm[1]), lr]


@dataclass
class SubjectData:
    """One rendered subject, in memory: canonical ("PIL") arrays and its meta record."""

    subject: str
    params: KneeParams
    labels: np.ndarray  # uint8 (A->P, S->I, R->L) on the MRI grid
    joint_labels: np.ndarray  # uint8 (A->P, S->I, R->L) around the joint line (joint_label_axes)
    mri: np.ndarray  # int16, same grid
    xray: np.ndarray  # float32 log-attenuation, detector (rows S->I, cols R->L)
    meta: dict


def make_subject(
    index: int,
    seed: int = 0,
    preset: str | SynthPreset = "demo",
    grade: int | None = None,
    side: str | None = None,
    framing: str | None = None,
) -> SubjectData:
    """Render subject ``index`` of the cohort of ``seed`` (grade/side/framing may be forced, for tests;
    framing None: :func:`cohort_framing`)."""
    pre = get_preset(preset) if isinstance(preset, str) else preset
    framing = cohort_framing(index) if framing is None else framing
    rng = subject_rng(seed, index)
    look = appearance_rng(seed, index)
    p = draw_params(rng, grade=grade, side=side)
    acq = draw_mri_params(rng, pre.mri_spacing_mm)
    sid = float(rng.uniform(980.0, 1020.0))
    od = 60.0 * p.scale * p.limb_scale + p.fat_mm + float(rng.uniform(5.0, 20.0))  # knee centre -> detector
    sod = sid - od
    photons = pre.photons_per_mm2 * pre.xray_pixel_mm**2 * float(rng.uniform(0.7, 1.3))
    heel = float(rng.uniform(-0.08, 0.08))
    kvp = float(rng.uniform(60.0, 70.0))
    centre_world = tuple(round(float(v), 3) for v in rng.normal(0.0, 20.0, 3))

    fine = [_axis_mm(n, pre.fine_spacing_mm) for n in pre.fine_shape]
    coarse = [_axis_mm(n, pre.mri_spacing_mm) for n in pre.mri_shape]
    fine_labels = render_labels(p, *fine)
    labels = render_labels(p, *coarse)
    joint_labels = render_labels(p, *joint_label_axes(pre))
    mri = render_mri(fine_labels, pre.supersample, acq, rng)
    mu = trabecular_attenuation(attenuation_lut()[fine_labels], fine_labels, pre.fine_spacing_mm, look)
    integrals = line_integrals(mu, pre.fine_spacing_mm, pre.xray_shape, pre.xray_pixel_mm, sid, sod, pre.drr_slab)
    centred = ((pre.xray_shape[0] - 1) / 2.0, (pre.xray_shape[1] - 1) / 2.0)  # the central ray meets the knee centre
    framed = frame_radiograph(framing, expose(integrals, photons, pre.detector_blur_px, heel, rng), centred, p.side,
                              pre.xray_pixel_mm, sid / sod, look)
    xray = framed.image

    subject = subject_id(index)
    affine = canonical_affine(pre.mri_shape, pre.mri_spacing_mm, centre_world)
    centre_vox = (np.asarray(pre.mri_shape, dtype=float) - 1) / 2.0

    def to_world(c_mm):
        vox = np.asarray(c_mm) / pre.mri_spacing_mm + centre_vox
        return [round(float(v), 3) for v in affine[:3, :3] @ vox + affine[:3, 3]], [round(float(v), 3) for v in vox]

    geometry = {
        "world_frame": "RAS+ (NIfTI/nibabel scanner coordinates), mm",
        "knee_centre_world_mm": list(centre_world),
        "canonical": {
            "axcodes": MRI_AXCODES,
            "shape": list(pre.mri_shape),
            "spacing_mm": [pre.mri_spacing_mm] * 3,
            "knee_centre_voxel": [round(float(v), 3) for v in centre_vox],
            "joint_line_row": round(float(centre_vox[1]), 3),
            "joint_labels": {
                "shape": list(pre.joint_label_shape),
                "spacing_mm": list(pre.joint_label_spacing_mm),
                "first_mri_voxel_ap_rl": list(pre.joint_label_first_voxel),
            },
        },
    }
    halfw = compartment_halfwidths(p)
    for name, c in compartment_centres(p).items():
        world, vox = to_world(c)
        geometry[f"{name}_centre_world_mm"] = world
        geometry["canonical"][f"{name}_centre_voxel"] = vox
        lo = (c[2] - halfw[name]) / pre.mri_spacing_mm + centre_vox[2]
        hi = (c[2] + halfw[name]) / pre.mri_spacing_mm + centre_vox[2]
        geometry["canonical"][f"{name}_columns"] = [int(math.ceil(lo)), int(math.floor(hi))]
    meta = {
        "subject": subject,
        "side": p.side,
        "grade": p.grade,
        "visit": VISIT,
        "jsw_medial_mm": round(p.jsw_medial_mm, 4),
        "jsw_lateral_mm": round(p.jsw_lateral_mm, 4),
        "synthetic": True,
        "note": "SYNTHETIC subject generated by xray2mri synth; not patient data",
        "seed": seed,
        "index": index,
        "preset": pre.to_dict(),
        "params": p.to_dict(),
        "geometry": geometry,
        "mri": {**acq, "acquisition_axcodes": ACQUISITION_AXCODES[index % len(ACQUISITION_AXCODES)]},
        "xray": {
            "view": "AP bilateral" if framed.other_centre is not None else "AP",
            "framing": framing,
            "joint_centre_px": [round(float(v), 3) for v in framed.centre],
            "other_knee_centre_px": None if framed.other_centre is None else [round(float(v), 3)
                                                                              for v in framed.other_centre],
            "burned_in_annotation": framed.burned_in,
            "sid_mm": round(sid, 3),
            "sod_mm": round(sod, 3),
            "magnification": round(sid / sod, 6),
            "imager_pixel_spacing_mm": pre.xray_pixel_mm,
            "pixel_spacing_at_knee_mm": round(pre.xray_pixel_mm * sod / sid, 6),
            "shape": list(xray.shape),
            "photons_per_pixel": round(photons, 1),
            "heel_effect": round(heel, 4),
            "detector_blur_px": pre.detector_blur_px,
            "kvp": round(kvp, 1),
            "effective_energy_kev": 40,
            "photometric": PHOTOMETRICS[index % len(PHOTOMETRICS)],
            "transfer_syntax": str(TRANSFER_SYNTAXES[(index // 2) % len(TRANSFER_SYNTAXES)]),
            "bits_stored": BITS_STORED[index % len(BITS_STORED)],
        },
    }
    return SubjectData(subject, p, labels, joint_labels, mri, xray, meta)


def write_subject(out_dir: str | os.PathLike, data: SubjectData) -> Path:
    """Write one subject's five files into ``out_dir/SUBJ/`` (built aside, then moved in place)."""
    out_dir = Path(out_dir)
    final = out_dir / data.subject
    work = out_dir / f".{data.subject}.partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    m, x = data.meta, data.meta["xray"]
    affine = canonical_affine(tuple(m["geometry"]["canonical"]["shape"]), m["preset"]["mri_spacing_mm"],
                              tuple(m["geometry"]["knee_centre_world_mm"]))
    axcodes = m["mri"]["acquisition_axcodes"]
    note = f"SYNTHETIC xray2mri {data.subject}"
    write_volume(work / f"{data.subject}_mri.nii.gz", data.mri, affine, axcodes, f"{note} DESS-like MRI")
    write_volume(work / f"{data.subject}_labels.nii.gz", data.labels, affine, axcodes, f"{note} tissue labels")
    joint = m["geometry"]["canonical"]["joint_labels"]  # centred on the knee centre, like the MRI
    joint_affine = canonical_affine(tuple(joint["shape"]), joint["spacing_mm"],
                                    tuple(m["geometry"]["knee_centre_world_mm"]))
    write_volume(work / f"{data.subject}_joint_labels.nii.gz", data.joint_labels, joint_affine, axcodes,
                 f"{note} joint-region tissue labels (fine S-I rows)")
    ts = next(t for t in TRANSFER_SYNTAXES if str(t) == x["transfer_syntax"])
    written = write_dx(
        work / f"{data.subject}_xray.dcm",
        data.xray,
        subject=data.subject,
        laterality="B" if x.get("other_knee_centre_px") else data.meta["side"],
        imager_pixel_mm=x["imager_pixel_spacing_mm"],
        sid_mm=x["sid_mm"],
        sod_mm=x["sod_mm"],
        photometric=x["photometric"],
        transfer_syntax=ts,
        bits_stored=x["bits_stored"],
        uid_seed=f"xray2mri-synth/{m['seed']}/{m['index']}",
        kvp=x["kvp"],
        burned_in=bool(x.get("burned_in_annotation", False)),
    )
    x.update(written)
    (work / f"{data.subject}_meta.json").write_text(json.dumps(data.meta, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(work, final)
    return final


def _render_and_write(job: tuple[str, int, int, str]) -> int:
    out_dir, index, seed, preset = job
    write_subject(out_dir, make_subject(index, seed, preset))
    return index


def generate_subjects(
    out_dir: str | os.PathLike,
    indices: Sequence[int],
    seed: int = 0,
    preset: str = "demo",
    workers: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Render the subjects ``indices`` of the cohort of ``seed`` into ``out_dir/SUBJ/`` (no datalist); their folders.

    Subjects beyond a cohort's last index are new draws of the same population: held-out radiographs
    for the OOD threshold (``xray2mri calibrate --ood-radiographs``) or fresh test inputs.
    """
    pre = get_preset(preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices = list(indices)
    workers = max(1, min(workers or os.cpu_count() or 1, len(indices) or 1))
    jobs = [(str(out), i, seed, pre.name) for i in indices]
    bar = tqdm(total=len(jobs), desc=f"synth {pre.name}", unit="subject", disable=not progress)
    try:
        if workers == 1:
            for job in jobs:
                _render_and_write(job)
                bar.update()
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(workers) as pool:
                for _ in pool.imap_unordered(_render_and_write, jobs, chunksize=1):
                    bar.update()
    finally:
        bar.close()
    return [out / subject_id(i) for i in indices]


def generate_cohort(
    out_dir: str | os.PathLike,
    n_subjects: int,
    seed: int = 0,
    preset: str = "demo",
    workers: int | None = None,
    progress: bool = True,
    datalist: bool = True,
) -> Path:
    """Render ``n_subjects`` subjects into ``out_dir`` and write the legend and the datalist.

    Args:
        out_dir: cohort folder (created; subject folders of an earlier cohort that this run does
            not regenerate are removed, so the datalist lists exactly this cohort).
        n_subjects: number of subjects (``SYN0000`` ... ).
        seed: cohort seed (>= 0); the same seed gives the same files.
        preset: "demo" or "full" (:mod:`xray2mri.pipeline.data.synth.presets`).
        workers: worker processes (default: CPU count, at most ``n_subjects``); 1 renders
            in this process.
        progress: show a tqdm progress bar.
        datalist: also write ``DIR/datalist.json`` (split by subject, stratified by grade).

    Returns:
        the cohort folder.
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    pre = get_preset(preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = {subject_id(i) for i in range(n_subjects)}
    for old in out.iterdir():
        if old.is_dir() and _SUBJECT_DIR.match(old.name) and old.name not in keep and any(old.glob("*_meta.json")):
            shutil.rmtree(old)
    generate_subjects(out, range(n_subjects), seed, pre.name, workers, progress)
    (out / "tissues.json").write_text(json.dumps(legend(), indent=1) + "\n")
    info = {
        "synthetic": True,
        "generator_version": GENERATOR_VERSION,
        "description": "SYNTHETIC paired knee cohort (AP DRR radiograph + DESS-like MRI + tissue labels + "
                       "joint-region tissue labels) made by xray2mri synth",
        "seed": seed,
        "subjects": n_subjects,
        "preset": pre.to_dict(),
    }
    (out / "cohort.json").write_text(json.dumps(info, indent=1) + "\n")
    if datalist:
        from xray2mri.pipeline.data.manifests import build_from_cohort, write_datalist

        write_datalist(build_from_cohort(out, seed=seed), out / "datalist.json")
    return out
