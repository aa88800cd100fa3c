"""The generator's own label check (Li et al. 2023), with an exact per-class Gaussian denoiser of real
Fashion-MNIST: it must classify real images far above chance, give a sample the same verdict in any batch, and
replace exactly the off-label samples by the plain sample of their (label, seed)."""
from __future__ import annotations

import torch

from deliberate.generation.base import SampleOutput
from deliberate.generation.guidance import EntropyCriterion, Guide
from deliberate.generation.label_check import diffusion_errors, replace_off_label
from deliberate.generation.pixel import PixelDiffusion

from conftest import tiny_config
from test_sampler import GaussianDenoiser

T = (300, 500, 700)


def exact_generator(splits, tmp_path):
    cfg = tiny_config(tmp_path)
    sched = PixelDiffusion.create(cfg.generator, splits.num_classes).scheduler
    den = GaussianDenoiser(splits.gen_train.images, splits.gen_train.labels, splits.num_classes, sched.alphas_cumprod)
    return PixelDiffusion(den, sched, splits.num_classes, bf16=False)


def test_diffusion_classifier_recognises_real_images(splits, tmp_path):
    gen = exact_generator(splits, tmp_path)
    x, y = splits.val.images[:60], splits.val.labels[:60]
    seeds = list(range(60))
    err = diffusion_errors(gen, x, seeds, T, batch_size=60)
    acc = (err.argmin(1) == y).float().mean().item()
    assert acc >= 0.6, acc  # chance is 0.1; argmax instead of argmin gives far less
    # a sample's verdict does not depend on its batch: its noises come from its seed
    part = diffusion_errors(gen, x[10:25], seeds[10:25], T, batch_size=7)
    assert torch.allclose(part, err[10:25], atol=1e-5)


def test_off_label_samples_are_replaced_by_their_plain_sample(splits, tmp_path, real_classifier):
    gen = exact_generator(splits, tmp_path)
    labels = torch.arange(20) % 10
    seeds = list(range(100, 120))
    kw = {"steps": 10, "cfg_scale": 3.0, "eta": 0.0, "batch_size": 20, "solver": "ddim"}
    plain = gen.sample(labels, seeds, **kw)
    # "guided" output: the plain samples, except that positions 3, 7 and 11 hold real images of another class
    images = plain.images.clone()
    swapped = [3, 7, 11]
    for i in swapped:
        other = (int(labels[i]) + 5) % 10
        images[i] = splits.val.images[(splits.val.labels == other).nonzero()[0, 0]]
    out = SampleOutput(images, torch.zeros(20), {})
    guide = Guide(EntropyCriterion(real_classifier.eval_model.eval()), 1.0)
    replaced = replace_off_label(gen, out, labels, seeds, kw, guide, T)
    assert set(swapped) <= set(replaced), replaced
    assert len(replaced) <= 6, replaced  # on-label samples stay (an exact model recognises its own samples)
    assert torch.equal(out.images, plain.images)  # replaced ones are the plain sample of their (label, seed)
    # and carry the criterion's score of that plain sample (as stored), not the guided one's (0 here)
    with torch.no_grad():
        want = guide.criterion(plain.images[replaced].float().div(127.5).sub(1), labels[replaced])
    torch.testing.assert_close(out.score[replaced], want, rtol=1e-5, atol=1e-5)
    assert (out.score[[i for i in range(20) if i not in replaced]] == 0).all()  # the others keep theirs


def test_checked_rounds_record_replacements_and_repair_bit_identically(tiny_generator, tmp_path):
    """A DP run with the check: guided shards list what was replaced; a deleted guided shard is regenerated (check
    included) to the same bytes."""
    import json

    from deliberate.job import run_job
    from deliberate.repair import repair

    gen_dir = tmp_path / "gen"
    tiny_generator.save(gen_dir)
    cfg = tiny_config(tmp_path, f"generator.path={gen_dir}", "run.methods=[dp]", "guidance.omega=5.0",
                      "guidance.label_check=diffusion", "guidance.check_timesteps=[400,600]", "run.checkpoint_every=5")
    run_dir = run_job(cfg, tmp_path / "run", progress=False)
    pool = run_dir / "methods" / "dp" / "pool"
    recs = [json.loads(x) for x in (pool / "manifest.jsonl").read_text().splitlines()]
    guided = [r for r in recs if r["round"] > 0]
    assert guided and all("replaced" in r for r in guided) and not any("replaced" in r for r in recs if r["round"] == 0)
    assert sum(len(r["replaced"]) for r in guided) > 0  # a 30-step generator pushed hard leaves its classes
    (pool / guided[0]["shard"]).unlink()
    report = repair(run_dir, log=lambda *_: None)
    got = [(s.status, s.detail) for s in report.shards if s.shard == guided[0]["shard"]]
    assert [g[0] for g in got] == ["repaired"], got
