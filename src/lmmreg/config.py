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


@dataclass(frozen=True)
class SourceConfig:
    """How `prepare` reads one dataset found at `data/raw/<name>/`."""

    layout: Literal["demo", "imagefolder", "csv", "ucf101", "bar", "era"]
    # Layout-specific options (split file, class map, frame choice, csv file name ...); checked by the layout.
    options: dict[str, Any] = field(default_factory=dict)
    # Counts the paper reports, {"train": n, "test": n, "classes": n}; a mismatch is a warning.
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
    # Backend-specific options (server URL, checkout path, file to import ...).
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


Method = Literal["zero_shot", "zero_shot_lmm", "linear_probe", "concat", "finetune", "lmm_reg"]


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
    report: ReportConfig

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
    need(p.describe.n_descriptions >= 1, "describe.n_descriptions", "must be >= 1")
    need(0 < p.describe.top_p <= 1, "describe.top_p", f"must be in (0, 1], got {p.describe.top_p}")
    need(p.describe.temperature >= 0, "describe.temperature", "must be >= 0")
    need(p.describe.max_new_tokens >= 1, "describe.max_new_tokens", "must be >= 1")
    need(p.describe.too_few_retries >= 0, "describe.too_few_retries", "must be >= 0")
    need(p.clip.augment_views >= 0, "clip.augment_views", f"must be >= 0, got {p.clip.augment_views}")
    need(p.demo.n_classes >= 2, "demo.n_classes", "must be >= 2")
    need(p.demo.train_per_class >= 1 and p.demo.test_per_class >= 1, "demo.train_per_class", "must be >= 1")
    need(p.demo.image_size >= 16, "demo.image_size", "must be >= 16")
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
