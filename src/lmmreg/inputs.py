"""The method inputs of a train stage, loaded from the cached artifacts and aligned by image id.

Features (stage `features`), the text embeddings (stage `embed_text`: each image's mean description embedding,
the class prompts) and the centroids (stage `centroids`) become one `MethodInputs`, train rows then test rows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmmreg.artifacts import check_aligned, load_artifact
from lmmreg.centroids import build_train_descriptions
from lmmreg.clip.build import build_clip
from lmmreg.clip.vision import VisionTail
from lmmreg.config import Params
from lmmreg.errors import InputError
from lmmreg.methods.base import MethodInputs


def load_inputs(params: Params, *, features: Path, text: Path, centroids: Path, need_clip: bool = True,
                need_desc: bool = False) -> tuple[MethodInputs, list[str], list[str]]:
    """The method inputs, the test image ids and the train image ids (rows in the order of the inputs).

    Without `need_clip` (a method that never runs CLIP's text tower) and with one unlocked group, the tail starts
    from the `visual.proj` the features stage saved beside the cache: the same tensor, and no open_clip import or
    model build (a train stage's start-up time); `clip_model` and `tokenizer` are then None."""
    feats = load_artifact(features)
    image_mean = load_artifact(text / "image_mean.pt")
    check_aligned(feats, image_mean, names=(str(features), str(text / "image_mean.pt")))
    cents, class_text = load_artifact(centroids), load_artifact(text / "class_text.pt")
    if cents.ids != class_text.ids:
        raise InputError(f"{centroids} and {text / 'class_text.pt'} list different classes")
    for key in ("unlocked_groups", "augment_views"):
        if feats.meta.get(key, 0) != getattr(params.clip, key):
            raise InputError(f"{features}: cached for {key}={feats.meta.get(key)}, params say clip.{key}="
                             f"{getattr(params.clip, key)} (re-run dvc repro)")
    init = feats.meta.get("tail_init")
    if need_clip or params.clip.unlocked_groups != 1 or init is None:
        model, _, tokenizer = build_clip(params.clip)  # the text tower stays for prompt learning (coop)
        tail, logit_scale = VisionTail(model.visual, params.clip.unlocked_groups), model.logit_scale.exp().item()
    else:
        model, tokenizer = None, None
        tail, logit_scale = VisionTail.from_proj(init["proj"]), float(init["logit_scale"])
    test = feats.tensors["is_test"]
    # A dataset with its own validation split (CoOp's format) keeps it apart: the searches and few-shot val use it.
    val = feats.tensors.get("is_val", torch.zeros_like(test))
    train = ~test & ~val
    f, y, m = feats.tensors["feat"], feats.labels, image_mean.tensors["mean"]
    has_val = bool(val.any())
    inputs = MethodInputs(tail=tail, train_feat=f[train], test_feat=f[test], train_y=y[train], test_y=y[test],
                          centroids=cents.tensors["centroid"], class_text=class_text.tensors["emb"],
                          train_text_mean=m[train], test_text_mean=m[test],
                          train_aug=feats.tensors["aug"][train] if "aug" in feats.tensors else None,
                          classnames=list(class_text.ids), clip_model=model, tokenizer=tokenizer,
                          logit_scale=logit_scale, val_feat=f[val] if has_val else None,
                          val_y=y[val] if has_val else None)
    train_ids = [i for i, t in zip(feats.ids, train.tolist(), strict=True) if t]
    if need_desc:  # every description of each training image (the cross-modal probe's text samples)
        inputs.train_desc = build_train_descriptions(load_artifact(text / "descriptions.pt"), train_ids)
    return inputs, [i for i, t in zip(feats.ids, test.tolist(), strict=True) if t], train_ids
