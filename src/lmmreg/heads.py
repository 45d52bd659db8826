"""The heads over CLIP embeddings x = f(I): the trained linear head (:class:`EmbeddingClassifier`), the fixed
cosine head of zero-shot classification (:class:`CosineHead`), and `train.head_init`, where the linear head starts:

- `random`: PyTorch's default `nn.Linear` initialisation (the paper).
- `class_text`: the rows are the class-prompt text embeddings, so the untrained head already is zero-shot CLIP.
- `centroids`: the rows are the LMM centroids (Eq. 1), the zero-shot classifier made from the descriptions.

The head sees raw, un-normalised embeddings x (norm ~10 on an in-world CLIP), while zero-shot CLIP scores
cos(x, w) times its temperature. With rows w_c / ||w_c|| * s and s = T / mean ||x||, the logits are
T * cos(x, w_c) * ||x|| / mean ||x||: the zero-shot ranking for every image, at a temperature T the same for
every run whatever the embedding norm. T = 1 / 0.07 is the temperature CLIP itself starts training from; CLIP's
learned 100 would make the start so confident that cross-entropy gradients all but vanish on the images
zero-shot already gets right. Bias starts at 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INIT_TEMPERATURE = 1 / 0.07


class EmbeddingClassifier(nn.Module):
    """x = tail(input); logits = head(x). Returns both: the loss regularises x (Eq. 2)."""

    def __init__(self, tail: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.tail = tail
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.tail(inputs)  # [B, D]
        return emb, self.head(emb)  # [B, D], [B, C]


class CosineHead(nn.Module):
    """Zero-shot head: cosine similarity of x [B, D] to fixed class vectors (CLIP text prompts or LMM centroids)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", F.normalize(weight, dim=-1))  # [C, D]

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb, dim=-1) @ self.weight.T


def head_weights(mode: str, *, class_text: torch.Tensor, centroids: torch.Tensor, in_dim: int) -> torch.Tensor | None:
    """[C, in_dim] class vectors for `mode` (None for random); inputs wider than the text space (concat:
    [x ; description mean]) get the class vector on each part."""
    if mode == "random":
        return None
    if mode not in ("class_text", "centroids"):
        raise ValueError(f"train.head_init: unknown {mode!r} (random | class_text | centroids)")
    w = class_text if mode == "class_text" else centroids  # [C, D]
    if in_dim % w.shape[1]:
        raise ValueError(f"train.head_init={mode}: head input width {in_dim} is not a multiple of {w.shape[1]}")
    return w.repeat(1, in_dim // w.shape[1])


@torch.no_grad()
def init_head(model: nn.Module, mode: str, *, class_text: torch.Tensor, centroids: torch.Tensor,
              train_in: torch.Tensor, batch: int = 1024) -> None:
    """Set `model.head` (nn.Linear over `model.tail`'s output) per `train.head_init`; random leaves it as built."""
    head: nn.Linear = model.head
    w = head_weights(mode, class_text=class_text, centroids=centroids, in_dim=head.in_features)
    if w is None:
        return
    was_training = model.training
    model.eval()
    norms = torch.cat([model.tail(train_in[i:i + batch]).norm(dim=-1) for i in range(0, len(train_in), batch)])
    model.train(was_training)
    scale = INIT_TEMPERATURE / norms.mean().clamp_min(1e-8)
    head.weight.copy_(F.normalize(w.to(head.weight), dim=-1) * scale)
    head.bias.zero_()
