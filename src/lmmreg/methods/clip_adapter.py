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

from lmmreg.engine import FitResult
from lmmreg.methods.base import MethodInputs, RunContext, fit_dassl, frozen_embeddings


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


def clip_adapter(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.clip_adapter
    train_x, views, test_x = frozen_embeddings(inp)
    model = ClipAdapter(test_x.shape[-1], inp.class_text, reduction=c.reduction, ratio=c.ratio,
                        scale=inp.logit_scale).to(ctx.device)
    return fit_dassl(model, list(model.fc.parameters()), c, inp, ctx, train_x=train_x, views=views, test_x=test_x)
