"""Typed view of `params.yaml`, checked at start-up.

Every section becomes a frozen dataclass. An unknown key, a missing key, a value of the wrong type or
out of range fails at load time with the dotted key in the message (`train.lr: expected float, got
str '1e-4' (YAML reads 1e-4 as a string: write 1.0e-4)`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A `params.yaml` problem; the message names the file and the dotted key."""


@dataclass(frozen=True)
class DemoConfig:
    """The synthetic demo dataset (see :mod:`lmmreg.data.demo`)."""

    seed: int = 0
    n_classes: int = 8
    train_per_class: int = 60
    test_per_class: int = 30
    image_size: int = 64
    # An image keeps each preferred attribute of its class with this probability (else any value): how much
    # classes overlap in what captions name (main) and in the cues captions seldom name (hidden).
    keep_main: float = 0.75
    keep_hidden: float = 0.75
    # How many main attributes of each class differ between this dataset and what the world's captions
    # associate with the class name (a dataset's own conventions vs the web's: a domain gap zero-shot meets).
    shift: int = 0


@dataclass(frozen=True)
class SourceConfig:
    """How `prepare` reads one dataset found at `data/raw/<name>/`."""

    layout: Literal["demo", "imagefolder", "csv", "ucf101", "bar", "era", "coop"]
    # Layout-specific options (split file, class map, frame choice, csv file name ...); checked by the layout.
    options: dict[str, Any] = field(default_factory=dict)
    # Counts the paper reports, {"train": n, "test": n, "classes": n} (and "val" for a layout with one); a mismatch is
    # a warning.
    expected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PrepareConfig:
    on_bad_image: Literal["error", "skip"] = "error"
    max_image_pixels: int = 89_478_485  # PIL's own decompression-bomb limit


@dataclass(frozen=True)
class DescribeConfig:
    backend: Literal["scripted", "transformers", "openai", "minigpt4", "file"] = "scripted"
    model: str = ""
    prompt: str = "Give 10 semantic descriptions for the image"
    n_descriptions: int = 10
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 300
    repetition_penalty: float = 1.05
    seed: int = 0
    on_too_few: Literal["accept", "retry", "fail"] = "accept"
    # on_too_few: retry re-asks an image this many more times (new seed each time) and keeps the answer
    # with the most descriptions; after that it is accepted as is.
    too_few_retries: int = 2
    # The `file` backend's descriptions (.jsonl or .csv). Always set, because dvc.yaml makes it a dependency of
    # describe (`${describe.import_file}`): other backends leave the tracked, empty placeholder and ignore it.
    import_file: str = "data/imports/none.jsonl"
    # Backend-specific options (server URL, checkout path, key of the imported file ...).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipConfig:
    model: str = "lmmreg-tiny-quickgelu"
    # open_clip pretrained tag ("openai"), a local checkpoint path, or "" for random init (demo / tests).
    pretrained: str = ""
    init_seed: int = 0
    # open_clip's `lock_image_tower(unlocked_groups=...)`: 1 = only visual.proj trains (the paper).
    unlocked_groups: Literal[1, 2] = 1
    class_prompt: str = "a photo of a {}."
    # K augmented views per training image (open_clip's train transform, seeded by init_seed), cached beside
    # the clean view; 0 = none (the paper states no augmentation).
    augment_views: int = 0


# Every name the method registry (lmmreg.methods) knows; tests/test_methods_registry.py keeps the two equal.
Method = Literal["zero_shot", "zero_shot_lmm", "linear_probe", "concat", "finetune", "lmm_reg", "prolip", "gda",
                 "tip_adapter", "tip_adapter_f", "clip_adapter", "coop", "linear_probe_lbfgs"]


@dataclass(frozen=True)
class TrainConfig:
    methods: list[Method] = field(default_factory=lambda: ["finetune", "lmm_reg"])
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1.0e-4
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    # Eq. 2 sums ||x_i - C_l||^2 over the batch; "mean" divides by the batch size.
    reg_reduction: Literal["sum", "mean"] = "sum"
    # L2-normalise x_i and C_l before the distance (the paper does not).
    normalize: bool = False
    # Which epoch's test accuracy is "the" number: the last one or the best one.
    report_epoch: Literal["last", "best"] = "last"
    # Few-shot protocol (CoOp): "all" = the whole train split (the paper); K = K images per class, drawn per seed
    # (lmmreg.shots). The test set is always the full one.
    shots: int | Literal["all"] = "all"
    # Under few-shot, centroids (Eq. 1) from the descriptions of the K-shot images only ("shots": no extra
    # labelled data) or of the whole train split ("train").
    centroids_from: Literal["shots", "train"] = "shots"
    # "steps": every K gets the optimiser steps of the full-data run at `epochs` (or `steps` when > 0);
    # "epochs": `epochs` passes over whatever subset is trained on (few steps at small K).
    budget: Literal["steps", "epochs"] = "steps"
    steps: int = 0
    # The linear head's start: random (PyTorch's default), the class-prompt embeddings or the LMM centroids.
    head_init: Literal["random", "class_text", "centroids"] = "random"


# ------------------------------------------------------------------ the field's baselines (`baselines:`)
# Each method's defaults are its paper's / official repository's, named beside them. Searched values are chosen on
# a validation split held out from train (lmmreg.validation), never on test.


@dataclass(frozen=True)
class ProLIPConfig:
    """Fahes et al. 2024, astra-vision/ProLIP: configs/base.yaml and methods/ProLIP.py."""

    steps: int = 300  # train_epoch: 300 full-batch steps, cosine annealing over them
    lr: float = 1.0e-5  # lr_v (Adam, eps 1e-4)
    # lambda_v; null = 1/N with N the training images per class (lambda_funct_1_N: True)
    reg: float | None = None
    search: bool = True  # search_lr: the lr x lambda grid below on the validation split
    lr_grid: list[float] = field(default_factory=lambda: [1.0e-2, 1.0e-3, 1.0e-4, 1.0e-5, 1.0e-6, 1.0e-7, 1.0e-8])
    reg_grid: list[float] = field(default_factory=lambda: [10.0, 1.0, 0.1, 0.01, 0.001, 0.0001, 0.0])


@dataclass(frozen=True)
class GDAConfig:
    """Wang et al. ICLR 2024, mrflogs/ICLR24: main_few_shots.py (alpha grid searched on val)."""

    alpha_grid: list[float] = field(default_factory=lambda: [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0])


@dataclass(frozen=True)
class TipAdapterConfig:
    """Zhang et al. ECCV 2022, gaopengcuhk/Tip-Adapter: main.py, utils.search_hp, configs/imagenet.yaml."""

    init_beta: float = 1.0  # init_beta
    init_alpha: float = 1.17  # init_alpha (imagenet.yaml; the per-dataset configs differ, the search decides)
    # search_scale / search_step: beta in 0.1 + i (scale - 0.1) / steps, i < steps; same for alpha
    beta_scale: float = 7.0
    beta_steps: int = 200
    alpha_scale: float = 3.0
    alpha_steps: int = 20
    # Tip-Adapter-F: cache keys trained with AdamW (eps 1e-4), cosine over all steps
    epochs: int = 20  # train_epoch
    lr: float = 1.0e-3  # lr
    batch_size: int = 256  # train_loader_F


@dataclass(frozen=True)
class ClipAdapterConfig:
    """Gao et al. 2021, gaopengcuhk/CLIP-Adapter: clip_adapter.py (bottleneck, ratio); trained "following CoOp's
    command" (README), so the optimiser is CoOp's configs/trainers/CoOp/vit_b16.yaml with Dassl's SGD defaults."""

    ratio: float = 0.2  # residual ratio: 0.2 * adapter(f) + 0.8 * f
    reduction: int = 4  # Adapter(c_in, reduction=4)
    epochs: int = 200
    batch_size: int = 32
    lr: float = 2.0e-3
    momentum: float = 0.9  # Dassl OPTIM.MOMENTUM
    weight_decay: float = 5.0e-4  # Dassl OPTIM.WEIGHT_DECAY
    warmup_epochs: int = 1  # WARMUP_EPOCH, constant WARMUP_CONS_LR
    warmup_lr: float = 1.0e-5


@dataclass(frozen=True)
class CoOpConfig:
    """Zhou et al. IJCV 2022, KaiyangZhou/CoOp: trainers/coop.py, configs/trainers/CoOp/vit_b16.yaml,
    scripts/coop/main.sh (16 context tokens, class token at the end, one shared context)."""

    n_ctx: int = 16  # N_CTX
    ctx_init: str = ""  # CTX_INIT; "" = random N(0, 0.02) (the paper's main rows); "a photo of a" = ctxv1
    # 200 epochs is CoOp's 16-shot budget (50 for 1 shot, 100 for 2-4 shots); full data uses the 16-shot one
    epochs: int = 200
    batch_size: int = 32
    lr: float = 2.0e-3
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1.0e-5


@dataclass(frozen=True)
class LinearProbeLbfgsConfig:
    """Radford et al. 2021 (CLIP's linear-probe protocol) as KaiyangZhou/CoOp lpclip/linear_probe.py runs it:
    scikit-learn L-BFGS logistic regression, C from a coarse grid then a binary search in log10(C)."""

    c_grid: list[float] = field(default_factory=lambda: [1.0e6, 1.0e4, 1.0e2, 1.0, 1.0e-2, 1.0e-4, 1.0e-6])
    search_steps: int = 8  # num_step
    max_iter: int = 1000


@dataclass(frozen=True)
class BaselinesConfig:
    # Share of each class's training images held out to search hyper-parameters (full data, and val_rule: from_shots).
    val_fraction: float = 0.2
    # The search's validation images under train.shots: K. outside_shots: min(K, 4) per class from the training
    # images that are not among the K shots, drawn per seed (CoOp / Dassl, lpclip's val_shot_list); from_shots:
    # val_fraction of the K shots themselves. At shots: all both are the val_fraction split.
    val_rule: Literal["outside_shots", "from_shots"] = "outside_shots"
    # The scale of the zero-shot logits in GDA, Tip-Adapter(-F) and ProLIP. Their official code writes 100 because
    # that is OpenAI CLIP's learnt temperature exp(logit_scale) (clamped at 100 in training); `model` uses the
    # CLIP's own, the same as 100 for OpenAI's weights and its faithful analogue for any other CLIP (the demo's
    # learnt 16.7); `fixed_100` keeps the literal constant whatever the model.
    logit_scale: Literal["model", "fixed_100"] = "model"
    prolip: ProLIPConfig = field(default_factory=ProLIPConfig)
    gda: GDAConfig = field(default_factory=GDAConfig)
    tip_adapter: TipAdapterConfig = field(default_factory=TipAdapterConfig)
    clip_adapter: ClipAdapterConfig = field(default_factory=ClipAdapterConfig)
    coop: CoOpConfig = field(default_factory=CoOpConfig)
    linear_probe_lbfgs: LinearProbeLbfgsConfig = field(default_factory=LinearProbeLbfgsConfig)


@dataclass(frozen=True)
class PretrainConfig:
    """The demo CLIP's in-world contrastive pretraining (stage `pretrain_clip`; docs/clip.md)."""

    # false: nothing is pretrained (the paper's setting, `clip.pretrained: openai`); the stage costs nothing.
    enabled: bool = False
    seed: int = 0  # the corpus (its own seed and ids, disjoint from the demo images) and the training order
    n_images: int = 50000
    captions_per_image: int = 2
    heldout_images: int = 1000  # held-out pairs for retrieval and attribute zero-shot (another seed)
    # Captions (data/corpus.py): a scene type is named only where >= scene_fit of its 4 main attributes match,
    # then with probability scene_prob; hidden_prob: a seldom-named cue is named; caption_noise: one wrong word.
    scene_fit: int = 3
    scene_prob: float = 0.25
    hidden_prob: float = 0.1
    caption_noise: float = 0.05
    steps: int = 300
    batch_size: int = 256
    lr: float = 3.0e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    # torch threads: part of the result (the order of float reductions), so a param.
    threads: int = 2


@dataclass(frozen=True)
class ReportConfig:
    bootstrap: int = 1000
    ci: float = 0.95


@dataclass(frozen=True)
class Params:
    alpha: float
    datasets: list[str]
    seeds: list[int]
    sources: dict[str, SourceConfig]
    demo: DemoConfig
    prepare: PrepareConfig
    describe: DescribeConfig
    clip: ClipConfig
    train: TrainConfig
    baselines: BaselinesConfig
    report: ReportConfig
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def source(self, dataset: str) -> SourceConfig:
        return self.sources[dataset]


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, returning it (dataclasses built recursively)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or type(value) is not type(choices[0]):
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)[:1]
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _convert(value, arm, key)
            except ConfigError:
                continue
        arms = " | ".join(_type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"{key}: {value!r} matches none of {arms}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (YAML reads 1e-4 as a string: write 1.0e-4)" if isinstance(value, str) else ""
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}{hint}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    raise ConfigError(f"{key}: unsupported annotation {tp}")  # a bug in this module, not in params.yaml


def _build(cls: type, raw: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key {key}")
            continue
        kwargs[f.name] = _convert(raw[f.name], hints[f.name], key)
    return cls(**kwargs)


def _validate(p: Params) -> None:
    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    need(p.alpha >= 0, "alpha", f"must be >= 0, got {p.alpha}")
    need(len(p.datasets) > 0, "datasets", "empty: list at least one dataset (e.g. [demo])")
    need(len(set(p.datasets)) == len(p.datasets), "datasets", f"duplicates in {p.datasets}")
    for name in p.datasets:
        need(name in p.sources, "datasets", f"{name!r} has no entry under sources: (known: {sorted(p.sources)})")
    need(len(p.seeds) > 0, "seeds", "empty: list at least one seed")
    need(len(set(p.seeds)) == len(p.seeds), "seeds", f"duplicates in {p.seeds}")
    need(len(p.train.methods) > 0, "train.methods", "empty")
    need(p.train.epochs >= 1, "train.epochs", f"must be >= 1, got {p.train.epochs}")
    need(p.train.batch_size >= 1, "train.batch_size", f"must be >= 1, got {p.train.batch_size}")
    need(p.train.lr > 0, "train.lr", f"must be > 0, got {p.train.lr}")
    need(p.train.shots == "all" or p.train.shots >= 1, "train.shots", f"must be 'all' or >= 1, got {p.train.shots}")
    need(p.train.steps >= 0, "train.steps", f"must be >= 0 (0 = the full-data run's steps), got {p.train.steps}")
    need(p.train.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {p.train.weight_decay}")
    need(len(set(p.train.methods)) == len(p.train.methods), "train.methods", f"duplicates in {p.train.methods}")
    b = p.baselines
    need(0 < b.val_fraction < 1, "baselines.val_fraction", f"must be in (0, 1), got {b.val_fraction}")
    for key, value in (("prolip.steps", b.prolip.steps), ("tip_adapter.epochs", b.tip_adapter.epochs),
                       ("tip_adapter.batch_size", b.tip_adapter.batch_size), ("tip_adapter.beta_steps",
                       b.tip_adapter.beta_steps), ("tip_adapter.alpha_steps", b.tip_adapter.alpha_steps),
                       ("clip_adapter.epochs", b.clip_adapter.epochs), ("clip_adapter.batch_size",
                       b.clip_adapter.batch_size), ("clip_adapter.reduction", b.clip_adapter.reduction),
                       ("coop.epochs", b.coop.epochs), ("coop.batch_size", b.coop.batch_size),
                       ("coop.n_ctx", b.coop.n_ctx), ("linear_probe_lbfgs.max_iter", b.linear_probe_lbfgs.max_iter)):
        need(value >= 1, f"baselines.{key}", f"must be >= 1, got {value}")
    for key, grid in (("prolip.lr_grid", b.prolip.lr_grid), ("prolip.reg_grid", b.prolip.reg_grid),
                      ("gda.alpha_grid", b.gda.alpha_grid), ("linear_probe_lbfgs.c_grid", b.linear_probe_lbfgs.c_grid)):
        need(len(grid) > 0, f"baselines.{key}", "empty")
    need(all(c > 0 for c in b.linear_probe_lbfgs.c_grid), "baselines.linear_probe_lbfgs.c_grid", "must be > 0")
    need(0 <= b.clip_adapter.ratio <= 1, "baselines.clip_adapter.ratio",
         f"must be in [0, 1], got {b.clip_adapter.ratio}")
    need(b.prolip.reg is None or b.prolip.reg >= 0, "baselines.prolip.reg", "must be >= 0 or null (1/N)")
    need(p.describe.n_descriptions >= 1, "describe.n_descriptions", "must be >= 1")
    need(0 < p.describe.top_p <= 1, "describe.top_p", f"must be in (0, 1], got {p.describe.top_p}")
    need(p.describe.temperature >= 0, "describe.temperature", "must be >= 0")
    need(p.describe.max_new_tokens >= 1, "describe.max_new_tokens", "must be >= 1")
    need(p.describe.too_few_retries >= 0, "describe.too_few_retries", "must be >= 0")
    need(p.clip.augment_views >= 0, "clip.augment_views", f"must be >= 0, got {p.clip.augment_views}")
    need(p.demo.n_classes >= 2, "demo.n_classes", "must be >= 2")
    need(p.demo.train_per_class >= 1 and p.demo.test_per_class >= 1, "demo.train_per_class", "must be >= 1")
    need(p.demo.image_size >= 16, "demo.image_size", "must be >= 16")
    need(0 <= p.demo.shift <= 4, "demo.shift", f"must be in 0..4, got {p.demo.shift}")
    for key in ("keep_main", "keep_hidden"):
        need(0 <= getattr(p.demo, key) <= 1, f"demo.{key}", f"must be in [0, 1], got {getattr(p.demo, key)}")
    pt = p.pretrain
    need(pt.n_images >= pt.batch_size, "pretrain.n_images", f"must be >= pretrain.batch_size ({pt.batch_size})")
    need(pt.captions_per_image >= 1, "pretrain.captions_per_image", "must be >= 1")
    need(pt.heldout_images >= 10, "pretrain.heldout_images", "must be >= 10")
    need(1 <= pt.scene_fit <= 4, "pretrain.scene_fit", f"must be in 1..4, got {pt.scene_fit}")
    for key in ("scene_prob", "hidden_prob", "caption_noise"):
        need(0 <= getattr(pt, key) <= 1, f"pretrain.{key}", f"must be in [0, 1], got {getattr(pt, key)}")
    need(pt.steps >= 1 and pt.warmup_steps >= 0, "pretrain.steps", "must be >= 1 (warmup_steps >= 0)")
    need(pt.lr > 0 and pt.threads >= 1, "pretrain.lr", "lr must be > 0 and threads >= 1")
    need(0 < p.report.ci < 1, "report.ci", f"must be in (0, 1), got {p.report.ci}")
    need(p.report.bootstrap >= 0, "report.bootstrap", "must be >= 0")


def parse_params(raw: dict, *, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    try:
        params = _build(Params, raw, "")
        _validate(params)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run from the repository root, or pass --params)")
    with path.open() as f:
        raw = yaml.safe_load(f)
    return parse_params(raw, source=str(path))


def to_dict(obj: Any) -> Any:
    """Plain JSON-able dict of a config object (for hashing and logging)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def stable_hash(obj: Any, n: int = 16) -> str:
    """Short sha256 of a JSON-able object with sorted keys: equal configs give equal hashes."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
