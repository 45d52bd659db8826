"""Is an engine-trained run still converging when its budget ends? A check on what the run already has.

The paper's recipe (Adam, lr 1e-4, 100 epochs, batch 64) was tuned for ViT-L/14 features on thousands of images.
On a few hundred images it is a few hundred optimiser steps, and a run can end far from where its model class
could go; its test accuracy then measures the budget, not the method. This module says so, from two signals:

- **the training accuracy is behind a converged reference**: the run's accuracy on its own training images (after
  the last epoch) more than `ACC_GAP_MAX` points below that of a converged linear probe on the same frozen
  training embeddings x = f(I) (`reference_train_acc`);
- **the training loss is still falling**: the share of the run's whole descent of the training loss (first evaluated
  epoch to the end) made in its last `WINDOW` (10 %) of evaluated epochs, mean against mean (`late_descent`), above
  `LATE_DESCENT_MAX`; a loss that never fell counts as still falling.

A run is flagged when it is behind and either its loss is still falling or its model class contains the
reference's (`contains_reference`). The paper's methods (linear_probe, concat, finetune, lmm_reg) train a linear
head on f(I), or on more than f(I), so once converged they fit their training images at least about as well as the
reference (up to the L2 penalties and, for lmm_reg, alpha's term); a gap is then the optimiser's, whatever the loss
curve looks like. The loss curve alone cannot tell: on sklearn's digits (README's own-data section,
benchmarks/bench_convergence.py) the engine's probe at lr 1e-4 sheds its random head's excess loss in about 20 epochs
(to about log 10) and then crawls, at 13 % training accuracy against the reference's 98 %: a plateau to any rule on
the loss. The baselines trained by the engine (ProLIP, CoOp, CLIP-Adapter, Tip-Adapter-F) fit constrained
models that may legitimately stay below a free linear head, so for them a gap counts only while the loss is still
falling. A falling loss without a gap is not under-training either: a run that fits its training images as well as
the reference can drive its cross-entropy towards 0 for ever.

Nothing here reads the test split: the loss and the accuracies are on the training images only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

# Share of the evaluated epochs compared at the end of training (at least one epoch on each side).
WINDOW = 0.1
# Largest share of the whole loss descent made in the last WINDOW of epochs by a run that has stopped converging.
# An exponential approach to a floor makes 2 % of its descent in its last tenth once it is ~95 % of the way there
# (about three time constants); a straight line makes 10 %.
LATE_DESCENT_MAX = 0.02
# Largest shortfall (percentage points) of the run's training accuracy behind the reference probe's. A converged
# engine probe and scikit-learn's probe fit the same model class, so they agree within a few points (the L2
# penalties differ); the heads of finetune / lmm_reg / concat can only fit more.
ACC_GAP_MAX = 5.0
# The reference: scikit-learn's L-BFGS logistic regression on standardised features, C = 1 (no search: the check
# must not depend on a validation choice), at most this many iterations. Deterministic, converged on thousands of
# images in seconds, the same solver as CLIP's own linear-probe protocol (method linear_probe_lbfgs). Standardising
# changes no decision boundary a linear head can draw, only what C = 1 costs: on raw features whose norms are tiny
# (a random-init CLIP's) C = 1 alone would hold the reference far below what the model class fits.
REFERENCE_C = 1.0
REFERENCE_MAX_ITER = 1000

# What to raise, named as in params.yaml, for the log line and the tag (the baselines name their own section).
KNOBS = "train.epochs, train.lr, or train.budget: steps with train.steps"


@dataclass(frozen=True)
class Convergence:
    """The check's verdict on one run, and the numbers it read."""

    converged: bool
    late_descent: float  # share of the loss descent made in the last WINDOW of epochs (nan: no trend, see above)
    train_acc: float  # % on the run's training images after the last epoch
    reference_acc: float  # % of the converged reference probe on the same training images
    reason: str  # "" when converged

    def metrics(self) -> dict[str, float]:
        """The numbers, as a run's final metrics."""
        return {"train_acc": self.train_acc, "reference_train_acc": self.reference_acc,
                "train_loss_late_descent": self.late_descent}

    def tags(self) -> dict[str, str]:
        """`lmmreg.converged` ("true"/"false") and `lmmreg.converged_reason`, as the report reads them."""
        return {"lmmreg.converged": str(self.converged).lower(), "lmmreg.converged_reason": self.reason}


def late_descent(losses: list[float], window: float = WINDOW) -> float:
    """Share of the whole fall of `losses` (first value to the mean of the last `window` of them) made between the
    mean of as many values before those and the mean of the last ones: ~0 at a floor, ~window on a straight line.

    nan when there is no trend to read: fewer than two values, or a loss that did not fall at all.
    """
    if len(losses) < 2:
        return float("nan")
    k = max(1, min(len(losses) // 2, round(window * len(losses))))
    before, last = float(np.mean(losses[-2 * k:-k])), float(np.mean(losses[-k:]))
    total = losses[0] - last
    return (before - last) / total if total > 0 else float("nan")


def reference_train_acc(train_x: torch.Tensor, train_y: torch.Tensor) -> float:
    """Training accuracy (%) of a converged L2 logistic regression on frozen features `train_x` [N, D]."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, y = train_x.double().numpy(), train_y.numpy()
    if len(np.unique(y)) < 2:
        return 100.0
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)  # [N, D] standardised: C = 1 whatever the features' scale
    with warnings.catch_warnings():  # a separable toy reaches max_iter while still sharpening: its accuracy is final
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(solver="lbfgs", C=REFERENCE_C, max_iter=REFERENCE_MAX_ITER).fit(x, y)
    return 100.0 * float((clf.predict(x) == y).mean())


def check_convergence(history: list[dict], *, train_acc: float, reference_acc: float, contains_reference: bool,
                      knobs: str = KNOBS, late_descent_max: float = LATE_DESCENT_MAX,
                      acc_gap_max: float = ACC_GAP_MAX) -> Convergence:
    """Flag a run whose training accuracy is more than `acc_gap_max` points below the reference's when its model
    class contains the reference's (`contains_reference`), or else when it also made more than `late_descent_max`
    of its training-loss descent in the last WINDOW of its evaluated epochs (`history` rows carry `train_loss`) or
    its loss did not fall at all. The reason names `knobs`, the settings to raise."""
    losses = [row["train_loss"] for row in history if "train_loss" in row]
    late = late_descent(losses)
    falling = math.isnan(late) or late > late_descent_max
    gap = reference_acc - train_acc
    if not (gap > acc_gap_max and (falling or contains_reference)):
        return Convergence(True, late, train_acc, reference_acc, "")
    if not falling:  # flat, yet a model class that holds the reference's solution: the optimiser stalled
        trend = (f"training loss flat ({100 * late:.1f}% of its descent in the last {100 * WINDOW:.0f}% of epochs) "
                 f"short of what its model class fits")
    elif len(losses) < 2:
        trend = "a single epoch, no loss trend"
    elif math.isnan(late):
        trend = f"training loss did not fall ({losses[0]:.3g} to {losses[-1]:.3g})"
    else:
        trend = (f"training loss still falling: {100 * late:.0f}% of its descent in the last {100 * WINDOW:.0f}% of "
                 f"epochs")
    reason = (f"under-trained: {trend}; training accuracy {train_acc:.1f}% vs {reference_acc:.1f}% for a converged "
              f"linear probe on the same features; raise {knobs}")
    return Convergence(False, late, train_acc, reference_acc, reason)
