"""The Stable Diffusion backend on a tiny, randomly initialised SD-style pipeline written by the test (no weights,
no GPU): real diffusers/transformers components in the diffusers directory layout, loaded by the real code path."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from deliberate.config import load_config
from deliberate.generation.guidance import EntropyCriterion, Guide
from deliberate.generation.latent import LatentDiffusion
from deliberate.generation.pixel import GeneratorError

CLASSES = ["cat", "dog", "car"]


def _byte_chars() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable character per byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_sd(root: Path, seed: int = 0) -> Path:
    """A randomly initialised SD-style pipeline (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer
    with a byte-level vocabulary and no merges, DDIMScheduler) saved in the diffusers layout."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": 256 + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": 512, "<|endoftext|>": 513}
    tok = root / "tokenizer"
    tok.mkdir(parents=True)
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    (tok / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16, "tokenizer_class": "CLIPTokenizer"}))
    CLIPTextModel(CLIPTextConfig(vocab_size=514, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                 num_hidden_layers=2, max_position_embeddings=16, bos_token_id=512, eos_token_id=513,
                                 pad_token_id=513)).save_pretrained(root / "text_encoder")
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         attention_head_dim=4, norm_num_groups=4).save_pretrained(root / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  latent_channels=4, norm_num_groups=4, sample_size=16).save_pretrained(root / "vae")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"]}))
    return root


def gen_config(path, *extra: str):
    return load_config(None, ["generator.name=stable_diffusion", f"generator.path={path}", "generator.resolution=16",
                              "generator.prompt_templates=[\"{}\", \"a {}\"]", *extra])


class ColourClassifier(torch.nn.Module):
    """A fixed classifier of the mean colour (sharp enough that entropy is far from its maximum)."""

    def __init__(self, k: float = 10.0):
        super().__init__()
        self.w = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k * (x.mean((2, 3)) @ self.w.T)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    return write_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")


@pytest.fixture(scope="module")
def gen(sd_dir) -> LatentDiffusion:
    return LatentDiffusion.load(sd_dir, CLASSES, gen_config(sd_dir).generator, out_size=16)


def sample(gen, n=6, guide=None, batch_size=6, first=0, cfg_scale=2.0):
    labels = torch.arange(first, first + n) % 3
    return gen.sample(labels, list(range(100 + first, 100 + first + n)), steps=4, cfg_scale=cfg_scale, guide=guide,
                      batch_size=batch_size)


def test_loads_and_samples(gen):
    assert gen.latent_shape == (4, 8, 8) and gen.image_shape == (3, 16, 16)
    assert gen.generator_id.startswith("stable_diffusion-")
    out = sample(gen)
    assert out.images.dtype == torch.uint8 and out.images.shape == (6, 3, 16, 16)
    assert torch.isnan(out.score).all() and out.stats["guided_steps"] == 0
    assert out.images.float().std() > 1  # not a constant image


def test_prompts_follow_templates_and_seeds(gen):
    assert gen.prompt(1, 4) == "dog" and gen.prompt(1, 5) == "a dog"  # template = seed mod #templates


def test_cfg_is_diffusers_guidance_scale_one_plus_lambda(gen):
    """Paper ε = (1+λ)ε_c − λε_u equals diffusers' ε_u + s(ε_c − ε_u) with s = 1 + λ."""
    lam = 3.0
    z = torch.randn(2, *gen.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    cond, uncond = gen.embed(["cat", "dog"]), gen.embed([""])
    ours = gen.eps_fn(cond, uncond, lam)(z, t)
    with torch.no_grad():
        c = gen.unet(z, t, encoder_hidden_states=cond).sample
        u = gen.unet(z, t, encoder_hidden_states=uncond.expand(2, -1, -1)).sample
    torch.testing.assert_close(ours, u + (1 + lam) * (c - u), rtol=1e-4, atol=1e-5)


def test_v_prediction_models_are_converted_to_eps(sd_dir, tmp_path):
    """SD 2.x-768 style: the UNet predicts v; ε = sqrt(ᾱ_t)·v + sqrt(1−ᾱ_t)·z_t goes to the (ε) sampler."""
    vdir = tmp_path / "sd-v"
    shutil.copytree(sd_dir, vdir)
    cfg_path = vdir / "scheduler" / "scheduler_config.json"
    cfg_path.write_text(json.dumps(json.loads(cfg_path.read_text()) | {"prediction_type": "v_prediction"}))
    g = LatentDiffusion.load(vdir, CLASSES, gen_config(vdir).generator, out_size=16)
    assert g.v_prediction and g.scheduler.config.prediction_type == "epsilon"
    z = torch.randn(1, *g.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(700)
    cond = g.embed(["cat"])
    with torch.no_grad():
        v = g.unet(z, t, encoder_hidden_states=cond).sample
    a = g.scheduler.alphas_cumprod[700]
    torch.testing.assert_close(g.eps_fn(cond, None, 0.0)(z, t), a.sqrt() * v + (1 - a).sqrt() * z)


@dataclasses.dataclass
class RecordingGuide(Guide):
    """A Guide that keeps every raw gradient the sampler hands to ``rescale`` (what ω then multiplies)."""

    seen: list = dataclasses.field(default_factory=list)

    def rescale(self, g):
        self.seen.append(g.detach().clone())
        return super().rescale(g)


@pytest.mark.parametrize("grad", ["x0", "unet"])
def test_guidance_gradient_matches_an_independent_reference(gen, grad):
    """The sampler's ∇_{z_t}H at the first (guided) step against autograd through diffusers' own DDIM x̂0
    (``DDIMScheduler.step(...).pred_original_sample``), the VAE decoder and the criterion; "x0" holds ε fixed,
    "unet" backpropagates through the CFG UNet too. A wrong x̂0 formula, chain factor or ε/ε-graph mix-up differs."""
    from deliberate.generation.ddim import guided_ddim

    crit = EntropyCriterion(ColourClassifier())
    eps_fn = gen.eps_fn(gen.embed(["cat", "dog"]), gen.embed([""]), 2.0)
    z = torch.randn(2, *gen.latent_shape, generator=torch.Generator().manual_seed(1))
    guide = RecordingGuide(crit, omega=5.0, window=(0.0, 0.25), grad=grad)  # step 0 of 4 only
    out, stats = guided_ddim(eps_fn, gen.scheduler, z.clone(), 4, guide, decode=gen.decode)
    assert stats["guided_steps"] == 1 and len(guide.seen) == 1 and stats["nonfinite_grads"] == 0

    sch = gen.scheduler  # timesteps set to the 4-step schedule by the call above
    t = sch.timesteps[0]
    zr = z.clone().requires_grad_(True)
    with torch.set_grad_enabled(True):
        eps = eps_fn(zr, t)
        x0 = sch.step(eps.detach() if grad == "x0" else eps, t, zr, eta=0.0).pred_original_sample
        (g_ref,) = torch.autograd.grad(crit(gen.decode(x0)).sum(), zr)
    assert g_ref.abs().max() > 1e-6  # the criterion's gradient reaches z_t through the VAE decoder
    torch.testing.assert_close(guide.seen[0], g_ref, rtol=1e-3, atol=1e-6 * g_ref.abs().max().item())

    # the guided step uses it as ε̃ = ε − ω·sqrt(1−ᾱ_t)·∇H (ascending H); the other steps are plain DDIM
    a = sch.alphas_cumprod[int(t)]
    with torch.no_grad():
        x = sch.step(eps.detach() - 5.0 * (1 - a).sqrt() * g_ref, t, z, eta=0.0,
                     use_clipped_model_output=True).prev_sample
        for s in sch.timesteps[1:]:
            x = sch.step(eps_fn(x, s), s, x, eta=0.0, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(out, x, rtol=1e-3, atol=1e-4)


def test_x0_gradient_is_an_approximation_of_the_full_one(gen):
    """The two modes differ (so the reference test above tells them apart), and the sampler uses the gradient:
    a guided run takes guided steps and its images differ from the unguided ones."""
    crit = EntropyCriterion(ColourClassifier())
    seen = {}
    for grad in ("x0", "unet"):
        guide = RecordingGuide(crit, omega=5.0, grad=grad)
        out = sample(gen, guide=guide)
        assert out.stats["guided_steps"] == 4 and out.stats["nonfinite_grads"] == 0
        seen[grad] = guide.seen[0]
    assert not torch.allclose(seen["x0"], seen["unet"], rtol=1e-2, atol=0)
    assert not torch.equal(out.images, sample(gen).images)


def test_omega_zero_equals_unguided(gen):
    plain = sample(gen)
    zero = sample(gen, guide=Guide(EntropyCriterion(ColourClassifier()), omega=0.0))
    assert torch.equal(plain.images, zero.images)
    assert zero.stats["guided_steps"] == 0 and torch.isfinite(zero.score).all()


def test_mean_entropy_rises_with_omega(gen):
    crit = EntropyCriterion(ColourClassifier())
    means = [sample(gen, n=12, guide=Guide(crit, omega=w), batch_size=12).score.mean().item() for w in (0.0, 2.0, 8.0)]
    assert means[0] < means[1] < means[2], means


@pytest.mark.parametrize("omega", [0.0, 5.0])
def test_sample_depends_on_its_seed_not_its_batch(gen, omega):
    guide = Guide(EntropyCriterion(ColourClassifier()), omega=omega)
    whole = sample(gen, n=6, guide=guide, batch_size=6)
    part = sample(gen, n=3, guide=guide, batch_size=2, first=2)  # samples 2..4, other batches and positions
    assert torch.equal(whole.images[2:5], part.images)
    torch.testing.assert_close(whole.score[2:5], part.score)


def test_gradient_checkpointing_does_not_change_samples(sd_dir, gen):
    ck = LatentDiffusion.load(sd_dir, CLASSES, gen_config(sd_dir, "generator.gradient_checkpointing=true").generator,
                              out_size=16)
    assert ck.unet.is_gradient_checkpointing
    guide = Guide(EntropyCriterion(ColourClassifier()), omega=5.0)
    assert torch.equal(sample(ck, guide=guide).images, sample(gen, guide=guide).images)


def test_guided_by_a_timm_vit_learner_through_its_preprocess(gen):
    """The paper-scale path: a timm ViT learner (img_size ≠ stored size) guides latent sampling."""
    from deliberate.generation.guidance import build_guide
    from deliberate.learning.learner import Learner

    cfg = load_config(None, ["learner.model=test_vit", "learner.img_size=32", "learner.batch_size=6",
                             "learner.ema=true", "learner.mixup=0.5", "learner.cutmix=1.0"])
    learner = Learner(cfg.learner, 3, 3, total_iterations=10)
    first = sample(gen)
    before = [p.detach().clone() for p in learner.model.parameters()]
    loss = learner.step(first.images, torch.arange(6) % 3)
    # the untrained ViT predicts about uniformly over the 3 classes, so its cross-entropy against any (mixed,
    # smoothed) target is about ln 3 (measured 1.104): a NaN, a sum over the batch or an unscaled micro-batch total is not
    assert abs(loss - math.log(3)) < 0.05 and learner.iteration == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))  # the step was taken
    with learner.frozen() as clf:
        out = sample(gen, guide=build_guide(clf, cfg.guidance, omega=1.0))
    assert out.stats["guided_steps"] == 4 and torch.isfinite(out.score).all()
    assert all(p.requires_grad for p in learner.model.parameters())  # unfrozen again


def test_obtain_from_config(sd_dir):
    from types import SimpleNamespace

    cfg = gen_config(sd_dir, "sampling.cfg_scale=3", "data.image_size=12")
    g, info = LatentDiffusion.obtain(cfg, SimpleNamespace(classes=tuple(CLASSES)), device="cpu", progress=False)
    assert info["diffusers_guidance_scale"] == 4.0 and info["generator_id"] == g.generator_id
    assert g.image_shape == (3, 12, 12) and sample(g, n=2).images.shape == (2, 3, 12, 12)


@pytest.mark.parametrize("damage, message", [
    ("missing_dir", "is not a directory"),
    ("model_index", "missing model_index.json"),
    ("vae", "missing component 'vae/'"),
    ("unet_weights", "component 'unet' is incomplete"),
    ("tokenizer_files", "component 'tokenizer' is incomplete"),
    ("text_config", "cannot load component 'text_encoder'"),
])
def test_incomplete_directory_is_named(sd_dir, tmp_path, damage, message):
    bad = tmp_path / "sd"
    shutil.copytree(sd_dir, bad)
    if damage == "missing_dir":
        bad = tmp_path / "nowhere"
    elif damage == "model_index":
        (bad / "model_index.json").unlink()
    elif damage == "vae":
        shutil.rmtree(bad / "vae")
    elif damage == "unet_weights":
        for f in (bad / "unet").glob("diffusion_pytorch_model*"):
            f.unlink()
    elif damage == "tokenizer_files":
        (bad / "tokenizer" / "vocab.json").unlink()
    elif damage == "text_config":
        (bad / "text_encoder" / "config.json").write_text("{not json")
    with pytest.raises(GeneratorError, match=message):
        LatentDiffusion.load(bad, CLASSES, gen_config(sd_dir).generator)
