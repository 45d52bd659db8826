"""The validation split that hyper-parameter searches use: held out from the training images, never the test set.

Full data: a stratified share of each class (`val_fraction`). K shots: min(K, 4) images per class, CoOp's rule
(KaiyangZhou/CoOp lpclip/linear_probe.py `val_shot_list`), drawn from the training images that are not among
the K shots. Deterministic per seed: the same seed gives the same split whatever else runs.
"""

from __future__ import annotations

import torch


def val_shots(shots: int) -> int:
    """CoOp's validation size for K-shot training: min(K, 4) images per class."""
    return min(shots, 4)


def holdout_split(train_y: torch.Tensor, *, seed: int, shots: int | None = None, val_fraction: float = 0.2,
                  train_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit_idx, val_idx): disjoint, sorted row indices into `train_y` [N].

    shots=None: per class, round(val_fraction * n_c) images (at least 1, leaving at least 1 to fit) go to val.
    shots=K: fit = K images per class (or `train_idx`, the K shots already chosen), val = min(K, 4) other images
    of the same class. A class too small for the split is a ValueError naming it.
    """
    y = torch.as_tensor(train_y).long()
    gen = torch.Generator().manual_seed(int(seed))
    fit, val = [], []
    chosen = None
    if train_idx is not None:
        if shots is None:
            raise ValueError("holdout_split: train_idx (the chosen shots) needs shots=K")
        chosen = torch.zeros(len(y), dtype=torch.bool)
        chosen[torch.as_tensor(train_idx).long()] = True
    for c in torch.unique(y).tolist():
        rows = (y == c).nonzero().flatten()
        rows = rows[torch.randperm(len(rows), generator=gen)]
        if shots is None:
            if len(rows) < 2:
                raise ValueError(f"holdout_split: class {c} has {len(rows)} training image(s); need >= 2 to hold one "
                                 "out for validation")
            n_val = min(max(1, round(val_fraction * len(rows))), len(rows) - 1)
            val.append(rows[:n_val])
            fit.append(rows[n_val:])
            continue
        k_val = val_shots(shots)
        if chosen is not None:
            mine, rest = rows[chosen[rows]], rows[~chosen[rows]]
        else:
            mine, rest = rows[:shots], rows[shots:]
        if (chosen is None and len(mine) < shots) or len(rest) < k_val:
            raise ValueError(f"holdout_split: class {c} has {len(rows)} training images; {shots} shots plus "
                             f"{k_val} validation images need {shots + k_val}")
        fit.append(mine)
        val.append(rest[:k_val])
    return torch.cat(fit).sort().values, torch.cat(val).sort().values
