"""Contrastive pretraining of the demo CLIP on its own world, with open_clip's own pieces.

The paper adapts a CLIP that learned image-text alignment from web alt-text before the experiment began.
The demo cannot download one, so it makes one: `render_corpus` draws image-caption pairs of the demo world
(:mod:`lmmreg.data.corpus`), `train_clip` trains the model from `open_clip.create_model_and_transforms` with
`open_clip.loss.ClipLoss`, AdamW (no weight decay on gains, biases and the logit scale) with warmup and
cosine decay (`open_clip_train.scheduler.cosine_lr`) and the logit-scale clamp of open_clip's trainer, and
`evaluate_clip` measures what it learned: retrieval on held-out pairs, zero-shot per attribute, zero-shot
on the demo's test split.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmmreg.clip.text import encode_text_tokens, trim_padding
from lmmreg.config import PretrainConfig
from lmmreg.data.corpus import CaptionSpec, corpus_item, world_prototypes
from lmmreg.data.demo import WORDS, vocab
from lmmreg.progress import progress

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    images: torch.Tensor  # [N, H, W, 3] uint8
    captions: list[list[str]]  # N lists of captions
    scenes: list[dict]
    # [N * k, context] the captions tokenized (caption j of image i at i * k + j), or None: train_clip tokenizes
    tokens: torch.Tensor | None = None


def caption_spec(cfg: PretrainConfig) -> CaptionSpec:
    return CaptionSpec(fit=cfg.scene_fit, scene_prob=cfg.scene_prob, hidden_prob=cfg.hidden_prob,
                       noise=cfg.caption_noise)


def _render_chunk(ids: range, **kw) -> list[tuple[np.ndarray, list[str], dict]]:
    return [corpus_item(i, **kw) for i in ids]


class RenderJob:
    """Items 0..n-1 of a corpus stream, rendered by `workers` processes from the moment it is made; `result()`
    collects them. With `background`, the workers run at the lowest CPU priority (nice 19), so the caller's
    own work in the meantime (loading, evaluating) keeps the cores and the rendering fills what it leaves."""

    CHUNK = 500

    def __init__(self, cfg: PretrainConfig, *, stream: int, n: int, demo_seed: int, image_size: int,
                 workers: int = 0, desc: str = "render corpus", background: bool = False):
        self.n, self.image_size = n, image_size
        kw = {"seed": cfg.seed, "stream": stream, "image_size": image_size, "n_captions": cfg.captions_per_image,
              "spec": caption_spec(cfg), "protos": world_prototypes(demo_seed)}
        self.chunks = [range(s, min(s + self.CHUNK, n)) for s in range(0, n, self.CHUNK)]
        self.bar = progress(total=n, desc=desc, unit="img")
        self.pool = None
        if workers > 1:
            self.pool = ProcessPoolExecutor(workers, initializer=os.nice if background else None,
                                            initargs=(19,) if background else ())
            self.results = self.pool.map(partial(_render_chunk, **kw), self.chunks)  # all submitted now
        else:
            self.results = map(partial(_render_chunk, **kw), self.chunks)

    def result(self, tokenizer=None) -> Corpus:
        """The corpus, collected chunk by chunk as the workers finish them. With `tokenizer`, each chunk's
        captions are tokenized here meanwhile (each distinct caption once), so the tokens are ready when the
        last image is: the same tensor as `tokenizer` over all captions, in order."""
        n, size = self.n, self.image_size
        images = torch.empty((n, size, size, 3), dtype=torch.uint8)
        captions: list[list[str]] = [[] for _ in range(n)]
        scenes: list[dict] = [{} for _ in range(n)]
        row: dict[str, int] = {}  # caption -> its row in the distinct captions' tokens
        distinct: list[torch.Tensor] = []
        try:
            for ids, items in zip(self.chunks, self.results, strict=True):
                for i, (img, caps, scene) in zip(ids, items, strict=True):
                    images[i] = torch.from_numpy(img)
                    captions[i], scenes[i] = caps, scene
                if tokenizer is not None:
                    new = [c for c in dict.fromkeys(c for _, caps, _ in items for c in caps) if c not in row]
                    if new:
                        base = len(row)
                        row.update((c, base + j) for j, c in enumerate(new))
                        distinct.append(tokenizer(new))
                self.bar.update(len(ids))
        finally:
            self.close()
        tokens = None
        if tokenizer is not None:
            order = torch.tensor([row[c] for caps in captions for c in caps], dtype=torch.long)
            tokens = torch.cat(distinct)[order] if distinct else tokenizer([])
        return Corpus(images, captions, scenes, tokens)

    def close(self) -> None:
        self.bar.close()
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


def render_corpus(cfg: PretrainConfig, *, stream: int, n: int, demo_seed: int, image_size: int,
                  workers: int = 0, desc: str = "render corpus") -> Corpus:
    """Items 0..n-1 of a corpus stream; `workers` processes (the result does not depend on it)."""
    return RenderJob(cfg, stream=stream, n=n, demo_seed=demo_seed, image_size=image_size, workers=workers,
                     desc=desc).result()


def to_model_input(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """[B, H, W, 3] uint8 at the model's resolution -> [B, 3, H, W] normalised as the model's preprocessing."""
    pre = model.visual.preprocess_cfg
    mean = torch.tensor(pre["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"]).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's grouping: no weight decay on gains, biases and the logit scale."""
    def exclude(n: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay}]


def _save_state(path: Path, state: dict) -> None:
    """Write the resume state: tensors, dicts, lists, tuples, str, int, float, bool and None only, so that
    `torch.load(..., weights_only=True)` reads it (no pickled code runs when a run resumes; docs/security.md)."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill never leaves a torn resume file


def _resume_state(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, *, order: torch.Tensor,
                  pos: int, step: int, history: list[dict]) -> dict:
    """What resuming needs, as plain values: the generator's state is a uint8 tensor, the rows plain floats."""
    return {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "order": order,
            "pos": int(pos), "step": int(step), "history": [{k: float(v) if k != "step" else int(v)
                                                             for k, v in row.items()} for row in history]}


def train_clip(model: nn.Module, tokenizer, corpus: Corpus, cfg: PretrainConfig,
               on_step: Callable[[dict], None] | None = None, resume: Path | None = None,
               save_every: int = 100) -> list[dict]:
    """ClipLoss training on the corpus for `cfg.steps` steps; returns one dict per step (loss, lr, scale, img/s).

    With `resume`, the whole training state (model, optimiser, data order, generator, history) is saved there
    every `save_every` steps and picked up by the next call, so an interrupted run continues where it stopped
    and ends with the same weights as an uninterrupted one.
    """
    from open_clip.loss import ClipLoss
    from open_clip_train.scheduler import cosine_lr

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, k = len(corpus.captions), cfg.captions_per_image
    tokens = corpus.tokens  # [N * k, 77]: caption j of image i at i * k + j, tokenized once
    if tokens is None:
        tokens = tokenizer([c for caps in corpus.captions for c in caps])
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = cosine_lr(opt, cfg.lr, cfg.warmup_steps, cfg.steps)
    history: list[dict] = []
    order, pos, start = torch.randperm(n, generator=gen), 0, 0
    if resume is not None and resume.is_file():
        state = torch.load(resume, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        order, pos, start, history = state["order"], state["pos"], state["step"], state["history"]
        log.info("resuming pretraining at step %d of %d from %s", start, cfg.steps, resume)
    model.train()
    bar = progress(total=cfg.steps, desc="pretrain CLIP", unit="step")
    bar.update(start)
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        if pos + cfg.batch_size > n:  # a new pass over the corpus
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        which = torch.randint(k, (len(idx),), generator=gen)  # one of each image's captions
        text = trim_padding(tokens[idx * k + which])  # exact for the causal text tower
        lr = schedule(step)
        ts = time.perf_counter()
        img_f = F.normalize(model.encode_image(to_model_input(corpus.images[idx], model)), dim=-1)
        txt_f = F.normalize(encode_text_tokens(model, text), dim=-1)
        loss = loss_fn(img_f, txt_f, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # open_clip's trainer: clamp to ln(100)
            model.logit_scale.clamp_(0, math.log(100))
        dt = time.perf_counter() - ts
        row = {"step": step + 1, "loss": loss.item(), "lr": lr, "logit_scale": model.logit_scale.exp().item(),
               "images_per_s": len(idx) / dt}
        history.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}", scale=f"{row['logit_scale']:.1f}")
        if resume is not None and (step + 1) % save_every == 0 and step + 1 < cfg.steps:
            _save_state(resume, _resume_state(model, opt, gen, order=order, pos=pos, step=step + 1, history=history))
        if on_step:
            on_step(row)
    bar.close()
    model.eval()
    log.info("pretrained %d steps in %.1f s", cfg.steps - start, time.perf_counter() - t0)
    return history


@torch.inference_mode()
def encode_images(model: nn.Module, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> [N, D] L2-normalised image embeddings."""
    model.eval()
    out = [model.encode_image(to_model_input(images[i:i + batch], model)) for i in range(0, len(images), batch)]
    return F.normalize(torch.cat(out), dim=-1)


@torch.inference_mode()
def encode_prompts(model: nn.Module, tokenizer, texts: list[str], batch: int = 512) -> torch.Tensor:
    out = [encode_text_tokens(model, trim_padding(tokenizer(texts[i:i + batch])))
           for i in range(0, len(texts), batch)]
    return F.normalize(torch.cat(out), dim=-1)


def retrieval(img: torch.Tensor, txt: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Image->text and text->image recall@k (percent) for aligned pairs: row i of each is one pair."""
    sim = img @ txt.T  # [N, N]
    truth = torch.arange(len(img))
    out = {}
    for name, s in (("i2t", sim), ("t2i", sim.T)):
        rank = (s > s[truth, truth][:, None]).sum(dim=1)  # how many beat the true partner
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * (rank < k).float().mean().item()
    return out


ATTRIBUTE_PROMPTS = {
    "color": lambda v: f"a photo of {v} shapes",
    "shape": lambda v: f"a photo of {WORDS[v][0]}s",
    "background": lambda v: f"a photo of shapes on {WORDS[v][0]}",
    "count": lambda v: f"a photo of {WORDS[v][0]} shapes",
}


def attribute_zero_shot(model: nn.Module, tokenizer, img: torch.Tensor, scenes: list[dict]) -> dict[str, float]:
    """Zero-shot accuracy (percent) of each attribute, one prompt per value; chance = 1 / number of values."""
    out = {}
    for attr, prompt in ATTRIBUTE_PROMPTS.items():
        values = list(vocab()[attr])
        txt = encode_prompts(model, tokenizer, [prompt(v) for v in values])
        truth = torch.tensor([values.index(s[attr]) for s in scenes])
        out[f"zs_{attr}"] = 100.0 * ((img @ txt.T).argmax(dim=1) == truth).float().mean().item()
        out[f"zs_{attr}_chance"] = 100.0 / len(values)
    return out


def evaluate_clip(model: nn.Module, tokenizer, heldout: Corpus, *, demo_images: torch.Tensor,
                  demo_labels: torch.Tensor, class_names: list[str], class_prompt: str) -> dict[str, float]:
    """Retrieval R@1/R@5 on held-out pairs (first caption), zero-shot per attribute, demo zero-shot."""
    img = encode_images(model, heldout.images)
    txt = encode_prompts(model, tokenizer, [caps[0] for caps in heldout.captions])
    out = retrieval(img, txt)
    out.update(attribute_zero_shot(model, tokenizer, img, heldout.scenes))
    cls = encode_prompts(model, tokenizer, [class_prompt.format(c) for c in class_names])
    demo = encode_images(model, demo_images)
    out["zs_demo_test"] = 100.0 * ((demo @ cls.T).argmax(dim=1) == demo_labels).float().mean().item()
    out["zs_demo_chance"] = 100.0 / len(class_names)
    return out
