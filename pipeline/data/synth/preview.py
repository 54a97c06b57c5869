"""Montage PNG of a synthetic cohort: radiograph, three MRI planes and labels per subject.

Reads the written files back through the project's loaders (``LoadXray``, ``LoadMri``), so
the picture shows what a training run will see: radiograph with bone bright, MRI in the
canonical layout (A->P, S->I, R->L). One row per subject; titles give subject, KL grade and
side. The figure is titled SYNTHETIC.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def _subjects(cohort_dir: Path, subjects: list[str] | None, max_subjects: int) -> list[dict]:
    metas = sorted(cohort_dir.glob("*/*_meta.json"))
    out = [json.loads(p.read_text()) for p in metas]
    if subjects:
        out = [m for m in out if m["subject"] in set(subjects)]
    return out[:max_subjects]


def write_preview(
    cohort_dir: str | os.PathLike,
    png_path: str | os.PathLike,
    subjects: list[str] | None = None,
    max_subjects: int = 4,
) -> Path:
    """Draw the montage of up to ``max_subjects`` subjects of ``cohort_dir`` into ``png_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xray2mri.transforms.mri import LoadMri
    from xray2mri.transforms.xray import LoadXray

    cohort_dir = Path(cohort_dir)
    metas = _subjects(cohort_dir, subjects, max_subjects)
    if not metas:
        raise FileNotFoundError(f"{cohort_dir}: no SUBJ/SUBJ_meta.json to preview")
    legend = json.loads((cohort_dir / "tissues.json").read_text()) if (cohort_dir / "tissues.json").is_file() else {}
    load_x, load_m = LoadXray(), LoadMri()
    cols = ("radiograph (AP)", "MRI coronal", "MRI sagittal (medial)", "MRI axial", "labels coronal")
    fig, axes = plt.subplots(len(metas), len(cols), figsize=(3.0 * len(cols), 3.1 * len(metas)), squeeze=False)
    for row, meta in zip(axes, metas):
        subj, folder = meta["subject"], cohort_dir / meta["subject"]
        xray = load_x(folder / f"{subj}_xray.dcm")[0].numpy()
        mri = load_m(folder / f"{subj}_mri.nii.gz")[0].numpy()
        lab = load_m(folder / f"{subj}_labels.nii.gz")[0].numpy().astype(int)
        can = meta["geometry"]["canonical"]
        i0 = int(round(can["knee_centre_voxel"][0]))
        j0 = int(round(can["joint_line_row"])) - max(1, mri.shape[1] // 16)  # just above the joint line
        k0 = int(round(can["medial_centre_voxel"][2]))
        lo, hi = np.percentile(mri, (1, 99.5))
        xlo, xhi = np.percentile(xray, (25, 99.9))  # soft tissue grey, bone bright
        tag = f"{subj} KL{meta['grade']} {meta['side']}"
        row[0].imshow(xray, cmap="gray", vmin=xlo, vmax=xhi)
        row[1].imshow(mri[i0], cmap="gray", vmin=lo, vmax=hi)
        row[2].imshow(mri[:, :, k0].T, cmap="gray", vmin=lo, vmax=hi)  # rows S->I, cols A->P
        row[3].imshow(mri[:, j0, :], cmap="gray", vmin=lo, vmax=hi)  # rows A->P, cols R->L
        row[4].imshow(lab[i0], cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
        for ax, name in zip(row, cols):
            ax.set_title(f"{tag}: {name}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    if legend:
        names = ", ".join(f"{v}={k}" for k, v in sorted(legend.items(), key=lambda kv: kv[1]))
        fig.text(0.5, 0.003, f"labels: {names}", ha="center", fontsize=6, wrap=True)
    fig.suptitle("SYNTHETIC knee cohort (xray2mri synth): AP view, patient's right on the image left", fontsize=9)
    fig.tight_layout(rect=(0, 0.02, 1, 0.98))
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return png_path
