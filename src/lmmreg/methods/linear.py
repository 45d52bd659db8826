"""Linear heads on frozen embeddings, trained by the engine with the `train:` settings (alpha = 0).

`linear_probe`: CLIP (image emb.) [1], x = f(I). `concat`: CLIP (image & text emb.) [14], [x ; mean embedding
of the image's own LMM descriptions].
"""

from __future__ import annotations

import torch
from torch import nn

from lmmreg.engine import FitResult, fit
from lmmreg.heads import EmbeddingClassifier, init_head
from lmmreg.methods.base import MethodInputs, RunContext, frozen_embeddings


def _fit_head(train_x: torch.Tensor, test_x: torch.Tensor, views: bool, inp: MethodInputs,
              ctx: RunContext) -> FitResult:
    n_classes = inp.centroids.shape[0] if inp.centroids is not None else int(inp.train_y.max()) + 1
    model = EmbeddingClassifier(nn.Identity(), test_x.shape[-1], n_classes)
    init_head(model, ctx.cfg.head_init, class_text=inp.class_text, centroids=inp.centroids,
              train_in=train_x.flatten(0, -2))
    return fit(model, train_x=train_x, train_y=inp.train_y, test_x=test_x, test_y=inp.test_y, centroids=None,
               alpha=0.0, cfg=ctx.cfg, seed=ctx.seed, device=ctx.device, on_epoch=ctx.on_epoch, views=views,
               desc=ctx.desc)


def linear_probe(inp: MethodInputs, ctx: RunContext) -> FitResult:
    train_x, train_views, test_x = frozen_embeddings(inp)
    views = train_views is not None
    return _fit_head(train_views if views else train_x, test_x, views, inp, ctx)


def concat(inp: MethodInputs, ctx: RunContext) -> FitResult:
    train_x, train_views, test_x = frozen_embeddings(inp)
    if train_views is not None:  # [Ntr, V, 2D]: every view of an image shares its descriptions
        text = inp.train_text_mean[:, None].expand(-1, train_views.shape[1], -1)
        return _fit_head(torch.cat([train_views, text], dim=-1), torch.cat([test_x, inp.test_text_mean], dim=-1),
                         True, inp, ctx)
    return _fit_head(torch.cat([train_x, inp.train_text_mean], dim=-1),
                     torch.cat([test_x, inp.test_text_mean], dim=-1), False, inp, ctx)
