"""Every method of Tables 1-2, trained and evaluated by the same engine on the same cached features.

| method        | paper row                              | input                         | trains         | alpha |
|---------------|----------------------------------------|-------------------------------|----------------|-------|
| zero_shot     | (extra) CLIP zero-shot, class prompts  | x = f(I)                      | nothing        | -     |
| zero_shot_lmm | (extra) zero-shot, LMM centroids       | x = f(I)                      | nothing        | -     |
| linear_probe  | CLIP (image emb.) [1]                  | x = f(I), frozen              | linear head    | 0     |
| concat        | CLIP (image & text emb.) [14]          | [x ; mean LMM text emb of I]  | linear head    | 0     |
| finetune      | Finetuning w/o Reg. (baseline)         | boundary cache                | proj + head    | 0     |
| lmm_reg       | LMM-Reg.-CLIP (proposed)               | boundary cache                | proj + head    | alpha |
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.config import TrainConfig
from lmmreg.encoders import EmbeddingClassifier
from lmmreg.engine import Evaluation, FitResult, evaluate, fit
from lmmreg.heads import init_head


@dataclass
class MethodInputs:
    """Everything a method may need, aligned by image id (train rows first, then test rows)."""

    tail: nn.Module  # VisionTail built from CLIP, continuing from the boundary cache
    train_feat: torch.Tensor  # [Ntr, W] or [Ntr, T, W]
    test_feat: torch.Tensor
    train_y: torch.Tensor  # [Ntr]
    test_y: torch.Tensor
    centroids: torch.Tensor  # [C, D], Eq. 1
    class_text: torch.Tensor  # [C, D], CLIP text embedding of the class-name prompt
    train_text_mean: torch.Tensor  # [Ntr, D], mean embedding of each image's own descriptions
    test_text_mean: torch.Tensor
    # [Ntr, K, ...] cached augmented views of the training images (clip.augment_views), or None
    train_aug: torch.Tensor | None = None

    def train_views(self) -> torch.Tensor | None:
        """[Ntr, 1 + K, ...]: the clean view first, then the augmented ones; None without augmentation."""
        if self.train_aug is None or self.train_aug.shape[1] == 0:
            return None
        return torch.cat([self.train_feat[:, None], self.train_aug], dim=1)


class _Frozen(nn.Module):
    """A frozen embedding function in front of a linear head (linear probe / concat / zero-shot)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Fixed(nn.Module):
    """Zero-shot: cosine similarity to fixed class vectors; returns (emb, logits) like a trained model."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("w", F.normalize(weights, dim=-1))

    def forward(self, emb):
        return emb, F.normalize(emb, dim=-1) @ self.w.T


@torch.no_grad()
def _embed(tail: nn.Module, feat: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    tail.eval()
    return torch.cat([tail(feat[i:i + batch]) for i in range(0, len(feat), batch)]) if len(feat) else feat


def run_method(method: str, inp: MethodInputs, *, alpha: float, cfg: TrainConfig, seed: int,
               device: str | torch.device = "cpu", on_epoch=None, desc: str = "train") -> FitResult:
    """Train (if the method trains) and evaluate; zero-shot methods return a one-row history."""
    torch.manual_seed(seed)  # the head's initialisation is part of the seed
    n_classes, dim = inp.centroids.shape
    if method in ("zero_shot", "zero_shot_lmm"):
        weights = inp.class_text if method == "zero_shot" else inp.centroids
        test_emb = _embed(inp.tail, inp.test_feat)
        ev: Evaluation = evaluate(_Fixed(weights), test_emb, inp.test_y, device=device)
        history = [{"epoch": 1, "test_acc": ev.acc}]
        if on_epoch:
            on_epoch(history[0])
        return FitResult(history, 1, ev, {})
    views = inp.train_views()  # [Ntr, V, ...] or None
    train_in = inp.train_feat if views is None else views
    if method in ("linear_probe", "concat"):
        n_tr = len(train_in)
        train_x = _embed(inp.tail, train_in.flatten(0, 1) if views is not None else train_in)  # frozen x = f(I)
        train_x = train_x.view(n_tr, -1, dim) if views is not None else train_x  # [Ntr, (V,) D]
        test_x = _embed(inp.tail, inp.test_feat)
        if method == "concat":  # [x ; mean embedding of the image's own descriptions], 2D inputs
            text = inp.train_text_mean[:, None].expand(-1, train_x.shape[1], -1) if views is not None \
                else inp.train_text_mean
            train_x, test_x = torch.cat([train_x, text], dim=-1), torch.cat([test_x, inp.test_text_mean], dim=-1)
        model = EmbeddingClassifier(nn.Identity(), test_x.shape[-1], n_classes)
        init_head(model, cfg.head_init, class_text=inp.class_text, centroids=inp.centroids,
                  train_in=train_x.flatten(0, -2))
        return fit(model, train_x=train_x, train_y=inp.train_y, test_x=test_x, test_y=inp.test_y, centroids=None,
                   alpha=0.0, cfg=cfg, seed=seed, device=device, on_epoch=on_epoch, views=views is not None,
                   desc=desc)
    if method in ("finetune", "lmm_reg"):
        model = EmbeddingClassifier(copy.deepcopy(inp.tail), dim, n_classes)
        init_head(model, cfg.head_init, class_text=inp.class_text, centroids=inp.centroids, train_in=inp.train_feat)
        a = alpha if method == "lmm_reg" else 0.0
        return fit(model, train_x=train_in, train_y=inp.train_y, test_x=inp.test_feat, test_y=inp.test_y,
                   centroids=inp.centroids, alpha=a, cfg=cfg, seed=seed, device=device, on_epoch=on_epoch,
                   views=views is not None, desc=desc)
    raise ValueError(f"train.methods: unknown method {method!r}")
