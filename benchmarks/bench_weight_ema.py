"""Would a weight average buy back the epochs the 20-minute demo gave up?

Trains the bundle's ``train.json`` (demo configuration, on an existing cohort) for ``--epochs`` with
Ignite's ``EMAHandler`` tracking exponential moving averages of the weights at each ``--momentum``
(``ema = (1 - m) * ema + m * weights`` after every iteration), and every ``--every`` epochs (and at the
last) prints the validation split's mean MRI PSNR (``10 log10(1 / MSE)`` per subject, prediction clipped
to [0, 1], as train.json's ``val_mri_psnr``) of the raw weights and of each average. Nothing is
installed. About 15 minutes for 30 epochs on a 2-core CPU.

Measured for ``make demo``'s epoch count (README, "Results of an actual make demo run"): at 30 epochs
25.54 dB raw against 25.25 / 25.51 / 25.53 for momenta 0.001 / 0.003 / 0.01; the averages led only
early in the schedule, while the learning rate was high.

Usage (after ``make demo`` made the cohort)::

    .venv/bin/python benchmarks/bench_weight_ema.py [--epochs 30] [--momentum 0.001 0.003 0.01] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "knee_xray2mri"


@torch.no_grad()
def validation_psnr(model: torch.nn.Module, loader) -> float:
    """Mean over the validation subjects of the MRI's PSNR (the report's ``psnr``, prediction clipped to [0, 1])."""
    from xray2mri.pipeline.evaluation.metrics import psnr
    from xray2mri.pipeline.training.engine import prepare_batch

    was_training = model.training
    model.eval()
    psnrs: list[float] = []
    for batch in loader:
        xray, target = prepare_batch(batch, device=next(model.parameters()).device)
        pred = model(xray)["mri"].clamp(0, 1)
        psnrs += [psnr(p.cpu(), t.cpu()) for p, t in zip(pred, target["mri"])]
    model.train(was_training)
    return sum(psnrs) / len(psnrs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--cohort", type=Path, default=Path("data/synthetic_knee"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--momentum", type=float, nargs="+", default=[0.001, 0.003, 0.01])
    parser.add_argument("--every", type=int, default=5, help="validate every N epochs (and at the last)")
    parser.add_argument("--json", type=Path, default=None, help="write the validation table here too")
    args = parser.parse_args(argv)
    if not (args.cohort / "datalist.json").is_file():
        print(f"no cohort in {args.cohort}: run `make demo` first", file=sys.stderr)
        return 2
    if any(not 0 < m < 1 for m in args.momentum):
        print(f"--momentum values must lie in (0, 1), got {args.momentum}", file=sys.stderr)
        return 2

    from ignite.engine import Events
    from ignite.handlers import EMAHandler

    from xray2mri.pipeline.serving.bundle import open_bundle

    out = Path(tempfile.mkdtemp(prefix="bench_weight_ema_"))
    parser_ = open_bundle(args.bundle, configs=("train.json",), overrides={
        "dataset_dir": str(args.cohort), "datalist": str(args.cohort / "datalist.json"), "output_dir": str(out),
        "epochs": args.epochs, "val_interval": args.every, "install_weights": False}).parser
    parser_.get_parsed_content("initialize")  # the seed, before the network is built
    trainer = parser_.get_parsed_content("train#trainer")
    network = parser_.get_parsed_content("network")
    averages = {m: EMAHandler(network, momentum=m) for m in args.momentum}
    for m, handler in averages.items():
        handler.attach(trainer, name=f"ema_{m}", event=Events.ITERATION_COMPLETED)
    loader = parser_.get_parsed_content("validate#dataloader")
    rows: list[dict[str, float]] = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine) -> None:
        epoch = engine.state.epoch
        if epoch % args.every and epoch != args.epochs:
            return
        row = {"epoch": epoch, "raw": validation_psnr(network, loader)}
        row.update({f"ema_{m}": validation_psnr(h.ema_model, loader) for m, h in averages.items()})
        rows.append(row)
        print("validation PSNR (dB): " + ", ".join(f"{k} {v:.3f}" if k != "epoch" else f"epoch {v}"
                                                  for k, v in row.items()), flush=True)

    trainer.run()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"(run folder {out}; nothing installed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
