"""The deployable classifier's folder: what it holds for each kind of CLIP weights, and that it rebuilds the
same model (tiny registered CLIP; the pretrained-tag case needs downloaded weights and is covered by the error
path in tests/test_clip_build.py)."""

import dataclasses

import numpy as np
import pytest
import torch

from lmmreg import classifier
from lmmreg.clip.build import build_clip
from lmmreg.clip.vision import VisionTail
from lmmreg.config import ClipConfig

pytestmark = pytest.mark.slow  # imports mlflow.pyfunc and builds CLIP several times

CLASSES = ["cat", "dog", "owl"]


def _trainable(visual, dim: int) -> dict:
    torch.manual_seed(0)
    tail = VisionTail(visual, 1)
    state = {"tail.proj": tail.proj.detach() + 0.01 * torch.randn_like(tail.proj), "head.weight": torch.randn(3, dim),
             "head.bias": torch.randn(3)}
    return classifier.build_trainable("lmm_reg", state_dict=state, base_tail=tail, class_text=torch.randn(3, dim),
                                      centroids=torch.randn(3, dim))


def _images(n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(n)]


def _reference(visual, trainable, transform, images) -> list[str]:
    """The same computation written out: boundary features -> trained projection -> head."""
    from lmmreg.clip.vision import encode_boundary

    with torch.no_grad():
        x = torch.stack([transform(classifier.to_image(i)) for i in images])
        emb = encode_boundary(visual, x, 1) @ trainable["tail"]["proj"]
        logits = emb @ trainable["head"]["weight"].T + trainable["head"]["bias"]
    return [CLASSES[k] for k in logits.argmax(-1).tolist()]


def test_random_init_stores_the_image_tower_and_rebuilds_the_same_model(tmp_path):
    cfg = ClipConfig()
    model, preprocess, _ = build_clip(cfg)
    trainable = _trainable(model.visual, model.visual.proj.shape[1])
    folder = classifier.save_classifier(tmp_path / "m", clip=cfg, visual=model.visual, trainable=trainable,
                                        classes=CLASSES, meta={"method": "lmm_reg"})
    assert (folder / "visual.pt").is_file()
    loaded, transform, classes = classifier.load_classifier(folder)
    images = _images()
    assert classes == CLASSES
    assert classifier.predict_images(loaded, transform, classes, images) == _reference(model.visual, trainable,
                                                                                       preprocess, images)


def test_a_local_checkpoint_is_referenced_by_path_and_hash(tmp_path):
    ckpt = tmp_path / "clip.pt"
    torch.manual_seed(1)
    torch.save(build_clip(ClipConfig(init_seed=1))[0].state_dict(), ckpt)
    cfg = dataclasses.replace(ClipConfig(), pretrained=str(ckpt))
    model, preprocess, _ = build_clip(cfg)
    trainable = _trainable(model.visual, model.visual.proj.shape[1])
    folder = classifier.save_classifier(tmp_path / "m", clip=cfg, visual=model.visual, trainable=trainable,
                                        classes=CLASSES, meta={})
    assert not (folder / "visual.pt").exists()  # not copied
    loaded, transform, classes = classifier.load_classifier(folder)
    images = _images()
    assert classifier.predict_images(loaded, transform, classes, images) == _reference(model.visual, trainable,
                                                                                       preprocess, images)
    ckpt.write_bytes(ckpt.read_bytes() + b"x")
    with pytest.raises(FileNotFoundError, match=str(ckpt)):
        classifier.load_classifier(folder)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"shape \[2, 2, 2, 2\]"):
        classifier.to_image(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="0..255"):
        classifier.to_image(np.full((4, 4, 3), 300.0))
    assert classifier.to_image([[0, 255], [255, 0]]).size == (2, 2)  # nested lists, greyscale
    with pytest.raises(ValueError, match="concat"):
        classifier.build_trainable("concat", state_dict={}, base_tail=None, class_text=None, centroids=None)
