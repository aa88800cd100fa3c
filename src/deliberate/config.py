"""Typed configuration: dataclasses loaded from YAML, overridden from the command line, validated up front.

``load_config(path, overrides)`` merges, in order, the defaults below, a YAML file and ``key.sub=value``
overrides; any unknown key or ill-typed or out-of-range value raises :class:`ConfigError` naming it, before
any work starts.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from .registry import CRITERIA, GENERATORS, LEARNERS, METHODS


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


@dataclass
class DataConfig:
    # fashion_mnist (the embedded default) | class_folders (any <root>/<class>/<image> dataset: data/classfolders.py,
    # docs/own_data.md) | folders (ImageNet-shaped wnid folders at paper scale, data/folders.py)
    name: str = "fashion_mnist"
    # fashion_mnist: the folder with the four IDX .gz files; class_folders: the dataset, <root>/<class>/<image> or
    # <root>/{train,val,test}/<class>/<image>
    root: str = "/usr/share/datasets/fashion-mnist"
    val_size: int = 2000  # real plateau-validation images, carved from the official train set
    gen_train_size: int = 0  # generator-training images (0 = the rest of the official train set)
    split_seed: int = 0
    test_size: int = 0  # class_folders: held-out images carved from data.root when it has no test folder
    # class_folders: convert every image to this mode (L, RGB, RGBA); empty = the images' own, one for all
    mode: Literal["", "L", "RGB", "RGBA"] = ""
    # Paper-scale folders (ImageFolder layout); class_folders: optional separate validation / held-out roots.
    val_dir: str = ""
    test_dir: str = ""
    # folders: built-in name (imagenet100) or a file of "wnid name" lines; empty = every val_dir class.
    # class_folders: a file of class folder names, one per line, in label order; empty = sorted folder names
    class_list: str = ""
    ood_dirs: dict = field(default_factory=dict)  # {name: dir}, e.g. ImageNet-V2/-Sketch/-R/-A, evaluated at the end
    # folders, class_folders: images resized + centre-cropped to this (class_folders: 0 = their own square size);
    # also the stored size of latent samples
    image_size: int = 0
    # folders, class_folders (test root): at most this many held-out images per class, drawn by split_seed (0 = all)
    test_per_class: int = 0
    workers: int = 4  # folders, class_folders: image-decoding threads


@dataclass
class GeneratorConfig:
    name: str = "pixel_unet"  # registry name: pixel_unet | stable_diffusion
    cache_dir: str = "cache/generators"
    path: str = ""  # explicit weights directory (overrides the cache lookup)
    # auto: the cache, else the generator shipped for this recipe and data (generation/shipped.py), else train;
    # train: the cache, else train (never the shipped one)
    source: Literal["auto", "train"] = "auto"
    block_out_channels: tuple = (32, 64, 64)
    layers_per_block: int = 1
    # width of the time + class embedding (0 = diffusers' default, 4 × block_out_channels[0]): the class enters the
    # UNet only through it, so a narrow first level would otherwise also narrow the class conditioning
    time_embedding_dim: int = 0
    # how the time + class embedding enters each ResNet block: added to the features ("default", diffusers' default),
    # or as a scale and shift after the group norm ("scale_shift": AdaGN, Dhariwal & Nichol 2021, Sec. 3)
    # (measured: docs/measurements.md)
    time_conditioning: Literal["default", "scale_shift"] = "default"
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    train_steps: int = 1200
    batch_size: int = 64  # images per generator training step (the default's measurements: docs/measurements.md)
    lr: float = 1e-3
    ema_decay: float = 0.995
    cond_drop: float = 0.1  # probability of the null class during training (classifier-free guidance)
    # Training objective (pixel backend): what the UNet predicts, and how the per-timestep loss is weighted.
    # epsilon | v_prediction (Salimans & Ho 2022); uniform | min_snr (Hang et al. 2023, min(SNR, γ) weighting)
    prediction: Literal["epsilon", "v_prediction"] = "epsilon"
    loss_weight: Literal["uniform", "min_snr"] = "uniform"
    min_snr_gamma: float = 5.0
    # which noise levels a training step sees: uniform over the timesteps (DDPM), or EDM's log-normal noise-level
    # distribution (Karras et al. 2022, Sec. 5: ln σ ~ N(P_mean, P_std²), σ = sqrt((1−ᾱ_t)/ᾱ_t), mapped to the
    # nearest timestep), which spends the steps on the middle noise levels instead of the near-clean and pure-noise ends;
    # (measured: docs/measurements.md)
    timestep_sampling: Literal["uniform", "lognormal"] = "uniform"
    lognormal_mean: float = -1.2
    lognormal_std: float = 1.2
    # data-parallel training on a CPU: n processes (DistributedDataParallel over gloo), each computing rows r, r+n, …
    # of every step's batch with threads/n intra-op threads; each update is the one-process update up to rounding.
    # 0 = auto: 2 on a CPU with >= 2 threads for >= 200 steps (outside torchrun), else 1. On CUDA or under torchrun
    # the generator trains in one process (measured: docs/measurements.md).
    train_processes: int = 0
    bf16: bool = True  # train under bfloat16 autocast (measured: docs/measurements.md)
    seed: int = 0
    # Stable Diffusion backend
    prompt_templates: tuple = ("a photo of a {}.",)
    resolution: int = 512
    vae_slicing: bool = True
    gradient_checkpointing: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # autocast dtype on CUDA (bf16 for guidance)
    vae_tiling: bool = False
    guided_batch_size: int = 0  # cap on the batch of guided sampling calls (0 = sampling.batch_size)
    variant: str = ""  # weight-file variant to load, e.g. "fp16" (diffusion_pytorch_model.fp16.safetensors)


@dataclass
class SamplingConfig:
    steps: int = 10  # solver steps (model evaluations per sample, ×2 with classifier-free guidance)
    # ddim (first order, the paper's) | dpmpp_2m (DPM-Solver++ 2M) | unipc (UniPC-2M); all from diffusers, x̂0 clipped
    # (the default, measured against DDIM: docs/measurements.md)
    solver: Literal["ddim", "dpmpp_2m", "unipc"] = "dpmpp_2m"
    # paper's λ in ε = (1+λ)ε_c − λε_u (Eq. 5): the classifier-free guidance of every sample, plain and guided
    # (how 2 was chosen: docs/measurements.md)
    cfg_scale: float = 2.0
    eta: float = 0.0
    batch_size: int = 250  # samples per model call: index-aligned chunks of seeds (generation/base.py); fixes bytes
    seed_offset: int = 0  # sample i of a pool gets seed seed_offset + i
    shard_size: int = 1000


@dataclass
class GuidanceConfig:
    criterion: str = "entropy"  # registry name of the score whose gradient steers sampling
    # ω in Eq. 7 (entropy-ascending), in the paper's step convention (``scale``): how strongly added samples are
    # steered towards high entropy under the current learner (how 0.01 was chosen: docs/measurements.md)
    omega: float = 0.01
    every: int = 1  # guide every k-th DDIM step
    window: tuple = (0.0, 1.0)  # guide only within this fraction of the trajectory (0 = first step)
    grad: Literal["unet", "x0"] = "unet"  # exact gradient through the UNet, or w.r.t. x̂0 only
    # the criterion reads x̂0 clipped to the image range [-1, 1] (x̂0 reaches ±16 at the noisiest steps); the
    # gradient then flows only through pixels inside the range (bench/criteria_sweep.py measures both)
    clip_x0: bool = False
    scale: Literal["raw", "normalized", "paper"] = "paper"  # paper: x_t += ω·‖x_t‖·g/‖g‖ (docs/guidance_scale.md)
    floor: float = 0.0  # entropy_onlabel: guide a sample only while f(y|x̂0) ≥ floor (and y is the argmax)
    cap: float = 0.6931471805599453  # loss_capped: ascend −log f(y|x̂0) only while below this (log 2: f(y) = 1/2)
    # none | diffusion: guided samples the generator itself classifies as another class (Li et al. 2023) are
    # replaced by the plain sample of their (label, seed); generation/label_check.py
    label_check: Literal["none", "diffusion"] = "none"
    check_timesteps: tuple = (300, 500, 700)  # noise levels of the diffusion classifier


@dataclass
class LearnerConfig:
    model: str = "cnn_small"  # registry name, or any timm model name
    pretrained_path: str = ""
    batch_size: int = 128  # global batch: all processes together (each takes batch_size / world_size)
    micro_batch_size: int = 0  # gradient accumulation in micro-batches of this size (0 = one per process)
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    warmup_iterations: int = 0  # > 0: warm up for this many iterations whatever the run's length (replaces warmup_frac)
    decay_frac: float = 0.2
    label_smoothing: float = 0.1
    ema: bool = False
    ema_decay: float = 0.999
    # decay ramps as 1 − (1 + step)^(−2/3) up to ema_decay (timm ModelEmaV3 warmup): without it, after 400 steps at
    # 0.999 two thirds of the average is still the initialisation (0.999^400 ≈ 0.67)
    ema_warmup: bool = True
    mixup: float = 0.0
    cutmix: float = 0.0
    augment: bool = True  # random crop with padding (+ horizontal flip when hflip)
    hflip: bool = True  # part of augment; Fashion-MNIST items all face one way, so a flip makes unseen images
    # bfloat16 autocast for training and evaluation (guidance reads the fp32 weights; measured: docs/measurements.md)
    bf16: bool = True
    # NHWC activations, the channels-last memory format, for the learner (measured: docs/measurements.md)
    channels_last: bool = True
    img_size: int = 0  # timm learners: resize inputs to this size (0 = native)
    eval_batch_size: int = 1000
    loader_workers: int = 2  # training input: DataLoader worker processes (0 = in-process); results do not depend on it


@dataclass
class PracticeConfig:
    iterations: int = 2000
    eval_every: int = 50  # τ
    initial_samples: int = 1000  # N
    add_samples: int = 500  # P
    patience: int = 2  # T_max
    patience_growth: int = 1  # incremental patience: T_max grows by this after each addition (0 = fixed)
    max_samples: int = 4000  # sample budget; no addition may cross it
    min_delta: float = 0.0  # an evaluation counts as an improvement when it beats the best by more than this
    oversample: int = 4  # prune: generate oversample × kept plain samples, keep the highest-entropy ones
    prune_scorer_iterations: int = 500  # prune: iterations of the scorer trained on the first N plain samples
    # prune / prune_random: which M of the k·M candidates are kept: per_class = each class its share of M (as in
    # the first M plain samples), the hardest (or, for prune_random, random ones) within it; global = the M hardest
    # (random) whatever their class
    prune_keep: Literal["per_class", "global"] = "per_class"


@dataclass
class RunConfig:
    methods: tuple = ("dp", "static")
    out_dir: str = "runs"
    name: str = ""
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch intra-op threads (0 = leave torch's default)
    checkpoint_every: int = 0  # save the full training state every K iterations (0 = only at rounds)
    # also keep a copy of the training state after these iterations (methods/<m>/kept/it<I>.pt), taken before that
    # iteration's evaluation: the start of a decay branched from a stable-phase run (deliberate/branch.py)
    keep_checkpoints: tuple = ()
    deterministic: bool = False  # deterministic kernels (torch.use_deterministic_algorithms; slower on GPU)
    progress: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    practice: PracticeConfig = field(default_factory=PracticeConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------- loading
def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is Literal:
        if value not in typing.get_args(typ):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(typ))}")
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if typ is tuple:
        if isinstance(value, str):  # "[8, 16]" or "dp,static"
            parsed = _parse_scalar(value) if value.strip().startswith("[") else None
            value = parsed if isinstance(parsed, list) else [_parse_scalar(v.strip()) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(value)
    if typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _parse_scalar(text: str) -> Any:
    """Parse a command-line override value with YAML rules (``3`` → int, ``1e-3`` → float, ``[a,b]`` → list)."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str):  # YAML reads 1e-3 as a string
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _apply(obj: Any, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{full}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, full + ".")
        else:
            typ = hints[key]
            if isinstance(typ, types.GenericAlias):
                typ = typing.get_origin(typ)
            if isinstance(value, str) and typ not in (str,) and typing.get_origin(typ) is not Literal:
                value = _parse_scalar(value) if typ is not tuple else value
            setattr(obj, key, _coerce(value, typ, full))


def parse_overrides(items: list[str]) -> dict:
    """``["learner.lr=1e-3", "run.methods=dp,static"]`` → nested dict."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        _apply(cfg, data)
    if overrides:
        _apply(cfg, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    validate(cfg)
    return cfg


def config_from_dict(data: dict) -> Config:
    cfg = Config()
    _apply(cfg, data)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    d, g, s, gd, lr, pr, r = cfg.data, cfg.generator, cfg.sampling, cfg.guidance, cfg.learner, cfg.practice, cfg.run
    need(d.val_size > 0, f"data.val_size must be > 0, got {d.val_size}")
    need(d.gen_train_size >= 0, f"data.gen_train_size must be >= 0, got {d.gen_train_size}")
    need(g.name in GENERATORS, f"generator.name: unknown generator '{g.name}' (known: {sorted(GENERATORS)})")
    need(g.train_processes >= 0, f"generator.train_processes must be >= 0, got {g.train_processes}")
    need(g.train_processes <= g.batch_size, f"generator.train_processes ({g.train_processes}) exceeds "
                                            f"generator.batch_size ({g.batch_size}): a process would get no rows")
    need(g.time_embedding_dim >= 0, f"generator.time_embedding_dim must be >= 0, got {g.time_embedding_dim}")
    need(len(g.block_out_channels) >= 2 and all(isinstance(c, int) and c > 0 for c in g.block_out_channels),
         f"generator.block_out_channels must be >= 2 positive integers, got {g.block_out_channels}")
    need(g.train_steps >= 0, f"generator.train_steps must be >= 0, got {g.train_steps}")
    need(g.batch_size > 0 and g.lr > 0, "generator.batch_size and generator.lr must be > 0")
    need(0 <= g.cond_drop < 1, f"generator.cond_drop must be in [0, 1), got {g.cond_drop}")
    need(0 <= g.ema_decay < 1, f"generator.ema_decay must be in [0, 1), got {g.ema_decay}")
    need(g.beta_schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"),
         f"generator.beta_schedule: unknown schedule '{g.beta_schedule}'")
    need(1 <= s.steps <= g.num_train_timesteps, f"sampling.steps must be in [1, {g.num_train_timesteps}], got {s.steps}")
    need(s.cfg_scale >= 0, f"sampling.cfg_scale must be >= 0, got {s.cfg_scale}")
    need(s.eta >= 0, f"sampling.eta must be >= 0, got {s.eta}")
    need(s.eta == 0 or s.solver == "ddim", f"sampling.eta={s.eta} needs sampling.solver=ddim (the multistep solvers "
         f"are deterministic here), got {s.solver}")
    need(0 <= cfg.guidance.floor < 1, f"guidance.floor must be in [0, 1), got {cfg.guidance.floor}")
    need(cfg.guidance.cap > 0, f"guidance.cap must be > 0, got {cfg.guidance.cap}")
    need(gd.label_check == "none" or g.name == "pixel_unet", f"guidance.label_check={gd.label_check} needs a "
         f"class-conditional generator (pixel_unet), got {g.name}")
    need(len(gd.check_timesteps) > 0 and all(isinstance(t, int) and 0 <= t < g.num_train_timesteps
                                             for t in gd.check_timesteps),
         f"guidance.check_timesteps must be timesteps in [0, {g.num_train_timesteps}), got {gd.check_timesteps}")
    need(g.min_snr_gamma > 0, f"generator.min_snr_gamma must be > 0, got {g.min_snr_gamma}")
    need(g.lognormal_std > 0, f"generator.lognormal_std must be > 0, got {g.lognormal_std}")
    need(s.batch_size > 0 and s.shard_size > 0, "sampling.batch_size and sampling.shard_size must be > 0")
    need(s.seed_offset >= 0, "sampling.seed_offset must be >= 0")
    need(gd.criterion in CRITERIA, f"guidance.criterion: unknown criterion '{gd.criterion}' (known: {sorted(CRITERIA)})")
    need(gd.omega >= 0 and gd.omega == gd.omega and gd.omega != float("inf"), f"guidance.omega must be finite and >= 0, got {gd.omega}")
    need(gd.every >= 1, f"guidance.every must be >= 1, got {gd.every}")
    need(len(gd.window) == 2 and 0 <= float(gd.window[0]) < float(gd.window[1]) <= 1,
         f"guidance.window must be [start, end] with 0 <= start < end <= 1, got {gd.window}")
    gd.window = (float(gd.window[0]), float(gd.window[1]))
    need(lr.batch_size > 0 and lr.lr > 0 and lr.weight_decay >= 0, "learner.batch_size/lr must be > 0, weight_decay >= 0")
    need(0 <= lr.warmup_frac < 1 and 0 <= lr.decay_frac < 1 and lr.warmup_frac + lr.decay_frac <= 1,
         f"learner.warmup_frac + learner.decay_frac must be in [0, 1], got {lr.warmup_frac} + {lr.decay_frac}")
    need(0 <= lr.label_smoothing < 1, f"learner.label_smoothing must be in [0, 1), got {lr.label_smoothing}")
    need(lr.mixup >= 0 and lr.cutmix >= 0, "learner.mixup and learner.cutmix must be >= 0")
    need(0 < lr.ema_decay < 1, f"learner.ema_decay must be in (0, 1), got {lr.ema_decay}")
    need(lr.model in LEARNERS or lr.model.startswith("timm/") or _is_timm_model(lr.model),
         f"learner.model: unknown model '{lr.model}' (ours: {sorted(LEARNERS)}, or any timm model name)")
    _validate_paper_scale(cfg, need)
    need(pr.iterations > 0, f"practice.iterations must be > 0, got {pr.iterations}")
    need(pr.eval_every > 0, f"practice.eval_every must be > 0, got {pr.eval_every}")
    need(pr.initial_samples > 0, f"practice.initial_samples must be > 0, got {pr.initial_samples}")
    need(pr.add_samples >= 0, f"practice.add_samples must be >= 0, got {pr.add_samples}")
    need(pr.patience >= 1, f"practice.patience must be >= 1, got {pr.patience}")
    need(pr.patience_growth >= 0, f"practice.patience_growth must be >= 0, got {pr.patience_growth}")
    need(pr.max_samples >= pr.initial_samples,
         f"practice.max_samples ({pr.max_samples}) must be >= practice.initial_samples ({pr.initial_samples})")
    need(pr.oversample >= 1, f"practice.oversample must be >= 1, got {pr.oversample}")
    need(pr.prune_scorer_iterations >= 1,
         f"practice.prune_scorer_iterations must be >= 1, got {pr.prune_scorer_iterations}")
    need(len(r.methods) > 0, "run.methods must name at least one method")
    for m in r.methods:
        need(m in METHODS, f"run.methods: unknown method '{m}' (known: {sorted(METHODS)})")
    need(len(set(r.methods)) == len(r.methods), f"run.methods has duplicates: {list(r.methods)}")
    need(r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:"), f"run.device: unknown device '{r.device}'")
    need(r.threads >= 0 and r.checkpoint_every >= 0, "run.threads and run.checkpoint_every must be >= 0")
    need(all(isinstance(i, int) and 0 < i <= pr.iterations for i in r.keep_checkpoints),
         f"run.keep_checkpoints must be iterations in [1, practice.iterations={pr.iterations}], got {r.keep_checkpoints}")
    need(lr.warmup_iterations >= 0, f"learner.warmup_iterations must be >= 0, got {lr.warmup_iterations}")


def _is_timm_model(name: str) -> bool:
    try:
        import timm

        return timm.is_model(name)
    except Exception:  # pragma: no cover - timm missing
        return False


def _validate_paper_scale(cfg: Config, need) -> None:
    """Checks of the folder data, Stable Diffusion and multi-process keys (docs/paper_scale.md)."""
    d, g, lr = cfg.data, cfg.generator, cfg.learner
    need(d.name in ("fashion_mnist", "class_folders", "folders"),
         f"data.name: unknown dataset '{d.name}' (fashion_mnist, class_folders or folders)")
    need(d.image_size >= 0 and d.test_per_class >= 0 and d.workers >= 0 and d.test_size >= 0,
         "data.image_size, data.test_per_class, data.workers and data.test_size must be >= 0")
    need(d.name != "class_folders" or bool(d.root), "data.name=class_folders needs data.root=<dataset folder>")
    if d.name == "class_folders" and g.name == "pixel_unet" and d.image_size:
        f = 2 ** (len(g.block_out_channels) - 1)
        need(d.image_size % f == 0, f"data.image_size={d.image_size} must be a multiple of {f} for the pixel generator "
             f"(generator.block_out_channels has {len(g.block_out_channels)} levels, each after the first halves it)")
    need(d.name != "class_folders" or g.name != "stable_diffusion" or d.image_size > 0,
         "data.name=class_folders with generator.name=stable_diffusion needs data.image_size > 0 (the size real "
         "images and samples are stored at)")
    if d.name == "folders":
        need(bool(d.val_dir) and bool(d.test_dir), "data.name=folders needs data.val_dir and data.test_dir")
        need(d.image_size > 0, "data.name=folders needs data.image_size > 0 (the size images are stored at)")
        need(g.name != "pixel_unet" or bool(g.path), "generator.name=pixel_unet trains on the generator split, which "
             "data.name=folders does not provide: set generator.path or use generator.name=stable_diffusion")
    need(all(isinstance(v, str) and v for v in d.ood_dirs.values()), "data.ood_dirs must map names to folders")
    need(not d.ood_dirs or d.name == "folders", "data.ood_dirs needs data.name=folders (class folders named by wnid)")
    need(len(g.prompt_templates) > 0 and all(isinstance(t, str) and "{}" in t for t in g.prompt_templates),
         f"generator.prompt_templates must be strings containing '{{}}', got {list(g.prompt_templates)}")
    need(g.resolution > 0 and g.resolution % 8 == 0, f"generator.resolution must be a positive multiple of 8, got {g.resolution}")
    need(g.guided_batch_size >= 0, f"generator.guided_batch_size must be >= 0, got {g.guided_batch_size}")
    need(g.name != "stable_diffusion" or bool(g.path), "generator.name=stable_diffusion needs generator.path "
         "(a local diffusers-format Stable Diffusion directory; nothing is downloaded)")
    need(lr.micro_batch_size >= 0, f"learner.micro_batch_size must be >= 0, got {lr.micro_batch_size}")
    need(lr.loader_workers >= 0, f"learner.loader_workers must be >= 0, got {lr.loader_workers}")
    need(not lr.micro_batch_size or lr.batch_size % lr.micro_batch_size == 0,
         f"learner.batch_size ({lr.batch_size}) must be a multiple of learner.micro_batch_size ({lr.micro_batch_size})")
