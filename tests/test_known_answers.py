"""Known answers, computed by hand or by an independent formula (issue 27): entropy at a non-trivial distribution,
the reference features and FID/KID, the generator's min-SNR weighting and learning-rate schedule, the learner's
warmup-stable-decay schedule with a final factor, and the pixel sampler's DDIM step — the known-answer partner of
the tests that compare one run of the sampler with another (batch independence, resume, repair)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from diffusers import DDIMScheduler, DDPMScheduler

from deliberate.config import GeneratorConfig, load_config
from deliberate.generation.guidance import EntropyCriterion, entropy
from deliberate.generation.pixel import PixelDiffusion, lr_factor, train_loop
from deliberate.learning.schedule import WarmupStableDecay


# ---------------------------------------------------------------------------------------------- entropy
def test_entropy_at_a_non_trivial_distribution():
    """p = (1/2, 1/4, 1/4) (logits shifted per sample, which must not matter): H = 1.5·ln 2 = 1.0397 nats. The same
    logits doubled (a temperature of 1/2) give p = (2/3, 1/6, 1/6): H = −(2/3)·ln(2/3) − (1/3)·ln(1/6) = 0.8676.
    Catches log base 2, a temperature, a softmax over the batch, and a missing minus sign."""
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]])) + torch.tensor([[3.0], [-1.0]])
    torch.testing.assert_close(entropy(logits), torch.full((2,), 1.5 * math.log(2)), rtol=0, atol=1e-6)
    h2 = -(2 / 3) * math.log(2 / 3) - 2 * (1 / 6) * math.log(1 / 6)  # 0.8676 nats
    torch.testing.assert_close(entropy(2 * logits), torch.full((2,), h2), rtol=0, atol=1e-6)
    assert abs(h2 - 0.8675632284814612) < 1e-12
    crit = EntropyCriterion(nn.Identity())  # the criterion is the entropy of its classifier's logits, per sample
    torch.testing.assert_close(crit(logits[:1], torch.tensor([0])), torch.tensor([1.5 * math.log(2)]), rtol=0,
                               atol=1e-6)
    assert entropy(logits.to(torch.bfloat16)).dtype == torch.float32  # half-precision logits: float32 entropy


# ---------------------------------------------------------------------------------- features, FID and KID
def test_reference_features_are_the_inputs_of_the_final_linear_layer():
    """The FID/KID features of cnn_small are the penultimate activations: the final Linear applied to them gives the
    eval model's logits exactly (eval mode: BatchNorm statistics, no dropout)."""
    from deliberate.evaluation import ReferenceFeatures
    from deliberate.learning import Learner
    from deliberate.learning.learner import to_float

    ref = Learner(load_config(None, []).learner, 10, 1, total_iterations=1, seed=0)
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    feats = ReferenceFeatures(ref, (1, 28, 28))
    model = ref.eval_model
    head = model[1][-1]
    assert isinstance(head, nn.Linear) and feats.num_features == head.in_features
    ref.eval_model.train()  # ReferenceFeatures must switch to eval mode itself (and restore the mode)
    f = feats(images)
    assert ref.eval_model.training
    with torch.no_grad():
        logits = model.eval()(to_float(images))
    torch.testing.assert_close(head(f), logits, rtol=1e-5, atol=1e-5)


def _pixel_reference():
    """A "reference classifier" whose features are the two pixels of a 1×1×2 image in [-1, 1] (the final Linear is
    dropped by ReferenceFeatures)."""
    model = nn.Sequential(nn.Identity(), nn.Sequential(nn.Flatten(), nn.Linear(2, 3)))
    return SimpleNamespace(eval_model=model, device=torch.device("cpu"))


def _kid_by_hand(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² with the cubic polynomial kernel k(a, b) = (a·b/d + 1)³ (Bińkowski et al. 2018)."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - kxx.diag().sum() + kyy.sum() - kyy.diag().sum()) / (m * (m - 1)) - 2 * kxy.mean())


def test_fid_and_kid_of_a_shifted_set():
    """Features shifted by (0.4, 0.8) (51 and 102 uint8 levels) with the covariance unchanged: FID = ‖Δμ‖² = 0.8
    exactly; KID (one subset holding every sample, so no subset draws matter) equals the unbiased MMD² computed here;
    a set against itself has FID 0. Catches a swapped real/fake, a wrong feature layer and KID not ×1000."""
    from deliberate.evaluation import fid_kid

    g = torch.Generator().manual_seed(0)
    real = torch.randint(20, 150, (30, 1, 1, 2), dtype=torch.uint8, generator=g)
    fake = real + torch.tensor([51, 102], dtype=torch.uint8).view(1, 1, 1, 2)
    out = fid_kid(_pixel_reference(), real, fake, batch=7, kid_subset=1000)
    assert out["features"] == 2 and out["real"] == out["fake"] == 30
    assert out["fid"] == pytest.approx(0.8, abs=2e-3)
    fr, ff = (t.double().div(127.5).sub(1).flatten(1) for t in (real, fake))
    assert out["kid_x1000"] == pytest.approx(1000 * _kid_by_hand(fr, ff), rel=1e-3, abs=2e-3)
    assert out["kid_x1000_std"] == pytest.approx(0.0, abs=1e-3)
    same = fid_kid(_pixel_reference(), real, real, kid_subset=1000)
    assert same["fid"] == pytest.approx(0.0, abs=2e-3)
    assert same["kid_x1000"] == pytest.approx(1000 * _kid_by_hand(fr, fr), rel=1e-3, abs=2e-3)


# ------------------------------------------------------------------- the generator: min-SNR and its LR
class _RecordingUNet(nn.Module):
    """Predicts the constant p (one parameter, 0 at first) and records what each training step feeds it."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def forward(self, x, t, class_labels=None):
        self.seen.append((x.detach().clone(), t.clone(), float(self.p.detach())))
        return SimpleNamespace(sample=x * 0 + self.p)


def _first_step(cfg: GeneratorConfig):
    """Train ``_RecordingUNet`` on all-black images (x0 = −1 everywhere): the noise of each training sample is then
    recovered exactly from x_t, and the first step's loss can be recomputed by hand."""
    unet = _RecordingUNet()
    images = torch.zeros(32, 1, 4, 4, dtype=torch.uint8)
    logs: list[dict] = []
    losses = train_loop(unet, images, torch.arange(32) % 10, cfg, 10, False, torch.device("cpu"), progress=False,
                        log=logs.append)
    sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule)
    xt, t, _ = unet.seen[0]
    a = sched.alphas_cumprod[t].double().view(-1, 1, 1, 1)
    noise = (xt.double() + a.sqrt()) / (1 - a).sqrt()  # x_t = sqrt(a)·(−1) + sqrt(1−a)·ε
    return unet, losses, logs, a.flatten(), noise


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("gamma", [5.0, 1.0])
def test_min_snr_weighting_is_hang_et_al(prediction, gamma):
    """Loss of the first step (prediction 0): mean over the batch of w_t·mean((0 − target)²) with SNR = ᾱ/(1−ᾱ) and
    w = min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR + 1) for v (target v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0). Catches the weight
    without its denominator, γ ignored, the ε weight used for v, and uniform weighting."""
    cfg = GeneratorConfig(train_steps=1, batch_size=64, bf16=False, loss_weight="min_snr", min_snr_gamma=gamma,
                          prediction=prediction)
    _, losses, _, a, noise = _first_step(cfg)
    snr = a / (1 - a)
    assert (snr > gamma).any() and (snr < gamma).any()  # both sides of the cap are in the batch
    w = snr.clamp(max=gamma) / (snr if prediction == "epsilon" else snr + 1)
    want = (w * _target(prediction, a, noise).pow(2).flatten(1).mean(1)).mean().item()
    assert losses[0] == pytest.approx(want, rel=1e-4)
    uniform = GeneratorConfig(train_steps=1, batch_size=64, bf16=False, prediction=prediction)
    _, losses_u, _, a_u, noise_u = _first_step(uniform)
    assert losses_u[0] == pytest.approx(_target(prediction, a_u, noise_u).pow(2).flatten(1).mean(1).mean().item(),
                                        rel=1e-4)


def _target(prediction: str, a: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the model should predict for x0 = −1: ε, or v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0 = sqrt(ᾱ)·ε + sqrt(1−ᾱ)."""
    if prediction == "epsilon":
        return noise
    a = a.view(-1, 1, 1, 1)
    return a.sqrt() * noise + (1 - a).sqrt()


def test_generator_lr_schedule_by_hand():
    """lr(s) = lr·(0.1 + 0.9·min(1, (s+1)/W)·½(1 + cos(π·min(1, s/T)))), W = max(1, T // 20): at T = 100 (W = 5)
    0.28 at s = 0, 1 at the end of warm-up up to the cosine, 0.55 half-way, 0.1 at the end. In training, the first
    Adam step (|Δp| = lr·f(0), the first update of a fresh Adam is ±lr) and the logged lr (after the scheduler's
    step: lr·f(1)) follow it."""
    f = lr_factor(SimpleNamespace(train_steps=100))
    assert f(0) == pytest.approx(0.1 + 0.9 * (1 / 5) * 0.5 * (1 + math.cos(0)), abs=1e-12) == pytest.approx(0.28)
    assert f(4) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.04)), abs=1e-12)
    assert f(50) == pytest.approx(0.55, abs=1e-12) and f(100) == pytest.approx(0.1, abs=1e-12)
    assert f(200) == pytest.approx(0.1, abs=1e-12)
    cfg = GeneratorConfig(train_steps=40, batch_size=8, bf16=False, lr=0.01)  # W = 2
    unet, _, logs, _, _ = _first_step(cfg)
    f40 = lr_factor(cfg)
    assert f40(0) == pytest.approx(0.55) and abs(unet.seen[1][2]) == pytest.approx(0.01 * 0.55, rel=1e-5)
    assert logs[0]["step"] == 0 and logs[0]["lr"] == pytest.approx(0.01 * f40(1), rel=1e-12)
    assert f40(1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 40)), abs=1e-12)


# -------------------------------------------------------------------------- the learner's WSD schedule
def test_warmup_stable_decay_with_a_final_factor_by_hand():
    """total 10, warm-up 20 % (2), decay 40 % (from 6, span 4), final factor 0.1: 0.5, 1, 1, 1, 1, 1, then
    0.1 + 0.9·½(1 + cos(π·k/4)) for k = 0..3; stable exactly at 2..5; the learner's optimiser takes these LRs."""
    s = WarmupStableDecay(10, 0.2, 0.4, final_factor=0.1)
    decay = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert [s.factor(i) for i in range(10)] == pytest.approx([0.5, 1, 1, 1, 1, 1, *decay], abs=1e-12)
    assert decay[2] == pytest.approx(0.55) and s.factor(10) == pytest.approx(0.1) and s.factor(99) == pytest.approx(0.1)
    assert [i for i in range(10) if s.is_stable(i)] == [2, 3, 4, 5]
    assert WarmupStableDecay(10, 0.2, 0.4).factor(10) == 0.0  # without a final factor the cosine ends at 0

    from deliberate.learning import Learner

    cfg = load_config(None, ["learner.model=tiny_cnn", "learner.warmup_frac=0.2", "learner.decay_frac=0.4",
                             "learner.lr=0.01", "learner.batch_size=4", "learner.bf16=false"]).learner
    learner = Learner(cfg, 10, 1, total_iterations=10)
    x = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    lrs = []
    for _ in range(10):
        learner.step(x, torch.arange(4))
        lrs.append(learner.opt.param_groups[0]["lr"])
    plain = WarmupStableDecay(10, 0.2, 0.4)
    assert lrs == pytest.approx([0.01 * plain.factor(i) for i in range(10)], abs=1e-12)


# --------------------------------------------------------------------------- the DDIM step, by hand
class _AffineEps(nn.Module):
    """ε(x, t, y) = 0.5·x − 0.05·(y + 1): x̂0 leaves [-1, 1], and ε' (from the clipped x̂0) moves the result by up to
    12 levels against the model's ε."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(in_channels=1, sample_size=3)

    def forward(self, x, t, class_labels):
        return SimpleNamespace(sample=0.5 * x - 0.05 * (class_labels.to(x.dtype).view(-1, 1, 1, 1) + 1))


def test_pixel_sampler_is_the_ddim_formula_from_the_seed():
    """gen.sample(label, seed) = to_uint8 of deterministic DDIM (η = 0) from x_T = randn(seed), written out here
    from the formulas: timesteps 750, 500, 250, 0 (4 of 1000, "leading"), x̂0 = clip((x − sqrt(1−ᾱ_t)·ε)/sqrt(ᾱ_t)),
    ε' = (x − sqrt(ᾱ_t)·x̂0)/sqrt(1−ᾱ_t), x ← sqrt(ᾱ_prev)·x̂0 + sqrt(1−ᾱ_prev)·ε' (ᾱ_prev = 1 after t = 0). The known
    answer behind the run-against-run checks (batch independence, resume, repair), which a defect common to both
    runs would pass. Catches the model's ε used instead of ε' (the clipped-x̂0 rule), a seed mixed with another
    sample's, and the timesteps off by one."""
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                          set_alpha_to_one=True, prediction_type="epsilon")
    gen = PixelDiffusion(_AffineEps(), sched, 10, bf16=False)
    labels, seeds = torch.tensor([3, 8, 0]), [5, 41, 977]
    out = gen.sample(labels, seeds, steps=4, batch_size=8, solver="ddim").images
    acp = sched.alphas_cumprod.double()
    clipped = 0
    for j, (y, s) in enumerate(zip(labels.tolist(), seeds)):
        x = torch.randn((1, 3, 3), generator=torch.Generator().manual_seed(s)).double()
        for t in (750, 500, 250, 0):
            a, a_prev = acp[t], (acp[t - 250] if t >= 250 else torch.tensor(1.0, dtype=torch.float64))
            eps = 0.5 * x - 0.05 * (y + 1)
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            clipped += int((x0.abs() > 1).sum())
            x0 = x0.clamp(-1, 1)
            eps2 = (x - a.sqrt() * x0) / (1 - a).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps2
        want = ((x.clamp(-1, 1) + 1) * 127.5).round()
        diff = (out[j].double() - want).abs()
        assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.8, (j, out[j], want)  # float32 vs float64 rounding
    assert clipped > 0  # the clip acted
