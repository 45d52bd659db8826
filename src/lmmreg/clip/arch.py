"""The open_clip architectures: the project's own (the tiny demo CLIP) made known to open_clip, and `clip.model`
checked against `clip.pretrained` (the activation the weights were trained with)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from lmmreg.config import ClipConfig
from lmmreg.errors import InputError

_REGISTERED = False


def register_model_configs() -> None:
    """Make the project's own open_clip architectures (the tiny demo CLIP) known to open_clip."""
    global _REGISTERED
    if not _REGISTERED:
        import open_clip

        open_clip.add_model_config(Path(str(resources.files("lmmreg") / "model_configs")))
        _REGISTERED = True


def looks_like_path(value: str) -> bool:
    """`clip.pretrained` names a checkpoint file rather than an open_clip tag."""
    return os.sep in value or value.startswith((".", "~")) or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def model_dims(model: str) -> dict:
    """Sizes of an open_clip architecture from its config: parameters, feature width, tokens, embedding dim (rough:
    what doctor's memory and disk estimates need)."""
    import open_clip

    register_model_configs()
    mc = open_clip.get_model_config(model) or {}
    v, t = mc.get("vision_cfg", {}), mc.get("text_cfg", {})
    vw, vl, tw, tl = v.get("width", 768), v.get("layers", 12), t.get("width", 512), t.get("layers", 12)
    if isinstance(vl, list):  # ResNets list layers per stage; a rough count is enough here
        vl = sum(vl)
    tokens = (v.get("image_size", 224) // v.get("patch_size", 16)) ** 2 + 1
    return {"params": 12 * (vw * vw * vl + tw * tw * tl) + t.get("vocab_size", 49408) * tw,
            "width": vw, "tokens": tokens, "embed_dim": mc.get("embed_dim", 512)}


def check_clip_config(cfg: ClipConfig) -> None:
    """Refuse combinations that build a model different from the one the weights were trained as."""
    import open_clip

    register_model_configs()
    if cfg.model not in open_clip.list_models():
        raise InputError(f"clip.model: {cfg.model!r} is not an open_clip architecture "
                         f"(see open_clip.list_models(); the paper uses ViT-L-14-quickgelu)")
    if not cfg.pretrained or looks_like_path(cfg.pretrained):
        return
    model_cfg = open_clip.get_model_config(cfg.model) or {}
    tag_cfg = open_clip.get_pretrained_cfg(cfg.model, cfg.pretrained)
    base = cfg.model.removesuffix("-quickgelu")
    if not tag_cfg:  # the tag may exist for the twin architecture only (openai is listed under both)
        tag_cfg = open_clip.get_pretrained_cfg(base, cfg.pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(cfg.model)
        raise InputError(f"clip.pretrained: {cfg.pretrained!r} is neither a pretrained tag of {cfg.model} "
                         f"(known: {tags}) nor a checkpoint path")
    # OpenAI's weights (and a few others) were trained with QuickGELU; open_clip only warns on a mismatch.
    wants_quick = bool(tag_cfg.get("quick_gelu", False)) or cfg.pretrained == "openai"
    has_quick = bool(model_cfg.get("quick_gelu", False))
    if wants_quick and not has_quick:
        raise InputError(
            f"clip.model: {cfg.model!r} with clip.pretrained: {cfg.pretrained} builds GELU, but these weights were "
            f"trained with QuickGELU (open_clip only warns). Use {cfg.model}-quickgelu."
        )
    if has_quick and not wants_quick:
        raise InputError(f"clip.model: {cfg.model!r} builds QuickGELU, but {cfg.pretrained} weights were trained "
                         f"with GELU (open_clip only warns). Use {base}.")
