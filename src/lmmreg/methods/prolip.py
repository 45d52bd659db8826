"""ProLIP (Fahes et al. 2024, "Fine-tuning CLIP's Last Visual Projector: a Few-shot Cornucopia",
astra-vision/ProLIP methods/ProLIP.py): fine-tune only CLIP's visual projection W, the zero-shot text
classifier T fixed, with a penalty that keeps W near its initialisation W0:

    logits = s * normalize(x W) T^T,    loss = CE + lambda * ||W - W0||_F^2  (a sum, nn.MSELoss(reduction="sum"))

s is the repo's 100, OpenAI CLIP's learnt temperature; `baselines.logit_scale: model` uses the CLIP's own.

Full-batch Adam (eps 1e-4) with cosine annealing over 300 steps; lambda = 1/N for N images per class. With
`search`, lr x lambda are chosen on the validation split (the repo's `search_lr`), then the model is retrained
on all training images with the winner. The 49 runs of the search train at once (`search_grid`: the runs'
projections are a batch dimension; bitwise the same weights as one run per setting). The closest sibling of
LMM-Reg.: same trainable parameter, a regulariser towards W0 instead of towards the LMM centroids.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.engine import FitResult, cosine_schedule, fit
from lmmreg.methods.base import (
    MethodInputs,
    RunContext,
    Search,
    accuracy,
    images_per_class,
    search_split,
    with_epochs,
    zero_shot_scale,
)

# Largest [runs, images, D] activation one batch of search runs holds (elements); more runs go in several batches.
# A few MiB keeps the elementwise work in cache: on the demo's search (49 runs, 960 x 64, 20 steps, one thread)
# 2^20 costs 1.06 CPU s, 2^22 (all runs at once) 1.50, 2^16 (one run a batch) 2.58, the 49 `fit` runs ~2.5.
# Results do not depend on it (tests/test_methods.py).
GRID_ELEMENTS = 1 << 20


class ProjectionClassifier(nn.Module):
    """The boundary tail with only `proj` trainable, and the fixed zero-shot classifier as head."""

    def __init__(self, tail: nn.Module, class_text: torch.Tensor, scale: float = 100.0):
        super().__init__()
        self.scale = scale  # ProLIP hard-codes 100, OpenAI CLIP's learnt temperature (baselines.logit_scale)
        self.tail = tail
        for name, p in self.tail.named_parameters():
            p.requires_grad_(name == "proj")
        self.register_buffer("proj0", tail.proj.detach().clone())  # W0 [W, D]
        self.register_buffer("text", F.normalize(class_text, dim=-1))  # T [C, D]

    def forward(self, x):
        emb = self.tail(x)  # [B, D]
        return emb, self.scale * F.normalize(emb, dim=-1) @ self.text.T

    def drift(self) -> torch.Tensor:
        return (self.tail.proj - self.proj0).pow(2).sum()


def train_prolip(inp: MethodInputs, ctx: RunContext, *, lr: float, reg: float, eval_x: torch.Tensor,
                 eval_y: torch.Tensor, search: bool = False) -> FitResult:
    c = ctx.baselines.prolip
    model = ProjectionClassifier(copy.deepcopy(inp.tail), inp.class_text, zero_shot_scale(inp, ctx))
    model.to(ctx.device)
    views = inp.train_views()
    train_x = inp.train_feat if views is None else views
    opt = torch.optim.Adam([model.tail.proj], lr=lr, eps=1e-4)
    return fit(model, train_x=train_x, train_y=inp.train_y, test_x=eval_x, test_y=eval_y, centroids=None,
               alpha=0.0, cfg=with_epochs(ctx.cfg, epochs=c.steps, batch_size=len(train_x)), seed=ctx.seed,
               device=ctx.device, on_epoch=ctx.on_epoch, views=views is not None, desc=ctx.desc, optimizer=opt,
               schedule=lambda o, per_epoch: cosine_schedule(o, epochs=c.steps, steps_per_epoch=per_epoch),
               penalty=lambda: reg * model.drift(), eval_every_epoch=not search)


def search_grid(inp: MethodInputs, ctx: RunContext, *, grid: list[tuple[float, float]], eval_x: torch.Tensor,
                eval_y: torch.Tensor) -> list[float]:
    """Accuracy on (eval_x, eval_y) of `train_prolip(inp, lr=lr, reg=reg, search=True)` for every (lr, reg) of
    `grid`, trained together: the runs' projections are a batch dimension [R, W, D] of one computation.

    Per run it is the same computation as `fit` does for one setting (tests/test_methods.py checks the weights
    bitwise): the frozen part before the projection runs once instead of every step; every run sees the data order
    `fit` draws from the seed (one full batch per step, views drawn per epoch); each run is a param group of
    torch's Adam with its own lr, under the same cosine schedule; CE is each run's mean, the penalty its own
    lambda ||W - W0||^2, and the sum of the runs' losses gives each run exactly its own gradient.
    """
    c = ctx.baselines.prolip
    tail = copy.deepcopy(inp.tail).to(ctx.device).requires_grad_(False)
    views = inp.train_views()
    train_x = inp.train_feat if views is None else views  # [N, ...] or [N, V, ...]
    n = len(train_x)
    with torch.no_grad():
        pre = tail.pre_projection(train_x.flatten(0, 1).to(ctx.device) if views is not None else train_x.to(ctx.device))
        pre = pre.view(n, train_x.shape[1], -1) if views is not None else pre  # [N, W] or [N, V, W]
        pre_eval = tail.pre_projection(eval_x.to(ctx.device))  # [Ne, W]
    text = F.normalize(inp.class_text.to(ctx.device), dim=-1)  # [C, D], the ProjectionClassifier's buffer
    w0 = tail.proj.detach()  # [W, D]
    scale = zero_shot_scale(inp, ctx)
    per_batch = max(1, GRID_ELEMENTS // max(1, max(n, len(eval_y)) * w0.shape[1]))
    accs: list[float] = []
    for start in range(0, len(grid), per_batch):
        weights = _train_grid(pre, inp.train_y.to(ctx.device), views is not None, w0, text,
                              grid[start:start + per_batch], steps=c.steps, seed=ctx.seed, scale=scale)
        with torch.no_grad():
            logits = scale * F.normalize(pre_eval @ weights, dim=-1) @ text.T  # [R, Ne, C]
        accs += [accuracy(run, eval_y) for run in logits]
    return accs


def _train_grid(pre: torch.Tensor, y: torch.Tensor, views: bool, w0: torch.Tensor, text: torch.Tensor,
                grid: list[tuple[float, float]], *, steps: int, seed: int, scale: float) -> torch.Tensor:
    """ProLIP's full-batch training of one projection per (lr, reg) of `grid` from W0; returns them [R, W, D]."""
    weights = [nn.Parameter(w0.clone()) for _ in grid]  # one leaf per run: torch's Adam keeps a param group each
    opt = torch.optim.Adam([{"params": [w], "lr": lr} for w, (lr, _) in zip(weights, grid, strict=True)],
                           lr=grid[0][0], eps=1e-4)
    sched = cosine_schedule(opt, epochs=steps, steps_per_epoch=1)
    regs = torch.tensor([reg for _, reg in grid], dtype=w0.dtype, device=w0.device)  # [R]
    gen = torch.Generator().manual_seed(seed)  # fit's generator: the same permutations (and views) per step
    n, runs = len(pre), len(grid)
    for _ in range(steps):
        order = torch.randperm(n, generator=gen)
        view = torch.randint(pre.shape[1], (n,), generator=gen) if views else None
        xb = pre[order, view[order]] if views else pre[order]  # [N, W]
        w = torch.stack(weights)  # [R, W, D]
        logits = scale * F.normalize(xb @ w, dim=-1) @ text.T  # [R, N, C]
        ce = F.cross_entropy(logits.flatten(0, 1), y[order].repeat(runs), reduction="none").view(runs, n).mean(1)
        loss = (ce + regs * (w - w0).pow(2).sum(dim=(1, 2))).sum()  # [R] -> a sum: each run its own gradient
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return torch.stack(weights).detach()


def prolip(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.prolip
    lr, reg = c.lr, c.reg if c.reg is not None else 1.0 / images_per_class(inp.train_y)
    split = search_split(inp, ctx) if c.search else None
    if split is not None:
        grid = [(a, b) for a in c.lr_grid for b in c.reg_grid]
        val_x, val_y = split.val(inp, inp.train_feat, lambda f: f)
        accs = search_grid(inp.subset(split.fit_idx), ctx, grid=grid, eval_x=val_x, eval_y=val_y)
        search = Search()
        for (lr_i, reg_i), acc in zip(grid, accs, strict=True):
            search.add({"lr": lr_i, "reg": reg_i}, acc)
        lr, reg = search.best()["lr"], search.best()["reg"]
    res = train_prolip(inp, ctx, lr=lr, reg=reg, eval_x=inp.test_feat, eval_y=inp.test_y)
    res.chosen = {"lr": lr, "reg": reg}
    return res
