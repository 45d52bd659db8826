"""What LMM-Reg.'s regulariser pulls each class towards (`train.reg_target`): the LMM centroids, or a control.

J = J_ce + α Σ ||x_i − T_{l_i}||² with T one of:

- `lmm`: Eq. 1, the mean CLIP text embedding of class l's LMM descriptions (the paper's method);
- `class_prompt`: CLIP's text embedding of class l's prompt (`clip.class_prompt`): is the LMM needed at all?
- `shuffled`: the LMM centroid of another class (a fixed derangement of the classes): does the right content matter?
- `random_text`: the mean embedding of random-word descriptions with the same count and word counts per image,
  by the same text tower: WaffleCLIP's control (Roth et al., ICCV 2023), does any text do?
- `image_mean`: the mean frozen CLIP image embedding of class l's training images, where J_reg acts: a fixed-centre
  center loss (Wen et al., ECCV 2016), does a class centre without text do?

Every target is computed from the training images of the run (the K shots under `train.shots: K`, as the LMM
centroids are), never from test images, and works on every dataset. The random-word descriptions are written by
stage `embed_text` (`random_text.pt`, one row per training description, embedded by the same text tower).
"""

from __future__ import annotations

import dataclasses

import torch

from lmmreg.artifacts import Artifact
from lmmreg.centroids import centroids_of_images
from lmmreg.errors import InputError
from lmmreg.methods.base import MethodInputs, embed

TARGETS = ("lmm", "class_prompt", "shuffled", "random_text", "image_mean")
DERANGEMENT_SEED = 0  # fixed: every run of `shuffled` gives each class the same other class's centroid


def derangement(n: int, *, seed: int = DERANGEMENT_SEED) -> torch.Tensor:
    """A fixed permutation of range(n) with no fixed point (n >= 2): class c gets row perm[c] != c."""
    if n < 2:
        raise InputError(f"train.reg_target: shuffled needs at least 2 classes, got {n}")
    g = torch.Generator().manual_seed(seed)
    while True:  # rejection: about e tries on average
        perm = torch.randperm(n, generator=g)
        if not bool((perm == torch.arange(n)).any()):
            return perm


def build_target(kind: str, inp: MethodInputs, *, train_ids: list[str], classes: list[str],
                 random_text: Artifact | None = None) -> torch.Tensor:
    """T [C, D] for the training rows of `inp` (whose ids are `train_ids`); `inp.centroids` are already the
    LMM centroids of those images (the K shots' under few-shot, lmmreg.shots)."""
    if kind == "lmm":
        return inp.centroids
    if kind == "class_prompt":
        return inp.class_text.to(inp.centroids.dtype)
    if kind == "shuffled":
        return inp.centroids[derangement(len(classes))]
    if kind == "random_text":
        if random_text is None:
            raise InputError("train.reg_target: random_text needs data/text/<dataset>/random_text.pt (re-run "
                             "`dvc repro embed_text`)")
        cents, _ = centroids_of_images(random_text, set(train_ids), classes)
        return cents.to(inp.centroids.dtype)
    if kind == "image_mean":
        with torch.no_grad():
            x = embed(inp.tail, inp.train_feat)  # [N, D] the frozen embeddings where J_reg acts, before training
        counts = torch.bincount(inp.train_y, minlength=len(classes))
        if bool((counts == 0).any()):
            raise InputError(f"train.reg_target: image_mean has no training image for class(es) "
                             f"{[classes[c] for c in range(len(classes)) if counts[c] == 0]}")
        sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, inp.train_y, x)
        return (sums / counts[:, None].to(x.dtype)).to(inp.centroids.dtype)
    raise InputError(f"train.reg_target: unknown target {kind!r} (known: {', '.join(TARGETS)})")


def with_reg_target(inp: MethodInputs, kind: str, **kwargs) -> MethodInputs:
    return dataclasses.replace(inp, reg_target=build_target(kind, inp, **kwargs))
