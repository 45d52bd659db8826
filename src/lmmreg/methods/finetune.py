"""The paper's two methods: fine-tune the boundary tail (visual.proj, unlocked_groups = 1) and a linear head.

`finetune`: Finetuning w/o Reg. (the baseline, alpha = 0). `lmm_reg`: LMM-Reg.-CLIP (proposed), J_ce + alpha J_reg.
The same loss and code path; only alpha differs.
"""

from __future__ import annotations

import copy

from lmmreg.engine import FitResult, fit
from lmmreg.heads import EmbeddingClassifier, init_head
from lmmreg.methods.base import MethodInputs, RunContext, register


def _finetune(inp: MethodInputs, ctx: RunContext, alpha: float) -> FitResult:
    n_classes, dim = inp.centroids.shape
    views = inp.train_views()
    model = EmbeddingClassifier(copy.deepcopy(inp.tail), dim, n_classes)
    init_head(model, ctx.cfg.head_init, class_text=inp.class_text, centroids=inp.centroids, train_in=inp.train_feat)
    return fit(model, train_x=inp.train_feat if views is None else views, train_y=inp.train_y,
               test_x=inp.test_feat, test_y=inp.test_y, centroids=inp.centroids, alpha=alpha, cfg=ctx.cfg,
               seed=ctx.seed, device=ctx.device, on_epoch=ctx.on_epoch, views=views is not None, desc=ctx.desc)


@register("finetune", needs={"tail", "train_feat", "test_feat", "train_y", "test_y"}, settings=("train",),
          alpha="zero")
def finetune(inp: MethodInputs, ctx: RunContext) -> FitResult:
    return _finetune(inp, ctx, 0.0)


@register("lmm_reg", needs={"tail", "train_feat", "test_feat", "train_y", "test_y", "centroids"},
          settings=("train",), alpha="param")
def lmm_reg(inp: MethodInputs, ctx: RunContext) -> FitResult:
    return _finetune(inp, ctx, ctx.alpha)
