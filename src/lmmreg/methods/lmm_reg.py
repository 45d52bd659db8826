"""The paper's two methods: fine-tune the boundary tail (visual.proj, unlocked_groups = 1) and a linear head.

`lmm_reg`: LMM-Reg.-CLIP (proposed), J_ce + alpha J_reg (Eq. 3). `finetune`, Finetuning w/o Reg. (the baseline), is
this same function at alpha = 0 (its registry entry says so): one loss, one code path.
"""

from __future__ import annotations

import copy

from lmmreg.engine import FitResult, fit
from lmmreg.heads import EmbeddingClassifier, init_head
from lmmreg.methods.base import MethodInputs, RunContext


def lmm_reg(inp: MethodInputs, ctx: RunContext) -> FitResult:
    n_classes, dim = inp.centroids.shape
    views = inp.train_views()
    model = EmbeddingClassifier(copy.deepcopy(inp.tail), dim, n_classes)
    init_head(model, ctx.cfg.head_init, class_text=inp.class_text, centroids=inp.centroids, train_in=inp.train_feat)
    return fit(model, train_x=inp.train_feat if views is None else views, train_y=inp.train_y,
               test_x=inp.test_feat, test_y=inp.test_y, alpha=ctx.alpha, cfg=ctx.cfg,
               centroids=inp.centroids if inp.reg_target is None else inp.reg_target,
               seed=ctx.seed, device=ctx.device, on_epoch=ctx.on_epoch, views=views is not None, desc=ctx.desc)
