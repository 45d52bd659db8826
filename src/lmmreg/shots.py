"""The few-shot protocol (CoOp / Dassl): K training images per class, drawn per seed from the train split.

Sampling is without replacement and deterministic per (seed, labels); for one seed the K-shot subsets are
nested (the 2-shot subset holds the 1-shot one), because each class is permuted once and its first K taken.
The test set is always the full one. Under `train.centroids_from: shots` the centroids are recomputed from
the descriptions of the K-shot images only (Eq. 1, `lmmreg.centroids`), so no extra labelled data leaks in.
The inputs also carry the baselines' validation images, min(K, 4) per class from outside the K shots (CoOp's
rule, `lmmreg.validation.outside_shots`); only a hyper-parameter search under `baselines.val_rule: outside_shots`
reads them.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from lmmreg.artifacts import Artifact
from lmmreg.centroids import centroids_of_images
from lmmreg.config import TrainConfig
from lmmreg.engine import steps_per_epoch
from lmmreg.errors import InputError
from lmmreg.methods.base import MethodInputs
from lmmreg.validation import outside_shots, val_shots

log = logging.getLogger(__name__)


def sample_shots(train_y: torch.Tensor, k: int | str, seed: int, *, classes: list[str] | None = None) -> torch.Tensor:
    """Sorted indices into the train split: `k` per class ("all" = every index); a class with fewer uses all."""
    if k == "all":
        return torch.arange(len(train_y))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"train.shots: expected 'all' or an int >= 1, got {k!r}")
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(train_y).tolist():  # ascending labels: the draw does not depend on row order
        idx = (train_y == c).nonzero().flatten()  # [n_c]
        if len(idx) < k:
            name = classes[c] if classes is not None else str(c)
            log.warning("train.shots=%d: class %r has only %d training images, using all of them", k, name, len(idx))
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:k]])
    return torch.sort(torch.cat(picked)).values


def subset_inputs(inp: MethodInputs, idx: torch.Tensor, *, centroids: torch.Tensor | None = None) -> MethodInputs:
    """The same inputs with only the training rows `idx` (and, when given, other centroids)."""
    return dataclasses.replace(
        inp, train_feat=inp.train_feat[idx], train_y=inp.train_y[idx], train_text_mean=inp.train_text_mean[idx],
        train_aug=None if inp.train_aug is None else inp.train_aug[idx],
        train_desc=None if inp.train_desc is None else inp.train_desc[idx],
        centroids=inp.centroids if centroids is None else centroids)


def few_shot_inputs(inp: MethodInputs, cfg: TrainConfig, *, seed: int, train_ids: list[str], desc: Artifact,
                    classes: list[str]) -> tuple[MethodInputs, list[str]]:
    """The inputs of one seed under `cfg.shots`, and the ids of the training images kept (for the run's log).

    Few-shot inputs carry the validation images outside the shots as `val_feat` / `val_y` (drawn per seed). Inputs
    that already carry the dataset's own val split (CoOp's format) keep min(K, 4) of its images per class instead,
    as CoOp's datasets draw their few-shot val (`generate_fewshot_dataset(val, min(K, 4))`)."""
    if cfg.shots == "all":
        return inp, list(train_ids)
    idx = sample_shots(inp.train_y, cfg.shots, seed, classes=classes)
    if inp.val_feat is not None:
        own = sample_shots(inp.val_y, val_shots(cfg.shots), seed, classes=classes)
        val_feat, val_y = inp.val_feat[own], inp.val_y[own]
    else:
        val = outside_shots(inp.train_y, idx, shots=cfg.shots, seed=seed, classes=classes)
        val_feat, val_y = inp.train_feat[val], inp.train_y[val]
    ids = [train_ids[i] for i in idx.tolist()]
    cents = None
    if cfg.centroids_from == "shots":
        try:
            cents, _ = centroids_of_images(desc, set(ids), classes)
        except ValueError as e:
            raise InputError(f"train.shots={cfg.shots} seed {seed}: {e}") from None
        cents = cents.to(inp.centroids.dtype)
    sub = subset_inputs(inp, idx, centroids=cents)
    return dataclasses.replace(sub, val_feat=val_feat, val_y=val_y), ids


def total_steps(cfg: TrainConfig, n_full: int) -> int:
    """The optimiser steps every K gets under `budget: steps`: `cfg.steps`, or the full-data run's (0)."""
    return cfg.steps or cfg.epochs * steps_per_epoch(n_full, cfg.batch_size)
