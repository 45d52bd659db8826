"""Zero-shot rows (extra, not in the paper): cosine similarity of x = f(I) to fixed class vectors.

`zero_shot`: the CLIP text embeddings of the class-name prompts; `zero_shot_lmm`: the LMM centroids (Eq. 1).
"""

from __future__ import annotations

from lmmreg.engine import FitResult
from lmmreg.heads import CosineHead
from lmmreg.methods.base import MethodInputs, RunContext, ScoreModel, embed, training_free


def zero_shot(inp: MethodInputs, ctx: RunContext) -> FitResult:
    return training_free(ScoreModel(CosineHead(inp.class_text)), embed(inp.tail, inp.test_feat), inp.test_y, ctx)


def zero_shot_lmm(inp: MethodInputs, ctx: RunContext) -> FitResult:
    return training_free(ScoreModel(CosineHead(inp.centroids)), embed(inp.tail, inp.test_feat), inp.test_y, ctx)
