"""CLIP's text side (lmmreg.clip.text): tokens as open_clip makes them, and length-trimmed text encoding that equals
77-token padding."""

from __future__ import annotations

import open_clip
import pytest
import torch

from lmmreg.clip.build import build_clip
from lmmreg.clip.text import can_trim_padding, embed_texts, tokenize_texts
from lmmreg.config import ClipConfig

LONG = " ".join(f"word{i}" for i in range(60))  # BPE splits each into several tokens: far beyond 77
TEXTS = ["", "a photo of a dog.", "wow!! a cat!", LONG, "a man rides a bicycle down a steep mountain trail",
         "zebra", "Ünïcödé text — with punctuation; and numbers 123 456", "!", "a " * 74 + "end", "a " * 76]


def test_tokenize_matches_open_clip_and_counts_truncation():
    tok = open_clip.get_tokenizer("ViT-B-32")
    tokens, lengths, truncated = tokenize_texts(tok, TEXTS)
    assert torch.equal(tokens, tok(TEXTS))
    true_len = [len(tok.encode(t)) + 2 for t in TEXTS]  # + start and end tokens
    assert truncated.tolist() == [n > 77 for n in true_len]
    assert truncated.sum() == 2  # LONG and "a " * 76 (78 tokens); "a " * 74 + "end" fits exactly
    assert lengths.tolist() == [min(n, 78) for n in true_len]


def _check_trimmed_equals_full_padding(model, tok):
    assert can_trim_padding(model, tok)
    with torch.inference_mode():
        want = model.encode_text(tok(TEXTS))  # open_clip's own path, padded to 77
    got = embed_texts(model, tok, TEXTS, batch_size=3, trim=True, progress=False)
    assert got.trimmed and got.n_truncated == 2
    torch.testing.assert_close(got.emb, want, rtol=1e-4, atol=1e-5)
    untrimmed = embed_texts(model, tok, TEXTS, batch_size=3, trim=False, progress=False)
    torch.testing.assert_close(untrimmed.emb, want, rtol=1e-4, atol=1e-5)


def test_trimmed_padding_equals_77_token_padding_tiny():
    model, _, tok = build_clip(ClipConfig())
    _check_trimmed_equals_full_padding(model, tok)


@pytest.mark.slow
def test_trimmed_padding_equals_77_token_padding_real_text_tower():
    model, _, tok = build_clip(ClipConfig(model="ViT-B-32-quickgelu"))  # CLIP's 12-layer text tower, random
    _check_trimmed_equals_full_padding(model, tok)


def test_repeated_texts_are_encoded_once_and_land_in_every_place(monkeypatch):
    model, _, tok = build_clip(ClipConfig())
    texts = [TEXTS[2], TEXTS[0], TEXTS[2], TEXTS[1], TEXTS[0], TEXTS[2]]
    seen: list[list[str]] = []
    real = tokenize_texts

    def counting(tokenizer, batch, **kw):
        seen.append(list(batch))
        return real(tokenizer, batch, **kw)

    monkeypatch.setattr("lmmreg.clip.text.tokenize_texts", counting)
    got = embed_texts(model, tok, texts, batch_size=2, progress=False)
    assert seen == [[TEXTS[2], TEXTS[0], TEXTS[1]]]  # each distinct text tokenized once, first-seen order
    once = embed_texts(model, tok, [TEXTS[2], TEXTS[0], TEXTS[1]], batch_size=2, progress=False)
    assert torch.equal(got.emb, once.emb[torch.tensor([0, 1, 0, 2, 1, 0])])
    assert got.n_tokens.tolist() == once.n_tokens[torch.tensor([0, 1, 0, 2, 1, 0])].tolist()
    with torch.inference_mode():
        torch.testing.assert_close(got.emb, model.encode_text(tok(texts)), rtol=1e-4, atol=1e-5)


def test_trimming_refused_where_not_exact():
    model, _, tok = build_clip(ClipConfig())
    model.attn_mask = None  # a bidirectional text tower would see the padding
    assert not can_trim_padding(model, tok)
    with pytest.raises(ValueError, match="cannot be trimmed"):
        embed_texts(model, tok, TEXTS, trim=True, progress=False)


def test_empty_input():
    model, _, tok = build_clip(ClipConfig())
    assert embed_texts(model, tok, [], progress=False).emb.shape == (0, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_bf16_text_on_gpu_close_to_fp32():
    model, _, tok = build_clip(ClipConfig(model="ViT-B-32-quickgelu"), device="cuda")
    want = embed_texts(model, tok, TEXTS, device="cuda", precision="fp32", progress=False).emb
    got = embed_texts(model, tok, TEXTS, device="cuda", progress=False)
    assert got.precision in ("bf16", "fp16")
    cos = torch.nn.functional.cosine_similarity(got.emb, want, dim=-1)
    assert cos.min() > 0.99, cos


@pytest.mark.slow  # spawning workers imports torch in each
def test_parallel_tokenization_equals_serial():
    tok = open_clip.get_tokenizer("ViT-B-32")
    texts = TEXTS * 30
    serial = tokenize_texts(tok, texts)
    parallel = tokenize_texts(tok, texts, workers=2, chunk=64)
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)
