"""CLIP-Adapter (Gao et al. 2021, gaopengcuhk/CLIP-Adapter clip_adapter.py): a residual bottleneck MLP on the
frozen image features, the zero-shot text classifier as head.

    a = ReLU(ReLU(f A1) A2)   (A1: D -> D/4, A2: D/4 -> D, no biases)
    logits = exp(logit_scale) * normalize(ratio a + (1 - ratio) f) T^T,   ratio = 0.2

Trained with CoOp's recipe (the README: "follow CoOp's command"): SGD lr 2e-3, momentum 0.9, weight decay 5e-4,
batch 32, 200 epochs, cosine per epoch after one warm-up epoch at 1e-5. Cached augmented views: one per image
and epoch. Nothing is searched (the official code has no search).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.engine import FitResult, cosine_schedule, fit
from lmmreg.methods.base import MethodInputs, RunContext, frozen_embeddings, register, with_epochs


class ClipAdapter(nn.Module):
    def __init__(self, dim: int, class_text: torch.Tensor, *, reduction: int, ratio: float, scale: float):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(),
                                nn.Linear(dim // reduction, dim, bias=False), nn.ReLU())
        self.register_buffer("text", F.normalize(class_text, dim=-1))  # T [C, D]
        self.ratio, self.scale = ratio, scale

    def forward(self, f):
        emb = self.ratio * self.fc(f) + (1 - self.ratio) * f  # [B, D]
        return emb, self.scale * F.normalize(emb, dim=-1) @ self.text.T


@register("clip_adapter", needs={"tail", "train_feat", "test_feat", "train_y", "test_y", "class_text"},
          settings=("baselines.clip_adapter",))
def clip_adapter(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.clip_adapter
    train_x, views, test_x = frozen_embeddings(inp)
    model = ClipAdapter(test_x.shape[-1], inp.class_text, reduction=c.reduction, ratio=c.ratio,
                        scale=inp.logit_scale).to(ctx.device)
    opt = torch.optim.SGD(model.fc.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    return fit(model, train_x=views if views is not None else train_x, train_y=inp.train_y, test_x=test_x,
               test_y=inp.test_y, centroids=None, alpha=0.0,
               cfg=with_epochs(ctx.cfg, epochs=c.epochs, batch_size=c.batch_size), seed=ctx.seed, device=ctx.device,
               on_epoch=ctx.on_epoch, views=views is not None, desc=ctx.desc, optimizer=opt,
               schedule=lambda o, per_epoch: cosine_schedule(o, epochs=c.epochs, steps_per_epoch=per_epoch,
                                                             per="epoch", warmup_epochs=c.warmup_epochs,
                                                             warmup_lr=c.warmup_lr))
