"""Does the uncertainty map rank subjects by difficulty? The per-subject term of the head, measured (issue 16).

The MRI network is frozen (the head reads detached features, so refitting it changes no volume):
its last-layer input and latent are computed once per subject of the training split, the validation
and test splits and, with ``--held-out``, a folder of further SYNTHETIC subjects with their MRI (the
demo's ``data/synthetic_knee_ood_calibration``: in no split). Then the uncertainty head is refitted
on the training split from fresh weights with the bundle's NLL, learning rate and a cosine schedule,
twice: the voxel branch alone, and with :class:`~xray2mri.pipeline.training.networks.subject_scale.SubjectLogScale`.
Reported per split: the Spearman correlation of each subject's mean predicted scale with its MAE
(the report's ``uncertainty_error_spearman`` is this on the test split, after calibration, which
multiplies every map by one factor and so leaves the ranks alone), for the installed head too.
The splits the network never trained on are also pooled, since 30 subjects pin a rank
correlation down only to about +-0.3.

Usage::

    python benchmarks/bench_subject_scale.py --bundle bundles/knee_xray2mri --cohort data/synthetic_knee \\
        --held-out data/synthetic_knee_ood_calibration [--epochs 30] [--seeds 0 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from xray2mri.pipeline.evaluation.uncertainty import spearman
from xray2mri.pipeline.serving.uncertainty import subject_conformal_factor
from xray2mri.pipeline.training.calibrate import _open
from xray2mri.pipeline.training.engine import train_setting
from xray2mri.pipeline.training.networks.subject_scale import SubjectLogScale
from xray2mri.pipeline.training.uncertainty_loss import LOG_SCALE_RANGE, HeteroscedasticNLLLoss

SPLITS = ("training", "validation", "test")


def held_out_datalist(folder: Path, out: Path) -> Path:
    """A datalist whose ``test`` split is every ``<subject>/<subject>_{xray.dcm,mri.nii.gz}`` pair in ``folder``."""
    items = []
    for meta in sorted(folder.glob("*/*_meta.json")):
        subject = meta.parent.name
        info = json.loads(meta.read_text())
        if (meta.parent / f"{subject}_mri.nii.gz").is_file():
            items.append({"subject": subject, "side": info.get("side"), "grade": info.get("grade"), "visit": info.get("visit"),
                          "xray": f"{subject}/{subject}_xray.dcm", "mri": f"{subject}/{subject}_mri.nii.gz"})
    if not items:
        raise SystemExit(f"{folder}: no <subject>/<subject>_mri.nii.gz with its meta")
    out.write_text(json.dumps({"description": "SYNTHETIC held-out subjects", "training": [], "validation": [],
                               "test": items}))
    return out


@torch.inference_mode()
def frozen_outputs(bundle: Path, datalist: Path, base: Path, split: str) -> tuple[list[dict], torch.nn.Module]:
    """Per subject: the head's inputs (last-layer features, latent), residual, the installed head's scale map
    and MAE; and the network."""
    opened = _open(bundle, datalist, base, split, None)
    network = opened.network(weights=opened.setting("weights"))
    if network.scale_head is None:
        raise SystemExit(f"{bundle}: the network has no uncertainty head")
    seen: dict = {}
    network.scale_head.register_forward_hook(lambda m, i, o: seen.update(features=i[0]))
    network.to_latent.register_forward_hook(lambda m, i, o: seen.update(latent=o.flatten(1)))
    rows = []
    for batch in opened.parser.get_parsed_content("validate#dataloader"):
        x = torch.as_tensor(batch["xray"]).float()
        out = network(x)
        for i in range(x.shape[0]):
            pred, truth = out["mri"][i].clamp(0, 1).float(), torch.as_tensor(batch["mri"][i]).float()
            rows.append({"subject": str(batch["subject"][i]), "features": seen["features"][i : i + 1].clone().half(),
                         "latent": seen["latent"][i : i + 1].clone(), "residual": (truth - pred)[None].clone(),
                         "installed_map": torch.exp(out["mri_log_scale"][i : i + 1].clamp(*LOG_SCALE_RANGE)).half(),
                         "mae": float((truth - pred).abs().mean())})
    return rows, network


def refit(network, train_rows: list[dict], subject: bool, epochs: int, lr: float, distribution: str, seed: int,
          weight_decay: float = 0.0):
    """The head refitted on the training split (fresh weights); returns subject row -> predicted scale map."""
    torch.manual_seed(seed)
    voxel = copy.deepcopy(network.scale_head)
    for module in voxel.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    term = SubjectLogScale(train_rows[0]["latent"].shape[1], 1) if subject else None
    groups = [{"params": list(voxel.parameters())}]
    if term is not None:
        groups.append({"params": list(term.parameters()), "weight_decay": weight_decay})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(train_rows), eta_min=lr * 0.01)
    nll = HeteroscedasticNLLLoss(distribution)

    def log_scale(row):
        s = voxel(row["features"].float())
        return s + term(row["latent"]) if term is not None else s

    voxel.train()
    if term is not None:
        term.train()
    for _ in range(epochs):
        for i in torch.randperm(len(train_rows)).tolist():
            row = train_rows[i]
            opt.zero_grad()
            nll(torch.zeros_like(row["residual"]), log_scale(row), row["residual"]).backward()
            opt.step()
            sched.step()
    voxel.eval()
    if term is not None:
        term.eval()

    @torch.no_grad()
    def scale(row) -> torch.Tensor:
        return torch.exp(log_scale(row).clamp(*LOG_SCALE_RANGE))

    return scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--cohort", type=Path, required=True, help="folder with datalist.json")
    parser.add_argument("--held-out", type=Path, default=None, help="folder of further subjects with their MRI")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--weight-decay", type=float, nargs="+", default=[0.0],
                        help="decoupled weight decay(s) of the subject term to try (AdamW)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    sets = {}
    network = None
    for split in SPLITS:
        sets[split], network = frozen_outputs(args.bundle, args.cohort / "datalist.json", args.cohort, split)
    if args.held_out is not None:
        with tempfile.TemporaryDirectory() as tmp:
            datalist = held_out_datalist(args.held_out, Path(tmp) / "datalist.json")
            sets["held-out"], _ = frozen_outputs(args.bundle, datalist, args.held_out, "test")
    print(f"frozen outputs of {sum(map(len, sets.values()))} subjects in {time.perf_counter() - t0:.0f} s", flush=True)
    unseen = [row for name, rows in sets.items() if name != "training" for row in rows]
    lr = float(train_setting(args.bundle, "learning_rate"))
    distribution = str(train_setting(args.bundle, "nll_distribution"))

    def scores(name: str, scale) -> dict:
        """Spearman per split and pooled; the validation split's subject-level 90 % factor, and the test
        split's coverage and mean width with it (what calibration and the report do)."""
        means = {id(r): float(scale(r).mean()) for rows in sets.values() for r in rows}
        result = {split: round(spearman([means[id(r)] for r in rows], [r["mae"] for r in rows]), 3)
                  for split, rows in sets.items()}
        result["unseen (pooled)"] = round(spearman([means[id(r)] for r in unseen], [r["mae"] for r in unseen]), 3)
        k90 = subject_conformal_factor([(r["residual"].abs() / scale(r)) for r in sets["validation"]], 0.9)
        covered = [float((r["residual"].abs() <= k90 * scale(r)).float().mean()) for r in sets["test"]]
        result.update(k90=round(k90, 3), test_coverage_90=round(sum(covered) / len(covered), 4),
                      test_width_90=round(k90 * sum(means[id(r)] for r in sets["test"]) / len(sets["test"]), 4))
        print(f"{name:44s} " + "  ".join(f"{k} {v:+.2f}" for k, v in result.items() if k in (*sets, "unseen (pooled)"))
              + f"  | k90 {result['k90']:.3f} test coverage {result['test_coverage_90']:.3f} width {result['test_width_90']:.4f}",
              flush=True)
        return result

    results = {}
    if all("installed_map" in r for rows in sets.values() for r in rows):
        results["installed head"] = scores("installed head", lambda r: r["installed_map"])
    for seed in args.seeds:
        for subject, decay in [(False, 0.0)] + [(True, d) for d in args.weight_decay]:
            name = (f"refit, voxel + subject term (weight decay {decay:g}), seed {seed}" if subject
                    else f"refit, voxel branch only, seed {seed}")
            t = time.perf_counter()
            fn = refit(network, sets["training"], subject, args.epochs, lr, distribution, seed, decay)
            results[name] = scores(f"{name} ({time.perf_counter() - t:.0f} s)", fn)
    if args.json:
        args.json.write_text(json.dumps({"synthetic": True, "epochs": args.epochs, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
