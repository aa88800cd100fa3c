"""What runs by default, and the wiring of every guidance and sampling option (issue 27).

The defaults are ``sampling.solver=dpmpp_2m`` and ``guidance.scale=paper``. Here: the paper-scale step on a case
small enough to check by hand, entropy rising under the default sampler and scale (and by how much, against the
exact per-class Gaussian denoiser of test_sampler.py), ``build_guide`` carrying every option of the config, the
pixel backend's classifier-free combination against Eq. 5 with a stub model, and the x̂0 clip of every solver
exercised by a model whose x̂0 leaves [-1, 1].
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from diffusers import DDIMScheduler

from deliberate.config import load_config
from deliberate.generation import ddim as ddim_module
from deliberate.generation.ddim import guided_ddim
from deliberate.generation.guidance import Guide, build_guide
from deliberate.generation.pixel import PixelDiffusion

from conftest import tiny_config
from test_sampler import GaussianDenoiser


def test_the_defaults_are_the_documented_ones():
    """What the tests below call "the defaults": if a default moves, these tests must be revisited."""
    d = load_config(None, [])
    assert (d.sampling.solver, d.guidance.scale, d.guidance.grad, d.guidance.criterion) == \
        ("dpmpp_2m", "paper", "unet", "entropy")
    assert (d.guidance.every, tuple(d.guidance.window), d.guidance.clip_x0) == (1, (0.0, 1.0), False)


# ------------------------------------------------------------------------------- the paper step, by hand
class _Linear(nn.Module):
    """h(img) = ⟨w, img⟩ per sample: its gradient with respect to the image is w, whatever the image."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.tensor(w, dtype=torch.float64)

    def forward(self, img, labels=None):
        return (img.flatten(1) * self.w).sum(1)


def _capture_steps(monkeypatch, solver: str, sched: DDIMScheduler) -> list:
    """Record (ε, x_t) handed to the solver's step: for ddim, ``sched`` itself; otherwise the multistep class that
    :func:`~deliberate.generation.ddim.make_solver` instantiates."""
    seen = []
    if solver == "ddim":
        real = sched.step

        def step(eps, t, x, **kw):
            seen.append((eps.clone(), x.clone()))
            return real(eps, t, x, **kw)

        monkeypatch.setattr(sched, "step", step)
    else:
        base = ddim_module.SOLVERS[solver]

        class Recording(base):
            def step(self, eps, t, x, *a, **kw):
                seen.append((eps.clone(), x.clone()))
                return super().step(eps, t, x, *a, **kw)

        monkeypatch.setitem(ddim_module.SOLVERS, solver, Recording)
    return seen


@pytest.mark.parametrize("solver", ["dpmpp_2m", "ddim"])
@pytest.mark.parametrize("grad", ["unet", "x0"])
def test_paper_scale_step_is_omega_norm_x_times_unit_gradient(monkeypatch, solver, grad):
    """x_t ← x_t + ω·‖x_t‖·g/‖g‖ per sample, then the solver's step with ε unchanged. With ε independent of x_t and
    the criterion ⟨w, x̂0⟩, g ∝ w, so the guided x_t is known by hand: x = (3, 4), ‖x‖ = 5, w = (0, 2), ω = 0.1 →
    (3, 4.5); x = (6, 8), ‖x‖ = 10, w = (0, 2) → (6, 9). Catches a flipped sign (3, 3.5), a batch-wide norm instead
    of the per-sample one, g not normalised (w = 2 doubles the step), ‖x_t‖ left out, and ε changed as well."""
    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    seen = _capture_steps(monkeypatch, solver, sched)
    x = torch.tensor([[3.0, 4.0], [6.0, 8.0]], dtype=torch.float64).view(2, 1, 1, 2)
    eps = torch.tensor([0.25, -0.5], dtype=torch.float64).view(1, 1, 1, 2)
    guide = Guide(_Linear([0.0, 2.0]), omega=0.1, scale="paper", grad=grad, window=(0.0, 0.5))  # steps 0, 1 of 4
    _, st = guided_ddim(lambda x_, t_: eps.expand_as(x_) + 0 * x_, sched, x.clone(), 4, guide, solver=solver)
    assert st["guided_steps"] == 2 and len(seen) == 4
    eps0, x0 = seen[0]
    torch.testing.assert_close(x0.flatten(1), torch.tensor([[3.0, 4.5], [6.0, 9.0]], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert torch.equal(eps0, eps.expand(2, 1, 1, 2))  # the paper convention leaves ε alone
    # the second guided step: the same rule at the x_t y that the solver's first step made from the guided x_t
    solver_ = ddim_module.make_solver(DDIMScheduler(num_train_timesteps=1000, clip_sample=False), solver)
    solver_.set_timesteps(4)
    y = solver_.step(eps0, solver_.timesteps[0], x0).prev_sample.flatten(1)
    want = y + 0.1 * y.norm(dim=1, keepdim=True) * torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(seen[1][1].flatten(1), want, rtol=1e-6, atol=1e-9)  # solvers: float32 sigmas


# --------------------------------------------------------------- entropy under the default sampler and scale
@pytest.fixture(scope="module")
def exact_generator(splits, tmp_path_factory):
    """The pixel backend around the exact per-class Gaussian denoiser of real Fashion-MNIST (test_sampler.py): its
    samples are recognisable, so the guiding classifier's entropy starts well below its maximum (ln 10)."""
    cfg = tiny_config(tmp_path_factory.mktemp("exact"))
    sched = PixelDiffusion.create(cfg.generator, splits.num_classes).scheduler
    den = GaussianDenoiser(splits.gen_train.images, splits.gen_train.labels, splits.num_classes, sched.alphas_cumprod)
    return PixelDiffusion(den, sched, splits.num_classes, bf16=False)


def test_default_sampler_and_scale_raise_entropy_by_the_measured_amount(exact_generator, real_classifier):
    """The default job's guided step: DPM-Solver++ 2M, 10 steps, λ = 2, ``paper`` scale, built from the default
    config by ``build_guide``. Measured mean entropy (nats, 40 samples) under the guiding classifier: 1.23 plain,
    1.67 at the default ω = 0.01, 1.94 at the paper's ω = 0.05 (DDIM: 1.43 / 1.71 / 2.00). A flipped sign lowers
    it; the raw scale at ω = 0.01 or a step without ‖x_t‖ moves it by < 0.05."""
    d = load_config(None, [])
    labels, seeds = torch.arange(40) % 10, list(range(1000, 1040))
    kw = {"steps": d.sampling.steps, "cfg_scale": d.sampling.cfg_scale, "solver": d.sampling.solver,
          "batch_size": 40}
    assert (kw["steps"], kw["cfg_scale"], d.guidance.omega) == (10, 2.0, 0.01)
    score = {}
    with real_classifier.frozen() as clf:
        for omega in (0.0, d.guidance.omega, 0.05):
            out = exact_generator.sample(labels, seeds, guide=build_guide(clf, d.guidance, omega=omega), **kw)
            assert out.stats["guided_steps"] == (10 if omega else 0)
            score[omega] = out.score
    h = {w: s.mean().item() for w, s in score.items()}
    assert 1.0 < h[0.0] < 1.5, h  # recognisable plain samples
    assert 0.25 < h[0.01] - h[0.0] < 0.65, h  # the default's rise: +0.44 measured
    assert 0.5 < h[0.05] - h[0.0] < 1.0 and h[0.05] > h[0.01] + 0.1, h  # +0.71 measured, below ln 10
    assert (score[0.01] > score[0.0]).float().mean() >= 0.8, h  # per sample, not only on average


# -------------------------------------------------------------------------------------------- build_guide
def test_build_guide_honours_every_guidance_option():
    """Every key of ``guidance.*`` that shapes the step reaches the Guide (a dropped one keeps its dataclass
    default, which differs from the value set here), and the options act: the schedule guides exactly the
    chosen steps, the scale changes the step."""
    cfg = load_config(None, ["guidance.scale=normalized", "guidance.grad=x0", "guidance.every=3",
                             "guidance.window=[0.2,0.9]", "guidance.omega=0.3", "guidance.clip_x0=true",
                             "guidance.criterion=entropy_onlabel", "guidance.floor=0.25"])
    clf = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    g = build_guide(clf, cfg.guidance)
    assert (g.scale, g.grad, g.every, g.window, g.omega, g.clip_x0) == ("normalized", "x0", 3, (0.2, 0.9), 0.3, True)
    assert type(g.criterion).__name__ == "OnLabelEntropy" and g.criterion.floor == 0.25
    assert g.criterion.classifier is clf
    assert build_guide(clf, cfg.guidance, omega=0.07).omega == 0.07  # the method's ω wins (0 for unguided rounds)
    assert [i for i in range(10) if g.active(i, 10)] == [3, 6]  # i % 3 == 0 and 0.2 <= i/10 < 0.9
    capped = build_guide(clf, load_config(None, ["guidance.criterion=loss_capped", "guidance.cap=0.3"]).guidance)
    assert capped.criterion.cap == 0.3
    # each scale gives its own step: the same config with another scale moves the sample differently
    x = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    outs = {}
    for scale in ("raw", "normalized", "paper"):
        c = load_config(None, [f"guidance.scale={scale}", "guidance.omega=0.3"]).guidance
        sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
        outs[scale], _ = guided_ddim(lambda x_, t_: 0.1 * x_, sched, x.clone(), 4, build_guide(clf, c))
    assert not torch.allclose(outs["raw"], outs["normalized"]) and not torch.allclose(outs["raw"], outs["paper"])
    assert not torch.allclose(outs["normalized"], outs["paper"])


# ------------------------------------------------------------------------- classifier-free guidance, Eq. 5
class _StubUNet(nn.Module):
    """ε(x, t, c) = (c + 1)·x + t/1000: a different, known prediction for every class and for the null class."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(in_channels=1, sample_size=2)
        self.calls = []

    def forward(self, x, t, class_labels):
        self.calls.append(class_labels.clone())
        c = class_labels.to(x.dtype).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(c + 1) * x + float(t) / 1000)


@pytest.mark.parametrize("lam", [0.0, 1.0, 3.0])
def test_classifier_free_combination_is_eq5(lam):
    """ε = (1+λ)·ε(x, y) − λ·ε(x, ∅) (paper Eq. 5): λ = 0 is the conditional model alone (one call, no null class),
    λ = 1 is 2ε_c − ε_u (diffusers' guidance_scale = λ would give ε_c here, i.e. λ = 0). Catches the diffusers
    convention, swapped conditional/unconditional halves and a dropped (1+λ)."""
    num_classes = 10
    unet = _StubUNet()
    gen = PixelDiffusion(unet, DDIMScheduler(num_train_timesteps=1000), num_classes, bf16=False)
    labels = torch.tensor([0, 3, 7])
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(250)
    eps = gen.eps_fn(labels, lam)(x, t)
    cond = (labels.float() + 1).view(-1, 1, 1, 1) * x + 0.25
    uncond = (num_classes + 1) * x + 0.25  # the null class is index num_classes
    torch.testing.assert_close(eps, (1 + lam) * cond - lam * uncond, rtol=1e-6, atol=1e-6)
    if lam == 0:
        assert len(unet.calls) == 1 and torch.equal(unet.calls[0], labels)
    else:
        assert len(unet.calls) == 1 and torch.equal(unet.calls[0], torch.tensor([0, 3, 7, 10, 10, 10]))


# ------------------------------------------------------------------------------------------ the x̂0 clip
@pytest.mark.parametrize("solver", ["ddim", "dpmpp_2m", "unipc"])
def test_every_solver_clips_x0_that_leaves_the_image_range(solver):
    """A model whose x̂0 is a fixed image c with pixels at 3, −2.5, 0.5 and −0.2 (ε = (x_t − sqrt(ᾱ_t)·c)/sqrt(1−ᾱ_t)).
    Every solver integrates in data-prediction form and ends at σ = 0 on its x̂0, so the sample is exactly the clipped
    c: (1, −1, 0.5, −0.2) with the production scheduler (clip_sample=True), c itself without the clip. Catches
    ``thresholding`` off in make_solver (the multistep solvers end at 3 and −2.5) and the clip range ignored."""
    c = torch.tensor([3.0, -2.5, 0.5, -0.2]).view(1, 1, 2, 2)
    for clip, want in ((True, torch.tensor([1.0, -1.0, 0.5, -0.2])), (False, c.flatten())):
        sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=clip,
                              set_alpha_to_one=True)
        acp = sched.alphas_cumprod

        def eps_fn(x, t):
            a = acp[int(t)]
            return (x - a.sqrt() * c) / (1 - a).sqrt()

        x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(1))
        out, _ = guided_ddim(eps_fn, sched, x, 8, solver=solver)
        torch.testing.assert_close(out.flatten(1), want.expand(3, 4), rtol=0, atol=1e-4)
