"""Xray2MRI: shapes per variant and size, size errors, inference form, export, geometry of the skips."""

from __future__ import annotations

import warnings

import pytest
import torch

from xray2mri.pipeline.training.networks import (
    GeometryGenerator,
    SkipAdapter,
    Xray2MRI,
    XrayCAE,
    spread_along_projection,
)
from xray2mri.transforms.geometry import PROJECTION_AXIS

# Narrow channels for the large sizes, so a test stays well under a second on 2 cores.
SMALL = dict(
    cae_channels=(4, 8, 8, 8),
    cae_num_res_units=0,
    latent_size=16,
    gen_start_channels=8,
    gen_channels=(8, 8, 4),
)


@pytest.mark.parametrize("variant", ["bottleneck", "geometry"])
def test_demo_size_default_channels(variant):
    torch.manual_seed(0)
    net = Xray2MRI(xray_size=(128, 128), mri_shape=(64, 64, 64), variant=variant)
    out = net(torch.rand(2, 1, 128, 128))
    assert set(out) == {"xray", "mri"}
    assert out["xray"].shape == (2, 1, 128, 128)
    assert out["mri"].shape == (2, 1, 64, 64, 64)
    # sigmoid output: the normalised [0, 1] range of the targets
    for key in ("xray", "mri"):
        assert 0.0 <= float(out[key].detach().min()) and float(out[key].detach().max()) <= 1.0


@pytest.mark.parametrize("variant", ["bottleneck", "geometry"])
@pytest.mark.parametrize(
    "xray_size, mri_shape",
    [
        ((256, 256), (128, 128, 128)),  # the full sizes
        ((128, 128), (128, 128, 128)),  # volume grid finer than the radiograph's
        ((128, 96), (32, 64, 48)),  # non-square, non-cubic
    ],
)
def test_other_sizes(variant, xray_size, mri_shape):
    net = Xray2MRI(xray_size=xray_size, mri_shape=mri_shape, variant=variant, **SMALL)
    with torch.no_grad():
        out = net(torch.rand(1, 1, *xray_size))
    assert out["xray"].shape == (1, 1, *xray_size)
    assert out["mri"].shape == (1, 1, *mri_shape)


def test_geometry_skips_match_each_layer_input():
    net = Xray2MRI(xray_size=(128, 128), mri_shape=(64, 64, 64), variant="geometry", skip_channels=4)
    # generator layer inputs are 4, 8, 16, 32 pixels in-plane (start 4^3, strides 2)
    assert [a.out_size for a in net.skip_adapters] == [(4, 4), (8, 8), (16, 16), (32, 32)]
    assert [a.in_size for a in net.skip_adapters] == [(8, 8), (8, 8), (16, 16), (32, 32)]
    assert net.generator.skip_channels == [4, 4, 4, 4]


def test_skip_channels_zero_disables_a_layer():
    net = Xray2MRI(variant="geometry", skip_channels=(0, 8, 0, 4), **SMALL)
    assert net.generator.skip_channels == [0, 8, 0, 4]
    assert len(net.skip_adapters) == 2
    with torch.no_grad():
        assert net(torch.rand(1, 1, 128, 128))["mri"].shape == (1, 1, 64, 64, 64)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(xray_size=(120, 128)), ["xray_size=(120, 128)", "16"]),
        (dict(mri_shape=(64, 64, 56)), ["mri_shape=(64, 64, 56)", "16"]),
        (dict(mri_shape=(48, 48, 48), gen_strides=(2, 2, 4, 2)), ["mri_shape=(48, 48, 48)", "32"]),
        (dict(variant="geometry", xray_size=(96, 96), mri_shape=(64, 64, 64)), ["(96, 96)", "(64, 64)"]),
        (dict(variant="unet"), ["variant", "unet"]),
        (dict(output_act="relu"), ["output_act"]),
        (dict(gen_channels=(8, 8), gen_strides=(2, 2)), ["gen_strides"]),
        (dict(variant="geometry", skip_channels=(4, 4)), ["skip_channels", "4"]),
    ],
)
def test_constructor_rejects_bad_configuration(kwargs, words):
    with pytest.raises(ValueError) as err:
        Xray2MRI(**kwargs)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (1, 2, 128, 128), (1, 128, 128)])
def test_forward_rejects_wrong_input_shape(shape):
    net = Xray2MRI(**SMALL)
    with pytest.raises(ValueError, match=r"\(B, 1, 128, 128\)"):
        net(torch.rand(*shape))


@pytest.mark.parametrize("variant", ["bottleneck", "geometry"])
def test_inference_form_loads_the_same_weights(variant):
    torch.manual_seed(1)
    train = Xray2MRI(variant=variant, **SMALL).eval()
    infer = Xray2MRI(variant=variant, return_dict=False, **SMALL)
    assert list(infer.state_dict()) == list(train.state_dict())
    infer.load_state_dict(train.state_dict())  # strict
    infer.eval()
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        out = infer(x)
        ref = train(x)["mri"]
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("variant", ["bottleneck", "geometry"])
def test_torchscript_and_export_match_eager(variant):
    torch.manual_seed(2)
    net = Xray2MRI(variant=variant, return_dict=False, **SMALL).eval()
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 warns that TorchScript is deprecated
        eager = net(x)
        scripted = torch.jit.script(net)
        torch.testing.assert_close(scripted(x), eager)
        exported = torch.export.export(net, (x,), dynamic_shapes={"x": {0: torch.export.Dim.AUTO}})
        torch.testing.assert_close(exported.module()(x), eager)
        x1 = x[:1]  # the exported program keeps the batch size free
        torch.testing.assert_close(exported.module()(x1), net(x1))
    with pytest.raises(Exception, match="expects a radiograph batch"):
        scripted(torch.rand(1, 1, 64, 64))


def test_output_act_none_clamps_in_eval_only():
    torch.manual_seed(3)
    net = Xray2MRI(output_act="none", **SMALL)
    with torch.no_grad():
        net.generator.conv[-1].conv.bias.fill_(5.0)  # push the raw output above 1
        x = torch.rand(1, 1, 128, 128)
        assert float(net.train()(x)["mri"].max()) > 1.0
        out = net.eval()(x)
    assert float(out["mri"].max()) <= 1.0 and float(out["mri"].min()) >= 0.0


def test_latent_none_feeds_the_bottleneck_to_the_generator():
    net = Xray2MRI(**{**SMALL, "latent_size": None})
    assert isinstance(net.to_latent, torch.nn.Identity)
    assert net.generator.linear.in_features == 8 * 8 * 8  # bottleneck channels x 8 x 8
    with torch.no_grad():
        assert net(torch.rand(1, 1, 128, 128))["mri"].shape == (1, 1, 64, 64, 64)


def test_mri_output_depends_on_the_radiograph_and_gradient_reaches_the_encoder():
    torch.manual_seed(4)
    net = Xray2MRI(variant="geometry", skip_channels=2, **SMALL)
    x = torch.rand(2, 1, 128, 128)
    net(x)["mri"].mean().backward()
    for name, module in (("encoder", net.cae.encode), ("adapters", net.skip_adapters)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    # the MRI does not use the CAE decoder
    assert all(p.grad is None for p in net.cae.decode.parameters())


def test_cae_levels_are_the_encoder_outputs():
    cae = XrayCAE(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8, 16), strides=(2, 2, 2))
    x = torch.rand(1, 1, 64, 64)
    levels = cae.encode_levels(x)
    assert [tuple(t.shape) for t in levels] == [(1, 4, 32, 32), (1, 8, 16, 16), (1, 16, 8, 8)]
    torch.testing.assert_close(cae.decode(levels[-1]), cae(x))


def test_spread_is_the_adjoint_of_the_ap_projection():
    feat = torch.rand(2, 3, 5, 6)
    vol = spread_along_projection(feat, depth=7)
    assert vol.shape == (2, 3, 7, 5, 6)
    # summing over the A-P axis (the projection) gives depth x the 2-D map back
    torch.testing.assert_close(vol.sum(dim=2 + PROJECTION_AXIS), 7 * feat)


def test_geometry_generator_puts_a_pixel_on_its_ray():
    """A change at skip pixel (row, col) changes the volume along the A-P ray through it only."""
    torch.manual_seed(5)
    gen = GeometryGenerator(
        latent_shape=(4,),
        start_shape=(4, 4, 4, 4),
        channels=(4, 1),
        strides=(2, 1),
        skip_channels=(0, 2),
        num_res_units=0,
        norm=None,  # no instance norm, so the change stays local
    ).eval()
    z = torch.rand(1, 4)
    skip = torch.rand(1, 2, 8, 8)
    bumped = skip.clone()
    bumped[0, :, 2, 5] += 1.0
    with torch.no_grad():
        diff = (gen(z, [skip, bumped]) - gen(z, [skip, skip])).abs()[0, 0]  # (D, H, W)
    assert diff.shape == (8, 8, 8)
    changed = diff > 1e-6
    assert changed[:, 2, 5].all()  # every depth on the ray through (2, 5)
    rows, cols = changed.any(dim=0).nonzero(as_tuple=True)
    assert rows.min() >= 1 and rows.max() <= 3 and cols.min() >= 4 and cols.max() <= 6  # 3x3 kernel


def test_skip_adapter_refuses_a_fractional_scale():
    with pytest.raises(ValueError, match=r"\(6, 6\).*\(4, 4\)"):
        SkipAdapter(source=0, in_channels=4, in_size=(6, 6), out_size=(4, 4))
    adapter = SkipAdapter(source=1, in_channels=4, in_size=(8, 8), out_size=(16, 4), out_channels=2)
    levels = [torch.rand(1, 3, 16, 16), torch.rand(1, 4, 8, 8)]
    assert adapter(levels).shape == (1, 2, 16, 4)  # rows upsampled x2, columns pooled /2
