"""CLIP building, weights found before any work (offline), and exact length-trimmed text encoding."""

from __future__ import annotations

import huggingface_hub.constants
import open_clip
import pytest
import torch

from lmmreg.config import ClipConfig
from lmmreg.encoders import (
    WeightsNotFoundError,
    build_clip,
    can_trim_padding,
    check_clip_config,
    embed_texts,
    encode_texts,
    resolve_weights,
    tokenize_texts,
)

LONG = " ".join(f"word{i}" for i in range(60))  # BPE splits each into several tokens: far beyond 77
TEXTS = ["", "a photo of a dog.", "wow!! a cat!", LONG, "a man rides a bicycle down a steep mountain trail",
         "zebra", "Ünïcödé text — with punctuation; and numbers 123 456", "!", "a " * 74 + "end", "a " * 76]


@pytest.fixture()
def offline(tmp_path, monkeypatch):
    """No network, empty caches: HF hub cache, ~/.cache/clip and LMMREG_CLIP_CACHE all point into tmp_path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LMMREG_CLIP_CACHE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


# ------------------------------------------------------------------------------------------ config checks


def test_plain_vit_l14_with_openai_weights_is_refused():
    with pytest.raises(ValueError, match="ViT-L-14-quickgelu"):
        check_clip_config(ClipConfig(model="ViT-L-14", pretrained="openai"))
    check_clip_config(ClipConfig(model="ViT-L-14-quickgelu", pretrained="openai"))  # the paper's setting


def test_quickgelu_model_with_gelu_weights_is_refused():
    with pytest.raises(ValueError, match="trained with GELU"):
        check_clip_config(ClipConfig(model="ViT-B-32-quickgelu", pretrained="laion2b_s34b_b79k"))


def test_unknown_model_and_tag_name_the_key():
    with pytest.raises(ValueError, match="clip.model"):
        check_clip_config(ClipConfig(model="ViT-Q-99"))
    with pytest.raises(ValueError, match="clip.pretrained.*no_such_tag"):
        check_clip_config(ClipConfig(model="ViT-B-32", pretrained="no_such_tag"))
    with pytest.raises(ValueError, match="clip.augment_views"):
        check_clip_config(ClipConfig(augment_views=-1))


# --------------------------------------------------------------------------------------------- weights


def test_missing_weights_offline_name_the_file_and_how_to_fetch(offline):
    cfg = ClipConfig(model="ViT-L-14-quickgelu", pretrained="openai")
    with pytest.raises(WeightsNotFoundError) as e:
        resolve_weights(cfg, cache_dir=offline / "clip-cache")
    msg = str(e.value)
    assert "timm/vit_large_patch14_clip_224.openai" in msg and "ViT-L-14.pt" in msg  # what is missing
    assert "huggingface-cli download" in msg and "curl" in msg and "offline" in msg  # how to fetch it
    assert "clip-cache" in msg  # where it looked


def test_failed_download_is_a_clear_error(offline, monkeypatch):
    def unreachable(cfg, **kwargs):  # what open_clip raises when the hub cannot be reached
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(open_clip, "download_pretrained", unreachable)
    with pytest.raises(WeightsNotFoundError, match="download failed: OSError.*unreachable"):
        resolve_weights(ClipConfig(model="ViT-B-32-quickgelu", pretrained="openai"), download=True)


def test_weights_in_the_hf_hub_cache_are_found_offline(offline):
    # The layout huggingface_hub itself writes: models--org--name/{refs/main, snapshots/<commit>/file}
    repo = offline / "hf" / "models--timm--vit_large_patch14_clip_224.openai"
    snap = repo / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    (snap / "open_clip_model.safetensors").write_bytes(b"weights")
    w = resolve_weights(ClipConfig(model="ViT-L-14-quickgelu", pretrained="openai"))
    assert w.source == "cache" and w.path == str(snap / "open_clip_model.safetensors")
    assert w.preprocess["interpolation"] == "bicubic" and w.preprocess["mean"][0] == pytest.approx(0.48145466)


def test_weights_in_an_explicit_cache_dir_are_found(offline, monkeypatch):
    cache = offline / "mine"
    cache.mkdir()
    (cache / "ViT-B-32.pt").write_bytes(b"weights")  # open_clip's URL download keeps the URL's file name
    w = resolve_weights(ClipConfig(model="ViT-B-32-quickgelu", pretrained="openai"), cache_dir=cache)
    assert w.path == str(cache / "ViT-B-32.pt")
    monkeypatch.setenv("LMMREG_CLIP_CACHE", str(cache))
    assert resolve_weights(ClipConfig(model="ViT-B-32-quickgelu", pretrained="openai")).path == w.path
    home_cache = offline / "home" / ".cache" / "clip"
    home_cache.mkdir(parents=True)
    (home_cache / "ViT-L-14.pt").write_bytes(b"weights")
    w = resolve_weights(ClipConfig(model="ViT-L-14-quickgelu", pretrained="openai"))
    assert w.path == str(home_cache / "ViT-L-14.pt")


def test_explicit_checkpoint_path_is_loaded(offline):
    donor = build_clip(ClipConfig(init_seed=7))[0]
    ckpt = offline / "tiny.pt"
    torch.save(donor.state_dict(), ckpt)
    model = build_clip(ClipConfig(pretrained=str(ckpt), init_seed=0))[0]
    for (name, a), b in zip(donor.state_dict().items(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(WeightsNotFoundError, match="checkpoint file .*missing.pt not found"):
        build_clip(ClipConfig(pretrained=str(offline / "missing.pt")))


def test_random_init_is_reproducible():
    a, b = build_clip(ClipConfig(init_seed=3))[0], build_clip(ClipConfig(init_seed=3))[0]
    torch.testing.assert_close(a.visual.proj, b.visual.proj)
    assert not torch.equal(a.visual.proj, build_clip(ClipConfig(init_seed=4))[0].visual.proj)


# ------------------------------------------------------------------------------------------------ text


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
    torch.testing.assert_close(encode_texts(model, tok, TEXTS, progress=False),
                               embed_texts(model, tok, TEXTS, progress=False).emb)


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

    monkeypatch.setattr("lmmreg.encoders.tokenize_texts", counting)
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
