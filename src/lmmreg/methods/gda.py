"""GDA (Wang et al. ICLR 2024, "A Hard-to-Beat Baseline for Training-free CLIP-based Adaptation",
mrflogs/ICLR24 main_few_shots.py): Gaussian discriminant analysis with a shared covariance on L2-normalised
image features, ensembled with the zero-shot logits. Training-free.

    mu_k = class means of the normalised features f;  S = covariance of the centred features (n rows, d dims)
    P = d * pinv((n - 1) S + tr(S) I)          (the repo's shrinkage estimate of the precision)
    logits = s f T^T + weight (f P mu^T + b),  b_k = log(1/C) - 1/2 mu_k^T P mu_k

s: the repo's 100 (OpenAI CLIP's learnt temperature) or the CLIP's own (`baselines.logit_scale`).

The GDA logits' weight (the repo's alpha) from the repo's grid (`baselines.gda.alpha_grid`), chosen on the
validation split; then the statistics are re-estimated on all training images. Cached augmented views count as
extra samples (the repo concatenates its augment epochs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmmreg.engine import FitResult
from lmmreg.methods.base import (
    MethodInputs,
    RunContext,
    Search,
    accuracy,
    embed,
    frozen_embeddings,
    search_split,
    training_free,
    zero_shot_scale,
)

DEFAULT_WEIGHT = 0.1  # the repo's best_alpha before its grid search: used only when no validation split exists


def gda_statistics(feats: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [D, C], b [C]) of the linear discriminant, from normalised features [N, D] and labels [N]."""
    f = feats.double()
    mus = torch.stack([f[labels == k].mean(0) for k in range(n_classes)])  # [C, D]
    centred = f - mus[labels]  # [N, D]
    n, d = centred.shape
    cov = torch.cov(centred.T)  # [D, D], unbiased (n - 1), as torch's .cov() in the repo
    precision = d * torch.linalg.pinv((n - 1) * cov + torch.trace(cov) * torch.eye(d, dtype=f.dtype))
    w = precision @ mus.T  # [D, C] (P is symmetric)
    b = math.log(1.0 / n_classes) - 0.5 * torch.einsum("cd,de,ce->c", mus, precision, mus)
    return w.float(), b.float()


def gda_logits(f: torch.Tensor, text: torch.Tensor, w: torch.Tensor, b: torch.Tensor, weight: float,
               scale: float = 100.0) -> torch.Tensor:
    """f [B, D] normalised, text [C, D] normalised -> [B, C]; `scale`: the zero-shot logits' (the repo's 100)."""
    return scale * f @ text.T + weight * (f @ w + b)


def _samples(train_x: torch.Tensor, views: torch.Tensor | None, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if views is None:
        return F.normalize(train_x, dim=-1), y
    return F.normalize(views.flatten(0, 1), dim=-1), y.repeat_interleave(views.shape[1])


def gda(inp: MethodInputs, ctx: RunContext) -> FitResult:
    n_classes = inp.class_text.shape[0]
    text = F.normalize(inp.class_text, dim=-1)
    train_x, views, test_x = frozen_embeddings(inp)
    weight = DEFAULT_WEIGHT
    scale = zero_shot_scale(inp, ctx)
    split = search_split(inp, ctx)
    if split is not None:
        fit_idx = split.fit_idx
        w, b = gda_statistics(*_samples(train_x[fit_idx], views[fit_idx] if views is not None else None,
                                        inp.train_y[fit_idx]), n_classes)
        val_x, val_y = split.val(inp, train_x, lambda f: embed(inp.tail, f))
        val_f = F.normalize(val_x, dim=-1)
        search = Search()
        for a in ctx.baselines.gda.alpha_grid:
            search.add({"alpha": a}, accuracy(gda_logits(val_f, text, w, b, a, scale), val_y))
        weight = search.best()["alpha"]  # recorded under the repo's name
    w, b = gda_statistics(*_samples(train_x, views, inp.train_y), n_classes)
    res = training_free(lambda x: gda_logits(F.normalize(x, dim=-1), text.to(x.device), w.to(x.device),
                                             b.to(x.device), weight, scale), test_x, inp.test_y, ctx)
    res.chosen = {"alpha": weight}
    res.state_dict = {"w": w, "b": b, "alpha": torch.tensor(weight)}
    return res
