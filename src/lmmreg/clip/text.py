"""CLIP's text side, fast and exact: tokens as open_clip's tokenizer makes them (with lengths and truncation), and
embeddings encoded sorted by length, each batch padded only to its longest text where that equals 77-token padding
(:func:`can_trim_padding`); also the text tower from token embeddings, for prompt learning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lmmreg.clip.precision import autocast_for


@dataclass
class TextEmbeddings:
    emb: torch.Tensor  # [N, D] float32 on CPU, un-normalised as `encode_text` returns it
    n_tokens: torch.Tensor  # [N] tokens incl. start/end before truncation (capped at context + 1)
    truncated: torch.Tensor  # [N] bool: longer than the context (77), cut as open_clip's tokenizer cuts it
    trimmed: bool  # batches padded only to their longest text
    precision: str

    @property
    def n_truncated(self) -> int:
        return int(self.truncated.sum())


def _simple_tokenizer(tokenizer) -> bool:
    from open_clip.tokenizer import SimpleTokenizer

    return isinstance(tokenizer, SimpleTokenizer) and tokenizer.reduction_fn is None


_WORKER_TOKENIZER = None


def _init_tokenizer_worker(tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _tokenize_chunk(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tokenize_texts(_WORKER_TOKENIZER, texts)


def tokenize_texts(tokenizer, texts: Sequence[str], *, workers: int = 0,
                   chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens exactly as `tokenizer(texts)` gives them [N, ctx], plus lengths [N] and truncated flags [N].

    For CLIP's BPE tokenizer the texts are tokenized once at ctx + 1: a token at position ctx means the
    text did not fit, and cutting there and ending with EOT is precisely what the tokenizer does at ctx.
    BPE runs in Python, on one core: `workers > 0` spreads chunks over processes so the GPU waits less.
    """
    texts = list(texts)
    if workers > 0 and len(texts) > chunk:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        parts = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
        # spawn, not fork: a fork after torch has started its OpenMP threads can hang the child
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_tokenizer_worker,
                                 initargs=(tokenizer,)) as pool:
            done = list(pool.map(_tokenize_chunk, parts))
        return tuple(torch.cat([d[k] for d in done]) for k in range(3))  # type: ignore[return-value]
    ctx = tokenizer.context_length
    if not _simple_tokenizer(tokenizer):
        tokens = tokenizer(texts)
        lengths = torch.full((len(texts),), tokens.shape[1])
        return tokens, lengths, torch.zeros(len(texts), dtype=torch.bool)
    wide = tokenizer(texts, context_length=ctx + 1)  # [N, ctx + 1]
    truncated = wide[:, ctx] != 0
    tokens = wide[:, :ctx].clone()
    tokens[truncated, ctx - 1] = tokenizer.eot_token_id
    nonzero = (tokens != 0).long()
    lengths = ctx - nonzero.flip(1).argmax(1)  # position of the last non-pad token + 1 (EOT is never 0)
    lengths = torch.where(truncated, torch.full_like(lengths, ctx + 1), lengths)
    return tokens, lengths, truncated


def can_trim_padding(model: nn.Module, tokenizer) -> bool:
    """True when padding to the batch's longest text equals padding to the full context.

    Holds for open_clip's `CLIP` text tower: a causal mask (no token sees the padding after it), pooling at
    EOT / argmax / first token, and CLIP's tokenizer (padding after EOT only).
    """
    import open_clip

    return (isinstance(model, open_clip.CLIP) and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", "") in ("argmax", "eos", "first") and _simple_tokenizer(tokenizer))


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """[B, 77] tokens cut to the longest text of the batch ([B, L]); exact where `can_trim_padding` holds."""
    return tokens[:, :int((tokens != 0).sum(dim=1).max())]


def encode_text_tokens(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text` for tokens padded to any length L <= context: [B, L] -> [B, D].

    The same computation as open_clip's `CLIP.encode_text`, with the positional embedding and the causal
    mask cut to L; only valid where :func:`can_trim_padding` holds.
    """
    from open_clip.transformer import text_global_pool

    x = _text_transformer(model, model.token_embedding(tokens))  # [B, L, W]
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    return _text_project(model, x)  # [B, D]


def _text_transformer(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Token embeddings [B, L, W] -> ln_final(transformer(x + positions)), causal mask cut to L."""
    n = x.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = x.to(cast) + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    return model.ln_final(x)


def _text_project(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x


def encode_text_embeddings(model: nn.Module, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """The text tower from token embeddings [B, L, W] (prompt learning replaces some of them), pooled at the
    EOT positions `eot` [B] -> [B, D]. Equals `encode_text_tokens` for `x = model.token_embedding(tokens)` where
    :func:`can_trim_padding` holds and the pool is at EOT (argmax / eos)."""
    x = _text_transformer(model, x)
    return _text_project(model, x[torch.arange(len(x), device=x.device), eot])


@torch.inference_mode()
def embed_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 256, device: str | torch.device = "cpu",
                precision: str = "auto", trim: bool | None = None, progress: bool = True,
                workers: int = 0) -> TextEmbeddings:
    """CLIP text embeddings of `texts` in their order, batched by length (longest first); a text that occurs
    more than once is tokenized and encoded once.

    `trim=None` pads each batch only to its longest text wherever that is exact (:func:`can_trim_padding`);
    `precision="auto"` is bf16/fp16 autocast on CUDA and fp32 on CPU; `workers` tokenization processes.
    """
    from lmmreg.progress import progress as progress_bar

    texts = list(texts)
    pos: dict[str, int] = {}  # each distinct text once, first-seen order (the demo's 72k descriptions: 8k distinct)
    for t in texts:
        pos.setdefault(t, len(pos))
    if len(pos) < len(texts):
        enc = embed_texts(model, tokenizer, list(pos), batch_size=batch_size, device=device, precision=precision,
                          trim=trim, progress=progress, workers=workers)
        inverse = torch.tensor([pos[t] for t in texts], dtype=torch.long)
        return TextEmbeddings(enc.emb[inverse], enc.n_tokens[inverse], enc.truncated[inverse], enc.trimmed,
                              enc.precision)
    tokens, lengths, truncated = tokenize_texts(tokenizer, texts, workers=workers)
    trim = can_trim_padding(model, tokenizer) if trim is None else trim
    if trim and not can_trim_padding(model, tokenizer):
        raise ValueError(f"padding cannot be trimmed for {type(model).__name__} with {type(tokenizer).__name__}")
    dim = model.text_projection.shape[-1] if getattr(model, "text_projection", None) is not None else None
    ctx_mgr, precision = autocast_for(device, precision)
    order = torch.argsort(lengths, descending=True, stable=True)
    out: torch.Tensor | None = None
    bar = progress_bar(total=len(texts), unit="text", disable=not progress, desc="encode text")
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = tokens[idx]
        if trim:
            batch = batch[:, :int(lengths[idx].clamp(max=tokens.shape[1]).max())]
        batch = batch.to(device, non_blocking=True)
        with ctx_mgr:
            emb = (encode_text_tokens(model, batch) if trim else model.encode_text(batch)).float().cpu()
        if out is None:
            out = torch.empty(len(texts), emb.shape[1])
        out[idx] = emb  # back to the caller's order
        bar.update(len(idx))
    bar.close()
    if out is None:
        out = torch.zeros(0, dim or 0)
    return TextEmbeddings(out, lengths, truncated, trim, precision)

