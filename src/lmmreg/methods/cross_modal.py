"""Cross-modal linear probing (Lin et al. CVPR 2023, "Multimodality Helps Unimodality: Cross-Modal Few-Shot Learning
with Multimodal Models"; linzhiqiu/cross_modal_adaptation train.py): text embeddings become extra training samples
of a linear head on CLIP's shared space, half of every batch.

    logits = s normalize(x) W^T                  one head for both modalities (LogitHead: no bias, logit 4.60517)
    batch = (B - B/2 image samples) + (B/2 text samples), each half drawn from its own shuffled loader (drop_last)

`cross_modal`: the text samples are the class prompts (the repo's); `cross_modal_lmm`: the LMM's descriptions of
the training images, each labelled with its image's class (the text LMM-Reg. reads, as samples instead of a
regulariser's target). W starts random (linear_probe.sh), or, with `init: zeroshot`, at the normalised class means
of the text samples (get_zero_shot_weights). AdamW (betas 0.9, 0.999), 12,800 iterations: a linear warm-up over
50 of them from 1e-5, then cosine (CosineAnnealingLR over `iters`, so it stops short of 0). Every 100th iteration
the head is validated and the best one kept (early stopping); lr x weight decay x batch size are searched (the
repo's HYPER_DICT['linear'] and eval.py: the highest validation accuracy, the first in grid order on ties).

s: the repo's exp(4.60517) = 100 "CLIP's default logit scaling", here `baselines.logit_scale` like the other
baselines' 100. The settings of a batch size train as one batched computation (one AdamW group each) on the same
data order; the official code draws each its own order and initial head.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.centroids import build_train_descriptions  # noqa: F401  (re-exported: it builds this method's input)
from lmmreg.config import CrossModalConfig
from lmmreg.engine import FitResult, evaluate, percent
from lmmreg.methods.base import (
    MethodInputs,
    RunContext,
    ScoreModel,
    Search,
    embed,
    frozen_embeddings,
    search_split,
    zero_shot_scale,
)

log = logging.getLogger(__name__)

# (features [M, D], labels [M]) of the text samples that go with the training rows `rows`
TextSamples = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batch_halves(batch_size: int, text_ratio: float) -> tuple[int, int]:
    """(image, text) samples per step: int(B * ratio) text, the rest images (CROSS_MODAL_BATCH_RATIO)."""
    text = int(batch_size * text_ratio)
    return batch_size - text, text


def valid_batch_sizes(cfg: CrossModalConfig, n_image: int, n_text: int) -> list[int]:
    """The repo's get_valid_batch_sizes: each half strictly smaller than its dataset (drop_last keeps a full batch)."""
    return [b for b in cfg.batch_sizes
            if all(half == 0 or half < n for half, n in zip(batch_halves(b, cfg.text_ratio), (n_image, n_text),
                                                             strict=True))]


class ShuffledBatches:
    """A DataLoader(shuffle=True, drop_last=True) over n samples that restarts when it runs out (the repo's loop)."""

    def __init__(self, n: int, size: int, gen: torch.Generator):
        self.n, self.size, self.gen = n, size, gen
        self.order, self.at = torch.empty(0, dtype=torch.long), 0

    def next(self) -> torch.Tensor:
        if self.at + self.size > len(self.order):
            self.order, self.at = torch.randperm(self.n, generator=self.gen), 0
        self.at += self.size
        return self.order[self.at - self.size:self.at]


def lr_factor(step: int, *, base: float, cfg: CrossModalConfig) -> float:
    """The lr of iteration `step` over the base lr: the repo's LinearWarmupScheduler (warmup_lr at step 0, then
    base * step / warmup) chained to CosineAnnealingLR(T_max = iters), which starts after the warm-up."""
    if step < cfg.warmup_iters:
        return cfg.warmup_lr / base if step == 0 else step / cfg.warmup_iters
    return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_iters) / cfg.iters))


@dataclass
class Kept:
    """A setting's head at its best validation point (or at its last step, without validation)."""

    weight: torch.Tensor  # W [C, D]
    step: int  # the iteration after which it was kept (0-based)
    val_acc: float = float("nan")


ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1.0e-8  # the repo's AdamW: ADAM_BETAS, torch's default eps


def train_heads(img: tuple[torch.Tensor, torch.Tensor], text: tuple[torch.Tensor, torch.Tensor], init: torch.Tensor,
                *, settings: list[tuple[float, float]], halves: tuple[int, int], scale: float, cfg: CrossModalConfig,
                seed: int, steps: int, val: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[Kept]:
    """Train one head per (lr, weight decay) setting on the same batches for `steps` iterations.

    img / text: (normalised features [N, D], labels [N]); init: W0 [C, D]. With `val` (normalised features,
    labels), every `eval_every`-th iteration validates each head and keeps its best (strictly better only: the
    first best iteration); without, each head's last weights.

    The G heads are one tensor [G, C, D]: the cross-entropy gradient s (softmax - onehot)^T x / B and torch's
    AdamW update (decoupled weight decay, bias-corrected moments) are written out for all of them at once, since
    the repo's per-head optimiser costs several times more per step here, where a step is a few tiny matmuls."""
    g_wd = torch.tensor([wd for _, wd in settings], dtype=init.dtype)[:, None, None]  # [G, 1, 1]
    w = init.expand(len(settings), *init.shape).clone()  # [G, C, D]
    m, v = torch.zeros_like(w), torch.zeros_like(w)  # AdamW's first and second moments
    lrs = torch.tensor([[lr * lr_factor(s, base=lr, cfg=cfg) for lr, _ in settings] for s in range(steps)],
                       dtype=w.dtype)  # [steps, G]: each step's lr of each head
    (b1, b2) = ADAM_BETAS
    gen = torch.Generator().manual_seed(seed)
    # each modality's own loader, images drawn first at every step (one generator, seeded by the run's seed)
    parts = [(x, y, ShuffledBatches(len(y), size, gen)) for (x, y), size in zip((img, text), halves, strict=True)
             if size > 0]
    kept = [Kept(init.clone(), -1, float("-inf")) for _ in settings]
    for step in range(steps):
        rows = [(x, y, batches.next()) for x, y, batches in parts]
        x = torch.cat([x[i] for x, _, i in rows])  # [B, D]
        y = torch.cat([y[i] for _, y, i in rows])  # [B]
        p = torch.softmax(scale * x @ w.transpose(1, 2), dim=-1)  # [G, B, C]
        p[:, torch.arange(len(y)), y] -= 1  # d CE / d logits, times B
        grad = (scale / len(y)) * p.transpose(1, 2) @ x  # [G, C, D]: each head's mean cross-entropy
        lr, t = lrs[step][:, None, None], step + 1  # [G, 1, 1]; AdamW's step count
        w.mul_(1 - lr * g_wd)
        m.lerp_(grad, 1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        w.sub_(lr / (1 - b1 ** t) * m / (v.sqrt() / math.sqrt(1 - b2 ** t) + ADAM_EPS))
        if val is not None and step % cfg.eval_every == 0:
            preds = (scale * w @ val[0].T).argmax(1)  # [G, C, Nv] -> [G, Nv]
            for g, correct in enumerate((preds == val[1]).sum(1).tolist()):
                acc = percent(correct, len(val[1]))
                if acc > kept[g].val_acc:
                    kept[g] = Kept(w[g].clone(), step, acc)
    if val is None:
        return [Kept(w[g].clone(), steps - 1) for g in range(len(settings))]
    return kept


def initial_head(cfg: CrossModalConfig, text: tuple[torch.Tensor, torch.Tensor], random: torch.Tensor) -> torch.Tensor:
    """W0 [C, D]: `random` (nn.Linear's default), or the normalised class means of the (un-normalised) text samples
    (zeroshot, get_zero_shot_weights)."""
    if cfg.init == "random":
        return random
    feats, labels = text
    sums = torch.zeros_like(random).index_add_(0, labels, feats)
    return F.normalize(sums / torch.bincount(labels, minlength=len(random))[:, None], dim=-1)


def _samples(x: torch.Tensor, views: torch.Tensor | None, y: torch.Tensor,
             rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image samples of training rows `rows`, normalised: the clean view and every cached view, each a sample."""
    if views is None:
        return F.normalize(x[rows], dim=-1), y[rows]
    v = views[rows]  # [n, V, D]
    return F.normalize(v.flatten(0, 1), dim=-1), y[rows].repeat_interleave(v.shape[1])


def _train(inp: MethodInputs, ctx: RunContext, text_samples: TextSamples) -> FitResult:
    cfg = ctx.baselines.cross_modal
    scale = zero_shot_scale(inp, ctx)
    train_x, views, test_x = frozen_embeddings(inp)
    n_classes = inp.class_text.shape[0]  # its shape only: cross_modal_lmm never reads the prompts
    # nn.Linear's default, drawn once for every run below, in the features' dtype
    w_random = nn.Linear(train_x.shape[1], n_classes, bias=False).weight.detach().to(train_x.dtype)
    everything = torch.arange(len(inp.train_y))

    def run(rows: torch.Tensor, settings: list[tuple[float, float]], batch: int, steps: int,
            val: tuple[torch.Tensor, torch.Tensor] | None) -> list[Kept]:
        img = _samples(train_x, views, inp.train_y, rows)
        feats, labels = text_samples(rows)  # un-normalised: zeroshot averages them before normalising
        return train_heads(img, (F.normalize(feats, dim=-1), labels), initial_head(cfg, (feats, labels), w_random),
                           settings=settings,
                           halves=halves(batch, len(img[1]), len(labels)), scale=scale, cfg=cfg, seed=ctx.seed,
                           steps=steps, val=val)

    def halves(batch: int, n_image: int, n_text: int) -> tuple[int, int]:
        image, text = batch_halves(batch, cfg.text_ratio)
        return min(image, n_image), min(text, n_text)  # capped only where no batch size of the grid is valid

    def sizes(rows: torch.Tensor) -> list[int]:
        n_image = len(rows) * (views.shape[1] if views is not None else 1)
        valid = valid_batch_sizes(cfg, n_image, len(text_samples(rows)[1]))
        if not valid:  # the repo raises; here the smallest batch size, each half at most its dataset
            log.warning("%s: no batch size of %s has each half smaller than its samples (%d images, %d texts): "
                        "batch %d, halves capped", ctx.desc, cfg.batch_sizes, n_image, len(text_samples(rows)[1]),
                        min(cfg.batch_sizes))
            return [min(cfg.batch_sizes)]
        return valid

    grid = [(lr, wd) for lr in cfg.lr_grid for wd in cfg.weight_decay_grid]
    split = search_split(inp, ctx)
    if split is None:  # no validation images: the first setting of the grid, every iteration
        lr, wd = grid[0]
        batch, steps = sizes(everything)[0], cfg.iters
        head = run(everything, [(lr, wd)], batch, steps, None)[0]
    else:
        val_x, val_y = split.val(inp, train_x, lambda f: embed(inp.tail, f))
        val = (F.normalize(val_x, dim=-1), val_y)
        found: dict[tuple[float, float, int], Kept] = {}
        batches = sizes(split.fit_idx)
        for batch in batches:  # the (lr, weight decay) settings of one batch size train at once
            found.update({(lr, wd, batch): k for (lr, wd), k in
                          zip(grid, run(split.fit_idx, grid, batch, cfg.iters, val), strict=True)})
        search = Search()
        for lr, wd in grid:  # the repo's loop order: lr, weight decay, batch size
            for batch in batches:
                search.add({"lr": lr, "weight_decay": wd, "batch_size": batch}, found[(lr, wd, batch)].val_acc)
        best = search.best()
        lr, wd, batch = best["lr"], best["weight_decay"], best["batch_size"]
        head, steps = found[(lr, wd, batch)], found[(lr, wd, batch)].step + 1
        if split.val_idx is not None:  # validation rows were held out of training: refit on every training row
            head = run(everything, [(lr, wd)], batch, steps, None)[0]
    w = head.weight
    ev = evaluate(ScoreModel(lambda x: scale * F.normalize(x, dim=-1) @ w.to(x.device).T), test_x, inp.test_y,
                  device=ctx.device)
    row = {"epoch": 1, "test_acc": ev.acc}
    if ctx.on_epoch:
        ctx.on_epoch(row)
    chosen = {"lr": lr, "weight_decay": wd, "batch_size": batch, "iters": steps}
    return FitResult([row], 1, ev, {"weight": w.cpu(), "scale": torch.tensor(scale)}, chosen=chosen)


def cross_modal(inp: MethodInputs, ctx: RunContext) -> FitResult:
    """The class prompts as text samples (one per class, labelled with it)."""
    prompts = (inp.class_text, torch.arange(inp.class_text.shape[0]))
    return _train(inp, ctx, lambda rows: prompts)


def cross_modal_lmm(inp: MethodInputs, ctx: RunContext) -> FitResult:
    """The LMM's descriptions of the training rows as text samples, each labelled with its image's class."""

    def descriptions(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        desc = inp.train_desc[rows]  # [n, M, D], NaN past each image's count
        present = ~desc.isnan().any(-1)  # [n, M]
        return desc[present], inp.train_y[rows][:, None].expand_as(present)[present]

    return _train(inp, ctx, descriptions)
