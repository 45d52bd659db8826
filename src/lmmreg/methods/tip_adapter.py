"""Tip-Adapter and Tip-Adapter-F (Zhang et al. ECCV 2022, gaopengcuhk/Tip-Adapter main.py, utils.py).

    logits = s f T^T + ratio * exp(-beta (1 - f K^T)) L     (s: the repo's 100 or the CLIP's own, baselines.logit_scale)

f: normalised image features; K [N, D]: the cache keys, normalised training features (the mean over the cached
views, as the repo averages its augment epochs); L [N, C]: their one-hot labels. Tip-Adapter is training-free;
Tip-Adapter-F trains K (AdamW, lr 1e-3, eps 1e-4, cosine over all steps, 20 epochs, batch 256) with the initial
beta, ratio. ratio is the paper's residual ratio alpha (`baselines.tip_adapter.init_alpha`, `alpha_scale`,
`alpha_steps`; recorded as `alpha`). beta, ratio come from the repo's grid search, on the validation split: the cache
for the search holds only the other training images (an image in its own cache would match itself). Unlike the repo,
Tip-Adapter-F never keeps the best epoch by test accuracy: it reports the last epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.engine import FitResult, cosine_schedule, fit
from lmmreg.methods.base import (
    MethodInputs,
    RunContext,
    Search,
    accuracy,
    embed,
    frozen_embeddings,
    quiet,
    search_split,
    training_free,
    with_epochs,
    zero_shot_scale,
)


def grid(scale: float, steps: int) -> list[float]:
    """utils.search_hp: i * (scale - 0.1) / steps + 0.1 for i < steps."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


def cache_keys(train_x: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
    """[N, D] normalised keys: the mean over views (if any) of the un-normalised features, then normalised."""
    return F.normalize(views.mean(1) if views is not None else train_x, dim=-1)


class TipAdapter(nn.Module):
    """Tip-Adapter's logits; `keys` trainable for -F. Train mode uses (init) beta, ratio; eval mode the searched."""

    def __init__(self, keys: torch.Tensor, labels: torch.Tensor, class_text: torch.Tensor, *, beta: float,
                 ratio: float, trainable: bool = False, scale: float = 100.0):
        super().__init__()
        self.scale = scale  # of the zero-shot logits: the repo's 100 (baselines.logit_scale)
        self.keys = nn.Parameter(keys.clone(), requires_grad=trainable)  # K [N, D]
        self.register_buffer("values", F.one_hot(labels, class_text.shape[0]).float())  # L [N, C]
        self.register_buffer("text", F.normalize(class_text, dim=-1))  # T [C, D]
        self.train_hp = self.eval_hp = (beta, ratio)

    def cache_logits(self, f: torch.Tensor, beta: float) -> torch.Tensor:
        return torch.exp(-beta * (1 - f @ self.keys.T)) @ self.values  # [B, C]

    def forward(self, x):
        f = F.normalize(x, dim=-1)
        beta, ratio = self.train_hp if self.training else self.eval_hp
        return x, self.scale * f @ self.text.T + ratio * self.cache_logits(f, beta)


@torch.no_grad()
def search_beta_ratio(model: TipAdapter, val_x: torch.Tensor, val_y: torch.Tensor, cfg) -> tuple[float, float]:
    """utils.search_hp on the validation images: the first (beta, ratio) of highest accuracy."""
    f = F.normalize(val_x, dim=-1).to(model.text.device)
    clip_logits = model.scale * f @ model.text.T
    search = Search()
    for beta in grid(cfg.beta_scale, cfg.beta_steps):
        cache = model.cache_logits(f, beta)
        for ratio in grid(cfg.alpha_scale, cfg.alpha_steps):
            search.add({"beta": beta, "alpha": ratio}, accuracy(clip_logits + ratio * cache, val_y))
    best = search.best()
    return best["beta"], best["alpha"]


def tip_adapter(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.tip_adapter
    train_x, views, test_x = frozen_embeddings(inp)
    beta, ratio = c.init_beta, c.init_alpha  # kept only where no validation split exists
    scale = zero_shot_scale(inp, ctx)
    split = search_split(inp, ctx)
    if split is not None:
        fit_idx = split.fit_idx
        part = TipAdapter(cache_keys(train_x[fit_idx], views[fit_idx] if views is not None else None),
                          inp.train_y[fit_idx], inp.class_text, beta=c.init_beta, ratio=c.init_alpha, scale=scale)
        beta, ratio = search_beta_ratio(part, *split.val(inp, train_x, lambda f: embed(inp.tail, f)), c)
    model = TipAdapter(cache_keys(train_x, views), inp.train_y, inp.class_text, beta=beta, ratio=ratio,
                       scale=scale).eval()
    res = training_free(model, test_x, inp.test_y, ctx)
    res.chosen = {"beta": beta, "alpha": ratio}
    return res


def _train_keys(inp: MethodInputs, ctx: RunContext, train_x: torch.Tensor, views: torch.Tensor | None,
                eval_x: torch.Tensor, eval_y: torch.Tensor,
                eval_hp: tuple[float, float] | None = None) -> tuple[TipAdapter, FitResult]:
    """Train the cache keys of `inp`'s training rows with the initial beta, ratio; evaluate with `eval_hp`."""
    c = ctx.baselines.tip_adapter
    model = TipAdapter(cache_keys(train_x, views), inp.train_y, inp.class_text, beta=c.init_beta,
                       ratio=c.init_alpha, trainable=True, scale=zero_shot_scale(inp, ctx)).to(ctx.device)
    if eval_hp is not None:
        model.eval_hp = eval_hp
    opt = torch.optim.AdamW([model.keys], lr=c.lr, eps=1e-4)
    res = fit(model, train_x=views if views is not None else train_x, train_y=inp.train_y, test_x=eval_x,
              test_y=eval_y, centroids=None, alpha=0.0, cfg=with_epochs(ctx.cfg, epochs=c.epochs,
              batch_size=c.batch_size), seed=ctx.seed, device=ctx.device, on_epoch=ctx.on_epoch,
              views=views is not None, desc=ctx.desc, optimizer=opt, eval_name=ctx.eval_name,
              schedule=lambda o, per_epoch: cosine_schedule(o, epochs=c.epochs, steps_per_epoch=per_epoch),
              eval_every_epoch=eval_hp is not None)  # the search run (no eval_hp yet) needs no evaluations
    return model, res


def tip_adapter_f(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.tip_adapter
    train_x, views, test_x = frozen_embeddings(inp)
    beta, ratio = c.init_beta, c.init_alpha  # kept only where no validation split exists
    split = search_split(inp, ctx)
    if split is not None:
        # 1. On the fit split: train the keys with the initial beta, ratio; search beta, ratio on validation.
        fit_idx = split.fit_idx
        val_x, val_y = split.val(inp, train_x, lambda f: embed(inp.tail, f))
        part, _ = _train_keys(inp.subset(fit_idx), quiet(ctx, f"{ctx.desc} search"), train_x[fit_idx],
                              views[fit_idx] if views is not None else None, val_x, val_y)
        beta, ratio = search_beta_ratio(part, val_x, val_y, c)
    # 2. On all training images, the same training; every evaluation uses the searched beta, ratio.
    _, res = _train_keys(inp, ctx, train_x, views, test_x, inp.test_y, eval_hp=(beta, ratio))
    res.chosen = {"beta": beta, "alpha": ratio}
    return res
