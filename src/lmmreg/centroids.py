"""Eq. 1, the mean semantic class descriptions C_l: one function for the centroids stage (the whole train
split) and for few-shot training (the descriptions of the K-shot images only, see `lmmreg.shots`)."""

from __future__ import annotations

import torch

from lmmreg.artifacts import Artifact
from lmmreg.errors import InputError


def compute_centroids(emb: torch.Tensor, labels: torch.Tensor, is_train: torch.Tensor,
                      classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """C_l = mean of the description embeddings t_i^j of training images with label l. [C, D], counts [C]."""
    if not (len(emb) == len(labels) == len(is_train)):
        raise ValueError(f"{len(emb)} embeddings, {len(labels)} labels, {len(is_train)} split flags: not aligned")
    e, y = emb[is_train], labels[is_train]
    if len(y) and not (0 <= int(y.min()) and int(y.max()) < len(classes)):
        raise InputError(f"labels outside 0..{len(classes) - 1} (classes.json lists {len(classes)} classes)")
    counts = torch.bincount(y, minlength=len(classes))
    empty = [classes[c] for c in range(len(classes)) if counts[c] == 0]
    if empty:
        raise InputError(f"no training descriptions for class(es) {empty}: cannot form their centroids (Eq. 1); "
                         "check the describe output and the train split of these classes")
    sums = torch.zeros(len(classes), emb.shape[1], dtype=emb.dtype).index_add_(0, y, e)
    return sums / counts[:, None].to(emb.dtype), counts


def description_owners(desc: Artifact) -> list[str]:
    """The image id of each row of a `descriptions.pt` artifact (row ids are `<image id>#<j>`)."""
    return [i.rsplit("#", 1)[0] for i in desc.ids]


def centroids_of_images(desc: Artifact, image_ids: set[str], classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 over the descriptions of `image_ids` only (the train split, or a K-shot subset of it)."""
    keep = torch.tensor([o in image_ids for o in description_owners(desc)], dtype=torch.bool)
    return compute_centroids(desc.tensors["emb"], desc.labels, keep, classes)


def build_train_descriptions(desc: Artifact, image_ids: list[str]) -> torch.Tensor:
    """MethodInputs.train_desc (the cross-modal probe's text samples) from `descriptions.pt` (stage embed_text, rows
    `<image id>#<j>`): [N, M, D], row k the description embeddings of image_ids[k] in the artifact's order, NaN
    past its count; M the most any has."""
    at = {image: k for k, image in enumerate(image_ids)}
    rows, slots, count = [], [], [0] * len(image_ids)
    for r, owner in enumerate(description_owners(desc)):
        k = at.get(owner)
        if k is not None:
            rows.append(r)
            slots.append((k, count[k]))
            count[k] += 1
    missing = [image_ids[k] for k, n in enumerate(count) if n == 0]
    if missing:
        raise InputError(f"no descriptions for {len(missing)} training images, e.g. {missing[:3]}")
    emb = desc.tensors["emb"]  # [R, D]
    out = torch.full((len(image_ids), max(count), emb.shape[1]), float("nan"), dtype=emb.dtype)
    k, j = torch.tensor(slots).T
    out[k, j] = emb[torch.tensor(rows)]
    return out
