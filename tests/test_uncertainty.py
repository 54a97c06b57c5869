"""The calibrated uncertainty map and the OOD warning (issue 16): the NLL loss, the head, the conformal
fit, the calibration file in the bundle and its export, the report's coverage figures."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_factory import TINY_NET, TINY_SIZES, make_tiny_bundle

from xray2mri.pipeline.evaluation.measure import Case
from xray2mri.pipeline.evaluation.uncertainty import SIGMA_SUFFIX, spearman, uncertainty_section
from xray2mri.pipeline.serving.integrity import BundleIntegrityError, verify_bundle
from xray2mri.pipeline.serving.uncertainty import (
    CALIBRATION_FILE,
    UncertaintyCalibration,
    conformal_factor,
    fit_subject_exponent,
    load_calibration,
    ood_score,
    reconstruction_error,
    save_calibration,
    subject_conformal_factor,
)
from xray2mri.pipeline.training.calibrate import SplitOutputs, calibrate_bundle, fit_calibration
from xray2mri.pipeline.training.losses import HybridLoss
from xray2mri.pipeline.training.networks import Xray2MRI
from xray2mri.pipeline.training.networks.subject_scale import SubjectLogScale
from xray2mri.pipeline.training.uncertainty_loss import HeteroscedasticNLLLoss, WithUncertaintyLoss
from xray2mri.transforms.errors import InputError

SUMMARY_NAMES = ("uncertainty_coverage_80", "uncertainty_coverage_90", "uncertainty_coverage_95",
                 "uncertainty_width_90", "uncertainty_error_spearman")


# ------------------------------------------------------------------------------------------ loss


def test_laplace_and_gaussian_nll_known_values_and_gradients():
    mean = torch.tensor([0.2, 0.5], requires_grad=True)
    log_scale = torch.tensor([0.0, math.log(0.5)], requires_grad=True)
    target = torch.tensor([0.7, 0.5])
    laplace = HeteroscedasticNLLLoss("laplace", reduction="none")(mean, log_scale, target)
    # |y - mu| / b + log b: 0.5 / 1 + 0 and 0 / 0.5 + log 0.5
    assert laplace.tolist() == pytest.approx([0.5, math.log(0.5)])
    gaussian = HeteroscedasticNLLLoss("gaussian", reduction="none")(mean, log_scale, target)
    # (y - mu)^2 / (2 sigma^2) + log sigma
    assert gaussian.tolist() == pytest.approx([0.125, math.log(0.5)])
    HeteroscedasticNLLLoss("laplace")(mean, log_scale, target).backward()
    # d/ds (|e| e^-s + s) = 1 - |e| e^-s, averaged over 2 elements; the mean gets no gradient (detached)
    assert log_scale.grad.tolist() == pytest.approx([(1 - 0.5) / 2, 1 / 2])
    assert mean.grad is None
    mean2 = torch.tensor([0.2], requires_grad=True)
    HeteroscedasticNLLLoss("laplace", detach_mean=False)(mean2, torch.zeros(1), torch.tensor([0.7])).backward()
    assert mean2.grad.tolist() == pytest.approx([-1.0])  # d|y - mu|/dmu = -sign(y - mu) / b
    # the minimiser of the expected Laplace NLL is b = E|y - mu|
    errs = torch.tensor([0.1, 0.3, 0.2])
    s = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([s], lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        HeteroscedasticNLLLoss("laplace")(torch.zeros(3), s.expand(3), errs).backward()
        opt.step()
    assert math.exp(float(s.detach())) == pytest.approx(0.2, rel=1e-3)
    with pytest.raises(ValueError, match="distribution"):
        HeteroscedasticNLLLoss("cauchy")
    with pytest.raises(ValueError, match="one shape"):
        HeteroscedasticNLLLoss()(torch.zeros(2), torch.zeros(3), torch.zeros(2))


def _tiny_net(uncertainty: bool, return_dict: bool = True) -> Xray2MRI:
    net = {k: v for k, v in TINY_NET.items()}
    return Xray2MRI(xray_size=TINY_SIZES["xray_size"], mri_shape=TINY_SIZES["mri_shape"], variant="geometry",
                    uncertainty=uncertainty, return_dict=return_dict, **net)


def test_uncertainty_head_is_optional_and_the_loss_adds_its_nll():
    torch.manual_seed(0)
    x = torch.rand(2, 1, *TINY_SIZES["xray_size"])
    target = {"xray": x, "mri": torch.rand(2, 1, *TINY_SIZES["mri_shape"])}
    plain, head = _tiny_net(False), _tiny_net(True)
    assert set(plain(x)) == {"xray", "mri"}
    out = head(x)
    assert set(out) == {"xray", "mri", "mri_log_scale"} and out["mri_log_scale"].shape == out["mri"].shape
    # one checkpoint loads into the inference form, which gives the same MRI and (mri, log scale) without the decoder
    infer = _tiny_net(True, return_dict=False)
    infer.load_state_dict(head.state_dict())
    head.eval(), infer.eval()
    mri, log_scale = infer.predict_with_scale(x)
    assert torch.allclose(infer(x), head(x)["mri"]) and torch.allclose(mri, head(x)["mri"])
    assert torch.allclose(log_scale, head(x)["mri_log_scale"])
    assert plain.predict_with_scale(x)[1] is None
    head.train()
    base = HybridLoss(mri_weight=1.0)
    loss = WithUncertaintyLoss(base, nll_weight=0.5)
    out = head(x)
    total = loss(out, target)
    nll = HeteroscedasticNLLLoss()(out["mri"], out["mri_log_scale"], target["mri"])
    assert float(total.detach()) == pytest.approx(float(base(out, target).detach()) + 0.5 * float(nll.detach()), rel=1e-5)
    assert loss.term_names == ("xray", "mri", "nll", "total") and set(loss.last_terms) == set(loss.term_names)
    # weight 0: the base loss exactly, and no head needed
    off = WithUncertaintyLoss(base, nll_weight=0.0)
    assert float(off(plain(x), target).detach()) == pytest.approx(float(base(plain(x), target).detach()))
    assert "nll" not in off.term_names
    with pytest.raises(KeyError, match="uncertainty=True"):
        loss(plain(x), target)


@pytest.mark.parametrize("variant,subject", [("geometry", False), ("bottleneck", False), ("geometry", True)])
def test_the_uncertainty_head_leaves_the_mri_and_its_training_untouched(variant, subject):
    """The head reads detached features (and latent): same MRI as without it, and its NLL moves no other weight."""
    x = torch.rand(2, 1, *TINY_SIZES["xray_size"], generator=torch.Generator().manual_seed(1))
    target = torch.rand(2, 1, *TINY_SIZES["mri_shape"], generator=torch.Generator().manual_seed(2))
    nets = {}
    for uncertainty in (False, True):
        torch.manual_seed(0)
        nets[uncertainty] = Xray2MRI(xray_size=TINY_SIZES["xray_size"], mri_shape=TINY_SIZES["mri_shape"],
                                     variant=variant, uncertainty=uncertainty,
                                     uncertainty_subject=uncertainty and subject, **TINY_NET)
    out = nets[True](x)
    assert torch.equal(out["mri"], nets[False](x)["mri"])  # the same initial network
    HeteroscedasticNLLLoss()(out["mri"], out["mri_log_scale"], target).backward()
    moved = [name for name, p in nets[True].named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    head = ("scale_head.", "scale_subject.")
    assert moved and all(name.startswith(head) for name in moved), moved
    assert any(name.startswith("scale_subject.") for name in moved) == subject
    # a few training steps with the whole loss: the MRI weights follow exactly the same path
    base = HybridLoss(mri_weight=1.0)
    for uncertainty, net in nets.items():
        net.zero_grad()
        loss = WithUncertaintyLoss(base, nll_weight=1.0 if uncertainty else 0.0)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            loss(net(x), {"xray": x, "mri": target}).backward()
            opt.step()
    trained = {u: {k: v for k, v in net.state_dict().items() if not k.startswith(head)} for u, net in nets.items()}
    assert trained[True].keys() == trained[False].keys()
    assert all(torch.equal(trained[True][k], trained[False][k]) for k in trained[False])


# ------------------------------------------------------------------------------------ calibration


def test_conformal_factor_reaches_nominal_coverage_on_residuals_of_known_scale():
    """Residuals Laplace(0, 2.5 sigma) with a head that predicts sigma: k ~ 2.5 * quantile, coverage on new data ~ nominal."""
    rng = np.random.default_rng(0)

    def draw(n):
        sigma = rng.uniform(0.01, 0.2, n)
        return np.abs(rng.laplace(0.0, 2.5 * sigma)), sigma

    err, sigma = draw(20000)
    err_new, sigma_new = draw(20000)
    for level in (0.8, 0.9, 0.95):
        k = conformal_factor(err / sigma, level)
        assert k == pytest.approx(2.5 * -math.log(1 - level), rel=0.05)  # |Laplace(0, b)| quantile: -b log(1 - p)
        assert np.mean(err_new <= k * sigma_new) == pytest.approx(level, abs=0.01)
    assert conformal_factor(np.arange(1, 10.0), 0.9) == 9.0  # ceil(10 * 0.9) = 9th of 9
    with pytest.raises(ValueError):
        conformal_factor(np.ones(3), 1.0)


def test_subject_level_factor_covers_new_subjects_with_90_percent_confidence_where_pooled_gets_half():
    """Subjects differ in how hard they are (a per-subject error multiplier): the pooled voxel quantile of
    30 calibration subjects under-covers the next subjects about half the time; the subject-level factor
    about 10 % of the time, and is not much wider."""
    rng = np.random.default_rng(0)
    level, n_subjects, voxels = 0.8, 30, 400
    z = np.abs(rng.standard_normal(200_000))
    new_multipliers = rng.lognormal(0.0, 0.25, 2000)

    def expected_coverage(k: float) -> float:  # of a new subject, over subjects: E_m P(m |Z| <= k)
        return float(np.mean([np.mean(z <= k / m) for m in new_multipliers[::10]]))

    reached = {"pooled": [], "subject": []}
    widths = {"pooled": [], "subject": []}
    for _ in range(60):
        multipliers = rng.lognormal(0.0, 0.25, n_subjects)
        scores = [m * np.abs(rng.standard_normal(voxels)) for m in multipliers]
        for name, k in (("pooled", conformal_factor(np.concatenate(scores), level)),
                        ("subject", subject_conformal_factor(scores, level, confidence=0.9))):
            reached[name].append(expected_coverage(k) >= level)
            widths[name].append(k)
    assert np.mean(reached["pooled"]) <= 0.6
    assert np.mean(reached["subject"]) >= 0.75
    assert np.mean(widths["subject"]) <= 1.1 * np.mean(widths["pooled"])
    assert all(s >= p for s, p in zip(widths["subject"], widths["pooled"]))
    assert subject_conformal_factor([np.arange(1, 10.0)], 0.9) == 9.0  # one subject: the pooled factor
    with pytest.raises(ValueError):
        subject_conformal_factor([np.ones(3), np.ones(3)], 0.9, confidence=1.0)


def test_ood_threshold_flags_about_one_percent_of_new_in_distribution_scores_even_from_30():
    """Fewer scores than the quantile needs: not their maximum (exceeded 1/(n+1) of the time) but a log-normal fit."""
    from xray2mri.pipeline.serving.uncertainty import quantile_threshold

    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):  # 200 calibrations on 30 validation scores each, tested on fresh scores
        scores = rng.lognormal(0.0, 0.3, 30)
        threshold = quantile_threshold(scores, 0.99)
        assert threshold >= scores.max()
        rates.append(np.mean(rng.lognormal(0.0, 0.3, 2000) > threshold))
    assert 0.005 <= np.mean(rates) <= 0.02  # the maximum alone gives 1/31 = 3.2 %
    many = rng.lognormal(0.0, 0.3, 999)  # enough scores: the conformal rank, ceil(1000 * 0.99) = 990th
    assert quantile_threshold(many, 0.99) == np.sort(many)[989]
    assert quantile_threshold([], 0.99) == math.inf
    assert quantile_threshold([1.5], 0.99) == 1.5

def _outputs(n_subjects: int, seed: int) -> SplitOutputs:
    g = torch.Generator().manual_seed(seed)
    out = SplitOutputs([], [], [], [], [], [])
    for i in range(n_subjects):
        sigma = 0.01 + 0.1 * torch.rand(4, 4, 4, generator=g)
        pred = torch.rand(4, 4, 4, generator=g)
        noise = torch.distributions.Laplace(0.0, 1.0).sample((4, 4, 4)) * sigma
        out.subjects.append(f"S{i}")
        out.predictions.append(pred)
        out.sigmas.append(sigma)
        out.truths.append(pred + noise)
        x = torch.rand(8, 8, generator=g)
        out.xrays.append(x)
        out.reconstructions.append(x + 0.05 * torch.rand(8, 8, generator=g))
    return out


def test_fit_calibration_saves_loads_and_sets_an_ood_threshold(tmp_path):
    calibration = fit_calibration(_outputs(30, 0), distribution="laplace", ood_quantile=0.99)
    assert set(calibration.factors) >= {"80", "90", "95"}
    assert calibration.factor(0.8) < calibration.factor(0.9) < calibration.factor(0.95)
    assert calibration.factor(0.9) == pytest.approx(-math.log(0.1), rel=0.15)  # Laplace(0, sigma) residuals
    scores = calibration.fitted_on["validation_ood_scores"]
    assert np.mean(np.asarray(scores) > calibration.ood_threshold) <= 0.02
    path = save_calibration(calibration, tmp_path / "models" / "uncertainty_calibration.json")
    again = load_calibration(path)
    assert again.factors == pytest.approx(calibration.factors) and again.ood_threshold == pytest.approx(
        calibration.ood_threshold)
    # a far-off input (reconstruction error ten times the validation median) is flagged
    far = {"uncertainty": calibration.ood_reference["uncertainty"],
           "reconstruction": 10 * calibration.ood_reference["reconstruction"]}
    assert ood_score(far, calibration.ood_reference) > calibration.ood_threshold
    bad = tmp_path / "bad.json"
    bad.write_text('{"distribution": "laplace"}')
    with pytest.raises(InputError, match="bad.json"):
        load_calibration(bad)


def test_subject_exponent_is_how_a_subjects_error_grows_with_its_reconstruction_error():
    rng = np.random.default_rng(3)
    recon = rng.lognormal(np.log(0.012), 0.3, 60)
    sigma = rng.uniform(0.035, 0.04, 60)  # the voxel head barely tells subjects apart
    mae = 0.7 * sigma * (recon / 0.012) ** 0.6 * rng.lognormal(0.0, 0.05, 60)
    assert fit_subject_exponent(mae, sigma, recon, 0.012) == pytest.approx(0.6, abs=0.1)
    # a radiograph reproduced worse is never given a narrower map; too few subjects fit nothing
    assert fit_subject_exponent(sigma * (recon / 0.012) ** -0.5, sigma, recon, 0.012) == 0.0
    assert fit_subject_exponent(mae[:2], sigma[:2], recon[:2], 0.012) == 0.0
    assert fit_subject_exponent(mae, sigma, np.full(60, 0.012), 0.012) == 0.0
    assert fit_subject_exponent(sigma * (recon / 0.012) ** 9, sigma, recon, 0.012) == 2.0  # capped


def _harder_when_reproduced_worse(n_subjects: int, seed: int) -> SplitOutputs:
    """Subjects with the same predicted scale whose true error grows with the radiograph's reconstruction error."""
    g = torch.Generator().manual_seed(seed)
    out = SplitOutputs([], [], [], [], [], [])
    for i in range(n_subjects):
        recon_error = float(torch.empty(1).log_normal_(math.log(0.012), 0.4, generator=g))
        sigma = torch.full((6, 6, 6), 0.04)
        pred = torch.rand(6, 6, 6, generator=g)
        scale = sigma * (recon_error / 0.012)
        out.subjects.append(f"S{i}")
        out.predictions.append(pred)
        out.sigmas.append(sigma)
        out.truths.append(pred + torch.distributions.Laplace(0.0, 1.0).sample((6, 6, 6)) * scale)
        x = torch.rand(8, 8, generator=g)
        out.xrays.append(x)
        out.reconstructions.append(x + recon_error * torch.sign(torch.rand(8, 8, generator=g) - 0.5))
    return out


def test_the_subject_factor_ranks_subjects_the_head_cannot_tell_apart_and_keeps_coverage(tmp_path):
    """The head's scale is the same for every subject; the reconstruction error says who is hard (issue 16's
    Spearman of mean uncertainty with MAE), and the conformal factors fitted after it still cover new subjects."""
    calibration = fit_calibration(_harder_when_reproduced_worse(30, 0), distribution="laplace")
    assert calibration.subject_exponent == pytest.approx(1.0, abs=0.15)
    assert calibration.fitted_on["subject_factor"].endswith(f"** {calibration.subject_exponent:.3f}")
    new = _harder_when_reproduced_worse(40, 1)
    half, mae, covered = [], [], []
    for p, s, t, x, r in zip(new.predictions, new.sigmas, new.truths, new.xrays, new.reconstructions):
        h = calibration.half_width(torch.log(s), recon_error=reconstruction_error(x, r))
        half.append(float(h.mean()))
        mae.append(float((t - p).abs().mean()))
        covered.append(float(((t - p).abs() <= h).float().mean()))
    assert spearman(half, mae) > 0.8
    assert np.mean(covered) == pytest.approx(0.9, abs=0.03)
    # without a recon error (or with a calibration that has no exponent) the factor is 1
    assert calibration.subject_factor(None) == 1.0 and UncertaintyCalibration(factors={}).subject_factor(0.5) == 1.0
    again = load_calibration(save_calibration(calibration, tmp_path / "c.json"))
    assert again.subject_exponent == pytest.approx(calibration.subject_exponent)
    assert again.subject_reference == pytest.approx(calibration.subject_reference)
    # a calibration file written before the subject factor loads with none
    old = json.loads((tmp_path / "c.json").read_text())
    del old["subject_exponent"], old["subject_reference"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_calibration(tmp_path / "old.json").subject_factor(0.05) == 1.0


@pytest.mark.slow
def test_calibrate_command_fits_on_validation_and_refuses_the_test_split(tiny_cohort, tmp_path):
    from xray2mri.pipeline import cli

    bundle = make_tiny_bundle(tmp_path / "bundle", whole=False)
    (bundle / CALIBRATION_FILE).unlink()
    args = ["calibrate", "--bundle", str(bundle), "--datalist", str(tiny_cohort / "datalist.json"),
            "--base-dir", str(tiny_cohort)]
    assert cli.main([*args, "--split", "test"]) == 1 and not (bundle / CALIBRATION_FILE).exists()
    assert cli.main(args) == 0
    calibration = load_calibration(bundle / CALIBRATION_FILE)
    validation = json.loads((tiny_cohort / "datalist.json").read_text())["validation"]
    assert calibration.fitted_on["split"] == "validation"
    assert calibration.fitted_on["subjects"] == len(validation)
    assert math.isfinite(calibration.ood_threshold)
    # a bundle without the head is refused with a message that says so
    from xray2mri.pipeline.training.engine import network_from_bundle

    plain = tmp_path / "plain.pt"
    torch.save(network_from_bundle(bundle, uncertainty=False).state_dict(), plain)
    with pytest.raises(ValueError, match="no uncertainty head"):
        calibrate_bundle(bundle, tiny_cohort / "datalist.json", tiny_cohort, weights=plain,
                         overrides={"uncertainty": False})


@pytest.mark.slow
def test_export_carries_the_calibration_and_verify_catches_a_changed_one(tmp_path):
    from xray2mri.pipeline.serving.export import export_bundle

    bundle = make_tiny_bundle(tmp_path / "knee_xray2mri")
    calibration = UncertaintyCalibration(factors={"80": 0.7, "90": 1.1, "95": 1.6}, ood_threshold=2.0,
                                         ood_reference={"uncertainty": 0.1, "reconstruction": 0.1})
    save_calibration(calibration, bundle / CALIBRATION_FILE)
    zip_path = export_bundle(bundle, tmp_path / "dist")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "unpacked")
    unpacked = tmp_path / "unpacked" / "knee_xray2mri"
    assert load_calibration(unpacked / CALIBRATION_FILE).factors == pytest.approx(calibration.factors)
    assert CALIBRATION_FILE in verify_bundle(unpacked)
    path = unpacked / CALIBRATION_FILE
    path.write_text(path.read_text().replace('"90": 1.1', '"90": 0.5'))
    with pytest.raises(BundleIntegrityError, match="uncertainty_calibration.json"):
        verify_bundle(unpacked)


# ----------------------------------------------------------------------------------------- report


def _write_nifti(path: Path, arr: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr.astype(np.float32), np.eye(4)), str(path))


def test_report_section_names_coverage_width_and_spearman(tmp_path):
    """Predictions whose error is Laplace(0, sigma) with k from the same law: coverage ~ nominal; errors follow sigma."""
    rng = np.random.default_rng(1)
    calibration = UncertaintyCalibration(factors={"80": -math.log(0.2), "90": -math.log(0.1), "95": -math.log(0.05)})
    preds = tmp_path / "predictions"
    preds.mkdir()
    cases = []
    for i in range(12):
        truth = rng.uniform(0.2, 0.8, (16, 16, 16))
        sigma = np.full(truth.shape, 0.005 * (i + 1))  # subjects differ in scale, so MAE follows uncertainty
        pred = truth + rng.laplace(0.0, sigma)
        _write_nifti(preds / f"S{i}_mri_pred.nii.gz", pred)
        _write_nifti(preds / f"S{i}{SIGMA_SUFFIX}", sigma)
        cases.append(Case(subject=f"S{i}", xray=np.zeros((8, 8)), mri=truth))
    entries, makers, text = uncertainty_section(cases, {"model": preds}, calibration, None, (2.5, 2.5, 2.5), "synthetic")
    assert set(SUMMARY_NAMES) <= set(entries)
    for level in ("80", "90", "95"):
        assert entries[f"uncertainty_coverage_{level}"] == pytest.approx(int(level) / 100, abs=0.02)
    assert entries["uncertainty_error_spearman"] > 0.9
    assert entries["uncertainty_width_90"] == pytest.approx(2 * -math.log(0.1) * 0.005 * 6.5, rel=0.01)
    # each coverage comes with its interval over subjects, which holds the mean; so does the Spearman correlation
    for level in ("80", "90", "95"):
        lo, hi = entries["uncertainty"]["coverage_ci"][level]
        assert lo < entries[f"uncertainty_coverage_{level}"] < hi and hi - lo < 0.05
    lo, hi = entries["uncertainty"]["spearman_ci"]
    assert lo <= entries["uncertainty_error_spearman"] <= hi and lo > 0.5
    assert "Uncertainty map" in text and "95 % BCa bootstrap interval over the test subjects" in text
    for title, (rel, make) in makers.items():
        out = tmp_path / rel
        out.parent.mkdir(exist_ok=True)
        make(out)
        assert out.stat().st_size > 1000, title
    # several models with scales and none named: no section (a calibration fits one model)
    assert uncertainty_section(cases, {"a": preds, "b": preds}, calibration, None, (2.5,) * 3, "synthetic")[0] == {}


def test_report_applies_the_subject_factor_from_the_reconstruction_the_evaluation_wrote(tmp_path):
    """About the same scale everywhere, errors growing with the radiograph's reconstruction error: the report ranks
    subjects (and covers them) only through the calibration's subject factor, as served predictions are."""
    rng = np.random.default_rng(2)
    preds = tmp_path / "predictions"
    preds.mkdir()
    cases = []
    for i in range(12):
        truth = rng.uniform(0.2, 0.8, (16, 16, 16))
        recon_error = 0.006 * (i + 1)
        pred = truth + rng.laplace(0.0, 0.04 * recon_error / 0.012, truth.shape)
        xray = rng.uniform(0.0, 1.0, (8, 8))
        _write_nifti(preds / f"S{i}_mri_pred.nii.gz", pred)
        _write_nifti(preds / f"S{i}{SIGMA_SUFFIX}", np.full(truth.shape, rng.uniform(0.039, 0.041)))
        _write_nifti(preds / f"S{i}_xray_recon.nii.gz", xray + recon_error)
        cases.append(Case(subject=f"S{i}", xray=xray, mri=truth))
    factors = {"80": -math.log(0.2), "90": -math.log(0.1), "95": -math.log(0.05)}
    flat = uncertainty_section(cases, {"m": preds}, UncertaintyCalibration(factors=factors), None, (2.5,) * 3, "s")[0]
    scaled = uncertainty_section(cases, {"m": preds}, UncertaintyCalibration(
        factors=factors, subject_exponent=1.0, subject_reference=0.012), None, (2.5,) * 3, "s")[0]
    assert abs(flat["uncertainty_error_spearman"]) < 0.7  # the maps barely differ: no real ranking
    assert scaled["uncertainty_error_spearman"] > 0.95
    assert scaled["uncertainty_coverage_90"] == pytest.approx(0.9, abs=0.02)
    assert flat["uncertainty_coverage_90"] < 0.85  # the hard half of the subjects is under-covered without it
    assert scaled["uncertainty"]["subject_factor"].endswith("/ 0.01200) ** 1.000")


def test_spearman_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)  # scipy.stats.spearmanr
    assert math.isnan(spearman([1, 2], [1, 2]))


# ---------------------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("unc") / "bundle", whole=False)


def _predict(*args: str) -> int:
    from xray2mri.pipeline import cli

    return cli.main(["predict", *args])


def test_the_map_file_is_16_bit_synthetic_and_within_its_quantisation_step(tmp_path):
    """The one writer of the map (predict, the inference bundle and MONAI Label all use it)."""
    import nibabel as nib

    from xray2mri.pipeline.serving.uncertainty import MAP_DTYPE, write_uncertainty_map

    half_width = np.random.default_rng(0).gamma(2.0, 0.05, (6, 7, 8)).astype(np.float32)
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    img = nib.load(write_uncertainty_map(half_width, affine, tmp_path / "k_uncertainty.nii.gz"))
    assert img.get_data_dtype() == np.dtype(MAP_DTYPE)
    assert img.header["descrip"].tobytes().decode().startswith("SYNTHETIC")
    step = float(np.ptp(half_width)) / np.iinfo(MAP_DTYPE).max
    np.testing.assert_allclose(np.asarray(img.dataobj), half_width, atol=step / 2 + 1e-7)
    np.testing.assert_allclose(img.affine, affine)


def test_predict_writes_the_map_with_the_volume_and_no_uncertainty_turns_it_off(tiny_bundle, tmp_path):
    import nibabel as nib
    from bundle_factory import write_dx
    from PIL import Image

    dcm = write_dx(tmp_path / "in" / "knee01.dcm")
    assert _predict("--bundle", str(tiny_bundle), "--input", str(dcm), "--output", str(tmp_path / "with")) == 0
    volume = nib.load(tmp_path / "with" / "knee01_mri_synthetic.nii.gz")
    umap = nib.load(tmp_path / "with" / "knee01_uncertainty.nii.gz")
    assert umap.shape == volume.shape and np.allclose(umap.affine, volume.affine)
    descrip = umap.header["descrip"].tobytes().decode()
    assert descrip.startswith("SYNTHETIC") and "90% half-width" in descrip
    values = np.asarray(umap.dataobj)
    assert np.all(values > 0) and np.all(np.isfinite(values))
    sidecar = json.loads((tmp_path / "with" / "knee01_mri_synthetic.json").read_text())
    assert {"ood_score", "ood_threshold", "ood_flag"} <= set(sidecar) and sidecar["ood_flag"] is False
    assert sidecar["uncertainty_level"] == 0.9 and "half-width" in sidecar["uncertainty_map"]
    with_rows = Image.open(tmp_path / "with" / "knee01_preview.png").size

    assert _predict("--bundle", str(tiny_bundle), "--input", str(dcm), "--output", str(tmp_path / "without"),
                    "--no-uncertainty") == 0
    assert not (tmp_path / "without" / "knee01_uncertainty.nii.gz").exists()
    plain = json.loads((tmp_path / "without" / "knee01_mri_synthetic.json").read_text())
    assert "ood_score" not in plain
    # the same volume either way; the preview loses its uncertainty row
    np.testing.assert_allclose(np.asarray(nib.load(tmp_path / "without" / "knee01_mri_synthetic.nii.gz").dataobj),
                               np.asarray(volume.dataobj), atol=1e-6)
    assert Image.open(tmp_path / "without" / "knee01_preview.png").size[1] < with_rows[1]


def test_a_served_map_carries_the_subject_factor_of_its_radiograph(tiny_bundle, tmp_path):
    """predict (and MONAI Label, inference.json: the same ``calibrated_map``) scale the map by the radiograph's
    subject factor and record it: a reference half the input's reconstruction error, exponent 1, doubles the map."""
    import shutil

    from bundle_factory import write_dx

    from xray2mri.pipeline.serving.predict import Predictor

    dcm = write_dx(tmp_path / "in" / "knee01.dcm")
    plain = Predictor.from_bundle(tiny_bundle).predict(dcm)
    assert plain.ood["uncertainty_subject_factor"] == 1.0  # the tiny bundle's calibration has no exponent
    error = plain.ood["ood_components"]["reconstruction"]
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    fitted = load_calibration(bundle / CALIBRATION_FILE)
    fitted.subject_exponent, fitted.subject_reference = 1.0, error / 2
    save_calibration(fitted, bundle / CALIBRATION_FILE)
    scaled = Predictor.from_bundle(bundle).predict(dcm)
    assert scaled.ood["uncertainty_subject_factor"] == pytest.approx(2.0, rel=1e-3)
    np.testing.assert_allclose(scaled.uncertainty, 2 * plain.uncertainty, rtol=1e-4)
    np.testing.assert_allclose(scaled.volume, plain.volume)  # the volume is untouched
    assert _predict("--bundle", str(bundle), "--input", str(dcm), "--output", str(tmp_path / "out")) == 0
    sidecar = json.loads((tmp_path / "out" / "knee01_mri_synthetic.json").read_text())
    assert sidecar["uncertainty_subject_factor"] == pytest.approx(2.0, rel=1e-3)
    assert sidecar["uncertainty_subject_exponent"] == 1.0


def test_an_input_above_the_fitted_threshold_is_flagged_and_still_predicted(tiny_bundle, tmp_path, capsys):
    """The threshold is fitted on in-distribution inputs; a radiograph scoring above it is written and warned about."""
    from bundle_factory import write_dx

    from xray2mri.pipeline.serving.predict import Predictor
    from xray2mri.pipeline.serving.uncertainty import OOD_WARNING, quantile_threshold

    normal = [write_dx(tmp_path / "cal" / f"k{i}.dcm", marker_cols=slice(4 + 8 * i, 12 + 8 * i)) for i in range(4)]
    base = Predictor.from_bundle(tiny_bundle)
    components = [base.predict(p).ood["ood_components"] for p in normal]
    reference = {k: float(np.median([c[k] for c in components])) for k in components[0]}
    scores = [ood_score(c, reference) for c in components]
    bundle = tmp_path / "bundle"
    import shutil

    shutil.copytree(tiny_bundle, bundle)
    fitted = UncertaintyCalibration(factors={"80": 1.0, "90": 1.5, "95": 2.0}, ood_reference=reference,
                                    ood_threshold=quantile_threshold(scores, 0.99))
    save_calibration(fitted, bundle / CALIBRATION_FILE)
    for p in normal:  # the inputs it was fitted on are not flagged
        assert Predictor.from_bundle(bundle).predict(p).ood["ood_flag"] is False
    # a far-off input: its radiograph reconstruction error is 10x the reference
    far = {**reference, "reconstruction": 10 * reference["reconstruction"]}
    far_ref = {k: v / (10 if k == "reconstruction" else 1) for k, v in reference.items()}
    save_calibration(UncertaintyCalibration(factors=fitted.factors, ood_reference=far_ref,
                                            ood_threshold=fitted.ood_threshold), bundle / CALIBRATION_FILE)
    assert ood_score(far, reference) > fitted.ood_threshold
    capsys.readouterr()
    assert _predict("--bundle", str(bundle), "--input", str(normal[0]), "--output", str(tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert OOD_WARNING in err
    sidecar = json.loads((tmp_path / "out" / "k0_mri_synthetic.json").read_text())
    assert sidecar["ood_flag"] is True and sidecar["ood_score"] > sidecar["ood_threshold"]
    assert any(OOD_WARNING in w for w in sidecar["warnings"])
    assert (tmp_path / "out" / "k0_uncertainty.nii.gz").exists()  # outputs are still written


def test_subject_scale_keeps_the_latents_running_mean_and_variance_at_batch_size_one():
    """Standardising by statistics gathered one sample at a time: Welford's exact mean and variance, unit
    variance before the second sample, and eval mode leaves them alone."""
    z = torch.randn(200, 6, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 10, 100, 0.1, 3, 50]) + 7
    term = SubjectLogScale(6, momentum=1e-9)
    term(z[:1])
    assert torch.equal(term.running_mean, z[0]) and int(term.samples_seen) == 1
    for i in range(1, 200):
        term(z[i : i + 1])
    assert torch.allclose(term.running_mean, z.mean(0), rtol=1e-4)
    assert torch.allclose(term.running_var, z.var(0, unbiased=False), rtol=1e-3)
    term.eval()
    before = term.running_mean.clone()
    term(z[:5])
    assert torch.equal(term.running_mean, before) and int(term.samples_seen) == 200
    assert torch.equal(SubjectLogScale(6)(z[:3]), torch.zeros(3, 1, 1, 1, 1))  # zero-initialised: no shift yet


def test_subject_scale_learns_which_subjects_are_hard():
    """Subjects whose error spread follows their latent: the per-subject term, trained with the NLL at batch
    size 1, ranks them by it (the voxel branch, seeing the same features everywhere, cannot)."""
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(60, 16, generator=g) * 40 + 5  # large, uncentred, as the real latent is
    spread = torch.exp(0.5 * (latents[:, 2] - 5) / 40 - 0.6 * (latents[:, 7] - 5) / 40) * 0.02
    term = SubjectLogScale(16, momentum=0.02)
    nll = HeteroscedasticNLLLoss("gaussian")
    opt = torch.optim.Adam(term.parameters(), lr=0.02)
    for _ in range(15):
        for i in torch.randperm(60, generator=g).tolist():
            err = torch.randn(1, 1, 4, 4, 4, generator=g) * spread[i]
            opt.zero_grad()
            nll(torch.zeros_like(err), term(latents[i : i + 1]).expand_as(err) + math.log(0.02), err).backward()
            opt.step()
    term.eval()
    with torch.no_grad():
        predicted = term(latents).flatten()
    rank = lambda v: torch.argsort(torch.argsort(v)).float()  # noqa: E731
    assert torch.corrcoef(torch.stack([rank(predicted), rank(spread)]))[0, 1] > 0.9
