"""Training on the boundary cache equals training the full open_clip model with the same groups unlocked.

For each `unlocked_groups` setting: the full model locked by open_clip's own `lock_image_tower` with a
linear head on `encode_image`, against `EmbeddingClassifier(VisionTail)` on `encode_boundary`'s cache,
same batch and head: same logits, same loss, same gradients for every trainable parameter.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from lmmreg.clip.build import build_clip
from lmmreg.clip.vision import VisionTail, encode_boundary
from lmmreg.config import ClipConfig
from lmmreg.heads import EmbeddingClassifier

TOL = dict(rtol=1e-4, atol=1e-5)


def _trainable(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def check_equivalence(model: nn.Module, unlocked_groups: int, *, batch: int = 3, n_classes: int = 5) -> None:
    size = model.visual.image_size[0]
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, size, size, generator=gen)  # [B, 3, H, W]
    labels = torch.randint(0, n_classes, (batch,), generator=gen)
    dim = model.visual.output_dim

    full = copy.deepcopy(model)
    full.lock_image_tower(unlocked_groups=unlocked_groups)
    full.train()
    head = nn.Linear(dim, n_classes)
    clf_head_state = copy.deepcopy(head.state_dict())
    logits_full = head(full.encode_image(images))
    F.cross_entropy(logits_full, labels).backward()

    with torch.inference_mode():  # the cache is made once, frozen, exactly as the features stage makes it
        cache = encode_boundary(model.visual, images, unlocked_groups)
    cache = cache.clone()  # leave inference mode, as loading the cache from disk does
    clf = EmbeddingClassifier(VisionTail(model.visual, unlocked_groups), dim, n_classes)
    clf.head.load_state_dict(clf_head_state)
    clf.train()
    _, logits_tail = clf(cache)
    F.cross_entropy(logits_tail, labels).backward()

    torch.testing.assert_close(logits_tail, logits_full, **TOL)
    torch.testing.assert_close(clf.head.weight.grad, head.weight.grad, **TOL)
    torch.testing.assert_close(clf.head.bias.grad, head.bias.grad, **TOL)

    # open_clip's groups, mapped to the tail's parameter names
    expected = {"proj": "proj"}
    if unlocked_groups == 2:
        last = len(full.visual.transformer.resblocks) - 1
        expected.update({f"transformer.resblocks.{last}.{n}": f"block.{n}"
                         for n, _ in full.visual.transformer.resblocks[-1].named_parameters()})
        expected.update({f"ln_post.{n}": f"ln_post.{n}" for n, _ in full.visual.ln_post.named_parameters()})
    assert set(_trainable(full.visual)) == set(expected)
    assert set(_trainable(clf.tail)) == set(expected.values())
    tail_params = dict(clf.tail.named_parameters())
    for full_name, tail_name in expected.items():
        g_full = _trainable(full.visual)[full_name].grad
        assert g_full is not None and g_full.abs().sum() > 0, full_name
        torch.testing.assert_close(tail_params[tail_name].grad, g_full, **TOL, msg=lambda m, n=full_name: f"{n}: {m}")
    assert all(p.grad is None for n, p in full.visual.named_parameters() if n not in expected)


@pytest.fixture(scope="module")
def tiny():
    return build_clip(ClipConfig(model="lmmreg-tiny-quickgelu"))[0]


@pytest.mark.parametrize("unlocked_groups", [1, 2])
def test_cache_training_equals_full_model_tiny(tiny, unlocked_groups):
    check_equivalence(tiny, unlocked_groups)


@pytest.fixture(scope="module")
def vit_b32():
    return build_clip(ClipConfig(model="ViT-B-32-quickgelu"))[0]  # random weights: the real architecture


@pytest.mark.slow
@pytest.mark.parametrize("unlocked_groups", [1, 2])
def test_cache_training_equals_full_model_vit_b32(vit_b32, unlocked_groups):
    check_equivalence(vit_b32, unlocked_groups, batch=2)


def test_tail_after_cache_equals_encode_image(tiny):
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        want = tiny.encode_image(images)
        for g in (1, 2):
            got = VisionTail(tiny.visual, g)(encode_boundary(tiny.visual, images, g))
            torch.testing.assert_close(got, want, **TOL)


def test_cache_shapes(tiny):
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert encode_boundary(tiny.visual, images, 1).shape == (2, 64)  # [B, width]
        assert encode_boundary(tiny.visual, images, 2).shape == (2, 1 + 8 * 8, 64)  # [B, 1 + patches, width]
    with pytest.raises(ValueError, match="unlocked_groups"):
        encode_boundary(tiny.visual, images, 3)


@pytest.mark.slow
def test_paper_model_builds_with_quickgelu():
    model = build_clip(ClipConfig(model="ViT-L-14-quickgelu"))[0]  # random weights, no download
    blocks = [*model.visual.transformer.resblocks, *model.transformer.resblocks]
    assert len(model.visual.transformer.resblocks) == 24 and len(model.transformer.resblocks) == 12
    assert all(isinstance(b.mlp.gelu, QuickGELU) for b in blocks)
    assert model.visual.proj.shape == (1024, 768)  # the part the paper trains
    assert model.visual.image_size == (224, 224) and model.visual.patch_size == (14, 14)
    with torch.inference_mode():
        assert encode_boundary(model.visual, torch.randn(1, 3, 224, 224), 1).shape == (1, 1024)
