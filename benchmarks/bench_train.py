"""Training speed of the knee_xray2mri bundle (demo configuration) on this machine.

Prints, for the bundle's ``train.json`` at its own sizes (radiograph 128^2, MRI 64^3):

* samples/s of the bundle's SupervisedTrainer fed by its DataLoader (cache warm);
* the fraction of each iteration spent waiting for the next batch (Ignite's
  ``GET_BATCH_STARTED`` -> ``GET_BATCH_COMPLETED``), after a warm-up epoch (target <= 10 %);
* the ratio of the SupervisedTrainer's iteration time (its handlers included: console and
  TensorBoard logging of every loss term) to a bare PyTorch loop with the same network,
  optimizer, loss and the very same batches, measured interleaved round by round so that
  load from other processes hits both alike (target <= 1.10);
* the time of the epoch-end handlers (LR step, latest checkpoint), not part of an iteration;
* peak resident memory of this process and of its DataLoader workers (target <= 4 GiB).

Usage::

    .venv/bin/python benchmarks/bench_train.py                       # makes an 8-subject cohort in a temp dir
    .venv/bin/python benchmarks/bench_train.py --cohort data/synthetic_knee --num-workers 2

It runs on whatever device train.json picks (CUDA when available); name the device with the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "knee_xray2mri"


def _cohort(args: argparse.Namespace, tmp: Path) -> Path:
    if args.cohort:
        return Path(args.cohort)
    from xray2mri.pipeline.data.synth.cohort import generate_cohort

    print(f"making a {args.subjects}-subject synthetic cohort (demo preset) ...", flush=True)
    return generate_cohort(tmp / "cohort", args.subjects, seed=0, preset="demo", progress=False)


def _workflow(cohort: Path, out: Path, args: argparse.Namespace):
    from monai.bundle import ConfigWorkflow

    overrides = {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(cohort),
        "datalist": str(cohort / "datalist.json"),
        "output_dir": str(out),
        **({} if args.num_workers is None else {"num_workers": args.num_workers}),
        "batch_size": args.batch_size,
        "epochs": 1,
        "val_interval": 10**6,  # no validation inside the timed epochs
        "progress_bar": False,
    }
    wf = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "train.json"), logging_file=False,
                        workflow_type=None, meta_file=str(BUNDLE / "configs" / "metadata.json"), **overrides)
    wf.initialize()
    return wf


class _Timer:
    """Per-iteration wall times of an Ignite engine: waiting for the batch, and the whole iteration."""

    def __init__(self) -> None:
        self.wait: list[float] = []
        self.total: list[float] = []
        self.step: list[float] = []
        self.epoch_end: list[float] = []

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._get_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._get_completed)
        engine.add_event_handler(Events.ITERATION_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)  # last: after the bundle's handlers
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _get_started(self, engine) -> None:
        self._t0 = time.perf_counter()

    def _get_completed(self, engine) -> None:
        self._t1 = time.perf_counter()

    def _started(self, engine) -> None:
        self._t2 = time.perf_counter()

    def _completed(self, engine) -> None:
        t = time.perf_counter()
        self.wait.append(self._t1 - self._t0)
        self.total.append(t - self._t0)
        self.step.append(t - self._t2)
        self._last = t

    def _epoch_completed(self, engine) -> None:
        self.epoch_end.append(time.perf_counter() - self._last)


def _children_peak_rss_gib() -> float:
    """Largest peak resident memory (VmHWM) of this process's live children, e.g. DataLoader workers (Linux)."""
    import os

    peak = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip() or 0) == os.getpid() and "VmHWM" in fields:
            peak = max(peak, int(fields["VmHWM"].split()[0]))
    return peak / 2**20  # KiB -> GiB


def _bare_loop(network, loss_fn, optimizer, prepare_batch, batches, device) -> list[float]:
    """The plain PyTorch training step on ``batches``; seconds per iteration."""
    times = []
    network.train()
    for batch in batches:
        t0 = time.perf_counter()
        inputs, targets = prepare_batch(batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(inputs), targets)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # like the trainer's logging, wait for the result
        times.append(time.perf_counter() - t0)
    return times


def _trainer_on(trainer, batches, timer: _Timer) -> list[float]:
    """The bundle's SupervisedTrainer for one pass over ``batches`` (a list or a DataLoader); seconds per iteration."""
    start = len(timer.step)
    trainer.data_loader = batches
    trainer.state.epoch_length = len(batches)
    trainer.state.iteration = trainer.state.epoch = 0
    trainer.state.max_epochs = 1
    trainer.run()
    return timer.step[start:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohort", help="existing cohort folder with datalist.json (default: make one)")
    parser.add_argument("--subjects", type=int, default=8, help="subjects of the cohort to make (default 8)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers (default: train.json's, CPU cores // 4)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: train.json's)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (one epoch each) of the measurements")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.batch_size is None:
        from xray2mri.pipeline.training.engine import train_setting

        args.batch_size = int(train_setting(BUNDLE, "batch_size"))

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp_name:
        tmp = Path(tmp_name)
        cohort = _cohort(args, tmp)
        wf = _workflow(cohort, tmp / "run", args)
        p = wf.parser
        trainer = p.get_parsed_content("train#trainer")
        network, loss_fn = p.get_parsed_content("network"), p.get_parsed_content("loss")
        device = p.get_parsed_content("device")
        prepare_batch = trainer.prepare_batch
        n_train = len(p.get_parsed_content("train#dataset"))
        timer = _Timer()
        timer.attach(trainer)
        workers = p.get_parsed_content("num_workers")
        print(f"device {device}, torch threads {torch.get_num_threads()}, {n_train} training subjects, "
              f"batch {args.batch_size}, workers {workers}", flush=True)

        # warm-up: one epoch of the bundle as configured (starts workers, allocators, caches)
        loader = p.get_parsed_content("train#dataloader")
        batches = [b for _, b in zip(range(max(2, n_train // args.batch_size)), loader)]
        _trainer_on(trainer, loader, timer)
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
        _bare_loop(network, loss_fn, optimizer, prepare_batch, batches, device)

        # interleaved rounds, so that load from other processes hits every measurement alike:
        # (a) the bundle as configured: DataLoader (cache warm) -> SupervisedTrainer,
        # (b) a bare PyTorch loop and (c) the SupervisedTrainer on the same prepared batches
        wait, total, bare, bundle, epoch_end = [], [], [], [], []
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            start, start_end = len(timer.total), len(timer.epoch_end)
            _trainer_on(trainer, loader, timer)
            wait += timer.wait[start:]
            total += timer.total[start:]
            epoch_end += timer.epoch_end[start_end:]
            bare += _bare_loop(network, loss_fn, optimizer, prepare_batch, batches, device)
            bundle += _trainer_on(trainer, batches, timer)
        wall = time.perf_counter() - t0
        wait_fraction = statistics.median(w / t for w, t in zip(wait, total))
        samples_per_s = args.batch_size / statistics.median(total)
        ratio = statistics.median(bundle) / statistics.median(bare)
        ckpt_s = statistics.median(epoch_end)
        rss_workers = _children_peak_rss_gib()  # while the persistent workers (if any) are alive

        rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
        rss_children = max(rss_workers, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20)
        figures = {
            "device": str(device),
            "batch_size": args.batch_size,
            "num_workers": workers,
            "samples_per_s": samples_per_s,
            "iteration_s_median": statistics.median(total),
            "data_wait_fraction": wait_fraction,
            "trainer_over_bare_ratio": ratio,
            "bare_iteration_s_median": statistics.median(bare),
            "trainer_iteration_s_median": statistics.median(bundle),
            "latest_checkpoint_s_per_epoch": ckpt_s,
            "rounds": args.rounds,
            "wall_s": wall,
            "peak_rss_gib": rss_self,
            "peak_rss_worker_gib": rss_children,
        }
    print(f"samples/s (bundle, cache warm):        {samples_per_s:.2f}")
    print(f"iteration (median of {len(total)}):          {figures['iteration_s_median']:.3f} s")
    print(f"waiting for data:                      {100 * wait_fraction:.1f} % of each iteration (target <= 10 %)")
    print(f"SupervisedTrainer / bare loop:         {ratio:.3f} ({figures['trainer_iteration_s_median']:.3f} s vs "
          f"{figures['bare_iteration_s_median']:.3f} s; target <= 1.10)")
    print(f"epoch-end handlers (LR, latest ckpt):  {ckpt_s:.3f} s per epoch")
    print(f"peak RSS: this process {rss_self:.2f} GiB, largest worker {rss_children:.2f} GiB (target <= 4 GiB)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
