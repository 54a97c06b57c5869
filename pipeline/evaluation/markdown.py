"""The report's Markdown: tables of the summary, the quality bar, the JSW method and check, figures.

:func:`render` turns a summary (:func:`~xray2mri.pipeline.evaluation.summary.summarize_rows`) into
``report.md``. What it says about the data (synthetic or acquired, where the JSW reference and
measurement places come from) is read from the summary, never assumed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from xray2mri.pipeline.evaluation import metrics as M
from xray2mri.pipeline.evaluation.measure import GT_CHECK, JSW_FROM_MRI, METRICS
from xray2mri.pipeline.evaluation.summary import NO_GRADE, grade_order, noisy_criteria

__all__ = ["render", "fmt"]

#: The synthetic cohort's description starts so (``manifests.build_from_cohort``).
_COHORT_MARK = "SYNTHETIC paired knee cohort made by xray2mri synth"


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table cell (3 decimals, or 3 significant digits below 0.001; nan/inf spelled out)."""
    if v is None:
        return ""
    if isinstance(v, float):
        return (
            "nan"
            if math.isnan(v)
            else ("inf" if math.isinf(v) else f"{v:.{digits}g}" if abs(v) < 1e-3 and v else f"{v:.{digits}f}")
        )
    return str(v)


def _cell(stats: Mapping[str, float] | None, digits: int) -> str:
    if not stats or not stats.get("n"):
        return "—"
    return (
        f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} "
        f"[{stats['ci95_low']:.{digits}f}, {stats['ci95_high']:.{digits}f}]"
    )


_DIGITS = {"psnr_db": 2, "psnr_slice_db": 2, "xray_psnr_db": 2, "ssim3d": 3, "mae": 4, "boundary_sharpness": 3}


def _banner(data: Mapping[str, Any]) -> list[str]:
    """What the data are, from the summary's ``data`` (synthetic or acquired, never assumed)."""
    description = str(data.get("description", "")).strip().rstrip(".")
    if data.get("synthetic"):
        what = (
            "the synthetic paired knee cohort made by `xray2mri synth`"
            if description.startswith(_COHORT_MARK) or not description
            else "synthetic data (described below)"
        )
        lines = [
            f"> **Synthetic data.** Every number and image here comes from {what}, not from patients. "
            "Generated volumes are not for diagnosis."
        ]
    else:
        lines = [
            "> **Acquired data.** The ground truth here is the cohort's own MRI, not synthetic data. The generated "
            "volumes compared with it are SYNTHETIC (made by the network) and not for diagnosis."
        ]
    if description:
        lines += ["", f"Data: {description} ({data.get('evidence', '')})."]
    return lines


def render(
    summary: Mapping[str, Any],
    figures: Mapping[str, str],
    log_note: str,
    model_names: Sequence[str],
    legend: Mapping[str, int] | None,
) -> str:
    """``report.md`` of a summary: ``figures`` maps a title to its relative PNG path."""
    methods = summary["methods"]
    table_methods = [m for m in methods if m != GT_CHECK]
    n = summary["n_test_subjects"]
    n_cases = summary.get("n_test_cases", n)
    from_mri = JSW_FROM_MRI in summary.get("jsw_reference", [])
    out = [
        "# xray2mri evaluation report",
        "",
        *_banner(summary.get("data", {"synthetic": summary.get("synthetic_data", True)})),
        "",
        *([f"xray2mri {summary['xray2mri_version']}.", ""] if summary.get("xray2mri_version") else []),
        f"Test split: **{n} subjects**{f' ({n_cases} knees and visits)' if n_cases != n else ''}. All images are "
        "compared in the bundle's canonical preprocessed space ((D, H, W) = (A→P, S→I, R→L), left knees mirrored "
        "to the right side).",
        "",
        "**Data ranges.** MRI and radiograph intensities are on the normalised **[0, 1]** scale (robust percentiles "
        "of each image; predictions clipped to [0, 1]); PSNR and SSIM use **data_range = 1.0**; MAE is on the [0, 1] "
        "scale; joint-space width (JSW) is in millimetres.",
        "",
        "Cells: mean ± std [95 % BCa bootstrap interval of the mean].",
        "",
        "## Image quality and joint-space width",
        "",
    ]
    cols = [m for m in METRICS]
    header = (
        "| method | "
        + " | ".join(f"{m.label}{f' ({m.unit})' if m.unit else ''} {m.better}" for m in cols)
        + " |"
    )
    out += [header, "|" + "---|" * (len(cols) + 1)]
    for method in table_methods:
        name = f"**{method}**" if method in model_names else method
        cells = [_cell(methods[method].get(m.key), _DIGITS.get(m.key, 2)) for m in cols]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "- *PSNR, whole volume*: one MSE over all voxels. *PSNR, mean per sagittal slice*: the mean of PSNRs of the "
        "2-D slices along R→L (slices with zero error left out). The literature mixes the two; the per-slice "
        "figure runs several dB higher, so compare like with like.",
        "- *SSIM 3-D*: MONAI `SSIMMetric(spatial_dims=3, data_range=1.0)`, Gaussian window 11, σ 1.5.",
        "- *Edge sharpness vs truth*: mean gradient magnitude on the ground truth's tissue boundaries over the "
        "truth's own there (1 = as sharp, < 1 blurred; needs label maps).",
        "- *Radiograph recon. PSNR*: the CAE's reconstruction of its input radiograph (models only).",
        (
            "- *JSW error*: measured on the volume − measured the same way on the ground-truth (acquired) MRI "
            "(signed), for the subjects without synthetic truth; "
            if from_mri
            else "- *JSW error*: measured on the volume − ground truth from the subject's meta JSON (signed); "
        )
        + "|error| is the mean of the medial and lateral absolute errors.",
        "",
    ]
    # quality bar
    bar = summary.get("quality_bar") or {}
    if bar:
        out += [f"## Quality bar ({summary.get('quality_bar_name') or 'given criteria'})", ""]
        out += [
            "| model | criterion | value | threshold | pass | margin [95 % paired bootstrap] |",
            "|---|---|---|---|---|---|",
        ]
        for model, res in bar.items():
            for c in res["criteria"]:
                ci = c.get("margin_ci95")
                spread = (
                    f"{fmt(c['margin'])} [{fmt(ci[0])}, {fmt(ci[1])}]{'' if c['clear'] else ' (within noise)'}"
                    + (" †" if c.get("margin_ci_note") else "")
                    if ci and c.get("clear") is not None
                    else "—"
                )
                out.append(
                    f"| {model} | {c['criterion']} | {fmt(c['value'])} | {fmt(c['threshold'])} | "
                    f"{'✅ pass' if c['pass'] else '❌ fail'} | {spread} |"
                )
        out += [""]
        for model, res in bar.items():
            noisy = noisy_criteria(res)
            verdict = "passes" if res["pass"] else "does not pass"
            tail = f"; within the noise of this test split: {', '.join(noisy)}" if noisy else ""
            out.append(f"- **{model}**: {verdict} the bar{tail}.")
        out += [
            "",
            "The bar is judged on the means. *Margin*: how far the model is on the passing side of the "
            "threshold (negative: the failing side), with the 95 % paired BCa bootstrap interval of the "
            "per-subject paired differences; an interval that contains 0 means this split's subjects "
            "cannot tell the model from the threshold (another seed or split could flip the verdict)."
            + (
                " †: BCa undefined for these differences (no spread); percentile interval."
                if any(c.get("margin_ci_note") for res in bar.values() for c in res["criteria"])
                else ""
            ),
            "",
        ]
    # JSW check
    gt = methods.get(GT_CHECK, {})
    if gt and from_mri:
        out += _jsw_from_mri_section(gt)
    elif gt:
        out += [
            "## Joint-space width: method and measurement check",
            "",
            "JSW is measured on an intensity volume as in a DESS-like image, where bone marrow is dark and "
            "cartilage and fluid bright. The places are found from the ground-truth labels, the same for every "
            f"method: the tibial plateau's R→L extent is split at {M.JSW_POSITIONS['lateral']:.0%} (lateral) and "
            f"{M.JSW_POSITIONS['medial']:.0%} (medial) from the patient's right edge; around each, a {M.JSW_BAND_MM:g} mm "
            f"band of S→I lines in a {M.JSW_SLAB_MM:g} mm A→P slab centred on the compartment. On each line the bright joint "
            "band between the dark femur and tibia is found near the expected joint row, and each bone surface is "
            "placed where the profile falls to half-way between the band's peak and that bone's darkest level "
            f"(linear interpolation, sub-voxel). The compartment's JSW is the {M.JSW_PERCENTILE:g}th percentile of its "
            "lines' widths: a robust minimum JSW (mJSW, the width at the contact where narrowing is graded).",
            "",
            "Measuring the **ground-truth MRI** the same way shows the error of the method itself:",
            "",
            "| compartment | measured on GT MRI (mm) | error vs meta JSON (mm) | label-map gap on the same lines (mm) |",
            "|---|---|---|---|",
        ]
        for side in ("medial", "lateral"):
            out.append(
                f"| {side} | {_cell(gt.get(f'jsw_{side}_mm'), 2)} | {_cell(gt.get(f'jsw_{side}_err_mm'), 2)} | "
                f"{_cell(gt.get(f'label_jsw_{side}_mm'), 2)} |"
            )
        out += [f"| mean \\|error\\| | | {_cell(gt.get('mri_jsw_abs_err_mm'), 2)} | |", ""]
    # tissue MAE
    tissue_keys = [f"mae_{t}" for t in legend or {} if any(f"mae_{t}" in methods[m] for m in table_methods)]
    if tissue_keys:
        out += ["## MAE per tissue ([0, 1] scale, ground-truth labels)", ""]
        out += ["| tissue | " + " | ".join(table_methods) + " |", "|" + "---|" * (len(table_methods) + 1)]
        for k in tissue_keys:
            cells = [
                fmt(methods[m].get(k, {}).get("mean", math.nan), 4)
                if methods[m].get(k, {}).get("n")
                else "—"
                for m in table_methods
            ]
            out.append(f"| {k[4:]} | " + " | ".join(cells) + " |")
        out += [""]
    # per grade
    per_grade = summary["per_grade"]
    grades = sorted({g for m in table_methods for g in per_grade.get(m, {})}, key=grade_order)
    if grades:
        out += ["## By Kellgren–Lawrence grade (mean; n per grade)", ""]
        for key, label in (
            ("psnr_db", "PSNR, whole volume (dB)"),
            ("ssim3d", "SSIM 3-D"),
            ("mri_jsw_abs_err_mm", "JSW |error| on the MRI's intensities (mm)"),
        ):
            heads = [g if g == NO_GRADE else f"KL {g}" for g in grades]
            out += [f"**{label}**", "", "| method | " + " | ".join(heads) + " |"]
            out += ["|" + "---|" * (len(grades) + 1)]
            for m in table_methods:
                cells = []
                for g in grades:
                    s = per_grade.get(m, {}).get(g, {}).get(key)
                    cells.append(
                        f"{fmt(s['mean'], _DIGITS.get(key, 2))} (n={s['n']})" if s and s["n"] else "—"
                    )
                out.append(f"| {m} | " + " | ".join(cells) + " |")
            out += [""]
    # figures
    out += ["## Figures", ""]
    for title, rel in figures.items():
        out += [f"**{title}**", "", f"![{title}]({rel})", ""]
    out += ["## Training", "", log_note, ""]
    out += [
        "## Files",
        "",
        "- `metrics_per_subject.csv`: one row per subject and method (all metrics, tissue MAEs, JSW).",
        "- `summary.json`: the numbers above, with data ranges, definitions and the quality bar.",
        "",
    ]
    return "\n".join(out)


def _jsw_from_mri_section(gt: Mapping[str, Any]) -> list[str]:
    """The JSW method when there is no synthetic truth: places and reference from the ground-truth MRI."""
    out = [
        "## Joint-space width: method and reference",
        "",
        "There is no synthetic truth for (some of) these subjects, so the reference is the JSW **measured on the "
        "ground-truth MRI** and each method's error is generated − acquired, measured the same way on the same lines. "
        "Without a label map the places are found on the ground-truth MRI itself: the joint row is where most S→I "
        "lines show a bright band (cartilage, fluid) between darker bone above and below; the joint's R→L extent "
        f"(the columns with such lines) is split at {M.JSW_POSITIONS['lateral']:.0%} (lateral) and "
        f"{M.JSW_POSITIONS['medial']:.0%} (medial) from the patient's right edge; around each, a {M.JSW_BAND_MM:g} mm "
        f"band of lines in a {M.JSW_SLAB_MM:g} mm A→P slab centred on the compartment. On each line the bone surfaces "
        "are placed at half-way between the band's peak and that bone's darkest level (sub-voxel), and the "
        f"compartment's JSW is the {M.JSW_PERCENTILE:g}th percentile of its lines' widths (a robust minimum JSW).",
        "",
        "| compartment | measured on the ground-truth MRI (mm) |",
        "|---|---|",
    ]
    for side in ("medial", "lateral"):
        out.append(f"| {side} | {_cell(gt.get(f'jsw_{side}_mm'), 2)} |")
    return out + [""]
