"""Folder data (class subset, rank shares, lazy held-out, OOD intersection) and several processes: a run with
2 processes (gloo, CPU, launched by torchrun) gives the same pool and the same metrics as 1 process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from deliberate.config import ConfigError, load_config
from deliberate.data.folders import LazyImages, evaluate_ood, load_folder_splits, read_class_list
from deliberate.data.idx import DataError
from deliberate.learning.learner import global_chunks

# Real ImageNet-1k ids (indices 0, 1, 2), so that ImageNet-V2's numbered folders can be mapped onto them.
WNIDS = ["n01440764", "n01443537", "n01484850"]
NAMES = ["tench", "goldfish", "shark"]


def write_images(root: Path, folders: dict[str, int], seed: int) -> Path:
    """``folders``: class folder name → number of PNGs (non-square, random colours, so resizing and cropping act)."""
    rng = np.random.default_rng(seed)
    for name, n in folders.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            base = rng.integers(0, 256, 3)
            arr = np.clip(base + rng.integers(-40, 41, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"img{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("imagefolders")
    classes = root / "classes.txt"
    classes.write_text("# test subset\n" + "".join(f"{w} {n}\n" for w, n in zip(WNIDS, NAMES)))
    extra = {"n09999999": 2}  # a class outside the subset: ignored
    return SimpleNamespace(
        root=root, classes=classes,
        val=write_images(root / "val", {w: 4 for w in WNIDS} | extra, 0),
        train=write_images(root / "train", {w: 5 for w in WNIDS} | extra, 1),
        v2=write_images(root / "v2", {"0": 2, "1": 2, "2": 2, "7": 1}, 2),  # ImageNet-V2 layout (class indices)
        r=write_images(root / "r", {WNIDS[0]: 3, WNIDS[2]: 3}, 3),  # ImageNet-R/-A: only part of the classes
    )


def data_cfg(f, *extra: str):
    return load_config(None, ["data.name=folders", f"data.val_dir={f.val}", f"data.test_dir={f.train}",
                              f"data.class_list={f.classes}", "data.image_size=16", "data.workers=2",
                              "generator.name=stable_diffusion", "generator.path=unused", *extra]).data


def test_folder_splits_restricted_to_the_subset(folders):
    s = load_folder_splits(data_cfg(folders))
    assert s.classes == tuple(NAMES) and s.meta["classes"] == WNIDS
    assert s.val.images.dtype == torch.uint8 and s.val.images.shape == (12, 3, 16, 16)
    assert s.val.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert len(s.gen_train) == 0 and len(s.test) == 15 and s.test.reads == 0
    test = s.test.read("check")
    assert isinstance(test.images, LazyImages) and s.test.reads == 1  # decoded on access only
    assert test.images[0:3].shape == (3, 3, 16, 16)
    capped = load_folder_splits(data_cfg(folders, "data.test_per_class=2"))
    assert len(capped.test) == 6 and capped.meta["test"]["per_class_cap"] == 2


def test_rank_shares_partition_the_splits(folders):
    d = data_cfg(folders)
    full = load_folder_splits(d)
    shares = [load_folder_splits(d, rank=r, world=2) for r in range(2)]
    idx = np.concatenate([s.val.indices for s in shares])
    assert sorted(idx.tolist()) == list(range(12))
    for s in shares:
        assert torch.equal(s.val.images, full.val.images[s.val.indices])
        assert torch.equal(s.val.labels, full.val.labels[s.val.indices])
    assert sum(len(s.test.read("x").labels) for s in shares) == 15 and all(len(s.test) == 15 for s in shares)


def test_folder_errors_are_named(folders, tmp_path):
    write_images(tmp_path / "val", {WNIDS[0]: 1, WNIDS[1]: 1}, 0)
    with pytest.raises(DataError, match=f"no folder for 1 of the 3 classes.*{WNIDS[2]}"):
        load_folder_splits(data_cfg(SimpleNamespace(**{**vars(folders), "val": tmp_path / "val"})))
    with pytest.raises(DataError, match="same folder"):
        load_folder_splits(data_cfg(SimpleNamespace(**{**vars(folders), "train": folders.val})))
    with pytest.raises(DataError, match="neither a built-in list"):
        read_class_list(str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match="data.image_size"):
        load_config(None, ["data.name=folders", "data.val_dir=a", "data.test_dir=b"])


def test_builtin_imagenet100_list():
    classes = read_class_list("imagenet100")
    assert len(classes) == 100 and len({w for w, _ in classes}) == 100
    assert classes[0] == ("n02869837", "bonnet") and classes[1] == ("n01749939", "green mamba")
    assert classes[-1][0] == "n02090622"


def test_ood_on_the_class_intersection(folders):
    """V2 (numbered folders, all classes) and an R-like set covering 2 of the 3 classes: the argmax is restricted
    to the classes present, the missing one is reported."""

    class PreferMissing:
        """Logits: the true class second best, class 1 (absent from the R-like set) always best."""

        def predict(self, images):
            hue = images.float().mean((2, 3))  # unused: the labels are looked up below
            return hue[:, :0].new_zeros(len(images), 3) + torch.tensor([0.0, 5.0, 0.0])

    d = data_cfg(folders, f"data.ood_dirs={{v2: {folders.v2}, r: {folders.r}}}")
    out = evaluate_ood({"m": PreferMissing()}, d, WNIDS)
    assert out["v2"]["images"] == 6 and out["v2"]["classes"] == 3 and not out["v2"]["restricted"]
    assert out["v2"]["m"] == pytest.approx(2 / 6)  # always class 1
    assert out["r"]["images"] == 6 and out["r"]["classes"] == 2 and out["r"]["restricted"]
    assert out["r"]["missing_classes"] == [WNIDS[1]]
    assert out["r"]["m"] == pytest.approx(0.5)  # class 1 masked: ties → class 0, right on the 3 class-0 images


@pytest.mark.parametrize("preset, iters, n, p, t_max, lr, batch", [
    ("imagenet100", 50_000, 64_000, 32_000, 4, 3e-3, 2048),
    ("imagenet1k", 100_000, 1_300_000, 650_000, 1, 1.6e-3, 4096),
])
def test_presets_hold_the_paper_settings(preset, iters, n, p, t_max, lr, batch):
    root = Path(__file__).resolve().parents[1]
    c = load_config(root / "configs" / f"{preset}.yaml")
    assert (c.data.name, c.generator.name, c.learner.model) == ("folders", "stable_diffusion", "vit_base_patch16_224")
    assert (c.practice.iterations, c.practice.initial_samples, c.practice.add_samples, c.practice.patience) == (
        iters, n, p, t_max)
    assert (c.learner.lr, c.learner.batch_size, c.guidance.omega, c.sampling.cfg_scale) == (lr, batch, 0.05, 3.0)
    assert (c.learner.label_smoothing, c.learner.mixup, c.learner.cutmix, c.learner.ema) == (0.11, 0.5, 1.0, True)
    assert global_chunks(c.learner.batch_size, c.learner.micro_batch_size, 32) == 32  # 4 nodes x 8 GPUs


def test_global_batch_chunks():
    assert global_chunks(2048, 0, 32) == 32 and global_chunks(2048, 64, 8) == 32 and global_chunks(8, 4, 1) == 2
    with pytest.raises(ConfigError, match="cannot be split evenly over 3 processes"):
        global_chunks(8, 4, 3)


# ------------------------------------------------------------------------------------- 1 vs 2 processes
def run_config(f, sd: Path, out: Path, name: str) -> Path:
    cfg = {
        "data": {"name": "folders", "val_dir": str(f.val), "test_dir": str(f.train), "class_list": str(f.classes),
                 "image_size": 16, "workers": 0},
        "generator": {"name": "stable_diffusion", "path": str(sd), "resolution": 16,
                      "prompt_templates": ["{}", "a {}"]},
        "sampling": {"steps": 3, "cfg_scale": 2.0, "batch_size": 4, "shard_size": 10},
        "guidance": {"omega": 5.0},
        "learner": {"model": "test_vit", "img_size": 32, "batch_size": 8, "micro_batch_size": 4, "lr": 3e-3,
                    "eval_batch_size": 8, "ema": True, "ema_decay": 0.9, "augment": True},
        "practice": {"iterations": 30, "eval_every": 3, "initial_samples": 12, "add_samples": 6, "patience": 1,
                     "patience_growth": 0, "max_samples": 36},
        "run": {"methods": ["dp"], "threads": 1, "progress": False, "device": "cpu", "out_dir": str(out), "name": name},
    }
    path = out / f"{name}.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return path


def run_dir_of(out: Path, name: str) -> Path:
    (d,) = [p for p in out.iterdir() if p.is_dir() and p.name.endswith(name)]
    return d


def launch(cfg_path: Path, nproc: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "deliberate.cli", "run", "-c", str(cfg_path)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]


@pytest.mark.determinism
def test_two_processes_give_the_same_pool_and_metrics(folders, tmp_path):
    from test_latent import write_tiny_sd

    from deliberate.job import run_job

    sd = write_tiny_sd(tmp_path / "sd")
    out = tmp_path / "runs"
    one = run_config(folders, sd, out, "w1")
    run_job(load_config(one), progress=False)  # one process, no launcher
    launch(run_config(folders, sd, out, "w2"), 2)
    a, b = run_dir_of(out, "w1"), run_dir_of(out, "w2")

    def manifest(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "methods/dp/pool/manifest.jsonl").read_text().splitlines()]

    ma, mb = manifest(a), manifest(b)
    assert len(ma) == len(mb) and {r["round"] for r in ma} >= {0, 1}  # plain and guided shards
    for ra, rb in zip(ma, mb):
        assert ra == rb  # labels, seeds, scores, ω, round… and the shard's SHA-256: the same bytes
        assert (a / "methods/dp/pool" / ra["shard"]).read_bytes() == (b / "methods/dp/pool" / rb["shard"]).read_bytes()

    def stats(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "methods/dp/stats.jsonl").read_text().splitlines()]

    sa, sb = stats(a), stats(b)
    assert len(sa) == len(sb) == 10  # one record per evaluation, written once (rank 0 only)
    assert sa == sb  # loss, val accuracy, trigger state, pool size, rounds
    ya, yb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert yb["world_size"] == 2 and ya["world_size"] == 1
    for key in ("test_acc", "val_acc", "best_val_acc", "samples", "rounds"):
        assert ya["methods"]["dp"][key] == yb["methods"]["dp"][key], key
    assert not list(b.glob("**/*.tmp*"))
