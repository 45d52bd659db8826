"""The method registry: what a method needs, which settings its result depends on, and how it trains.

A method is a function `(inp: MethodInputs, ctx: RunContext) -> FitResult` in a module of its family under
`lmmreg/methods/`, declared in `lmmreg.methods.registry` (what it needs, which settings it depends on, its α).
`run_method` looks the name up; `lmmreg.identity` reads the declaration (not a hand-kept list) to decide which
settings identify a run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lmmreg.config import BaselinesConfig, TrainConfig
from lmmreg.engine import Evaluation, FitResult, cosine_schedule, evaluate, fit, percent
from lmmreg.methods.registry import MethodEntry, get_method
from lmmreg.validation import holdout_split

log = logging.getLogger(__name__)

@dataclass
class MethodInputs:
    """Everything a method may need, aligned by image id (train rows first, then test rows)."""

    tail: nn.Module  # VisionTail built from CLIP, continuing from the boundary cache
    train_feat: torch.Tensor  # [Ntr, W] or [Ntr, T, W]
    test_feat: torch.Tensor
    train_y: torch.Tensor  # [Ntr]
    test_y: torch.Tensor
    centroids: torch.Tensor  # [C, D], Eq. 1
    class_text: torch.Tensor  # [C, D], CLIP text embedding of the class-name prompt
    train_text_mean: torch.Tensor  # [Ntr, D], mean embedding of each image's own descriptions
    test_text_mean: torch.Tensor
    # [Ntr, K, ...] cached augmented views of the training images (clip.augment_views), or None
    train_aug: torch.Tensor | None = None
    classnames: list[str] | None = None  # [C], in label order (prompt learning builds its own prompts)
    clip_model: nn.Module | None = None  # the whole open_clip model: prompt learning runs its text tower
    tokenizer: Any = None
    # CLIP's learnt temperature exp(logit_scale) (100 for OpenAI's weights), for methods whose code uses it
    logit_scale: float = 100.0
    # Few-shot only: the searches' validation images outside the K shots (lmmreg.shots.few_shot_inputs), used under
    # baselines.val_rule: outside_shots; None at shots: all (the split is then cut from the training rows)
    val_feat: torch.Tensor | None = None  # [Nv, W] or [Nv, T, W], boundary features like train_feat
    val_y: torch.Tensor | None = None  # [Nv]
    # [C, D] what LMM-Reg.'s J_reg pulls each class towards (train.reg_target, lmmreg.reg_targets); None = centroids
    reg_target: torch.Tensor | None = None
    # [Ntr, M, D]: each training image's own description embeddings t_i^j (descriptions.pt, in j order), NaN rows
    # past the image's count (M: the most any image has); None unless a method reads it (cross_modal_lmm)
    train_desc: torch.Tensor | None = None

    def train_views(self) -> torch.Tensor | None:
        """[Ntr, 1 + K, ...]: the clean view first, then the augmented ones; None without augmentation."""
        if self.train_aug is None or self.train_aug.shape[1] == 0:
            return None
        return torch.cat([self.train_feat[:, None], self.train_aug], dim=1)

    def subset(self, idx: torch.Tensor) -> MethodInputs:
        """The same inputs with only training rows `idx` (a hyper-parameter search fits on part of train)."""
        aug = self.train_aug[idx] if self.train_aug is not None else None
        desc = self.train_desc[idx] if self.train_desc is not None else None
        return dataclasses.replace(self, train_feat=self.train_feat[idx], train_y=self.train_y[idx],
                                   train_text_mean=self.train_text_mean[idx], train_aug=aug, train_desc=desc)


@dataclass(frozen=True)
class RunContext:
    """How one (method, seed) run is asked for: the shared settings and where progress goes."""

    alpha: float
    cfg: TrainConfig
    baselines: BaselinesConfig
    seed: int
    device: str | torch.device = "cpu"
    on_epoch: Callable[[dict], None] | None = None
    desc: str = "train"
    # what the evaluated split is called in progress lines: a search evaluates on its validation split
    eval_name: str = "test_acc"


def run_method(method: str, inp: MethodInputs, *, alpha: float, cfg: TrainConfig, seed: int,
               device: str | torch.device = "cpu", on_epoch=None, desc: str = "train",
               baselines: BaselinesConfig | None = None) -> FitResult:
    """Train (if the method trains) and evaluate; training-free methods return a one-row history. `alpha` is
    params.alpha: the method gets the α its registry entry declares (finetune 0, lmm_reg `alpha`)."""
    spec = get_method(method)
    check_inputs(spec, inp)
    fn = spec.load()
    torch.manual_seed(seed)  # a head's initialisation is part of the seed
    ctx = RunContext(alpha=spec.alpha_value(alpha), cfg=cfg, baselines=baselines or BaselinesConfig(), seed=seed,
                     device=device, on_epoch=on_epoch, desc=desc)
    return fn(inp, ctx)


def check_inputs(spec: MethodEntry, inp: MethodInputs) -> None:
    missing = sorted(n for n in spec.needs if getattr(inp, n) is None)
    if missing:
        raise ValueError(f"method {spec.name!r} needs {', '.join(missing)}, which the inputs lack")


# ------------------------------------------------------------------ helpers the families share


class ScoreModel(nn.Module):
    """Wraps a training-free scorer `fn(emb [B, D]) -> logits [B, C]` as a model `evaluate` can run."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, emb):
        return emb, self.fn(emb)


@torch.no_grad()
def embed(tail: nn.Module, feat: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Frozen x = f(I) for cached boundary features [N, ...] -> [N, D]."""
    tail.eval()
    return torch.cat([tail(feat[i:i + batch]) for i in range(0, len(feat), batch)]) if len(feat) else feat


def frozen_embeddings(inp: MethodInputs) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(train [Ntr, D], train views [Ntr, V, D] or None, test [Nte, D]): the image embeddings, computed once."""
    views = inp.train_views()  # [Ntr, V, ...]
    train_views = embed(inp.tail, views.flatten(0, 1)).view(*views.shape[:2], -1) if views is not None else None
    return embed(inp.tail, inp.train_feat), train_views, embed(inp.tail, inp.test_feat)


def training_free(scorer: nn.Module | Callable[[torch.Tensor], torch.Tensor], test_x: torch.Tensor,
                  test_y: torch.Tensor, ctx: RunContext) -> FitResult:
    """Evaluate on test a model returning (emb, logits), or a scorer returning logits; a one-row history."""
    model = scorer.to(ctx.device) if isinstance(scorer, nn.Module) else ScoreModel(scorer)
    ev: Evaluation = evaluate(model, test_x, test_y, device=ctx.device)
    row = {"epoch": 1, "test_acc": ev.acc}
    if ctx.on_epoch:
        ctx.on_epoch(row)
    return FitResult([row], 1, ev, {})


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return percent(int((logits.argmax(-1).cpu() == y.cpu()).sum()), len(y))


@dataclass(frozen=True)
class SearchSplit:
    """Where a hyper-parameter search fits and where it validates.

    fit_idx: the training rows it fits on. val_idx: the training rows held out for validation, or None when the
    validation images are the inputs' own `val_feat` / `val_y` (outside the K shots), and the search fits on every
    training row.
    """

    fit_idx: torch.Tensor
    val_idx: torch.Tensor | None

    def val(self, inp: MethodInputs, train_rows: torch.Tensor,
            encode: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(validation rows in the form of `train_rows` [Ntr, ...] (the method's own view of the training rows),
        their labels); images outside the shots are brought into that form by `encode(val_feat)`."""
        if self.val_idx is not None:
            return train_rows[self.val_idx], inp.train_y[self.val_idx]
        return encode(inp.val_feat), inp.val_y


def search_split(inp: MethodInputs, ctx: RunContext) -> SearchSplit | None:
    """The split of a hyper-parameter search, seeded by the run's seed; None when nothing can be held out (no class
    has two training images, or no image outside the shots): the method then uses its paper's defaults.

    `baselines.val_rule: outside_shots` with few-shot inputs: validate on their images outside the K shots, fit on
    all K shots (CoOp's rule). Otherwise (`from_shots`, or full data): `val_fraction` of each class's training rows.
    """
    if ctx.baselines.val_rule == "outside_shots" and inp.val_feat is not None:
        if len(inp.val_y) == 0 or len(inp.train_y) == 0:
            log.warning("%s: no validation image outside the shots: the method's defaults are used", ctx.desc)
            return None
        return SearchSplit(torch.arange(len(inp.train_y)), None)
    if len(inp.train_y) == 0 or int(torch.bincount(inp.train_y).max()) < 2:
        log.warning("%s: no class has 2 training images, no validation split: the method's defaults are used", ctx.desc)
        return None
    return SearchSplit(*holdout_split(inp.train_y, seed=ctx.seed, val_fraction=ctx.baselines.val_fraction))


def zero_shot_scale(inp: MethodInputs, ctx: RunContext) -> float:
    """The scale of the zero-shot logits where the official code writes 100 (`baselines.logit_scale`)."""
    return 100.0 if ctx.baselines.logit_scale == "fixed_100" else float(inp.logit_scale)


# The settings a method declares when it searches on a validation split / scales zero-shot logits as above


def images_per_class(y: torch.Tensor) -> float:
    """N of ProLIP's lambda = 1/N: training images per class (the shots in few-shot)."""
    return len(y) / max(1, len(torch.unique(y)))


def quiet(ctx: RunContext, desc: str) -> RunContext:
    """The context for a search run: no per-epoch callback, its own progress label."""
    return dataclasses.replace(ctx, on_epoch=None, desc=desc, eval_name="val_acc")


def with_epochs(cfg: TrainConfig, *, epochs: int, batch_size: int) -> TrainConfig:
    """A baseline's own epochs and batch size in the engine; it always reports the last epoch (never test-picked)."""
    # budget "epochs": a baseline keeps its own recipe, whatever step budget the paper's methods get in few-shot
    return dataclasses.replace(cfg, epochs=epochs, batch_size=batch_size, report_epoch="last", budget="epochs")


def fit_dassl(model: nn.Module, trainable: list[torch.Tensor], c: Any, inp: MethodInputs, ctx: RunContext, *,
              train_x: torch.Tensor, views: torch.Tensor | None, test_x: torch.Tensor,
              penalty: Callable[[], torch.Tensor] | None = None) -> FitResult:
    """Dassl's recipe, which CoOp, CLIP-Adapter and CLAP train with: SGD (`c.lr`, `c.momentum`, `c.weight_decay`) on
    `trainable`, the baseline's own epochs and batch size, the lr cosine per epoch after `c.warmup_epochs` at the
    constant `c.warmup_lr`; one cached view per image and epoch where there are views (`frozen_embeddings`)."""
    opt = torch.optim.SGD(trainable, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    return fit(model, train_x=views if views is not None else train_x, train_y=inp.train_y, test_x=test_x,
               test_y=inp.test_y, centroids=None, alpha=0.0,
               cfg=with_epochs(ctx.cfg, epochs=c.epochs, batch_size=c.batch_size), seed=ctx.seed, device=ctx.device,
               on_epoch=ctx.on_epoch, views=views is not None, desc=ctx.desc, optimizer=opt, penalty=penalty,
               schedule=lambda o, per_epoch: cosine_schedule(o, epochs=c.epochs, steps_per_epoch=per_epoch,
                                                             per="epoch", warmup_epochs=c.warmup_epochs,
                                                             warmup_lr=c.warmup_lr))


@dataclass
class Search:
    """The record of a validation search: every (setting, val accuracy) tried and the winner."""

    tried: list[tuple[dict, float]] = field(default_factory=list)

    def add(self, setting: dict, val_acc: float) -> None:
        self.tried.append((setting, val_acc))

    def best(self) -> dict:
        """The first setting with the highest validation accuracy (grid order breaks ties, as the repos do)."""
        if not self.tried:
            raise ValueError("empty search")
        top = max(a for _, a in self.tried)
        return next(s for s, a in self.tried if a == top)
