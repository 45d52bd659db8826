"""CLIP through open_clip: building the model, encoding text, caching image features at the
trainable boundary, and the trainable tail that continues from that cache.

The boundary follows open_clip's `lock_image_tower(unlocked_groups=g)`:
  g = 1: only `visual.proj` trains. Cache: the pooled `ln_post` class token, [N, width].
  g = 2: the last residual block and `ln_post` train too. Cache: tokens entering the last block, [N, T, width].
`VisionTail(g)` applied to the cache equals the rest of `model.visual` (tests prove logits and grads).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import open_clip
import torch
from torch import nn

from lmmreg.config import ClipConfig

log = logging.getLogger(__name__)

_REGISTERED = False


def register_model_configs() -> None:
    """Make the project's own open_clip architectures (the tiny demo CLIP) known to open_clip."""
    global _REGISTERED
    if not _REGISTERED:
        open_clip.add_model_config(Path(str(resources.files("lmmreg") / "model_configs")))
        _REGISTERED = True


def check_clip_config(cfg: ClipConfig) -> None:
    """Refuse combinations that build a model different from the one the weights were trained as."""
    register_model_configs()
    if cfg.model not in open_clip.list_models():
        raise ValueError(f"clip.model: {cfg.model!r} is not an open_clip architecture "
                         f"(see open_clip.list_models(); the paper uses ViT-L-14-quickgelu)")
    model_cfg = open_clip.get_model_config(cfg.model) or {}
    if cfg.pretrained == "openai" and not model_cfg.get("quick_gelu", False):
        raise ValueError(
            f"clip.model: {cfg.model!r} with clip.pretrained: openai builds GELU, but OpenAI's weights were "
            f"trained with QuickGELU (open_clip only warns). Use {cfg.model}-quickgelu."
        )


def build_clip(cfg: ClipConfig, *, device: str | torch.device = "cpu"):
    """Return (model, preprocess, tokenizer) in eval mode. `pretrained: ""` means random init (demo)."""
    check_clip_config(cfg)
    torch.manual_seed(cfg.init_seed)  # random init is part of the config, so it must be reproducible
    model, _, preprocess = open_clip.create_model_and_transforms(
        cfg.model, pretrained=cfg.pretrained or None, device=device
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(cfg.model)
    return model, preprocess, tokenizer


def clip_meta(cfg: ClipConfig) -> dict:
    return {"clip_model": cfg.model, "clip_pretrained": cfg.pretrained or "random-init",
            "clip_init_seed": cfg.init_seed, "open_clip": open_clip.__version__}


@torch.inference_mode()
def encode_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 256,
                 device: str | torch.device = "cpu", progress: bool = True) -> torch.Tensor:
    """CLIP text embeddings (un-normalised, as `encode_text` returns them), [N, D] float32 on CPU."""
    from tqdm import tqdm

    out = []
    bar = tqdm(total=len(texts), unit="text", disable=not progress, desc="encode text")
    for i in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[i:i + batch_size])).to(device)
        out.append(model.encode_text(tokens).float().cpu())
        bar.update(len(tokens))
    bar.close()
    dim = model.text_projection.shape[-1] if model.text_projection is not None else model.transformer.width
    return torch.cat(out) if out else torch.zeros(0, dim)


def _check_plain_vit(visual: nn.Module) -> None:
    if not isinstance(visual, open_clip.transformer.VisionTransformer):
        raise NotImplementedError(f"feature caching supports open_clip ViTs, not {type(visual).__name__}")
    if visual.attn_pool is not None or visual.final_ln_after_pool:
        raise NotImplementedError("feature caching supports ViTs with ln_post before pooling and no attn_pool")


def _run_blocks(transformer: nn.Module, blocks: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Apply residual blocks to batch-first tokens [B, T, W], honouring the transformer's layout."""
    batch_first = getattr(transformer, "batch_first", True)
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
    if unlocked_groups == 1:
        x = _run_blocks(visual.transformer, blocks, x)
        pooled, _ = visual._pool(x)  # ln_post then class token: [B, W]
        return pooled
    if unlocked_groups == 2:
        return _run_blocks(visual.transformer, blocks[:-1], x)  # [B, T, W]
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

    def forward(self, cached: torch.Tensor) -> torch.Tensor:
        if self.unlocked_groups == 1:
            return cached @ self.proj
        x = cached if self.batch_first else cached.transpose(0, 1)
        x = self.block(x)
        x = x if self.batch_first else x.transpose(0, 1)
        x = self.ln_post(x)
        pooled = x[:, 1:].mean(dim=1) if self.pool_type == "avg" else x[:, 0]
        return pooled @ self.proj


class EmbeddingClassifier(nn.Module):
    """x = tail(input); logits = head(x). Returns both: the loss regularises x (Eq. 2)."""

    def __init__(self, tail: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.tail = tail
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.tail(inputs)  # [B, D]
        return emb, self.head(emb)  # [B, D], [B, C]
