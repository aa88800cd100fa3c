"""Label-aware criteria, the paper's step normalisation, multistep solvers, v-prediction and learner options:
each checked against an independent computation, so a flipped sign or a disabled gate fails."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from deliberate.config import load_config
from deliberate.generation.ddim import guided_ddim
from deliberate.generation.guidance import (CappedLoss, EntropyCriterion, Guide, OnLabelEntropy, ProjectedEntropy,
                                            build_guide, entropy)
from deliberate.generation.pixel import PixelDiffusion
from deliberate.learning.learner import Learner, augment, augment_params

torch.manual_seed(0)
LINEAR = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))  # a classifier of 1x4x4 images, 4 classes
X = torch.randn(64, 1, 4, 4)
Y = torch.randint(0, 4, (64,))


def grad_of(crit, x=X, y=Y):
    x = x.clone().requires_grad_(True)
    v = crit(x, y)
    (g,) = torch.autograd.grad(v.sum(), x)
    return v.detach(), g.flatten(1)


def entropy_grad(x=X):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(entropy(LINEAR(x)).sum(), x)
    return g.flatten(1)


def logpy_grad(x=X, y=Y):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(LINEAR(x).log_softmax(-1)[torch.arange(len(y)), y].sum(), x)
    return g.flatten(1)


def test_onlabel_entropy_gates_per_sample():
    v, g = grad_of(OnLabelEntropy(LINEAR, floor=0.3))
    p = LINEAR(X).softmax(-1).detach()
    on = (p.argmax(-1) == Y) & (p[torch.arange(64), Y] >= 0.3)
    assert 0 < on.sum() < 64  # both cases occur
    assert torch.allclose(v, entropy(LINEAR(X)).detach())  # the value is H for every sample
    assert torch.allclose(g[on], entropy_grad()[on], atol=1e-6)
    assert torch.all(g[~on] == 0)


def test_projected_entropy_never_lowers_the_intended_class():
    v, g = grad_of(ProjectedEntropy(LINEAR))
    gh, gy = entropy_grad(), logpy_grad()
    assert torch.allclose(v, entropy(LINEAR(X)).detach())
    conflict = (gh * gy).sum(1) < 0
    assert 0 < conflict.sum() < 64
    assert torch.all((g * gy).sum(1) > -1e-5)  # to first order, log f(y|x) does not fall
    assert torch.allclose(g[~conflict], gh[~conflict], atol=1e-6)  # no conflict: the entropy gradient itself
    c = -(gh * gy).sum(1) / gy.pow(2).sum(1)
    assert torch.allclose(g[conflict], (gh + c[:, None] * gy)[conflict], atol=1e-5)


def test_capped_loss_ascends_until_the_cap():
    crit = CappedLoss(LINEAR, cap=math.log(2))
    v, g = grad_of(crit)
    loss = -LINEAR(X).log_softmax(-1)[torch.arange(64), Y].detach()
    below = loss < math.log(2)
    assert 0 < below.sum() < 64
    assert torch.allclose(v, loss)
    assert torch.allclose(g[below], -logpy_grad()[below], atol=1e-6)
    assert torch.all(g[~below] == 0)


def test_build_guide_passes_floor_and_cap():
    cfg = load_config(None, ["guidance.criterion=entropy_onlabel", "guidance.floor=0.4"]).guidance
    assert build_guide(LINEAR, cfg).criterion.floor == 0.4
    cfg = load_config(None, ["guidance.criterion=loss_capped", "guidance.cap=0.2"]).guidance
    assert build_guide(LINEAR, cfg).criterion.cap == 0.2
    for bad in ("guidance.floor=1.0", "guidance.cap=0"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            load_config(None, [bad])


# --------------------------------------------------------------------------------------- paper step scale
def _scheduler():
    from deliberate.config import GeneratorConfig

    return PixelDiffusion.create(GeneratorConfig(block_out_channels=(8, 16)), 4, (1, 4, 4)).scheduler


def test_paper_scale_moves_x_t_by_omega_times_its_norm():
    """One guided step with ε = 0 and a linear criterion w·x̂0: the step must start from x_t + ω·‖x_t‖·w/‖w‖."""
    torch.manual_seed(1)
    w = torch.randn(1, 1, 4, 4)
    crit = lambda img, y=None: (img * w).flatten(1).sum(1)  # noqa: E731
    x = torch.randn(3, 1, 4, 4) * 0.3
    eps_fn = lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    omega = 0.05
    sched = _scheduler()
    out, _ = guided_ddim(eps_fn, sched, x.clone(), 1, Guide(crit, omega, scale="paper", grad="x0"))
    ref_sched = _scheduler()
    ref_sched.set_timesteps(1)
    t = ref_sched.timesteps[0]
    norm = x.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    shifted = x + omega * norm * w / w.norm()
    want = ref_sched.step(torch.zeros_like(x), t, shifted, use_clipped_model_output=True).prev_sample
    assert torch.allclose(out, want, atol=1e-6)
    plain, _ = guided_ddim(eps_fn, _scheduler(), x.clone(), 1)
    assert not torch.allclose(out, plain, atol=1e-3)


def test_clip_x0_shows_the_criterion_the_clamped_image_and_guides_only_pixels_in_range():
    """``guidance.clip_x0``: the criterion reads clamp(x̂0, −1, 1); with a linear criterion w·x̂0 and ε = 0 the
    step (paper scale, x0 gradient) moves only the pixels whose x̂0 lies inside [−1, 1]."""
    torch.manual_seed(2)
    w = torch.randn(1, 1, 4, 4)
    seen = []

    def crit(img, y=None):
        seen.append(img.detach().clone())
        return (img * w).flatten(1).sum(1)

    x = torch.randn(3, 1, 4, 4) * 2.0  # at the noisiest step x̂0 = x_t/sqrt(ᾱ): many pixels far outside [−1, 1]
    eps_fn = lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    sched = _scheduler()
    out, _ = guided_ddim(eps_fn, sched, x.clone(), 1, Guide(crit, 0.05, scale="paper", grad="x0", clip_x0=True))
    assert seen[0].abs().max() <= 1.0
    ref = _scheduler()
    ref.set_timesteps(1)
    a = ref.alphas_cumprod[ref.timesteps[0]]
    inside = ((x / a.sqrt()).abs() < 1).float()
    g = w * inside
    g = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    shifted = x + 0.05 * x.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * g
    want = ref.step(torch.zeros_like(x), ref.timesteps[0], shifted, use_clipped_model_output=True).prev_sample
    assert torch.allclose(out, want, atol=1e-5)
    seen.clear()
    unclipped, _ = guided_ddim(eps_fn, _scheduler(), x.clone(), 1, Guide(crit, 0.05, scale="paper", grad="x0"))
    assert seen[0].abs().max() > 1.0 and not torch.allclose(unclipped, out, atol=1e-4)
    cfg = load_config(None, ["guidance.clip_x0=true"]).guidance
    assert build_guide(LINEAR, cfg).clip_x0


# ------------------------------------------------------------------------------------------------ solvers
class Gaussian1D(nn.Module):
    """Exact ε for data x0 ~ N(μ, s²) per pixel: ε = sqrt(1−ᾱ)·(x_t − sqrt(ᾱ)μ)/(ᾱs² + 1 − ᾱ)."""

    def __init__(self, acp, mu=0.2, s=0.3):
        super().__init__()
        self.acp, self.mu, self.s = acp.double(), mu, s

    def __call__(self, x, t):
        a = self.acp[int(t)]
        return ((1 - a).sqrt() * (x.double() - a.sqrt() * self.mu) / (a * self.s ** 2 + 1 - a)).to(x.dtype)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "unipc"])
def test_multistep_solvers_integrate_the_probability_flow(solver):
    """The probability-flow ODE of Gaussian data maps x_T to μ + s·x_T/σ_T exactly; at 25 steps the second-order
    solvers land much closer to it than DDIM does (measured: mean error 0.004 vs DDIM's 0.020)."""
    from deliberate.generation.ddim import make_solver

    torch.manual_seed(2)
    z = torch.randn(256, 1, 4, 4, dtype=torch.float64)
    den = Gaussian1D(_scheduler().alphas_cumprod)
    err = {}
    for name in ("ddim", solver):
        s = make_solver(_scheduler(), name)
        s.set_timesteps(25)
        a_T = s.alphas_cumprod[s.timesteps[0]].double()  # each solver starts at its own first timestep
        x_T = a_T.sqrt() * 0.2 + (a_T * 0.09 + 1 - a_T).sqrt() * z  # x_T on the marginal, z ~ N(0, 1)
        out, _ = guided_ddim(den, _scheduler(), x_T, 25, solver=name)
        err[name] = (out - (0.2 + 0.3 * z)).abs().mean().item()
    assert err[solver] < 0.01, err
    assert err[solver] < 0.5 * err["ddim"], err


def test_solver_is_recorded_and_eta_needs_ddim():
    with pytest.raises(ValueError, match="sampling.eta"):
        load_config(None, ["sampling.solver=dpmpp_2m", "sampling.eta=0.5"])
    assert load_config(None, ["sampling.solver=unipc"]).sampling.solver == "unipc"


# --------------------------------------------------------------------------------------------- v-prediction
def test_v_prediction_output_is_converted_to_epsilon():
    sched = _scheduler()
    torch.manual_seed(3)
    x0, eps = torch.rand(5, 1, 4, 4) * 2 - 1, torch.randn(5, 1, 4, 4)
    t = torch.tensor(600)
    a = sched.alphas_cumprod[600]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0

    class VNet(nn.Module):
        config = SimpleNamespace(in_channels=1, sample_size=4)

        def forward(self, x, t, class_labels):
            return SimpleNamespace(sample=v.clone())

    gen = PixelDiffusion(VNet(), sched, 4, bf16=False, prediction="v_prediction")
    assert torch.allclose(gen.eps_fn(torch.zeros(5, dtype=torch.long), 0.0)(xt, t), eps, atol=1e-5)


# ------------------------------------------------------------------------------------------- learner options
def test_ema_warmup_follows_the_model_early():
    cfg = load_config(None, ["learner.ema=true", "learner.ema_decay=0.999"]).learner
    torch.manual_seed(0)
    lr = Learner(cfg, 10, 1, 100)
    init = [p.detach().clone() for p in lr.model.parameters()]
    x, y = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (32,))
    for _ in range(20):
        lr.step(x, y)
    moved = sum((p - q).norm() for p, q in zip(lr.model.parameters(), init))
    lag = sum((e - p).norm() for e, p in zip(lr.eval_model.parameters(), lr.model.parameters()))
    assert lag < 0.5 * moved  # without warmup, 0.999^20 ≈ 98 % of the average would still be the initialisation


def test_hflip_off_never_flips():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).view(2, 1, 28, 28)
    dx, dy, _ = augment_params(2, g)
    params = (dx, dy, torch.tensor([True, True]))
    no_flip = augment(x, g, params=(dx, dy, torch.tensor([False, False])))
    assert torch.equal(augment(x, g, params=params, hflip=False), no_flip)
    assert torch.equal(augment(x, g, params=params), no_flip.flip(-1))
