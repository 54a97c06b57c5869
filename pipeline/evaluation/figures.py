"""The report's figures (matplotlib, Agg backend: no display needed).

:func:`montage` (one subject: ground truth and every method in three planes, with the error),
:func:`grade_distributions` (headline metrics per Kellgren-Lawrence grade and method) and
:func:`training_curves` (the training log). Each figure says what the data are (``data_word``:
"synthetic data" or "acquired data"), never assuming the synthetic cohort.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray2mri.pipeline.evaluation.measure import Case, MethodPrediction, clip01, jsw_lines

__all__ = ["montage", "grade_distributions", "training_curves"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slice_position(
    case: Case, legend: Mapping[str, int] | None, spacing: Sequence[float]
) -> tuple[int, int, int, dict]:
    """(d, row, w) through the medial compartment (coronal, axial, sagittal slices), and the JSW lines."""
    d0, h0, w0 = (s // 2 for s in case.mri.shape)
    try:
        lines = jsw_lines(case, legend, spacing)
    except ValueError:
        return d0, h0, w0, {}
    med = lines.get("medial") or lines.get("lateral") or []
    if med:
        d0 = int(np.median([ln.d for ln in med]))
        h0 = int(round(float(np.median([ln.row for ln in med]))))
        w0 = int(np.median([ln.w for ln in med]))
    return d0, h0, w0, lines


def _planes(vol: np.ndarray, d: int, h: int, w: int) -> list[np.ndarray]:
    """Coronal (S->I x R->L), sagittal (S->I x A->P) and axial (A->P x R->L) slices of a (D, H, W) volume."""
    return [vol[d], vol[:, :, w].T, vol[:, h, :]]


def montage(
    path: Path,
    case: Case,
    predictions: Mapping[str, MethodPrediction],
    legend: Mapping[str, int] | None,
    spacing: Sequence[float],
    data_word: str = "synthetic data",
) -> None:
    """One subject: a row for the ground truth (radiograph | MRI in three planes | labels in three planes)
    and a row per method (radiograph reconstruction | generated MRI in three planes | absolute error).

    Slices pass through the medial compartment where JSW is measured; dashed lines on the ground
    truth's coronal slice mark the medial and lateral measurement columns. Without a label map the
    label panels say so.
    """
    plt = _pyplot()
    sd, sh, sw = (float(s) for s in spacing)
    d, h, w, lines = _slice_position(case, legend, spacing)
    aspects = [sh / sw, sh / sd, sd / sw]
    gt = clip01(case.mri)
    n_rows = 1 + len(predictions)
    fig, axes = plt.subplots(n_rows, 7, figsize=(15, 2.35 * n_rows + 0.6), squeeze=False)
    col_titles = [
        "radiograph",
        "coronal",
        "sagittal (medial)",
        "axial (joint line)",
        "|error| coronal",
        "|error| sagittal",
        "|error| axial",
    ]
    for ax, title in zip(axes[0], col_titles):
        ax.set_title(title, fontsize=10)
    lab = None if case.labels is None else np.asarray(case.labels).squeeze()
    n_lab = 1 if lab is None else max(1, int(lab.max()))
    err_im = None
    for r, (name, pred) in enumerate([("ground truth", None), *predictions.items()]):
        row = axes[r]
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        xray = case.xray if pred is None else pred.xray_recon
        if xray is not None:
            row[0].imshow(clip01(xray), cmap="gray", vmin=0, vmax=1)
        else:
            row[0].text(0.5, 0.5, "no radiograph\nreconstruction", ha="center", va="center", fontsize=8)
            row[0].set_facecolor("#eeeeee")
        vol = gt if pred is None else clip01(pred.mri)
        for c, (img, asp) in enumerate(zip(_planes(vol, d, h, w), aspects)):
            row[1 + c].imshow(img, cmap="gray", vmin=0, vmax=1, aspect=asp)
        if pred is None:
            if lab is None:
                for c in range(3):
                    row[4 + c].text(0.5, 0.5, "no label map", ha="center", va="center", fontsize=8)
                    row[4 + c].set_facecolor("#eeeeee")
            else:
                for c, (img, asp) in enumerate(zip(_planes(lab, d, h, w), aspects)):
                    masked = np.ma.masked_equal(img, 0)
                    row[4 + c].imshow(
                        masked, cmap="tab20", vmin=0.5, vmax=n_lab + 0.5, aspect=asp, interpolation="nearest"
                    )
                    row[4 + c].set_facecolor("black")
            row[4].set_title("labels coronal", fontsize=10)
            row[5].set_title("labels sagittal", fontsize=10)
            row[6].set_title("labels axial", fontsize=10)
            for side, colour in (("medial", "#00e5ff"), ("lateral", "#ffb000")):
                cols = [ln.w for ln in lines.get(side, [])]
                if cols:
                    row[1].axvline(float(np.median(cols)), color=colour, ls="--", lw=1.0, label=side)
            if lines:
                row[1].legend(loc="lower left", fontsize=6, framealpha=0.6)
        else:
            for c, (img, asp) in enumerate(zip(_planes(np.abs(vol - gt), d, h, w), aspects)):
                err_im = row[4 + c].imshow(img, cmap="magma", vmin=0, vmax=0.5, aspect=asp)
        row[0].set_ylabel(textwrap.fill(name, 20), fontsize=9)
    fig.suptitle(
        f"{case.subject} (KL {case.grade}, {case.side} knee shown as right) — {data_word}; "
        "intensities [0, 1]; coronal: image left = patient right",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 0.94, 0.97))
    if err_im is not None:
        cax = fig.add_axes((0.95, 0.1, 0.012, 0.6))
        fig.colorbar(err_im, cax=cax, label="|error| ([0, 1] scale)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


_GRADE_PANELS = (
    ("psnr_db", "PSNR, whole volume (dB) ↑"),
    ("ssim3d", "SSIM 3-D ↑"),
    ("mri_jsw_abs_err_mm", "JSW |error|, MRI intensity (mm) ↓"),
)


def grade_distributions(
    path: Path, rows: Sequence[Mapping[str, Any]], methods: Sequence[str], data_word: str = "synthetic data"
) -> None:
    """Box plots (with the subjects as dots) of the headline metrics per KL grade and method.

    Grades are the manifest's; subjects without one form a last "no grade" group (one "all" group
    when no subject has a grade).
    """
    plt = _pyplot()
    graded = sorted({r["grade"] for r in rows if r.get("grade") is not None})
    grades = graded + ([None] if any(r.get("grade") is None for r in rows) or not graded else [])
    fig, axes = plt.subplots(1, len(_GRADE_PANELS), figsize=(5.2 * len(_GRADE_PANELS), 4.2))
    colours = plt.get_cmap("tab10").colors
    width = 0.8 / max(1, len(methods))
    rng = np.random.default_rng(0)  # jitter only
    for ax, (key, title) in zip(axes, _GRADE_PANELS):
        for i, method in enumerate(methods):
            data, pos = [], []
            for j, g in enumerate(grades):
                v = np.array(
                    [r.get(key, math.nan) for r in rows if r["method"] == method and r.get("grade") == g],
                    float,
                )
                v = v[np.isfinite(v)]
                if v.size:
                    data.append(v)
                    pos.append(j + (i - (len(methods) - 1) / 2) * width)
            if not data:
                continue
            bp = ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True, showfliers=False)
            for patch in bp["boxes"]:
                patch.set_facecolor(colours[i % 10])
                patch.set_alpha(0.35)
            for v, p in zip(data, pos):
                ax.scatter(
                    p + rng.uniform(-width / 5, width / 5, v.size), v, s=9, color=colours[i % 10], zorder=3
                )
            ax.plot([], [], "s", color=colours[i % 10], alpha=0.6, label=method)
        ax.set_xticks(range(len(grades)))
        ax.set_xticklabels([f"KL {g}" if g is not None else ("no grade" if graded else "all") for g in grades])
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9, frameon=False)
    fig.suptitle(f"Test-split metrics per Kellgren–Lawrence grade ({data_word})", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def training_curves(
    path: Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], data_word: str = "synthetic data"
) -> None:
    """Loss terms in one panel (log scale), each other series (validation metrics) in its own panel."""
    plt = _pyplot()
    losses = {t: c for t, c in curves.items() if "loss" in t.lower()}
    others = {t: c for t, c in curves.items() if t not in losses}
    panels: list[tuple[str, dict]] = ([("loss terms", losses)] if losses else []) + [
        (t, {t: c}) for t, c in others.items()
    ]
    panels = panels[:9]
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5 * n_cols, 3.4 * n_rows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, panels):
        for tag, (steps, values) in series.items():
            order = np.argsort(steps, kind="stable")
            ax.plot(
                np.asarray(steps)[order],
                np.asarray(values)[order],
                marker="." if len(steps) < 40 else None,
                label=tag,
            )
        if title == "loss terms":
            vals = np.concatenate([np.asarray(v, float) for _, v in series.values()])
            if vals.size and np.all(vals > 0):
                ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step / epoch", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"Training run ({data_word})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)
