"""CoOp (Zhou et al. IJCV 2022, "Learning to Prompt for Vision-Language Models", KaiyangZhou/CoOp
trainers/coop.py): learnable context vectors in front of each class name, through CLIP's frozen text tower.

    prompt_k = [SOS] [V]_1 ... [V]_M  <class k tokens> . [EOT]   (class token at the end, one shared context)
    logits = exp(logit_scale) * normalize(f) normalize(text(prompt))^T

The prompts are tokenized as "X X ... X <name>." and the M "X" token embeddings are replaced by the learnt
context, exactly as CoOp does; everything fixed is cached once (the SOS and class-name/EOT token embeddings,
the EOT positions, prompts padded only to the longest one, which is exact for CLIP's causal text tower). The
text tower runs once per optimisation step (all C prompts, forward and backward); the image side is the frozen
feature cache. Recipe: configs/trainers/CoOp/vit_b16.yaml (SGD lr 2e-3, batch 32, 200 epochs, cosine after one
warm-up epoch at 1e-5; Dassl's momentum 0.9, weight decay 5e-4). fp32 here (CoOp's default is fp16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.clip.text import can_trim_padding, encode_text_embeddings, trim_padding
from lmmreg.engine import FitResult
from lmmreg.methods.base import MethodInputs, RunContext, fit_dassl, frozen_embeddings


class PromptLearner(nn.Module):
    """Learnable context + cached fixed token embeddings; `forward()` gives the class text features [C, D]."""

    def __init__(self, clip_model: nn.Module, tokenizer, classnames: list[str], *, n_ctx: int, ctx_init: str,
                 generator: torch.Generator):
        super().__init__()
        if not can_trim_padding(clip_model, tokenizer) or clip_model.text_pool_type not in ("argmax", "eos"):
            raise NotImplementedError("coop: needs open_clip's CLIP text tower (causal mask, EOT pooling) and its "
                                      "BPE tokenizer")
        self._clip = [clip_model]  # not a submodule: frozen, shared, and kept out of the state dict
        embedding = clip_model.token_embedding
        device = embedding.weight.device
        with torch.no_grad():
            if ctx_init:  # CoOp ctxv1: the context starts as the embeddings of these words
                init = tokenizer([ctx_init])[0]
                n_ctx = int((init != 0).sum()) - 2  # tokens between SOS and EOT
                ctx = embedding(init[1:1 + n_ctx].to(device)).float()
                prefix_text = ctx_init
            else:  # CoOp's random init
                ctx = torch.randn(n_ctx, embedding.weight.shape[1], generator=generator) * 0.02
                prefix_text = " ".join(["X"] * n_ctx)
            prompts = [f"{prefix_text} {name.replace('_', ' ')}." for name in classnames]
            tokens = trim_padding(tokenizer(prompts)).to(device)  # [C, L]: padded to the longest prompt only
            emb = embedding(tokens).float()  # [C, L, W]
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx.to(device))  # [M, W], the only trainable tensor
        self.register_buffer("prefix", emb[:, :1].clone())  # SOS [C, 1, W]
        self.register_buffer("suffix", emb[:, 1 + n_ctx:].clone())  # class name, ".", EOT, padding [C, *, W]
        eot_id = getattr(tokenizer, "eot_token_id", None)
        eot = tokens.argmax(-1) if clip_model.text_pool_type == "argmax" else (tokens == eot_id).int().argmax(-1)
        self.register_buffer("eot", eot)  # [C]

    def forward(self) -> torch.Tensor:
        ctx = self.ctx[None].expand(len(self.prefix), -1, -1)  # [C, M, W]
        x = torch.cat([self.prefix, ctx, self.suffix], dim=1)  # [C, L, W]
        return encode_text_embeddings(self._clip[0], x, self.eot)  # [C, D]


class CoOpClassifier(nn.Module):
    """Logits of image features against the learnt prompts. In training the text tower runs on every call (its
    gradient trains the context); in eval mode without autograd the class text features are computed once and
    reused by every batch of an evaluation (the same tensor the tower would give each time) until the context
    changes."""

    def __init__(self, prompts: PromptLearner, scale: float):
        super().__init__()
        self.prompts, self.scale = prompts, scale
        self._text: tuple[int, torch.Tensor] | None = None  # (the context's version, its class text features)

    def text_features(self) -> torch.Tensor:
        """[C, D] normalised class text features; the text tower runs here."""
        if self.training or torch.is_grad_enabled():
            return F.normalize(self.prompts(), dim=-1)
        version = self.prompts.ctx._version  # bumped by every in-place update of the context (the optimiser's)
        if self._text is None or self._text[0] != version:
            self._text = (version, F.normalize(self.prompts(), dim=-1))
        return self._text[1]

    def forward(self, f):
        return f, self.scale * F.normalize(f, dim=-1) @ self.text_features().T


def build_coop(inp: MethodInputs, ctx: RunContext) -> CoOpClassifier:
    c = ctx.baselines.coop
    clip_model = inp.clip_model.to(ctx.device).eval()
    clip_model.requires_grad_(False)
    gen = torch.Generator().manual_seed(ctx.seed)
    prompts = PromptLearner(clip_model, inp.tokenizer, inp.classnames, n_ctx=c.n_ctx, ctx_init=c.ctx_init,
                            generator=gen)
    return CoOpClassifier(prompts, inp.logit_scale)


def coop(inp: MethodInputs, ctx: RunContext) -> FitResult:
    c = ctx.baselines.coop
    train_x, views, test_x = frozen_embeddings(inp)
    model = build_coop(inp, ctx)
    return fit_dassl(model, [model.prompts.ctx], c, inp, ctx, train_x=train_x, views=views, test_x=test_x)
