"""CLIP's architecture checks (lmmreg.clip.arch), weights found before any work, offline too (lmmreg.clip.weights),
and building the model (lmmreg.clip.build)."""

from __future__ import annotations

import huggingface_hub.constants
import open_clip
import pytest
import torch

from lmmreg.clip.arch import check_clip_config
from lmmreg.clip.build import build_clip
from lmmreg.clip.weights import WeightsNotFoundError, resolve_weights
from lmmreg.config import ClipConfig


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
