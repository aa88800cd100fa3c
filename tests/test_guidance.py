"""Entropy guidance (paper Eq. 4-7): direction, ω=0 identity, gradient correctness, per-sample seeding."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from deliberate.generation.ddim import guided_ddim
from deliberate.generation.guidance import EntropyCriterion, Guide, entropy

LABELS = torch.arange(40) % 10
SEEDS = list(range(1000, 1040))
B = 40  # one model call of 40 slots holds SEEDS (1000 = 25 x 40); the default 256 pads them into two calls of 256


def test_entropy_matches_definition():
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    h = entropy(logits)
    assert torch.allclose(h[0], torch.log(torch.tensor(2.0)))
    assert h[1] < 1e-6


def test_omega_zero_reproduces_unguided_exactly(tiny_generator, real_classifier):
    plain = tiny_generator.sample(LABELS, SEEDS, steps=4, batch_size=B)
    with real_classifier.frozen() as clf:
        zero = tiny_generator.sample(LABELS, SEEDS, steps=4, guide=Guide(EntropyCriterion(clf), omega=0.0),
                                     batch_size=B)
    assert torch.equal(plain.images, zero.images)
    assert zero.stats["guided_steps"] == 0


def test_guidance_raises_entropy_and_gap_grows_with_omega(tiny_generator, real_classifier):
    means = []
    with real_classifier.frozen() as clf:
        crit = EntropyCriterion(clf)
        for omega in (0.0, 0.03, 0.1, 0.3):
            out = tiny_generator.sample(LABELS, SEEDS, steps=4, guide=Guide(crit, omega, scale="normalized"),
                                        batch_size=B)
            means.append(out.score.mean().item())
    gaps = [m - means[0] for m in means[1:]]
    assert gaps[0] > 0, means
    assert gaps[0] < gaps[1] < gaps[2], means


def test_raw_scale_also_ascends(tiny_generator, real_classifier):
    with real_classifier.frozen() as clf:
        crit = EntropyCriterion(clf)
        h0 = tiny_generator.sample(LABELS, SEEDS, steps=4, guide=Guide(crit, 0.0), batch_size=B).score.mean()
        h1 = tiny_generator.sample(LABELS, SEEDS, steps=4, guide=Guide(crit, 3.0), batch_size=B).score.mean()
    assert h1 > h0


def _pieces(gen, labels, seeds, cuts, **kw):
    """The same request made as several smaller requests (as shards, cache misses or ranks would), reassembled."""
    bounds = [0, *cuts, len(labels)]
    outs = [gen.sample(labels[lo:hi], seeds[lo:hi], **kw) for lo, hi in zip(bounds, bounds[1:])]
    return torch.cat([o.images for o in outs]), torch.cat([o.score for o in outs])


@pytest.mark.determinism
def test_sample_independent_of_request_split_and_order(tiny_generator):
    """Bit-identical samples however a request is split or ordered (index-aligned model calls, base.py): plain and
    guided, images and scores. No tolerance: on AVX-512 CPUs unaligned batching differed by up to 4 levels.
    The guiding classifier is an untrained, seeded ``cnn_small``: batch independence does not need a trained one, and
    the capability matrix reruns this test in a fresh process (test_capability.py), where training one costs ~10 s."""
    from deliberate.config import load_config
    from deliberate.learning import Learner

    torch.manual_seed(0)
    real_classifier = Learner(load_config(None, []).learner, 10, 1, total_iterations=1, seed=0)
    a = tiny_generator.sample(LABELS, SEEDS, steps=4, batch_size=16).images
    b, _ = _pieces(tiny_generator, LABELS, SEEDS, [7, 23, 24], steps=4, batch_size=16)
    assert torch.equal(a, b)
    c = tiny_generator.sample(LABELS[[5]], [SEEDS[5]], steps=4, batch_size=16).images
    assert torch.equal(a[5:6], c)
    rev = tiny_generator.sample(LABELS.flip(0), SEEDS[::-1], steps=4, batch_size=16).images
    assert torch.equal(a, rev.flip(0))
    noisy = tiny_generator.sample(LABELS, SEEDS, steps=4, batch_size=16, eta=1.0).images  # per-sample η-noise
    noisy_pieces, _ = _pieces(tiny_generator, LABELS, SEEDS, [3, 20], steps=4, batch_size=16, eta=1.0)
    assert torch.equal(noisy, noisy_pieces) and not torch.equal(noisy, a)
    with real_classifier.frozen() as clf:
        g = Guide(EntropyCriterion(clf), 0.1, scale="normalized")
        d = tiny_generator.sample(LABELS, SEEDS, steps=4, guide=g, batch_size=16)
        e_img, e_score = _pieces(tiny_generator, LABELS, SEEDS, [9, 30], steps=4, guide=g, batch_size=16)
    assert torch.equal(d.images, e_img)
    assert torch.equal(d.score, e_score)
    assert not torch.equal(d.images, a)  # guidance did act


@pytest.mark.determinism
def test_every_model_call_is_one_aligned_chunk(tiny_generator):
    """Each UNet call holds exactly B slots, and the sample of seed s always sits in slot s mod B."""
    from deliberate.generation.base import chunk_calls, per_sample_noise

    calls = chunk_calls([5, 17, 18, 40, 17, 3], 16)
    assert calls == [(0, {5: 0, 3: 5}), (1, {1: 1, 2: 2}), (1, {1: 4}), (2, {8: 3})]
    sizes, first = [], []
    unet = tiny_generator.unet
    orig = unet.forward

    def spy(x, *a, **k):
        sizes.append(len(x))
        first.append((x.clone(), k["class_labels"].clone()))
        return orig(x, *a, **k)

    unet.forward = spy
    try:
        out = tiny_generator.sample(LABELS[:3], [100, 131, 150], steps=2, batch_size=16)
    finally:
        del unet.forward
    assert set(sizes) == {16} and len(sizes) == 2 * 3  # 3 chunks (6, 8, 9) × 2 steps, each padded to 16
    assert out.stats["calls"] == 3 and out.stats["padded"] == 3 * 16 - 3
    x, y = first[0]  # chunk 6, first step: seed 100 in slot 100 - 96 = 4, stand-ins elsewhere
    noise, _ = per_sample_noise([100], tiny_generator.image_shape, "cpu")
    assert torch.equal(x[4], noise[0]) and int(y[4]) == int(LABELS[0])
    assert torch.equal(y[torch.arange(16) != 4], torch.zeros(15, dtype=torch.long))


class _Lin(nn.Module):
    """A tiny ε-model and classifier in float64, so finite differences are exact enough."""

    def __init__(self, d: int):
        super().__init__()
        torch.manual_seed(0)
        self.eps = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, d)).double()
        self.clf = nn.Sequential(nn.Flatten(), nn.Linear(d, 3)).double()


def test_entropy_gradient_matches_finite_differences():
    from diffusers import DDIMScheduler

    d = 6
    m = _Lin(d)
    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    sched.set_timesteps(10)
    t = sched.timesteps[3]
    a = sched.alphas_cumprod[t].double()

    def h_of(x: torch.Tensor) -> torch.Tensor:
        eps = m.eps(x.flatten(1)).view_as(x)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return entropy(m.clf(x0))

    x = torch.randn(2, 1, 1, d, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(h_of(xr).sum(), xr)
    num = torch.zeros_like(x)
    for i in range(d):
        e = torch.zeros_like(x)
        e[..., i] = 1e-6
        num[..., i] = ((h_of(x + e) - h_of(x - e)) / 2e-6).view(2, 1, 1)
    assert torch.allclose(g, num, atol=1e-7, rtol=1e-5)

    # guided_ddim applies exactly ε̃ = ε − ω·sqrt(1−ᾱ_t)·∇H at that step (the entropy-ascending direction)
    captured = {}

    class Probe:
        def __init__(self, inner):
            self.inner = inner

        def set_timesteps(self, *a_, **k):
            self.inner.set_timesteps(*a_, **k)

        def __getattr__(self, k):
            return getattr(self.inner, k)

        def step(self, eps, t_, x_, **kw):
            captured.setdefault("eps", []).append(eps.clone())
            return self.inner.step(eps, t_, x_, **kw)

    def eps_fn(x_, t_):
        return m.eps(x_.flatten(1)).view_as(x_)

    omega = 0.7
    guide = Guide(lambda img, y=None: entropy(m.clf(img)), omega, window=(0.3, 0.4))  # only step 3 of 10
    guided_ddim(eps_fn, Probe(sched), x, 10, guide)
    xs = x.clone()
    eps_list = captured["eps"]
    # replay steps 0..2 unguided to reach x_t at step 3, then compare the guided ε with the formula
    sched.set_timesteps(10)
    for k, tk in enumerate(sched.timesteps[:3]):
        xs = sched.step(eps_list[k], tk, xs).prev_sample
    with torch.no_grad():
        eps_plain = eps_fn(xs, t)
    xr = xs.clone().requires_grad_(True)
    (g3,) = torch.autograd.grad(h_of(xr).sum(), xr)
    assert torch.allclose(eps_list[3], eps_plain - omega * (1 - a).sqrt() * g3, atol=1e-10)


def test_x0_approximation_equals_exact_when_unet_ignores_input():
    """With ε independent of x_t, ∂x̂0/∂x_t = 1/sqrt(ᾱ_t) exactly, so grad='x0' must equal grad='unet'."""
    from diffusers import DDIMScheduler

    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    const = torch.randn(3, 1, 4, 4)
    outs = {}
    for mode in ("unet", "x0"):
        sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
        x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
        outs[mode], _ = guided_ddim(lambda x_, t_: const + 0 * x_, sched, x, 5,
                                    Guide(lambda img, y=None: entropy(clf(img)), 0.5, grad=mode))
    assert torch.allclose(outs["unet"], outs["x0"], atol=1e-5)


def test_nonfinite_gradients_fall_back_to_unguided():
    g = torch.ones(3, 1, 2, 2)
    g[1, 0, 0, 0] = float("nan")
    out, bad = Guide(lambda x: x, 1.0).rescale(g)
    assert bad == 1
    assert torch.equal(out[1], torch.zeros(1, 2, 2))
    assert torch.equal(out[0], g[0])


def test_schedule_guides_exactly_the_chosen_steps():
    """``guidance.every`` and ``guidance.window`` select DDIM steps (0 = the noisiest); ω = 0 guides none."""
    from diffusers import DDIMScheduler

    crit = lambda img, y=None: entropy(img.flatten(1)[:, :3])  # noqa: E731
    assert [i for i in range(10) if Guide(crit, 1.0, every=3).active(i, 10)] == [0, 3, 6, 9]
    assert [i for i in range(10) if Guide(crit, 1.0, window=(0.5, 1.0)).active(i, 10)] == [5, 6, 7, 8, 9]
    assert [i for i in range(10) if Guide(crit, 1.0, every=2, window=(0.0, 0.5)).active(i, 10)] == [0, 2, 4]
    assert not any(Guide(crit, 0.0).active(i, 10) for i in range(10))
    seen = []

    def eps_fn(x, t):
        seen.append(torch.is_grad_enabled())  # a guided step evaluates ε with gradients on (grad="unet")
        return 0.1 * x

    _, st = guided_ddim(eps_fn, DDIMScheduler(num_train_timesteps=1000, clip_sample=False), torch.randn(2, 1, 2, 2),
                        10, Guide(crit, 1.0, every=3))
    assert st["guided_steps"] == 4 and seen == [i % 3 == 0 for i in range(10)]


def test_margin_criterion_is_the_negative_top2_gap():
    from deliberate.generation.guidance import MarginCriterion

    clf = nn.Identity()
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.5, 0.5, -1.0], [-2.0, 4.0, 3.5]])
    assert torch.allclose(MarginCriterion(clf)(logits), torch.tensor([-2.0, 0.0, -0.5]))
    # ascending it closes the gap between the two top classes (harder), as ascending entropy does
    x = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(MarginCriterion(clf)(x).sum(), x)
    assert torch.equal(g[0], torch.tensor([-1.0, 1.0, 0.0]))


def test_guided_arithmetic_tends_to_unguided_as_omega_tends_to_zero():
    """Not the ω = 0 short-circuit: the guided path itself, at small ω, moves the sample by an amount linear in ω
    and converges to the unguided sample (float64, so the limit is visible)."""
    from diffusers import DDIMScheduler

    m = _Lin(6)
    x = torch.randn(3, 1, 1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def run(omega):
        sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=True)
        out, st = guided_ddim(lambda x_, t_: m.eps(x_.flatten(1)).view_as(x_), sched, x.clone(), 8,
                              Guide(lambda img, y=None: entropy(m.clf(img)), omega))
        return out, st

    plain, st0 = run(0.0)
    assert st0["guided_steps"] == 0
    d1 = run(1e-4)[0] - plain
    d2, st = run(2e-4)
    d2 = d2 - plain
    assert st["guided_steps"] == 8 and d1.abs().max() > 1e-8
    torch.testing.assert_close(d2, 2 * d1, rtol=2e-3, atol=1e-12)  # first order in ω
    assert (run(1e-12)[0] - plain).abs().max() < 1e-10


def test_guidance_gradient_backpropagates_in_two_parts_as_one_backward():
    """``guidance_gradient`` backpropagates to x̂0, then on through ε to x_t (one UNet backward per call): bit for bit
    one backward from H to x_t, also for a batch with a saturated sample (x̂0 ~ 1e7: one-hot softmax, ∇H = 0)."""
    from deliberate.generation.ddim import guidance_gradient

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Unflatten(1, (1, 4, 4)))
    clf = nn.Linear(16, 3)
    crit = lambda img, y=None: entropy(clf(img.flatten(1)))  # noqa: E731
    a = torch.tensor(0.3)
    backwards = []

    def eps_fn(x_, t_):
        out = net(x_)
        if out.requires_grad:
            out.register_hook(lambda g_: backwards.append(len(g_)))
        return out

    def one_backward(x):
        xr = x.clone().requires_grad_(True)
        return torch.autograd.grad(crit((xr - (1 - a).sqrt() * net(xr)) / a.sqrt()).sum(), xr)[0]

    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    saturated = x.clone()
    saturated[0] = saturated[0] * 1e7
    for batch in (x, saturated):
        backwards.clear()
        g, eps = guidance_gradient(eps_fn, batch, torch.tensor(500), a, Guide(crit, 1.0))
        assert torch.equal(g, one_backward(batch)) and backwards == [3]
        assert torch.equal(eps, net(batch).detach())
    assert g[0].eq(0).all() and g[1:].ne(0).any()
