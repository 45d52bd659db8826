"""Is an engine-trained run still converging when its budget ends? A check on what the run already has.

The paper's recipe (Adam, lr 1e-4, 100 epochs, batch 64) was tuned for ViT-L/14 features on thousands of images.
On a few hundred images it is a few hundred optimiser steps, and a run can end far from where its model class
could go; its test accuracy then measures the budget, not the method. This module says so, from two signals:

- **the training loss is still falling**: the share of the run's whole descent of the training loss (first evaluated
  epoch to the end) made in its last `WINDOW` (10 %) of evaluated epochs, mean against mean (`late_descent`), above
  `LATE_DESCENT_MAX`. A share, not a relative fall of the loss itself: Adam at a tiny lr moves a 2.30 loss to
  2.29 in a straight line, a 0.04 % fall per tenth of training that looks flat, but a tenth of its descent is
  still in the last tenth of its epochs, as in any straight line. A loss that never fell counts as still falling;
- **the training accuracy is behind a converged reference**: the run's accuracy on its own training images (after
  the last epoch) more than `ACC_GAP_MAX` points below that of a converged linear probe on the same frozen
  training embeddings x = f(I) (`reference_train_acc`).

A run is flagged only when both hold. A falling loss alone is not under-training: a run that already fits its
training images as well as a linear probe drives its cross-entropy towards 0 for ever (the demo's fine-tuning
does). A gap alone is not under-training either when the loss has flattened: ProLIP, CoOp and CLIP-Adapter fit
constrained models that may legitimately stay below a free linear head. Both together mean the optimiser was
still making progress that the model class allows when the budget stopped it.

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

# What to raise, named as in params.yaml, for the log line and the tag.
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


def check_convergence(history: list[dict], *, train_acc: float, reference_acc: float,
                      late_descent_max: float = LATE_DESCENT_MAX, acc_gap_max: float = ACC_GAP_MAX) -> Convergence:
    """Flag a run that made more than `late_descent_max` of its training-loss descent in the last WINDOW of its
    evaluated epochs (`history` rows carry `train_loss`), or whose loss did not fall at all, while its training
    accuracy is more than `acc_gap_max` points below the reference's."""
    losses = [row["train_loss"] for row in history if "train_loss" in row]
    late = late_descent(losses)
    falling = math.isnan(late) or late > late_descent_max
    gap = reference_acc - train_acc
    if not (falling and gap > acc_gap_max):
        return Convergence(True, late, train_acc, reference_acc, "")
    if len(losses) < 2:
        trend = "a single epoch, no loss trend"
    elif math.isnan(late):
        trend = f"training loss did not fall ({losses[0]:.3g} to {losses[-1]:.3g})"
    else:
        trend = (f"training loss still falling: {100 * late:.0f}% of its descent in the last {100 * WINDOW:.0f}% of "
                 f"epochs")
    reason = (f"under-trained: {trend}; training accuracy {train_acc:.1f}% vs {reference_acc:.1f}% for a converged "
              f"linear probe on the same features; raise {KNOBS}")
    return Convergence(False, late, train_acc, reference_acc, reason)
