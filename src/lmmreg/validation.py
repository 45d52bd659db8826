"""The validation split that hyper-parameter searches use: held out from the training images, never the test set.

Full data: a stratified share of each class (`val_fraction`). K shots: min(K, 4) images per class, CoOp's rule
(KaiyangZhou/CoOp lpclip/linear_probe.py `val_shot_list`), drawn from the training images that are not among
the K shots (`outside_shots`, which the few-shot inputs carry; `baselines.val_rule: from_shots` cuts the
`val_fraction` split from the K shots instead). Deterministic per seed: the same seed gives the same split
whatever else runs.
"""

from __future__ import annotations

import logging

import torch

from lmmreg.errors import InputError

log = logging.getLogger(__name__)


def val_shots(shots: int) -> int:
    """CoOp's validation size for K-shot training: min(K, 4) images per class."""
    return min(shots, 4)


def holdout_split(train_y: torch.Tensor, *, seed: int, shots: int | None = None, val_fraction: float = 0.2,
                  train_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit_idx, val_idx): disjoint, sorted row indices into `train_y` [N].

    shots=None: per class, round(val_fraction * n_c) images (at least 1, leaving at least 1 to fit) go to val; a
    class with a single training image keeps it for fitting (logged); no validation image at all is a ValueError.
    shots=K: fit = K images per class (or `train_idx`, the K shots already chosen), val = min(K, 4) other images
    of the same class. A class too small for the split is a ValueError naming it.
    """
    y = torch.as_tensor(train_y).long()
    gen = torch.Generator().manual_seed(int(seed))
    fit, val, single = [], [], []
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
                single.append(c)
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
            raise InputError(f"holdout_split: class {c} has {len(rows)} training images; {shots} shots plus "
                             f"{k_val} validation images need {shots + k_val}")
        fit.append(mine)
        val.append(rest[:k_val])
    if single:
        log.warning("holdout_split: classes %s have one training image each: none held out for validation", single)
    fit_idx, val_idx = torch.cat(fit).sort().values, torch.cat(val).sort().values
    if len(val_idx) == 0:
        raise InputError(f"holdout_split: no class has 2 or more training images ({len(y)} images): nothing to hold "
                         "out for validation")
    return fit_idx, val_idx


def outside_shots(train_y: torch.Tensor, shots_idx: torch.Tensor, *, shots: int, seed: int,
                  classes: list[str] | None = None) -> torch.Tensor:
    """Sorted row indices into `train_y` [N]: min(K, 4) images per class drawn (per seed) from the rows that are not
    among the K shots `shots_idx`. A class with fewer such images gives what it has (logged), never a shot."""
    y = torch.as_tensor(train_y).long()
    taken = torch.zeros(len(y), dtype=torch.bool)
    taken[torch.as_tensor(shots_idx).long()] = True
    gen = torch.Generator().manual_seed(int(seed))
    k_val, val, short = val_shots(shots), [], []
    for c in torch.unique(y).tolist():  # ascending labels: the draw does not depend on row order
        rest = ((y == c) & ~taken).nonzero().flatten()  # [n_c - K]
        if len(rest) < k_val:
            short.append(classes[c] if classes is not None else c)
        val.append(rest[torch.randperm(len(rest), generator=gen)[:k_val]])
    if short:
        log.warning("validation outside the %d shots: classes %s have fewer than %d other training images, all of "
                    "them are used", shots, short, k_val)
    return torch.cat(val).sort().values if val else torch.zeros(0, dtype=torch.long)
