"""The paper's objective, one function for both methods: J = J_ce + alpha * J_reg (Eq. 2-3).

`alpha = 0` is the baseline ("Finetuning w/o Reg."): the same code path, the reg term still reported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lmm_reg_loss(logits: torch.Tensor, emb: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor | None,
                 *, alpha: float, reduction: str = "sum", normalize: bool = False) -> dict[str, torch.Tensor]:
    """Returns {"loss", "ce", "reg"}.

    logits [B, C]; emb [B, D] (x_i, the image encoder's output); labels [B]; centroids [C, D] (C_l, Eq. 1).
    reg = sum_i ||x_i - C_{l_i}||^2 (or the batch mean); with `normalize` both sides are L2-normalised first.
    """
    ce = F.cross_entropy(logits, labels)
    if centroids is None:
        if alpha != 0:
            raise ValueError("alpha > 0 needs centroids")
        reg = torch.zeros((), device=emb.device)
    else:
        x, c = emb, centroids[labels]  # [B, D], [B, D]
        if normalize:
            x, c = F.normalize(x, dim=-1), F.normalize(c, dim=-1)
        sq = (x - c).pow(2).sum(dim=-1)  # [B]
        reg = sq.sum() if reduction == "sum" else sq.mean()
    return {"loss": ce + alpha * reg, "ce": ce, "reg": reg}
