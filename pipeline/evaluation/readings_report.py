"""The clinical readings' part of the report: the Bland-Altman figure and the markdown section.

Reads the rows and the summary that :mod:`~xray2mri.pipeline.evaluation.clinical` makes (the summary's
``readings`` entry); :mod:`~xray2mri.pipeline.evaluation.report` composes them into the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray2mri.pipeline.data.synth.tissues import TISSUE_CLASSES
from xray2mri.pipeline.evaluation.clinical import READ_KEYS
from xray2mri.pipeline.evaluation.figures import _pyplot

__all__ = ["BLAND_ALTMAN_KEYS", "bland_altman", "readings_section"]

#: Readings drawn in the Bland-Altman figure (one panel each).
BLAND_ALTMAN_KEYS: tuple[str, ...] = READ_KEYS[:4]


def _fmt(v: Any, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def bland_altman(path: Path, rows: Sequence[Mapping[str, Any]], data_word: str = "synthetic data") -> None:
    """One panel per reading of :data:`BLAND_ALTMAN_KEYS`: per method, (method + reference)/2 against
    method - reference for every case, with the bias and the 95 % limits of agreement as lines."""
    plt = _pyplot()
    methods = list(dict.fromkeys(r["method"] for r in rows if any(f"tissue_{k}_err" in r for k in BLAND_ALTMAN_KEYS)))
    fig, axes = plt.subplots(1, len(BLAND_ALTMAN_KEYS), figsize=(4.6 * len(BLAND_ALTMAN_KEYS), 4.0))
    colours = plt.get_cmap("tab10").colors
    drawn = False
    for ax, key in zip(axes, BLAND_ALTMAN_KEYS):
        for i, m in enumerate(methods):
            pts = [(r.get(f"tissue_{key}"), r.get(f"tissue_{key}_err")) for r in rows if r["method"] == m]
            a = np.array([p for p in pts if p[0] is not None and p[1] is not None], float).reshape(-1, 2)
            a = a[np.isfinite(a).all(axis=1)]
            if not a.size:
                continue
            d, mean = a[:, 1], a[:, 0] - a[:, 1] / 2.0  # method - reference, (method + reference) / 2
            c = colours[i % 10]
            ax.scatter(mean, d, s=12, color=c, label=m)
            bias, sd = d.mean(), d.std(ddof=1) if d.size > 1 else 0.0
            ax.axhline(bias, color=c, lw=1)
            for s in (-1.96, 1.96):
                ax.axhline(bias + s * sd, color=c, lw=0.8, ls="--")
            drawn = True
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.set_xlabel("(method + reference) / 2", fontsize=8)
        ax.set_ylabel("method − reference", fontsize=8)
        ax.grid(alpha=0.3)
    if drawn:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
        fig.suptitle(
            "Readings against the reference (the generator's truth, else the label map): bias and 95 % limits "
            f"({data_word})", fontsize=10)
        fig.tight_layout(rect=(0, 0.1, 1, 0.94))
        fig.savefig(path, dpi=90)
    plt.close(fig)


def readings_section(summary: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the readings: agreement per method and reading, and tissue Dice per class."""
    readings = summary.get("readings") or {}
    agree = readings.get("agreement", {})
    methods = readings.get("methods", {})
    out = [
        "## Clinical readings from tissue maps",
        "",
        "Read on tissue maps at the same S→I lines per case (found on the ground-truth label map): a model's "
        "tissue head, the retrieved neighbour's label map, the mean training one-hot probabilities; the "
        "radiographic baseline reads JSW on the input radiograph (linear calibration fitted on the training "
        "split). Reference: the generator's truth (synthetic cases: JSW and tibial/femoral cartilage thickness "
        "at the contact), else the same readings on the ground-truth label map (whole label voxels); the "
        "ground-truth map's own row is the measurement check. "
        "JSW and thickness in mm, volume in mm³. Cells: mean |error|, bias [95 % limits of agreement], "
        "Pearson r with the truth, across-subject std of the method / of the truth.",
        "",
        f"Maps read: {readings['map']}." if readings.get("map") else "",
        "",
        "| method | reading | mean abs. error | bias [limits] | r | std method / truth | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, per_key in agree.items():
        for key in READ_KEYS:
            a = per_key.get(key)
            if not a or not a.get("n"):
                continue
            out.append(
                f"| {m} | {key} | {_fmt(a['mean_abs_err'])} | {_fmt(a['bias'])} [{_fmt(a['loa_low'])}, "
                f"{_fmt(a['loa_high'])}] | {_fmt(a['pearson_r'])} | {_fmt(a['std_method'])} / "
                f"{_fmt(a['std_truth'])} | {a['n']} |"
            )
    dice_methods = [m for m in methods if "dice_mean" in methods[m]]
    if dice_methods:
        names = [c.name for c in TISSUE_CLASSES]
        out += ["", "**Tissue Dice** (mean over test cases; `dice_mean` over the classes present in each case)", ""]
        out += ["| method | dice_mean | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for m in dice_methods:
            cells = [_fmt(methods[m].get(f"dice_{n}", {}).get("mean")) for n in names]
            out.append(f"| {m} | {_fmt(methods[m]['dice_mean']['mean'])} | " + " | ".join(cells) + " |")
    ncc_methods = [m for m in methods if "reprojection_ncc" in methods[m]]
    if ncc_methods:
        out += ["", "**Self-consistency** (`reprojection_ncc`: the tissue map projected with the project's DRR "
                "against the input radiograph, normalised cross-correlation; the ground-truth map's row is the ceiling)",
                "", "| method | reprojection_ncc | n |", "|---|---|---|"]
        for m in ncc_methods:
            s = methods[m]["reprojection_ncc"]
            out.append(f"| {m} | {_fmt(s.get('mean'), 3)} | {s.get('n')} |")
    out.append("")
    return out
