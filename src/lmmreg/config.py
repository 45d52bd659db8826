"""Typed view of `params.yaml`, checked at start-up.

Every section becomes a frozen dataclass. An unknown key, a missing key or a value of the wrong type fails at
load time with the dotted key in the message (`train.lr: expected float, got str '1e-4' (YAML reads 1e-4 as a
string: write 1.0e-4)`): lmmreg.typed_yaml checks the annotations. A value out of range fails the same way: each
section's `check(key)`, called when the section is built, checks its own fields under the key it was read at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# The generic converter is lmmreg.typed_yaml; ConfigError, to_dict and stable_hash are re-exported from here, where
# every module finds its config.
from lmmreg.typed_yaml import ConfigError, at_least, build, in_unit_interval, join, not_empty, require
from lmmreg.typed_yaml import stable_hash as stable_hash
from lmmreg.typed_yaml import to_dict as to_dict


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

    def check(self, key: str) -> None:
        require(self.n_classes >= 2, join(key, "n_classes"), "must be >= 2")
        for name in ("train_per_class", "test_per_class"):
            require(getattr(self, name) >= 1, join(key, name), "must be >= 1")
        require(self.image_size >= 16, join(key, "image_size"), "must be >= 16")
        require(0 <= self.shift <= 4, join(key, "shift"), f"must be in 0..4, got {self.shift}")
        in_unit_interval(self, key, "keep_main", "keep_hidden")


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

    def check(self, key: str) -> None:
        require(self.n_descriptions >= 1, join(key, "n_descriptions"), "must be >= 1")
        require(0 < self.top_p <= 1, join(key, "top_p"), f"must be in (0, 1], got {self.top_p}")
        require(self.temperature >= 0, join(key, "temperature"), "must be >= 0")
        require(self.max_new_tokens >= 1, join(key, "max_new_tokens"), "must be >= 1")
        require(self.too_few_retries >= 0, join(key, "too_few_retries"), "must be >= 0")


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

    def check(self, key: str) -> None:
        at_least(self, key, 0, "augment_views")


@dataclass(frozen=True)
class TrainConfig:
    methods: list[str] = field(default_factory=lambda: ["finetune", "lmm_reg"])  # names in lmmreg.methods.registry
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
    # What J_reg pulls each class towards (lmmreg.reg_targets): the LMM centroids (the paper) or a control.
    reg_target: Literal["lmm", "class_prompt", "shuffled", "random_text", "image_mean"] = "lmm"

    def check(self, key: str) -> None:
        # Names are checked against lmmreg.methods.registry by the stages that run methods (check_methods): importing
        # the registry here would make every stage depend on every method's code (lmmreg.plan.source_files).
        methods = join(key, "methods")
        require(len(self.methods) > 0, methods, "empty")
        require(len(set(self.methods)) == len(self.methods), methods, f"duplicates in {self.methods}")
        at_least(self, key, 1, "epochs", "batch_size")
        require(self.lr > 0, join(key, "lr"), f"must be > 0, got {self.lr}")
        require(self.shots == "all" or self.shots >= 1, join(key, "shots"), f"must be 'all' or >= 1, got {self.shots}")
        require(self.steps >= 0, join(key, "steps"), f"must be >= 0 (0 = the full-data run's steps), got {self.steps}")
        at_least(self, key, 0, "weight_decay")


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

    def check(self, key: str) -> None:
        at_least(self, key, 1, "steps")
        not_empty(self, key, "lr_grid", "reg_grid")
        require(self.reg is None or self.reg >= 0, join(key, "reg"), "must be >= 0 or null (1/N)")


@dataclass(frozen=True)
class GDAConfig:
    """Wang et al. ICLR 2024, mrflogs/ICLR24: main_few_shots.py (alpha grid searched on val)."""

    alpha_grid: list[float] = field(default_factory=lambda: [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0])

    def check(self, key: str) -> None:
        not_empty(self, key, "alpha_grid")


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

    def check(self, key: str) -> None:
        at_least(self, key, 1, "epochs", "batch_size", "beta_steps", "alpha_steps")


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

    def check(self, key: str) -> None:
        at_least(self, key, 1, "epochs", "batch_size", "reduction")
        require(0 <= self.ratio <= 1, join(key, "ratio"), f"must be in [0, 1], got {self.ratio}")


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

    def check(self, key: str) -> None:
        at_least(self, key, 1, "epochs", "batch_size", "n_ctx")


@dataclass(frozen=True)
class LinearProbeLbfgsConfig:
    """Radford et al. 2021 (CLIP's linear-probe protocol) as KaiyangZhou/CoOp lpclip/linear_probe.py runs it:
    scikit-learn L-BFGS logistic regression, C from a coarse grid then a binary search in log10(C)."""

    c_grid: list[float] = field(default_factory=lambda: [1.0e6, 1.0e4, 1.0e2, 1.0, 1.0e-2, 1.0e-4, 1.0e-6])
    search_steps: int = 8  # num_step
    max_iter: int = 1000

    def check(self, key: str) -> None:
        at_least(self, key, 1, "max_iter")
        not_empty(self, key, "c_grid")
        require(all(c > 0 for c in self.c_grid), join(key, "c_grid"), "must be > 0")


@dataclass(frozen=True)
class LPPlusPlusConfig:
    """Huang et al. CVPR 2024, FereshteShakeri/FewShot-CLIP-Strong-Baseline: methods/linear_probe_p2.py,
    configs/base.yaml. Full batch; the step sizes come from the data; validation picks only the epoch."""

    epochs: int = 300  # train_epoch
    alpha_every: int = 10  # the class multipliers alpha take one gradient step every 10 epochs
    momentum: float = 0.9  # SGD on the visual weights and bias

    def check(self, key: str) -> None:
        at_least(self, key, 1, "epochs", "alpha_every")


@dataclass(frozen=True)
class CLAPConfig:
    """Silva-Rodriguez et al. CVPR 2024, jusiro/CLAP: trainers/adapters.py, configs/trainers/SGD_lr1e-1_B256_ep300.yaml
    (TRAINER.ADAPTER.INIT ZS, CONSTRAINT l2) with Dassl's SGD defaults. No validation set: nothing is searched."""

    constraint: Literal["l2", "none"] = "l2"  # l2: CLAP; none: the zero-shot-initialised linear probe (ZS-LP)
    epochs: int = 300  # MAX_EPOCH
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9  # Dassl OPTIM.MOMENTUM
    weight_decay: float = 0.0
    warmup_epochs: int = 1  # WARMUP_EPOCH, constant WARMUP_CONS_LR
    warmup_lr: float = 1.0e-5

    def check(self, key: str) -> None:
        at_least(self, key, 1, "epochs", "batch_size")


@dataclass(frozen=True)
class CrossModalConfig:
    """Lin et al. CVPR 2023, linzhiqiu/cross_modal_adaptation: train.py, engine/optimizer/default.py (HYPER_DICT
    'linear'), linear_probe.sh (linear head, random init, logit 4.60517). Read by cross_modal and cross_modal_lmm."""

    iters: int = 12800  # max_iter
    lr_grid: list[float] = field(default_factory=lambda: [1.0e-3, 1.0e-4])  # AdamW
    weight_decay_grid: list[float] = field(default_factory=lambda: [0.0, 1.0e-2, 1.0e-4])
    batch_sizes: list[int] = field(default_factory=lambda: [8, 32])  # image + text samples per step
    text_ratio: float = 0.5  # CROSS_MODAL_BATCH_RATIO: the share of a batch that is text
    warmup_iters: int = 50  # linear warm-up from warmup_lr, then cosine over `iters`
    warmup_lr: float = 1.0e-5
    eval_every: int = 100  # EVAL_FREQ: validation every 100 iterations keeps the best head (early stopping)
    init: Literal["random", "zeroshot"] = "random"  # zeroshot: the normalised class means of the text samples

    def check(self, key: str) -> None:
        at_least(self, key, 1, "iters", "eval_every")
        at_least(self, key, 0, "warmup_iters")
        not_empty(self, key, "lr_grid", "weight_decay_grid", "batch_sizes")
        require(all(b >= 2 for b in self.batch_sizes), join(key, "batch_sizes"), "must be >= 2")
        require(0 < self.text_ratio < 1, join(key, "text_ratio"), f"must be in (0, 1), got {self.text_ratio}")


@dataclass(frozen=True)
class BaselinesConfig:
    # Share of each class's training images held out to search hyper-parameters (full data, and val_rule: from_shots).
    val_fraction: float = 0.2
    # The search's validation images under train.shots: K. outside_shots: min(K, 4) per class from the training
    # images that are not among the K shots, drawn per seed (CoOp / Dassl, lpclip's val_shot_list); from_shots:
    # val_fraction of the K shots themselves. At shots: all both are the val_fraction split.
    val_rule: Literal["outside_shots", "from_shots"] = "outside_shots"
    # The scale of the zero-shot logits in GDA, Tip-Adapter(-F) and ProLIP (and of the cross-modal probe's head, whose
    # code writes exp(4.60517)). Their official code writes 100 because
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
    lp_pp: LPPlusPlusConfig = field(default_factory=LPPlusPlusConfig)
    clap: CLAPConfig = field(default_factory=CLAPConfig)
    cross_modal: CrossModalConfig = field(default_factory=CrossModalConfig)

    def check(self, key: str) -> None:
        require(0 < self.val_fraction < 1, join(key, "val_fraction"), f"must be in (0, 1), got {self.val_fraction}")


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

    def check(self, key: str) -> None:
        require(self.n_images >= self.batch_size, join(key, "n_images"),
                f"must be >= {join(key, 'batch_size')} ({self.batch_size})")
        require(self.captions_per_image >= 1, join(key, "captions_per_image"), "must be >= 1")
        require(self.heldout_images >= 10, join(key, "heldout_images"), "must be >= 10")
        require(1 <= self.scene_fit <= 4, join(key, "scene_fit"), f"must be in 1..4, got {self.scene_fit}")
        in_unit_interval(self, key, "scene_prob", "hidden_prob", "caption_noise")
        require(self.steps >= 1, join(key, "steps"), "must be >= 1")
        require(self.warmup_steps >= 0, join(key, "warmup_steps"), "must be >= 0")
        require(self.lr > 0, join(key, "lr"), "must be > 0")
        require(self.threads >= 1, join(key, "threads"), "must be >= 1")


@dataclass(frozen=True)
class ReportConfig:
    bootstrap: int = 1000
    ci: float = 0.95

    def check(self, key: str) -> None:
        require(0 < self.ci < 1, join(key, "ci"), f"must be in (0, 1), got {self.ci}")
        require(self.bootstrap >= 0, join(key, "bootstrap"), "must be >= 0")


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

    def check(self, key: str) -> None:
        """What spans sections: each listed dataset has a source. The sections checked themselves when built."""
        require(self.alpha >= 0, join(key, "alpha"), f"must be >= 0, got {self.alpha}")
        datasets, seeds = join(key, "datasets"), join(key, "seeds")
        require(len(self.datasets) > 0, datasets, "empty: list at least one dataset (e.g. [demo])")
        require(len(set(self.datasets)) == len(self.datasets), datasets, f"duplicates in {self.datasets}")
        for name in self.datasets:
            require(name in self.sources, datasets,
                    f"{name!r} has no entry under sources: (known: {sorted(self.sources)})")
        require(len(self.seeds) > 0, seeds, "empty: list at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), seeds, f"duplicates in {self.seeds}")


def parse_params(raw: dict, *, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    try:
        params = build(Params, raw, "")
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
