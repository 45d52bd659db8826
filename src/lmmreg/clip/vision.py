"""CLIP's image tower split at the trainable boundary (open_clip's `lock_image_tower(unlocked_groups=g)`): the
frozen part that the features stage caches (:func:`encode_boundary`) and the trainable tail that continues from
that cache (:class:`VisionTail`). Plain open_clip ViTs only: ln_post before pooling, no attention pooling."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def _check_plain_vit(visual: nn.Module) -> None:
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise NotImplementedError(f"feature caching supports open_clip ViTs, not {type(visual).__name__}")
    if visual.attn_pool is not None or visual.final_ln_after_pool:
        raise NotImplementedError("feature caching supports ViTs with ln_post before pooling and no attn_pool")


def _run_blocks(batch_first: bool, blocks: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Apply residual blocks to batch-first tokens [B, T, W], in the layout the blocks expect."""
    if not batch_first:
        x = x.transpose(0, 1)
    for blk in blocks:
        x = blk(x)
    return x if batch_first else x.transpose(0, 1)


def encode_boundary(visual: nn.Module, images: torch.Tensor, unlocked_groups: int) -> torch.Tensor:
    """Frozen part of the image tower: images [B, 3, H, W] -> cache entry ([B, W] or [B, T, W])."""
    _check_plain_vit(visual)
    x = visual._embeds(images)  # [B, T, W]
    blocks = visual.transformer.resblocks
    batch_first = getattr(visual.transformer, "batch_first", True)
    if unlocked_groups == 1:
        x = _run_blocks(batch_first, blocks, x)
        pooled, _ = visual._pool(x)  # ln_post then class token: [B, W]
        return pooled
    if unlocked_groups == 2:
        return _run_blocks(batch_first, blocks[:-1], x)  # [B, T, W]
    raise ValueError(f"clip.unlocked_groups: 1 or 2, got {unlocked_groups}")


class VisionTail(nn.Module):
    """The trainable end of `model.visual`, continuing from the boundary cache: returns x_i = f(I_i), [B, D]."""

    def __init__(self, visual: nn.Module, unlocked_groups: int):
        super().__init__()
        _check_plain_vit(visual)
        self.unlocked_groups = unlocked_groups
        self.proj = nn.Parameter(visual.proj.detach().clone())  # [W, D], initialised from CLIP's
        if unlocked_groups == 2:
            self.block = copy.deepcopy(visual.transformer.resblocks[-1])
            self.ln_post = copy.deepcopy(visual.ln_post)
            self.batch_first = getattr(visual.transformer, "batch_first", True)
            self.pool_type = visual.pool_type
        elif unlocked_groups != 1:
            raise ValueError(f"clip.unlocked_groups: 1 or 2, got {unlocked_groups}")

    @classmethod
    def from_proj(cls, proj: torch.Tensor) -> VisionTail:
        """The one-unlocked-group tail from `visual.proj` alone ([W, D], as `tail_init` saves it)."""
        tail = cls.__new__(cls)
        nn.Module.__init__(tail)
        tail.unlocked_groups = 1
        tail.proj = nn.Parameter(proj.detach().clone())
        return tail

    def forward(self, cached: torch.Tensor) -> torch.Tensor:
        return self.pre_projection(cached) @ self.proj

    def pre_projection(self, cached: torch.Tensor) -> torch.Tensor:
        """Everything before `proj`: the cache itself for 1 unlocked group, else the last block and ln_post, pooled."""
        if self.unlocked_groups == 1:
            return cached
        x = self.ln_post(_run_blocks(self.batch_first, [self.block], cached))  # [B, T, W]
        return x[:, 1:].mean(dim=1) if self.pool_type == "avg" else x[:, 0]  # [B, W]
