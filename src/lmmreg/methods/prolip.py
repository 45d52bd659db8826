"""ProLIP (Fahes et al. 2024, "Fine-tuning CLIP's Last Visual Projector: a Few-shot Cornucopia",
astra-vision/ProLIP methods/ProLIP.py): fine-tune only CLIP's visual projection W, the zero-shot text
classifier T fixed, with a penalty that keeps W near its initialisation W0:

    logits = 100 * normalize(x W) T^T,    loss = CE + lambda * ||W - W0||_F^2  (a sum, nn.MSELoss(reduction="sum"))

Full-batch Adam (eps 1e-4) with cosine annealing over 300 steps; lambda = 1/N for N images per class. With
`search`, lr x lambda are chosen on the validation split (the repo's `search_lr`), then the model is retrained
on all training images with the winner. The closest sibling of LMM-Reg.: same trainable parameter, a
regulariser towards W0 instead of towards the LMM centroids.
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
    images_per_class,
    quiet,
    register,
    search_split,
    with_epochs,
)

SCALE = 100.0  # ProLIP hard-codes 100, CLIP's trained temperature


class ProjectionClassifier(nn.Module):
    """The boundary tail with only `proj` trainable, and the fixed zero-shot classifier as head."""

    def __init__(self, tail: nn.Module, class_text: torch.Tensor):
        super().__init__()
        self.tail = tail
        for name, p in self.tail.named_parameters():
            p.requires_grad_(name == "proj")
        self.register_buffer("proj0", tail.proj.detach().clone())  # W0 [W, D]
        self.register_buffer("text", F.normalize(class_text, dim=-1))  # T [C, D]

    def forward(self, x):
        emb = self.tail(x)  # [B, D]
        return emb, SCALE * F.normalize(emb, dim=-1) @ self.text.T

    def drift(self) -> torch.Tensor:
        return (self.tail.proj - self.proj0).pow(2).sum()


def train_prolip(inp: MethodInputs, ctx: RunContext, *, lr: float, reg: float, eval_x: torch.Tensor,
                 eval_y: torch.Tensor, search: bool = False) -> FitResult:
    c = ctx.baselines.prolip
    model = ProjectionClassifier(copy.deepcopy(inp.tail), inp.class_text).to(ctx.device)
    views = inp.train_views()
    train_x = inp.train_feat if views is None else views
    opt = torch.optim.Adam([model.tail.proj], lr=lr, eps=1e-4)
    return fit(model, train_x=train_x, train_y=inp.train_y, test_x=eval_x, test_y=eval_y, centroids=None,
               alpha=0.0, cfg=with_epochs(ctx.cfg, epochs=c.steps, batch_size=len(train_x)), seed=ctx.seed,
               device=ctx.device, on_epoch=ctx.on_epoch, views=views is not None, desc=ctx.desc, optimizer=opt,
               schedule=lambda o, per_epoch: cosine_schedule(o, epochs=c.steps, steps_per_epoch=per_epoch),
               penalty=lambda: reg * model.drift(), eval_every_epoch=not search)


@register("prolip", needs={"tail", "train_feat", "test_feat", "train_y", "test_y", "class_text"},
          settings=("baselines.prolip", "baselines.val_fraction"))
def prolip(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.prolip
    lr, reg = c.lr, c.reg if c.reg is not None else 1.0 / images_per_class(inp.train_y)
    split = search_split(inp, ctx) if c.search else None
    if split is not None:
        fit_idx, val_idx = split
        part = inp.subset(fit_idx)
        search = Search()
        for i, (lr_i, reg_i) in enumerate((a, b) for a in c.lr_grid for b in c.reg_grid):
            res = train_prolip(part, quiet(ctx, f"{ctx.desc} search {i + 1}"), lr=lr_i, reg=reg_i,
                               eval_x=inp.train_feat[val_idx], eval_y=inp.train_y[val_idx], search=True)
            search.add({"lr": lr_i, "reg": reg_i}, res.final.acc)
        lr, reg = search.best()["lr"], search.best()["reg"]
    res = train_prolip(inp, ctx, lr=lr, reg=reg, eval_x=inp.test_feat, eval_y=inp.test_y)
    res.chosen = {"lr": lr, "reg": reg}
    return res
