"""bench/guidance_profile.py: the profiler reads the sampler's own scopes, the branch-wise gradient sums to the exact
one, the cond-only path holds the unconditional ε fixed, cosines."""
from __future__ import annotations

import math

import pytest
import torch

from bench.guidance_profile import SCOPES, branch_parts, cond_only_gradient, cosines, generator_bf16, op_category, \
    read_profile
from deliberate.generation.ddim import guidance_gradient
from deliberate.generation.guidance import EntropyCriterion, Guide

LABELS = torch.arange(6) % 10
SEEDS = list(range(3000, 3006))


def test_the_profile_counts_each_scope_once_per_step_of_its_kind(tiny_generator, real_classifier):
    """6 steps, every=2 inside window [0.1, 1): steps 2 and 4 guided, 0, 1, 3, 5 plain; the solver steps all six."""
    from torch.profiler import ProfilerActivity, profile

    with real_classifier.frozen() as clf:
        guide = Guide(EntropyCriterion(clf), 0.05, every=2, window=(0.1, 1.0), scale="paper")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = tiny_generator.sample(LABELS, SEEDS, steps=6, cfg_scale=2.0, guide=guide, batch_size=6,
                                        solver="dpmpp_2m")
    assert out.stats["guided_steps"] == 2
    r = read_profile(prof, len(LABELS))
    assert r["counts"] == {"guidance: unet forward": 2, "plain: unet forward": 4, "guidance: criterion forward": 2,
                           "guidance: criterion backward": 2, "guidance: unet backward": 2,
                           "guidance: step update": 2, "solver step": 6}
    assert set(r["counts"]) == set(SCOPES) and all(v > 0 for v in r["scopes"].values())
    assert r["ops"]["convolution (forward)"] > 0 and r["ops"]["convolution (backward)"] > 0


def test_operator_categories():
    assert op_category("aten::convolution_backward") == "convolution (backward)"
    assert op_category("aten::mkldnn_convolution") == "convolution (forward)"
    assert op_category("aten::native_group_norm_backward") == "normalisation (backward)"
    assert op_category("aten::silu") == "activations (forward)"
    assert op_category("aten::_to_copy") == "copies and dtype casts (forward)"
    assert op_category("aten::add") == "other (forward)"


def test_cosines_per_sample():
    a = torch.tensor([[1.0, 0.0], [1.0, 2.0], [0.0, 3.0]])
    b = torch.tensor([[1.0, 1.0], [-2.0, -4.0], [0.0, 0.5]])
    assert cosines(a, b) == pytest.approx([1 / math.sqrt(2), -1.0, 1.0])


@pytest.mark.parametrize("bf16", [False, True])
def test_branch_parts_sum_to_the_exact_gradient_and_cond_only_holds_uncond_fixed(tiny_generator, real_classifier, bf16):
    """The direct, conditional and unconditional parts add up to guidance_gradient's ∇_{x_t} (λ = 2); the cond-only
    path is the direct plus the conditional part (in fp32 up to the rounding of its two half-size calls)."""
    from deliberate.generation.base import per_sample_noise

    gen, lam = tiny_generator, 2.0
    x, _ = per_sample_noise(SEEDS, gen.image_shape, "cpu")
    t = torch.tensor(600)
    a = gen.scheduler.alphas_cumprod[t].float()
    with real_classifier.frozen() as clf, generator_bf16(gen, bf16):
        guide = Guide(EntropyCriterion(clf), 0.05)
        exact, _ = guidance_gradient(gen.eps_fn(LABELS, lam), x, t, a, guide, LABELS)
        gd, gc, gu = branch_parts(gen, LABELS, lam, x, t, a, guide.criterion)
        cond = cond_only_gradient(gen, LABELS, lam, x, t, a, guide.criterion)
    assert exact.abs().max() > 0 and gu.abs().max() > 0.01 * exact.abs().max()  # the uncond part is not negligible
    tol = 1e-5 if not bf16 else 1e-2
    assert torch.allclose(gd + gc + gu, exact, rtol=0, atol=tol * exact.abs().max())
    if not bf16:
        assert torch.allclose(cond, gd + gc, rtol=0, atol=1e-4 * cond.abs().max())
        assert not torch.allclose(cond, exact, rtol=0, atol=1e-2 * exact.abs().max())


def test_the_study_is_listed_answers_help_and_renders_only_what_exists(capsys, tmp_path):
    from bench.__main__ import main
    from bench.guidance_profile import main as study

    assert main([]) == 0 and "guidance-profile" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["guidance-profile", "--help"])
    assert e.value.code == 0 and "python -m bench guidance-profile" in capsys.readouterr().out
    assert study(["--render", "--out", str(tmp_path / "none.json")]) == 2
    assert "no result file" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_result_files_name_no_machine_directory(tmp_path):
    from bench.core import ROOT
    from bench.guidance_profile import portable

    inside = ROOT / "src" / "deliberate" / "resources" / "generators" / "k"
    assert portable({"path": str(inside), "source": "shipped"}) == {"path": "src/deliberate/resources/generators/k",
                                                                     "source": "shipped"}
    assert portable({"path": str(tmp_path / "cache" / "k")})["path"] == "k"
    assert portable({"source": "cache"}) == {"source": "cache"}
