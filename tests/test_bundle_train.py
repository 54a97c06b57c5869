"""Training with the bundle's train.json, as users run it (tiny sizes, a 6-subject synthetic cohort).

* ``python -m monai.bundle run`` writes checkpoints and a TensorBoard event file (loss terms,
  validation metrics, image slices) and the loss goes down;
* a run killed mid-epoch resumes with ``--resume true`` from the last completed epoch;
* the same seed gives the same first losses (and another seed other ones);
* two-stage training: ``--mri_weight 0`` then ``--init_from`` starts from the pretrained weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from xray2mri.pipeline.training.checkpoints import load_checkpoint

pytestmark = pytest.mark.slow

EPOCHS = 6
LOG_EVERY = 5  # console log of the loss terms every 5 iterations


def _cli_args(overrides: dict) -> list[str]:
    """``--key value`` pairs for ``python -m monai.bundle run`` (lists and numbers as JSON)."""
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def _workflow(bundle_dir: Path, overrides: dict, configs: tuple[str, ...] = ("train.json",)) -> ConfigWorkflow:
    files = [str(bundle_dir / "configs" / c) for c in configs]
    return ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        **overrides,
    )


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(log_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["images"]:
            out.setdefault(f"image:{tag}", []).extend((e.step, 0.0) for e in acc.Images(tag))
    return out


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, bundle_dir, tiny_bundle_overrides) -> Path:
    """Output folder of one ``python -m monai.bundle run`` of train.json (tiny, EPOCHS epochs)."""
    out = tmp_path_factory.mktemp("train_cli")
    overrides = {k: v for k, v in tiny_bundle_overrides.items() if k != "device"}
    overrides.update(output_dir=str(out), epochs=EPOCHS, log_every=LOG_EVERY)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle_dir / "configs" / "train.json"),
           *_cli_args(overrides)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out / "stdout.log").write_text(proc.stdout + proc.stderr)
    return out


def test_cli_run_writes_checkpoints_with_full_state(cli_run):
    latest = load_checkpoint(cli_run / "checkpoints" / "checkpoint_latest.pt")
    assert set(latest) == {"model", "optimizer", "lr_scheduler", "best", "trainer"}
    assert latest["trainer"]["iteration"] // latest["trainer"]["epoch_length"] == EPOCHS
    assert latest["lr_scheduler"]["last_epoch"] == EPOCHS
    best = load_checkpoint(cli_run / "checkpoints" / "checkpoint_best.pt")
    assert set(best["metric"]) == {"val_mri_psnr"}
    assert 1 <= best["epoch"] <= EPOCHS and best["epoch"] == latest["best"]["best_epoch"]
    assert set(best["model"]) == set(latest["model"])
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in (cli_run / "checkpoints").iterdir()) == ["checkpoint_best.pt", "checkpoint_latest.pt"]


def test_cli_run_logs_loss_terms_metrics_and_images_to_tensorboard(cli_run):
    events = list((cli_run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    scalars = _scalars(cli_run / "tensorboard")
    for tag in ("loss", "loss_xray", "loss_mri", "val_mri_psnr", "val_mri_ssim", "val_mri_mae", "val_xray_psnr"):
        assert tag in scalars, sorted(scalars)
    assert [step for step, _ in scalars["val_mri_psnr"]] == list(range(1, EPOCHS + 1))
    for plane in ("coronal", "sagittal", "axial"):
        assert f"image:val/mri_{plane}" in scalars
    assert "image:val/xray" in scalars
    # the console log shows each term too, every log_every iterations (TensorBoard gets every one)
    log = (cli_run / "stdout.log").read_text()
    assert "loss_xray:" in log and "loss_mri:" in log
    iterations = len(scalars["loss"])
    assert log.count("loss_xray:") == iterations // LOG_EVERY > 0


def test_cli_run_reduces_the_loss(cli_run):
    losses = [v for _, v in sorted(_scalars(cli_run / "tensorboard")["loss"])]
    per_epoch = np.asarray(losses).reshape(EPOCHS, -1).mean(axis=1)
    assert per_epoch[-2:].mean() < 0.9 * per_epoch[:2].mean(), per_epoch


def _caused_by(exc: BaseException, kind: type) -> BaseException | None:
    """The first exception of type ``kind`` in the chain of ``exc`` (MONAI wraps errors in configs)."""
    while exc is not None:
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class _Killed(RuntimeError):
    """Stands for the process dying: nothing is saved when it is raised."""


def test_killed_run_resumes_from_the_last_completed_epoch(tmp_path, bundle_dir, tiny_bundle_overrides):
    overrides = {**tiny_bundle_overrides, "output_dir": str(tmp_path), "epochs": 4, "val_interval": 2}
    wf = _workflow(bundle_dir, overrides)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    epoch_length = len(wf.parser.get_parsed_content("train#dataloader"))

    def _kill(engine):
        raise _Killed("killed mid-epoch by the test")

    # die in the middle of epoch 3 (after the first iteration of it)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2 * epoch_length + 1), _kill)
    with pytest.raises(RuntimeError) as err:
        wf.run()
    assert _caused_by(err.value, _Killed)
    latest = tmp_path / "checkpoints" / "checkpoint_latest.pt"
    saved = load_checkpoint(latest)
    assert saved["trainer"]["iteration"] == 2 * epoch_length  # epoch 2 complete, epoch 3 lost

    resumed = _workflow(bundle_dir, {**overrides, "resume": True})
    resumed.initialize()
    trainer = resumed.parser.get_parsed_content("train#trainer")
    network = resumed.parser.get_parsed_content("network")
    seen = {}

    @trainer.on(Events.EPOCH_STARTED)
    def _record(engine):
        seen.setdefault("first_epoch", engine.state.epoch)
        seen.setdefault("weights", {k: v.clone() for k, v in network.state_dict().items()})

    resumed.run()
    assert seen["first_epoch"] == 3
    for key, value in saved["model"].items():
        torch.testing.assert_close(seen["weights"][key], value)
    final = load_checkpoint(latest)
    assert final["trainer"]["iteration"] == 4 * epoch_length
    assert final["best"]["best_metric"] >= saved["best"]["best_metric"]
    assert not [p for p in latest.parent.iterdir() if p.name.startswith(".")]


def test_resume_without_checkpoint_says_which_file(tmp_path, bundle_dir, tiny_bundle_overrides):
    wf = _workflow(bundle_dir, {**tiny_bundle_overrides, "output_dir": str(tmp_path), "epochs": 1, "resume": True})
    wf.initialize()
    with pytest.raises(RuntimeError) as err:
        wf.run()
    cause = _caused_by(err.value, FileNotFoundError)
    assert cause and "checkpoint_latest.pt: no checkpoint to resume from" in str(cause)


def _first_losses(bundle_dir: Path, overrides: dict, n: int = 3) -> list[float]:
    wf = _workflow(bundle_dir, {**overrides, "epochs": 1, "val_interval": 10})
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"].detach())))
    wf.run()
    return losses[:n]


def test_same_seed_gives_the_same_first_losses(tmp_path, bundle_dir, tiny_bundle_overrides):
    base = {**tiny_bundle_overrides, "batch_size": 1}
    first = _first_losses(bundle_dir, {**base, "output_dir": str(tmp_path / "a"), "seed": 7})
    again = _first_losses(bundle_dir, {**base, "output_dir": str(tmp_path / "b"), "seed": 7})
    other = _first_losses(bundle_dir, {**base, "output_dir": str(tmp_path / "c"), "seed": 8})
    assert len(first) == 3
    assert first == again
    assert first != other


def test_two_stage_training_by_overrides(tmp_path, bundle_dir, tiny_bundle_overrides):
    stage1 = tmp_path / "stage1"
    wf = _workflow(bundle_dir, {**tiny_bundle_overrides, "output_dir": str(stage1), "epochs": 2, "mri_weight": 0.0})
    wf.initialize()
    wf.run()
    pretrained = load_checkpoint(stage1 / "checkpoints" / "checkpoint_best.pt")
    assert set(pretrained["metric"]) == {"val_xray_psnr"}  # CAE pretraining tracks the radiograph

    wf = _workflow(bundle_dir, {**tiny_bundle_overrides, "output_dir": str(tmp_path / "stage2"), "epochs": 1,
                                "init_from": str(stage1 / "checkpoints" / "checkpoint_best.pt")})
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    network = wf.parser.get_parsed_content("network")
    seen = {}
    trainer.add_event_handler(
        Events.EPOCH_STARTED(once=1), lambda e: seen.update({k: v.clone() for k, v in network.state_dict().items()})
    )
    wf.run()
    for key, value in pretrained["model"].items():
        torch.testing.assert_close(seen[key], value)
    best = load_checkpoint(tmp_path / "stage2" / "checkpoints" / "checkpoint_best.pt")
    assert set(best["metric"]) == {"val_mri_psnr"}


@pytest.mark.timeout(600)
def test_torchrun_two_processes_on_cpu_only_rank0_writes(tmp_path, bundle_dir, tiny_bundle_overrides):
    # two validation subjects, so that each of the two processes validates one
    datalist = json.loads(Path(tiny_bundle_overrides["datalist"]).read_text())
    datalist["validation"].append(datalist["training"].pop())
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    overrides = {k: v for k, v in tiny_bundle_overrides.items() if k != "device"}
    overrides.update(output_dir=str(tmp_path / "out"), epochs=2, batch_size=1, datalist=str(tmp_path / "datalist.json"))
    configs = json.dumps([str(bundle_dir / "configs" / "train.json"), str(bundle_dir / "configs" / "multi_gpu_train.json")])
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "--config_file", configs,
           *_cli_args(overrides)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert [f for f in files if f.startswith("checkpoints")] == [
        "checkpoints/checkpoint_best.pt", "checkpoints/checkpoint_latest.pt"
    ]
    events = [f for f in files if f.startswith("tensorboard")]
    assert len(events) == 1, files  # one event file: rank 1 wrote none
    latest = load_checkpoint(out / "checkpoints" / "checkpoint_latest.pt")
    assert not any(k.startswith("module.") for k in latest["model"])  # DDP unwrapped: loads into a plain net
    assert latest["trainer"]["iteration"] // latest["trainer"]["epoch_length"] == 2
    assert proc.stdout.count("saved latest checkpoint (epoch 2)") == 1


def test_augmentation_varies_the_radiographs_appearance_and_keeps_it_in_range(tmp_path, bundle_dir, tiny_bundle_overrides):
    """``aug_prob`` > 0: exposure, blur, edge enhancement, LUT shape and noise change the training radiograph from
    draw to draw (within [0, 1], the preprocessing's range); ``aug_prob`` 0: every draw is the same."""
    draws = {}
    for prob in (0.0, 1.0):
        wf = _workflow(bundle_dir, {**tiny_bundle_overrides, "aug_prob": prob, "log_dir": str(tmp_path / f"tb{prob}")})
        preprocessing = wf.parser.get_parsed_content("train#preprocessing")
        item = wf.parser.get_parsed_content("train#datalist")[0]
        preprocessing.set_random_state(seed=0)
        draws[prob] = [np.asarray(preprocessing(dict(item))["xray"]) for _ in range(4)]
    assert all(np.array_equal(d, draws[0.0][0]) for d in draws[0.0])
    varied = draws[1.0]
    assert all(d.min() >= 0.0 and d.max() <= 1.0 for d in varied)
    assert min(float(np.abs(a - b).mean()) for i, a in enumerate(varied) for b in varied[i + 1:]) > 1e-3
    names = {type(t).__name__ for t in wf.parser.get_parsed_content("train#random_transforms")}
    assert {"RandAdjustContrastd", "RandGaussianSmoothd", "RandGaussianSharpend", "RandHistogramShiftd",
            "RandGaussianNoised"} <= names


def test_adversarial_option_trains_and_resumes_its_discriminator(tmp_path, bundle_dir, tiny_bundle_overrides):
    """``adversarial_weight`` > 0: both terms are logged every iteration, the patch discriminator and its
    optimizer are in the checkpoint, and a resumed run continues with the saved discriminator."""
    # two downsamplings fewer than the 64^3 default: the tiny 16^3 volumes keep 2^3 patches before the last layer
    overrides = {**tiny_bundle_overrides, "output_dir": str(tmp_path), "epochs": 1, "adversarial_weight": 0.1,
                 "discriminator_def#num_layers_d": 1}
    wf = _workflow(bundle_dir, overrides)
    wf.initialize()
    trainer, loss = wf.parser.get_parsed_content("train#trainer"), wf.parser.get_parsed_content("loss")
    disc = wf.parser.get_parsed_content("discriminator")
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    terms: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: terms.append(dict(loss.last_terms)))
    wf.run()
    assert terms and all({"adv_g", "adv_d", "mri", "total"} <= set(t) for t in terms)
    latest = load_checkpoint(tmp_path / "checkpoints" / "checkpoint_latest.pt")
    assert {"discriminator", "d_optimizer"} <= set(latest)
    assert any(not torch.equal(before[k], v) for k, v in latest["discriminator"].items())

    resumed = _workflow(bundle_dir, {**overrides, "epochs": 2, "resume": True})
    resumed.initialize()
    trainer, disc = resumed.parser.get_parsed_content("train#trainer"), resumed.parser.get_parsed_content("discriminator")
    seen = {}
    trainer.add_event_handler(Events.EPOCH_STARTED(once=2), lambda e: seen.update(
        {k: v.clone() for k, v in disc.state_dict().items()}))
    resumed.run()
    for key, value in latest["discriminator"].items():
        torch.testing.assert_close(seen[key], value)
