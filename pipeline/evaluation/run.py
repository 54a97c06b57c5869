"""Evaluate a trained bundle on any paired datalist: its ``evaluate.json``, then the report.

Each step runs the interface a user would run (``python -m monai.bundle run`` with the bundle's
configs), as a subprocess whose output is streamed and kept in a log; ``make demo`` runs its steps
through the same functions (:func:`run_step`, :func:`bundle_command`, :func:`run_evaluate_json`).
:func:`evaluate_bundle` is what ``xray2mri evaluate`` runs: the bundle's predictions on the
datalist's ``split``, then :func:`~xray2mri.pipeline.evaluation.report.report_from_files` against the
baselines fitted on that datalist's training split. train.json finds and crops each knee at load time
(``LocateKneed``/``CropKneed``; an item's ``crop_box`` from an OAI import is used as it is), so every
datalist is read by the same configs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xray2mri.pipeline.training.variants import VARIANT_NAMES

__all__ = [
    "StepError",
    "run_step",
    "bundle_command",
    "run_evaluate_json",
    "evaluate_bundle",
]


class StepError(RuntimeError):
    """A step's command failed; the message names the step, its log and the command to re-run."""


def run_step(
    step: str, cmd: Sequence[object], log: Path | None = None, say: Callable[[str], None] = print
) -> None:
    """Run one step's command, streaming its output (and teeing it to ``log``).

    Raises:
        StepError: the command exited non-zero.
    """
    say(f"{step}: {shlex.join(str(c) for c in cmd)}")
    start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with subprocess.Popen(
        [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
    ) as proc:
        sink = open(log, "w") if log else None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                if sink:
                    sink.write(line)
        finally:
            if sink:
                sink.close()
        code = proc.wait()
    if code != 0:
        where = f" (log: {log})" if log else ""
        raise StepError(f"step '{step}' failed with exit status {code}{where}: {shlex.join(str(c) for c in cmd)}")
    say(f"{step}: done in {time.perf_counter() - start:.0f} s")


def bundle_command(bundle: str | os.PathLike, configs: Sequence[str], overrides: Mapping[str, object]) -> list[str]:
    """``python -m monai.bundle run`` of ``bundle/configs/<configs>`` (later over earlier) with ``--key value``
    overrides (``bundle_root`` first; booleans as Python literals, other non-strings JSON-encoded, as fire reads them)."""
    files = [str(Path(bundle) / "configs" / c) for c in configs]
    config_arg = files[0] if len(files) == 1 else json.dumps(files)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg]
    for key, value in {"bundle_root": str(bundle), **overrides}.items():
        # fire reads Python literals: True/False, not JSON's true/false (which stay strings, and truthy)
        text = value if isinstance(value, str) else repr(value) if isinstance(value, bool) else json.dumps(value)
        cmd += [f"--{key}", text]
    return cmd


def run_evaluate_json(
    bundle: str | os.PathLike,
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    split: str = "test",
    configs: Sequence[str] = (),
    overrides: Mapping[str, object] | None = None,
    log: Path | None = None,
    step: str = "evaluate",
    say: Callable[[str], None] = print,
) -> Path:
    """Run the bundle's train.json + evaluate.json (+ ``configs``) on ``split``; returns ``out_dir``.

    The predictions land in ``out_dir/predictions`` (``<subject>_mri_pred.nii.gz``,
    ``<subject>_xray_recon.nii.gz``); ``weights`` default to the bundle's ``models/model.pt``.
    """
    from xray2mri.pipeline.serving.bundle import EVALUATE_CONFIGS

    values: dict[str, object] = {
        "dataset_dir": str(base_dir), "datalist": str(datalist), "output_dir": str(out_dir), "eval_split": split,
    }
    if weights is not None:
        values["weights"] = str(weights)
    values.update(overrides or {})
    run_step(step, bundle_command(bundle, [*EVALUATE_CONFIGS, *configs], values), log=log, say=say)
    return Path(out_dir)


def evaluate_bundle(
    bundle: str | os.PathLike,
    datalist: str | os.PathLike,
    base_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "test",
    weights: str | os.PathLike | None = None,
    criteria: str | os.PathLike | None = None,
    name: str | None = None,
    configs: Sequence[str] | None = None,
    overrides: Mapping[str, object] | None = None,
    train_log: str | os.PathLike | None = None,
    say: Callable[[str], None] = print,
    **report_kwargs: Any,
) -> dict[str, Any]:
    """Predict ``split`` with the bundle (``out_dir/evaluate``) and write the report (``out_dir/report``).

    Both folders are written atomically (a failure keeps an older one and leaves no partial one);
    the bundle run's console output is kept in ``out_dir/evaluate.log``.

    Args:
        bundle, datalist, base_dir: the bundle folder; a datalist the project's manifests describe
            and the folder its paths are relative to.
        split: the split to evaluate (the baselines are always fitted on ``training``).
        weights: weights of the bundle's declared variant (default ``models/model.pt``).
        criteria: a quality-bar JSON (:func:`~.summary.load_criteria`); none: no quality bar.
        name: the model's row name (default: the declared variant's, :data:`~xray2mri.pipeline.training.networks.VARIANT_NAMES`).
        configs: config overlays after train.json + evaluate.json (default: none).
        overrides: extra ``--key value`` for the bundle run (e.g. ``num_workers``).
    Returns the report's summary.

    Raises:
        InputError: missing weights, a datalist or criteria file that cannot be used.
        StepError: evaluate.json failed.
    """
    from xray2mri.pipeline.atomic import atomic_folder
    from xray2mri.pipeline.data import manifests
    from xray2mri.pipeline.evaluation.report import report_from_files
    from xray2mri.pipeline.evaluation.summary import load_criteria
    from xray2mri.pipeline.serving.bundle import DEFAULT_WEIGHTS, EVALUATE_CONFIGS, open_bundle
    from xray2mri.transforms.errors import InputError

    out = Path(out_dir)
    bar = load_criteria(criteria) if criteria is not None else None
    items = manifests.load_datalist(datalist, split, base_dir)
    if not items:
        raise InputError(datalist, f"the {split!r} split is empty")
    wpath = Path(weights) if weights is not None else Path(bundle) / DEFAULT_WEIGHTS
    if not wpath.is_file():
        raise InputError(wpath, "no weights: train the bundle first, or give --weights")
    configs = tuple(configs or ())
    if name is None:
        variant = open_bundle(bundle, configs=EVALUATE_CONFIGS).setting("variant")
        name = VARIANT_NAMES.get(str(variant), f"model ({variant})")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out / "evaluate") as tmp:  # a failed run leaves no partial predictions (its log stays)
        run_evaluate_json(
            bundle, datalist, base_dir, tmp, weights=wpath, split=split, configs=configs,
            overrides=overrides, log=out / "evaluate.log", say=say,
        )
    say(f"report: measuring {name} and the baselines on the {split!r} split")
    return report_from_files(
        datalist, base_dir, {name: out / "evaluate" / "predictions"}, bundle, out / "report", train_log=train_log,
        split=split, configs=configs, criteria=bar, **report_kwargs,
    )
