"""Two parts of a training run, each against what it replaced, measured interleaved in one run.

* validation's 3-D SSIM on a batch of two 64^3 volumes: MONAI's ``SSIMMetric`` (dense 11^3 window)
  vs :class:`xray2mri.pipeline.ssim.SeparableSSIMMetric` (train.json's ``val_mri_ssim``, the report's
  ``ssim3d``), with the largest difference between their values, and the training loss's forward + backward
  (MONAI's ``SSIMLoss`` vs ``ssim_loss_3d``);
* the uncertainty head's x2 upsampling, forward + backward: ``nn.Upsample`` (trilinear) vs ``LinearUpsample2x``;
* the optimizer step of the bundle's network (demo configuration, uncertainty head, gradients from
  one real backward pass): ``torch.optim.Adam`` with its default (for-each) implementation vs
  ``fused=True`` (train.json), and a whole training step (forward, loss, backward, step) with each;
* a training step with the adversarial option (``adversarial_weight`` > 0: the generator's term through
  train.json's patch discriminator, then the discriminator's own step) against one without;
* a training step with the joint-region head (train.json's default: ``joint_weight`` 1, its 40 x 32 x 40 box,
  ``DiceCELoss`` on class fractions) against the same network without it, and the inference forward
  (``forward_dict``, as predict runs it) with and without.

Rounds alternate the two candidates (``bench_uncertainty._interleaved``), so load from other processes
hits both alike; the figures are medians over calls. Usage::

    .venv/bin/python benchmarks/bench_train_parts.py [--rounds 7] [--parts ssim upsample adam adversarial joint]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from monai.losses import SSIMLoss
from monai.metrics import SSIMMetric

from xray2mri.pipeline.ssim import SeparableSSIMMetric
from xray2mri.pipeline.training.losses import HybridLoss, ssim_loss_3d
from xray2mri.pipeline.training.networks import Xray2MRI
from xray2mri.pipeline.training.networks.upsample import LinearUpsample2x
from xray2mri.pipeline.training.uncertainty_loss import WithUncertaintyLoss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_uncertainty import _interleaved  # noqa: E402  (the benchmarks' one interleaved timer)


def _timed(fn):
    """``fn`` as a callable returning the seconds one call took (what ``_interleaved`` medians)."""
    def _one() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return _one


def ssim_parts(rounds: int) -> dict:
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 1, 64, 64, 64, generator=g)
    pred = (0.7 * truth + 0.3 * torch.rand(2, 1, 64, 64, 64, generator=g)).clamp(0, 1)
    dense = SSIMMetric(spatial_dims=3, data_range=1.0, reduction="none")
    separable = SeparableSSIMMetric(spatial_dims=3, data_range=1.0, reduction="none")
    diff = float((dense(pred, truth) - separable(pred, truth)).abs().max())
    t_dense, t_sep = _interleaved(_timed(lambda: dense(pred, truth)), _timed(lambda: separable(pred, truth)), rounds, 2)
    # the training loss, forward + backward of one 64^3 volume: MONAI's SSIMLoss vs ssim_loss_3d
    monai_loss = SSIMLoss(spatial_dims=3, data_range=1.0)

    def backward(loss_fn):
        def _one() -> None:
            p = pred[:1].clone().requires_grad_()
            loss_fn(p, truth[:1]).backward()
        return _one

    l_dense, l_sep = _interleaved(_timed(backward(monai_loss)), _timed(backward(ssim_loss_3d)), rounds, 2)
    return {"monai_ssim_metric_s": t_dense, "separable_s": t_sep, "speedup": t_dense / t_sep, "max_abs_diff": diff,
            "loss_forward_backward_s": {"monai_ssim_loss": l_dense, "ssim_loss_3d": l_sep, "speedup": l_dense / l_sep}}


def upsample_parts(rounds: int) -> dict:
    """The uncertainty head's x2 upsampling of a 32^3 log-scale map, forward + backward: PyTorch's trilinear
    ``nn.Upsample`` vs :class:`~xray2mri.pipeline.training.networks.upsample.LinearUpsample2x` (train.json's)."""
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    ours, torch_up = LinearUpsample2x(), torch.nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)

    def run(module):
        def _one() -> None:
            module(x.clone().requires_grad_()).square().mean().backward()
        return _one

    diff = float((ours(x) - torch_up(x)).abs().max())
    t_torch, t_ours = _interleaved(_timed(run(torch_up)), _timed(run(ours)), rounds, 10)
    return {"torch_trilinear_s": t_torch, "linear_upsample_2x_s": t_ours, "ratio": t_ours / t_torch, "max_abs_diff": diff}


def adam_parts(rounds: int) -> dict:
    torch.manual_seed(0)
    net = Xray2MRI(xray_size=[128, 128], mri_shape=[64, 64, 64], variant="geometry", uncertainty=True, return_dict=True)
    loss_fn = WithUncertaintyLoss(HybridLoss(xray_weight=1.0, mri_weight=30.0, ssim_weight=1.0, mri_loss="mse"),
                                  nll_weight=1.0, distribution="gaussian")
    x, mri = torch.rand(1, 1, 128, 128), torch.rand(1, 1, 64, 64, 64)
    default = torch.optim.Adam(net.parameters(), lr=1e-6)
    fused = torch.optim.Adam(net.parameters(), lr=1e-6, fused=True)

    def step(opt) -> None:
        opt.zero_grad()
        loss_fn(net(x), {"xray": x, "mri": mri}).backward()
        opt.step()

    step(default)
    step(fused)  # both have state; the gradients of the last backward stay for the optimizer-only timing
    t_default, t_fused = _interleaved(_timed(default.step), _timed(fused.step), rounds, 10)
    s_default, s_fused = _interleaved(_timed(lambda: step(default)), _timed(lambda: step(fused)), rounds, 4)
    return {"optimizer_step_s": {"foreach": t_default, "fused": t_fused, "ratio": t_fused / t_default},
            "training_step_s": {"foreach": s_default, "fused": s_fused, "ratio": s_fused / s_default}}


def adversarial_parts(rounds: int) -> dict:
    from monai.networks.nets import PatchDiscriminator

    from xray2mri.pipeline.training.adversarial import WithAdversarialLoss

    torch.manual_seed(0)
    net = Xray2MRI(xray_size=[128, 128], mri_shape=[64, 64, 64], variant="geometry", uncertainty=True, return_dict=True)
    base = WithUncertaintyLoss(HybridLoss(xray_weight=1.0, mri_weight=30.0, ssim_weight=1.0, mri_loss="mse"),
                               nll_weight=1.0, distribution="gaussian")
    disc = PatchDiscriminator(spatial_dims=3, num_layers_d=3, channels=16, in_channels=1, out_channels=1, norm="INSTANCE")
    adv = WithAdversarialLoss(base, discriminator=disc, weight=0.02)
    opt = torch.optim.Adam(net.parameters(), lr=1e-6, fused=True)
    d_opt = torch.optim.Adam(disc.parameters(), lr=1e-6, betas=(0.5, 0.999))
    x, mri = torch.rand(1, 1, 128, 128), torch.rand(1, 1, 64, 64, 64)

    def plain() -> None:
        opt.zero_grad()
        base(net(x), {"xray": x, "mri": mri}).backward()
        opt.step()

    def adversarial() -> None:
        opt.zero_grad()
        pred = net(x)
        adv(pred, {"xray": x, "mri": mri}).backward()
        opt.step()
        adv.discriminator_step(pred, {"mri": mri}, d_opt)

    t_plain, t_adv = _interleaved(_timed(plain), _timed(adversarial), rounds, 4)
    return {"training_step_s": {"without": t_plain, "with_adversarial": t_adv, "ratio": t_adv / t_plain}}


def joint_parts(rounds: int) -> dict:
    from xray2mri.pipeline.data.synth.tissues import NUM_CLASSES

    def build(joint: bool) -> Xray2MRI:
        torch.manual_seed(0)
        return Xray2MRI(xray_size=[128, 128], mri_shape=[64, 64, 64], variant="geometry", uncertainty=True,
                        return_dict=True, joint_classes=NUM_CLASSES if joint else 0, joint_shape=(40, 32, 40))

    plain_net, joint_net = build(False), build(True)
    base = HybridLoss(xray_weight=1.0, mri_weight=30.0, ssim_weight=1.0, mri_loss="mse", joint_weight=1.0)
    loss_fn = WithUncertaintyLoss(base, nll_weight=1.0, distribution="gaussian")
    x, mri = torch.rand(1, 1, 128, 128), torch.rand(1, 1, 64, 64, 64)
    fractions = torch.softmax(torch.randn(1, NUM_CLASSES, 40, 32, 40), dim=1)
    opts = {id(n): torch.optim.Adam(n.parameters(), lr=1e-6, fused=True) for n in (plain_net, joint_net)}

    def step(net: Xray2MRI, target: dict) -> None:
        opt = opts[id(net)]
        opt.zero_grad()
        loss_fn(net(x), target).backward()
        opt.step()

    t_plain, t_joint = _interleaved(_timed(lambda: step(plain_net, {"xray": x, "mri": mri})),
                                    _timed(lambda: step(joint_net, {"xray": x, "mri": mri, "joint_labels": fractions})),
                                    rounds, 4)
    with torch.no_grad():
        plain_net.eval(), joint_net.eval()
        f_plain, f_joint = _interleaved(_timed(lambda: plain_net.forward_dict(x)), _timed(lambda: joint_net.forward_dict(x)),
                                        rounds, 4)
    return {"training_step_s": {"without": t_plain, "with_joint_head": t_joint, "ratio": t_joint / t_plain},
            "inference_forward_s": {"without": f_plain, "with_joint_head": f_joint, "ratio": f_joint / f_plain}}


PARTS = {"ssim": ssim_parts, "upsample": upsample_parts, "adam": adam_parts, "adversarial": adversarial_parts,
         "joint": joint_parts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS), help="which parts (default all)")
    args = parser.parse_args(argv)
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    out.update({name: PARTS[name](args.rounds) for name in args.parts})
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
